"""`lastvit-evaluate` and its library (`lastvit.measure.evaluation`) on tiny models and scenes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lastvit.measure.evaluation import EvaluationData, evaluate_model, masking_grid
from modeling_lastvit import LastViTForImageClassification, LastViTImageProcessor
from training_scripts import evaluate

from .tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]


def save_tiny(folder, **overrides):
    LastViTForImageClassification(tiny_config(num_labels=7, **overrides)).save_pretrained(folder)
    LastViTImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_masking_grid_steps_by_a_seventh_of_the_patches():
    assert masking_grid(196) == [0, 28, 56, 84, 112, 140, 168]


def test_every_map_gets_its_untrained_twin_and_the_map_free_baselines():
    torch.manual_seed(0)
    model = LastViTForImageClassification(tiny_config(num_labels=3, pooling="lazystrike", num_register_tokens=2))
    pixels = torch.randn(6, 3, 32, 32)
    masks = np.zeros((6, 32, 32), dtype=bool)
    masks[:, :8, :8] = True
    data = EvaluationData(pixels, torch.tensor([0, 1, 2, 0, 1, 2]), [(1, 1, 7, 7)] * 6, masks)
    metrics, arrays = evaluate_model(model, data, probe_images=4)
    assert set(metrics["maps"]) == {"patch_score", "patch_score_cls", "votes", "cls_attention"}
    for values in metrics["maps"].values():
        assert {"point_in_box", "corloc", "segmentation_iou", "untrained"} <= set(values)
        assert set(values["untrained"]) == {"point_in_box", "corloc", "segmentation_iou"}
    assert set(metrics["baselines"]) == {"random_patch", "centre_patch", "colour_outlier"}
    assert metrics["baselines"]["random_patch"]["point_in_box"] == pytest.approx(1 / 16)  # one patch of 16
    assert metrics["box_area_fraction"] == pytest.approx(36 / 1024)
    probe = metrics["masking_probe"]
    assert probe["high"][0] == probe["low"][0] == probe["random"][0]  # k = 0 masks nothing
    attention = arrays["maps"]["cls_attention"]
    assert attention.shape == (6, 16) and bool((attention.sum(1) < 1.0).all())  # CLS and registers take the rest


def test_evaluate_reports_every_map_baselines_probe_and_norms(tmp_path):
    from lastvit.data.scenes import build_scenes

    data = tmp_path / "scenes"
    build_scenes(8, 24, image_size=32, seed=3).save_to_disk(str(data))
    model = save_tiny(tmp_path / "model")
    out = tmp_path / "eval"
    assert (
        evaluate.main(["--model", str(model), "--dataset", str(data), "--output-dir", str(out), "--no-progress"]) == 0
    )
    metrics = json.loads((out / "report.json").read_text())
    assert metrics["classification"]["num_images"] == 24
    assert {"patch_score", "votes", "cls_attention"} <= set(metrics["maps"])
    assert all(0.0 <= v <= 1.0 for v in metrics["maps"]["votes"]["untrained"].values())
    probe = metrics["masking_probe"]
    assert probe["k"][0] == 0 and len(probe["high"]) == len(probe["k"])
    assert probe["high"][0] == probe["low"][0] == pytest.approx(metrics["classification"]["top1"])
    for name in ("report.md", "maps.png", "masking_probe.png", "norms.png"):
        assert (out / name).exists()


def test_evaluate_without_boxes_reports_classification_only(tmp_path):
    import datasets

    model = save_tiny(tmp_path / "model")
    images = [Image.fromarray(np.full((32, 32, 3), 60 * i, dtype=np.uint8)) for i in range(4)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list("abcdefg"))})
    split = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0, 1]}, features=features)
    datasets.DatasetDict(train=split, test=split).save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "eval"
    assert (
        evaluate.main(
            ["--model", str(model), "--dataset", str(tmp_path / "data"), "--output-dir", str(out), "--no-progress"]
        )
        == 0
    )
    metrics = json.loads((out / "report.json").read_text())
    assert "maps" not in metrics and metrics["classification"]["num_images"] == 4
    assert np.isfinite(metrics["token_norms"]["max_norm"])


def test_evaluate_names_a_missing_model_folder(tmp_path, capsys):
    assert evaluate.main(["--model", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "eval")]) == 1
    assert "nope" in capsys.readouterr().err


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    commands = [line for line in readme.splitlines() if "pytest" in line and line.startswith("apt-get")]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    assert len(commands) == 1 and ci == commands
