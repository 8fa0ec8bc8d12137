"""lastvit-train / lastvit-finetune-peft / lastvit-publish (and the `lastvit.training` and `lastvit.hub`
libraries under them) on a tiny offline dataset, on the CPU."""

import json
import math
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lastvit import hub
from lastvit.files import ModelPathError
from lastvit.training.peft import PeftArguments, peft_config
from lastvit.training.schedule import lr_lambda
from training_scripts import finetune_peft, train
from training_scripts import publish as publish_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState, PartialState

    yield
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


def colour_split(n: int, seed: int) -> datasets.Dataset:
    """Noise images whose dominant channel is the class: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        array = rng.integers(0, 120, (40, 40, 3), dtype=np.uint8)
        array[..., i % 3] = 220
        images.append(Image.fromarray(array))
        labels.append(i % 3)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["r", "g", "b"])})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "colours"
    datasets.DatasetDict(train=colour_split(48, 0), test=colour_split(12, 1)).save_to_disk(str(path))
    return str(path)


def tiny_args(dataset, out, *extra):
    return [
        "--dataset",
        dataset,
        "--preset",
        "tiny",
        "--image-size",
        "32",
        "--patch-size",
        "8",
        "--batch-size",
        "8",
        "--top-k-ratio",
        "0.25",
        "--no-progress",
        "--output-dir",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def trained_run(toy_dataset, tmp_path_factory):
    """One 2-epoch run shared by the tests that only read its output."""
    from accelerate.state import AcceleratorState, PartialState

    out = tmp_path_factory.mktemp("runs") / "trained"
    assert train.main(tiny_args(toy_dataset, out, "--epochs", "2")) == 0
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    return out


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def test_schedule_warms_up_from_a_tenth_then_decays_by_cosine_to_a_thousandth():
    factor = lr_lambda(total_steps=1000, warmup_ratio=0.01, min_lr_ratio=0.001)
    assert factor(0) == pytest.approx(0.1)
    assert factor(10) == pytest.approx(1.0)
    assert factor(505) == pytest.approx(0.001 + 0.999 * 0.5, rel=1e-6)
    assert factor(1000) == pytest.approx(0.001)
    assert all(factor(s) >= factor(s + 1) for s in range(10, 1000))


def test_a_run_trains_evaluates_and_writes_a_complete_loadable_folder(trained_run):
    from transformers import AutoModelForImageClassification

    from modeling_lastvit import LastViTForImageClassification

    results = json.loads((trained_run / "eval_results.json").read_text())
    assert results["step"] == 12 and results["eval_examples"] == 12
    assert results["top1"] > 1 / 3  # above chance on the colour task
    model = AutoModelForImageClassification.from_pretrained(trained_run, trust_remote_code=True)
    assert isinstance(model, LastViTForImageClassification)
    assert model.config.id2label == {0: "r", 1: "g", 2: "b"}
    assert model.config.lazystrike_top_k_ratio == 0.25
    card = (trained_run / "README.md").read_text()
    assert "model-index" in card and "custom_code" in card
    assert f"value: {results['top1']}" in card
    assert (trained_run / "best" / "model.safetensors").exists()
    assert (trained_run / "checkpoints" / "last" / "trainer_state.json").exists()


def test_a_killed_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(toy_dataset, tmp_path):
    from accelerate.state import AcceleratorState, PartialState

    common = ["--epochs", "2", "--drop-path", "0.1", "--save-every", "2"]  # drop-path exercises the RNG
    assert train.main(tiny_args(toy_dataset, tmp_path / "whole", *common)) == 0
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    # "killed" after step 5: the last checkpoint is from step 4, so step 5 is redone after resuming
    assert train.main(tiny_args(toy_dataset, tmp_path / "split", *common, "--stop-after", "5")) == 0
    assert json.loads((tmp_path / "split/checkpoints/last/trainer_state.json").read_text())["step"] == 4
    assert not (tmp_path / "split" / "model.safetensors").exists()
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    assert train.main(tiny_args(toy_dataset, tmp_path / "split", *common, "--resume")) == 0
    whole, split = weights(tmp_path / "whole"), weights(tmp_path / "split")
    assert whole.keys() == split.keys()
    assert all(torch.equal(whole[k], split[k]) for k in whole)


def test_an_output_folder_holding_another_run_is_refused_unless_asked(trained_run, toy_dataset, capsys):
    before = weights(trained_run)
    assert train.main(tiny_args(toy_dataset, trained_run, "--epochs", "1")) == 1
    assert "--resume to continue it, --overwrite to replace it" in capsys.readouterr().err
    after = weights(trained_run)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_without_a_checkpoint_is_a_clear_error(toy_dataset, tmp_path, capsys):
    assert train.main(tiny_args(toy_dataset, tmp_path / "empty", "--resume")) == 1
    assert "holds no resumable checkpoint" in capsys.readouterr().err


def test_a_missing_column_is_named(toy_dataset, tmp_path, capsys):
    assert train.main(tiny_args(toy_dataset, tmp_path / "out", "--label-column", "category")) == 1
    assert "no column 'category'" in capsys.readouterr().err


def test_labels_out_of_range_are_refused(tmp_path, capsys):
    # -1 is how many datasets mark "unlabelled"; it must not reach the loss silently
    bad = colour_split(16, 0).cast_column("label", datasets.Value("int64"))
    bad = bad.map(lambda row, i: {"label": -1 if i == 3 else row["label"]}, with_indices=True)
    path = tmp_path / "bad"
    datasets.DatasetDict(train=bad, test=colour_split(8, 1)).save_to_disk(str(path))
    assert train.main(tiny_args(str(path), tmp_path / "out", "--epochs", "1")) == 1
    assert "has label -1, outside [0, 3)" in capsys.readouterr().err


def broken_image_dataset(tmp_path) -> str:
    """An imagefolder with one file that is not an image."""
    root = tmp_path / "folder"
    for split, count in (("train", 16), ("test", 6)):
        for i in range(count):
            folder = root / split / ["r", "g", "b"][i % 3]
            folder.mkdir(parents=True, exist_ok=True)
            array = np.full((40, 40, 3), 40, dtype=np.uint8)
            array[..., i % 3] = 220
            Image.fromarray(array).save(folder / f"{i}.png")
    (root / "train" / "r" / "broken.png").write_bytes(b"not a png at all")
    return str(root)


def test_an_unreadable_image_stops_the_run_with_its_file_name(tmp_path, capsys):
    root = broken_image_dataset(tmp_path)
    code = train.main(tiny_args("imagefolder", tmp_path / "out", "--data-dir", root, "--epochs", "1"))
    assert code == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "--on-bad-image skip" in err


def test_unreadable_images_can_be_skipped_and_counted(tmp_path):
    root = broken_image_dataset(tmp_path)
    args = tiny_args("imagefolder", tmp_path / "out", "--data-dir", root, "--epochs", "1", "--on-bad-image", "skip")
    assert train.main(args) == 0
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert results["skipped_images"] == 1


def test_a_non_finite_loss_stops_at_that_step_and_keeps_the_last_good_checkpoint(
    toy_dataset, tmp_path, monkeypatch, capsys
):
    from modeling_lastvit import LastViTForImageClassification

    forward = LastViTForImageClassification.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 4:
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(LastViTForImageClassification, "forward", poisoned)
    out = tmp_path / "out"
    assert train.main(tiny_args(toy_dataset, out, "--epochs", "1", "--save-every", "2")) == 1
    err = capsys.readouterr().err
    assert "the loss became nan at step 4" in err and "checkpoints/last" in err
    assert json.loads((out / "checkpoints/last/trainer_state.json").read_text())["step"] == 2
    last = load_file(str(out / "checkpoints/last/model.safetensors"))
    assert all(torch.isfinite(t).all() for t in last.values())


def test_lora_adapters_reload_and_merge_to_the_trained_logits(trained_run, toy_dataset, tmp_path):
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForImageClassification

    out = tmp_path / "lora"
    assert (
        finetune_peft.main(
            [
                "--model-name-or-path",
                str(trained_run),
                "--dataset",
                toy_dataset,
                "--batch-size",
                "8",
                "--epochs",
                "1",
                "--no-progress",
                "--output-dir",
                str(out),
                "--merge",
                "--learning-rate",
                "1e-2",
            ]
        )
        == 0
    )
    assert {"adapter_config.json", "adapter_model.safetensors", "labels.json", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    pixel_values = torch.randn(2, 3, 32, 32)

    def base():
        return AutoModelForImageClassification.from_pretrained(trained_run, trust_remote_code=True).eval()

    # the trained model: the PEFT wrapper with the state Accelerate checkpointed at the last step
    trained = get_peft_model(base(), peft_config(PeftArguments()))
    trained.load_state_dict(load_file(str(out / "checkpoints/last/model.safetensors")))
    reloaded = PeftModel.from_pretrained(base(), out).eval()
    merged = AutoModelForImageClassification.from_pretrained(out / "merged", trust_remote_code=True).eval()
    with torch.no_grad():
        expected = trained.eval()(pixel_values=pixel_values).logits
        torch.testing.assert_close(reloaded(pixel_values=pixel_values).logits, expected)
        torch.testing.assert_close(merged(pixel_values=pixel_values).logits, expected, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(base()(pixel_values=pixel_values).logits, expected)  # the adapter changed it
    # the adapter folder is publishable: it loads on its base in a fresh process without the package
    report = hub.validate_folder(out)
    assert report["base"] == str(trained_run) and report["output_shape"] == [1, 3]


class StandInHubApi:
    """Records calls instead of reaching the Hub (no network here): the upload itself is not tested."""

    def __init__(self):
        self.calls = []

    def whoami(self):
        self.calls.append(("whoami",))
        return {"name": "someone"}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return "https://example.invalid/commit/0"


def test_publish_validates_in_a_fresh_process_then_uploads_through_the_api(trained_run):
    report = hub.validate_folder(trained_run)
    assert report == {
        "class": "LastViTForImageClassification",
        "base": str(trained_run.resolve()),
        "output_shape": [1, 3],
    }
    api = StandInHubApi()
    url = hub.publish(trained_run, "someone/lastvit-tiny", api=api)
    assert url == "https://example.invalid/commit/0"
    (first,), (_, repo_id, create_kwargs), (_, upload) = api.calls
    assert first == "whoami"  # the account is checked before anything else
    assert repo_id == "someone/lastvit-tiny" and create_kwargs["exist_ok"]
    assert upload["repo_id"] == "someone/lastvit-tiny" and upload["folder_path"] == str(trained_run)
    assert "checkpoints/*" in upload["ignore_patterns"] and "best/*" in upload["ignore_patterns"]


def test_publish_refuses_incomplete_folders_and_cards(trained_run, tmp_path):
    import shutil

    with pytest.raises(ModelPathError, match="holds no config.json"):
        hub.validate_folder(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(hub.PublishError, match="lacks"):
        hub.validate_folder(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy, ignore=shutil.ignore_patterns("checkpoints", "best"))
    card = (copy / "README.md").read_text().replace("- custom_code\n", "")
    (copy / "README.md").write_text(card)
    with pytest.raises(hub.PublishError, match="custom_code"):
        hub.validate_folder(copy)
    assert publish_cli.main([str(trained_run), "--dry-run"]) == 0


def test_accelerate_launch_runs_the_trainer_with_the_shipped_cpu_config(toy_dataset, tmp_path):
    config = REPO / "training_scripts" / "accelerate_configs" / "single_cpu.yaml"
    out = tmp_path / "launched"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(config),
            "-m",
            "training_scripts.train",
            *tiny_args(toy_dataset, out, "--epochs", "1"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "eval_results.json").read_text())["step"] == 6


def test_two_process_ddp_on_cpu_shards_the_data_and_checkpoints_every_rank(toy_dataset, tmp_path):
    """`accelerate launch` needs MPI for multi-CPU, so the CPU DDP check uses torchrun with
    ACCELERATE_USE_CPU=1; the GPU launch configs run the same code path with NCCL."""
    import os

    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29631",
            "-m",
            "training_scripts.train",
            *tiny_args(toy_dataset, out, "--epochs", "1"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["step"] == 3  # 48 examples / (2 processes x batch 8)
    assert results["eval_examples"] == 12  # gather_for_metrics drops the padding duplicates
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in (out / "checkpoints/last").iterdir()}
    assert result.stdout.count('"best_top1"') == 1  # results printed once, by the main process


@pytest.mark.parametrize("name", ["single_cpu", "single_gpu_bf16", "multi_gpu", "fsdp"])
def test_shipped_launch_configs_are_valid_accelerate_configs(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO / "training_scripts" / "accelerate_configs" / f"{name}.yaml"))
    assert config.num_processes >= 1
    assert math.isfinite(config.num_machines)


def test_on_the_built_in_scenes_a_run_trains_resumes_and_publishes_to_a_folder(tmp_path):
    """The whole path on the default data: scenes generated offline, train, evaluate, save, resume, validate."""
    from accelerate.state import AcceleratorState, PartialState

    out = tmp_path / "scenes-run"
    common = [
        "--dataset",
        "scenes",
        "--scenes-train",
        "64",
        "--scenes-test",
        "16",
        "--preset",
        "micro",
        "--batch-size",
        "16",
        "--no-progress",
        "--output-dir",
        str(out),
    ]
    assert train.main([*common, "--epochs", "2", "--save-every", "4", "--stop-after", "4"]) == 0  # a time-boxed job
    assert json.loads((out / "checkpoints/last/trainer_state.json").read_text())["step"] == 4
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    assert train.main([*common, "--epochs", "2", "--resume"]) == 0
    assert json.loads((out / "eval_results.json").read_text())["step"] == 8
    report = hub.validate_folder(out)
    assert report["class"] == "LastViTForImageClassification" and report["output_shape"] == [1, 7]
