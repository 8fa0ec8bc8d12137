"""The main job (`lastvit-study`) and `lastvit-evaluate`, as smoke runs on a few generated scenes."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from training_scripts import evaluate, study

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    from accelerate.state import AcceleratorState, PartialState

    out = tmp_path_factory.mktemp("study") / "out"
    code = study.main(["--output-dir", str(out), "--num-train", "128", "--num-test", "32", "--epochs", "1",
                       "--seeds", "0", "--probe-images", "16", "--no-progress"])
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    assert code == 0
    return out


def test_study_writes_one_report_with_every_model_and_baseline(study_dir):
    results = json.loads((study_dir / "report.json").read_text())
    assert set(results["summary"]) == {"vit_cls", "vit_registers", "lastvit"}
    for numbers in results["summary"].values():
        assert {"top1", "point_in_box", "untrained", "colour_outlier", "centre_patch", "random_patch",
                "mask_high", "mask_low", "high_norm"} <= set(numbers)
    assert "vote_argmax" in results["summary"]["lastvit"]
    report = (study_dir / "report.md").read_text()
    assert "| LaSt-ViT (LazyStrike) |" in report and "## What it says" in report
    for name in [line.split("](")[1][:-1] for line in report.splitlines() if line.startswith("![")]:
        with Image.open(study_dir / name) as image:
            image.verify()


def test_study_ships_the_trained_lastvit_as_an_auto_model_folder_with_a_card(study_dir):
    from transformers import AutoModelForImageClassification

    model_dir = study_dir / "lastvit-model"
    model = AutoModelForImageClassification.from_pretrained(model_dir, trust_remote_code=True)
    assert model.config.pooling == "lazystrike" and model.config.lazystrike_top_k_ratio == 0.25
    assert "model-index" in (model_dir / "README.md").read_text()
    assert not (model_dir / "checkpoints").exists()
    assert not list(study_dir.parent.glob(".*"))  # no staging folder left behind


def test_study_refuses_to_overwrite_a_previous_report(study_dir, capsys):
    assert study.main(["--output-dir", str(study_dir), "--seeds", "0"]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_evaluate_reports_accuracy_point_in_box_baselines_probe_and_norms(study_dir, tmp_path):
    from lastvit.data.scenes import build_scenes

    data = tmp_path / "scenes"
    build_scenes(8, 24, seed=3).save_to_disk(str(data))
    out = tmp_path / "eval"
    assert evaluate.main(["--model", str(study_dir / "lastvit-model"), "--dataset", str(data), "--output-dir", str(out),
                          "--no-progress"]) == 0
    metrics = json.loads((out / "report.json").read_text())
    assert metrics["classification"]["num_images"] == 24
    pib = metrics["point_in_box"]
    assert {"point_in_box", "random_patch", "centre_patch", "colour_outlier", "untrained", "vote_argmax"} <= set(pib)
    assert all(0.0 <= v <= 1.0 for k, v in pib.items() if k != "num_images")
    probe = metrics["masking_probe"]
    assert probe["k"][0] == 0 and len(probe["high"]) == len(probe["k"])
    assert probe["high"][0] == probe["low"][0] == probe["random"][0] == pytest.approx(metrics["classification"]["top1"])
    assert (out / "report.md").exists() and (out / "masking_probe.png").exists()


def test_evaluate_without_boxes_reports_classification_only(tmp_path):
    import datasets
    import numpy as np

    from modeling_lastvit import LastViTForImageClassification, LastViTImageProcessor

    from .tiny import tiny_config

    model_dir = tmp_path / "model"
    LastViTForImageClassification(tiny_config(num_labels=2)).save_pretrained(model_dir)
    LastViTImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}).save_pretrained(model_dir)
    images = [Image.fromarray(np.full((32, 32, 3), 60 * i, dtype=np.uint8)) for i in range(4)]
    split = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0, 1]},
                                       features=datasets.Features({"image": datasets.Image(),
                                                                   "label": datasets.ClassLabel(names=["a", "b"])}))
    datasets.DatasetDict(train=split, test=split).save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "eval"
    assert evaluate.main(["--model", str(model_dir), "--dataset", str(tmp_path / "data"), "--output-dir", str(out),
                          "--no-progress"]) == 0
    metrics = json.loads((out / "report.json").read_text())
    assert "point_in_box" not in metrics and metrics["classification"]["num_images"] == 4
    assert torch.isfinite(torch.tensor(metrics["token_norms"]["max_norm"]))


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    commands = [line for line in readme.splitlines() if "pytest" in line and line.startswith("apt-get")]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    assert len(commands) == 1 and ci == commands
