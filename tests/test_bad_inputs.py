"""What a careless or hostile user can give the commands (issue 18): every bad input stops in one line
that names the file or flag and the fix, before any output is touched; nothing a folder carries runs
without --trust-remote-code; nothing is silently wrong. Tiny models and generated imagefolders, on the
CPU. (Killing a run and resuming it bit-identically is `tests/test_training.py`'s.)"""

import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lastvit import hub
from lastvit.data.loading import DataError, ImageTransform, TransformedSplit, to_rgb
from modeling_lastvit import LastViTForImageClassification, LastViTImageProcessor
from training_scripts import convert, evaluate, finetune_peft, publish, train

from .tiny import tiny_config

COLOURS = {"blue": (40, 60, 220), "green": (40, 200, 60), "red": (220, 50, 40)}


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState, PartialState

    yield
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


def one_line(capsys) -> str:
    """The command's stderr, which must be one line without a traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:") or "Traceback" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def colour_image(colour, seed: int, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    array = np.clip(np.asarray(colour) + rng.integers(-30, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def write_imagefolder(root: Path, splits=("train", "test"), per_class=(6, 2), names=COLOURS) -> Path:
    for split, count in zip(splits, per_class, strict=True):
        for name in names:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                colour_image(COLOURS.get(name, (128, 128, 128)), hash((split, name, i)) % 2**31).save(
                    root / split / name / f"{i}.png"
                )
    return root


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def train_args(data: Path, out: Path, *extra) -> list[str]:
    return [
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(data),
        "--preset",
        "tiny",
        "--image-size",
        "32",
        "--patch-size",
        "8",
        "--batch-size",
        "6",
        "--epochs",
        "1",
        "--no-progress",
        "--output-dir",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_imagefolder(tmp_path_factory.mktemp("data") / "colours")


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """One finished 1-epoch run (3 steps) that the tests copy before they try to damage it."""
    from accelerate.state import AcceleratorState, PartialState

    out = tmp_path_factory.mktemp("runs") / "run"
    assert train.main(train_args(data, out, "--save-every", "1")) == 0
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    return out


@pytest.fixture
def old_run(run, tmp_path) -> Path:
    copy = tmp_path / "old"
    shutil.copytree(run, copy)
    return copy


# --------------------------------------------------------------------------- 1. --overwrite loses nothing


@pytest.mark.parametrize("command", ["train", "finetune-peft"])
@pytest.mark.parametrize(
    "bad",
    [
        ("--data-dir", "data_typo"),
        ("--model-name-or-path", "no/such/folder"),
    ],
    ids=["data-dir typo", "model typo"],
)
def test_overwrite_with_a_bad_input_leaves_the_old_run_byte_identical(command, bad, data, run, old_run, capsys):
    before = snapshot(old_run)
    args = train_args(data, old_run, "--overwrite")
    if command == "finetune-peft":
        args += ["--model-name-or-path", str(run)]
    flag, value = bad
    args += [flag, value]  # argparse keeps the last value
    main = train.main if command == "train" else finetune_peft.main
    assert main(args) == 1
    assert flag in one_line(capsys)
    assert snapshot(old_run) == before


def test_overwrite_that_fails_after_the_start_puts_the_old_run_back(data, old_run, tmp_path, capsys):
    broken = write_imagefolder(tmp_path / "broken")
    (broken / "train" / "red" / "0.png").write_bytes(b"not a png")
    before = snapshot(old_run)
    assert train.main(train_args(broken, old_run, "--overwrite")) == 1
    assert "0.png" in one_line(capsys)
    assert snapshot(old_run) == before
    assert not any(p.name.startswith(".old") for p in old_run.parent.iterdir())


def test_overwrite_with_good_inputs_replaces_the_run(data, old_run):
    assert train.main(train_args(data, old_run, "--overwrite", "--seed", "3")) == 0
    state = json.loads((old_run / "checkpoints/last/trainer_state.json").read_text())
    assert state["settings"]["seed"] == 3
    assert not (old_run.parent / ".old.replaced").exists()


# --------------------------------------------------------------------------- 2. class names


@pytest.fixture(scope="module")
def named_model(tmp_path_factory):
    """A tiny classifier with classes blue/green/red and a test imagefolder labelled by its own
    predictions (so its top-1 is exactly 1.0 when the labels are matched right)."""
    torch.manual_seed(0)
    names = sorted(COLOURS)
    model = LastViTForImageClassification(
        tiny_config(num_labels=3, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    ).eval()
    processor = LastViTImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})
    transform = ImageTransform(size=32, mean=tuple(processor.image_mean), std=tuple(processor.image_std), train=False)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(120)]
    with torch.no_grad():
        logits = model(pixel_values=torch.stack([transform(im, i, 0) for i, im in enumerate(images)])).logits
        for _ in range(100):  # move the biases until every class is predicted at least twice
            counts = np.bincount((logits + model.classifier.bias).argmax(1).numpy(), minlength=3)
            if counts.min() >= 2:
                break
            model.classifier.bias[int(counts.argmin())] += 0.05
        predicted = (logits + model.classifier.bias - model.classifier.bias).argmax(1)
        predicted = model(
            pixel_values=torch.stack([transform(im, i, 0) for i, im in enumerate(images)])
        ).logits.argmax(1)
    root = tmp_path_factory.mktemp("named")
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    for i, (image, label) in enumerate(zip(images, predicted.tolist(), strict=True)):
        folder = root / "data" / "test" / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i}.png")
    return root / "model", root / "data"


def evaluate_top1(model, data, out, *extra) -> float:
    assert (
        evaluate.main(
            [
                "--model",
                str(model),
                "--dataset",
                str(data),
                "--output-dir",
                str(out),
                "--no-progress",
                "--probe-images",
                "2",
                *extra,
            ]
        )
        == 0
    )
    return json.loads((out / "report.json").read_text())["classification"]["top1"]


def as_saved_dataset(data: Path, out: Path, names: list[str]) -> Path:
    """The imagefolder as a saved DatasetDict whose ClassLabel lists `names` (same images, same true classes)."""
    import datasets

    rows = {"image": [], "label": []}
    for folder in sorted((data / "test").iterdir()):
        for path in sorted(folder.iterdir()):
            rows["image"].append(Image.open(path).copy())
            rows["label"].append(names.index(folder.name))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    datasets.DatasetDict(test=datasets.Dataset.from_dict(rows, features=features)).save_to_disk(str(out))
    return out


def test_classes_in_another_order_are_matched_by_name(named_model, tmp_path, capsys):
    model, data = named_model
    assert evaluate_top1(model, data, tmp_path / "same") == 1.0  # folder order = the model's order
    permuted = as_saved_dataset(data, tmp_path / "permuted", ["red", "blue", "green"])
    assert evaluate_top1(model, permuted, tmp_path / "remapped") == 1.0
    assert "matched by name" in capsys.readouterr().out
    assert evaluate_top1(model, permuted, tmp_path / "by-index", "--match-labels-by-index") < 1.0


@pytest.mark.parametrize("change", ["renamed", "extra class", "missing class"])
def test_other_classes_stop_naming_both_sides(change, named_model, tmp_path, capsys):
    model, data = named_model
    changed = tmp_path / "data"
    shutil.copytree(data, changed)
    if change == "renamed":
        (changed / "test" / "blue").rename(changed / "test" / "z_blue")
    elif change == "extra class":
        shutil.copytree(changed / "test" / "red", changed / "test" / "yellow")
    else:
        shutil.rmtree(changed / "test" / "green")
    assert evaluate.main(["--model", str(model), "--dataset", str(changed), "--output-dir", str(tmp_path / "e")]) == 1
    line = one_line(capsys)
    assert "['blue', 'green', 'red']" in line and "--match-labels-by-index" in line
    assert not (tmp_path / "e").exists()


def test_fine_tuning_a_classifier_follows_the_class_names(run, capsys):
    from lastvit.training.config import TrainConfig
    from lastvit.training.trainer import build_model

    base = LastViTForImageClassification.from_pretrained(run).classifier
    config = TrainConfig(model_name_or_path=str(run), output_dir="unused")
    permuted = build_model(config, ["red", "blue", "green"]).classifier  # the base's are blue, green, red
    assert "matched by name" in capsys.readouterr().out
    torch.testing.assert_close(permuted.weight, base.weight[[2, 0, 1]])
    torch.testing.assert_close(permuted.bias, base.bias[[2, 0, 1]])
    other = build_model(config, ["cat", "dog", "fox"]).classifier
    assert "starts afresh" in capsys.readouterr().out
    assert not torch.allclose(other.weight, base.weight)


# --------------------------------------------------------------------------- 3. no code from a folder


def tampered(folder: Path, marker: Path) -> Path:
    code = folder / "configuration_lastvit.py"
    code.write_text(f"open({str(marker)!r}, 'w').write('ran')\n" + code.read_text())
    return folder


def test_evaluate_runs_no_code_from_the_model_folder(named_model, tmp_path):
    model, data = named_model
    folder = tampered(Path(shutil.copytree(model, tmp_path / "model")), tmp_path / "MARKER")
    evaluate_top1(folder, data, tmp_path / "e")
    assert not (tmp_path / "MARKER").exists()


def test_training_from_a_folder_runs_none_of_its_code(run, data, tmp_path):
    folder = tampered(
        Path(shutil.copytree(run, tmp_path / "base", ignore=shutil.ignore_patterns("checkpoints"))),
        tmp_path / "MARKER",
    )
    assert train.main(train_args(data, tmp_path / "ft", "--model-name-or-path", str(folder))) == 0
    assert not (tmp_path / "MARKER").exists()


def test_a_folder_that_needs_its_own_code_asks_for_trust_remote_code(tmp_path, named_model, capsys):
    model, data = named_model
    folder = Path(shutil.copytree(model, tmp_path / "custom"))
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="somebody-elses-vit", auto_map={"AutoConfig": "configuration_lastvit.LastViTConfig"})
    (folder / "config.json").write_text(json.dumps(config))
    assert evaluate.main(["--model", str(folder), "--dataset", str(data), "--output-dir", str(tmp_path / "e")]) == 1
    assert "--trust-remote-code" in one_line(capsys)


# --------------------------------------------------------------------------- 4. --resume


@pytest.mark.parametrize(
    "changed",
    [("--batch-size", "3"), ("--learning-rate", "0.01"), ("--preset", "micro"), ("--seed", "5"), ("--epochs", "2")],
    ids=lambda c: c[0],
)
def test_resume_with_changed_settings_stops_listing_them(changed, data, old_run, capsys):
    before = snapshot(old_run)
    assert train.main(train_args(data, old_run, "--resume", *changed)) == 1
    line = one_line(capsys)
    assert changed[0] in line and "differ" in line
    assert snapshot(old_run) == before


def test_resume_may_change_logging_and_evaluation_frequency(data, run, tmp_path):
    out = tmp_path / "split"
    assert train.main(train_args(data, out, "--save-every", "1", "--stop-after", "1")) == 0
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    assert train.main(train_args(data, out, "--resume", "--eval-every", "2", "--save-every", "2")) == 0
    assert json.loads((out / "eval_results.json").read_text())["step"] == 3


def test_a_run_killed_inside_its_first_checkpoint_restarts_with_resume(data, tmp_path, capsys):
    out = tmp_path / "killed"
    (out / "checkpoints" / ".last.staging").mkdir(parents=True)  # what a kill during the first save leaves
    assert train.main(train_args(data, out)) == 1
    assert "pass --resume to start it again in place" in one_line(capsys)
    assert train.main(train_args(data, out, "--resume")) == 0
    assert "starting the run again from step 0" in capsys.readouterr().out
    assert json.loads((out / "eval_results.json").read_text())["step"] == 3


# --------------------------------------------------------------------------- 5. adapters and publishing


@pytest.fixture(scope="module")
def adapter(run, data, tmp_path_factory, monkeypatch_module):
    """The README's flow: a relative base path, as a user types it."""
    from accelerate.state import AcceleratorState, PartialState

    monkeypatch_module.chdir(run.parent)
    out = tmp_path_factory.mktemp("adapters") / "run-lora"
    args = train_args(data, out, "--model-name-or-path", run.name, "--method", "lora")
    assert finetune_peft.main(args) == 0
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_an_adapter_records_its_base_as_an_absolute_path(adapter, run):
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(run.resolve())


def test_publish_refuses_a_local_base_unless_its_hub_id_is_named(adapter, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # elsewhere than where the adapter was trained
    assert publish.main([str(adapter), "--dry-run"]) == 1
    assert "--base-model-id" in one_line(capsys)
    assert publish.main([str(adapter), "--dry-run", "--base-model-id", "me/lastvit-tiny"]) == 0
    assert "ready to publish (an adapter on me/lastvit-tiny)" in capsys.readouterr().out


def test_publish_uploads_an_adapter_naming_its_base_by_hub_id(adapter, run):
    uploaded = {}

    class StandIn:
        def whoami(self):
            return {"name": "me"}

        def create_repo(self, repo_id, **kwargs):
            pass

        def upload_folder(self, folder_path, **kwargs):
            uploaded["config"] = json.loads((Path(folder_path) / "adapter_config.json").read_text())
            uploaded["card"] = (Path(folder_path) / "README.md").read_text()
            return "url"

    hub.publish(adapter, "me/run-lora", api=StandIn(), base_model_id="me/lastvit-tiny")
    assert uploaded["config"]["base_model_name_or_path"] == "me/lastvit-tiny"
    assert '"me/lastvit-tiny"' in uploaded["card"] and str(run.resolve()) not in uploaded["card"]
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] != "me/lastvit-tiny"


@pytest.mark.parametrize("repo_id", ["../../etc/passwd", "me/na me", "a/b/c", "me/name-"])
@pytest.mark.parametrize("flag", ["--repo-id", "--base-model-id"])
def test_invalid_repo_ids_are_refused_in_one_line_before_anything_else(repo_id, flag, tmp_path, capsys):
    assert publish.main([str(tmp_path / "nowhere"), "--dry-run", flag, repo_id]) == 1
    line = one_line(capsys)
    assert flag in line and "not a Hub repository id" in line


def test_train_push_to_hub_validates_the_repo_id_first(data, tmp_path, capsys):
    assert train.main(train_args(data, tmp_path / "o", "--push-to-hub", "a/b/c")) == 1
    assert "--push-to-hub" in one_line(capsys)
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- 6. one line, not a traceback


def test_train_push_to_hub_without_a_token_names_only_flags_train_has(data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    assert train.main(train_args(data, tmp_path / "o", "--push-to-hub", "me/model")) == 1
    line = one_line(capsys)
    assert "no Hugging Face token" in line and "--token" not in line and "--dry-run" not in line


def bad_model_folder(kind: str, source: Path, folder: Path) -> Path:
    shutil.copytree(source, folder)
    if kind == "invalid JSON":
        (folder / "config.json").write_text('{"model_type": ')
    elif kind == "invalid config":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 30}))
    elif kind == "truncated safetensors":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    elif kind == "malicious pickle":
        (folder / "model.safetensors").unlink()
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Marker(folder.parent / "PWNED")}))
    return folder


class Marker:
    """A pickle that would create a file if anything unpickled it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


MODEL_PROBLEMS = ["invalid JSON", "invalid config", "truncated safetensors", "malicious pickle"]


@pytest.mark.parametrize("kind", MODEL_PROBLEMS)
def test_a_bad_model_folder_given_to_evaluate_is_one_line(kind, named_model, tmp_path, capsys):
    model, data = named_model
    folder = bad_model_folder(kind, model, tmp_path / "bad")
    assert evaluate.main(["--model", str(folder), "--dataset", str(data), "--output-dir", str(tmp_path / "e")]) == 1
    assert str(folder) in one_line(capsys)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("kind", MODEL_PROBLEMS)
def test_a_bad_model_folder_given_to_train_is_one_line(kind, named_model, data, tmp_path, capsys):
    model, _ = named_model
    folder = bad_model_folder(kind, model, tmp_path / "bad")
    assert train.main(train_args(data, tmp_path / "o", "--model-name-or-path", str(folder))) == 1
    assert str(folder) in one_line(capsys)
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "o").exists()


def test_a_missing_data_dir_is_one_line(tmp_path, capsys):
    assert train.main(train_args(tmp_path / "nowhere", tmp_path / "o")) == 1
    assert "--data-dir" in one_line(capsys) and not (tmp_path / "o").exists()


def test_an_unreadable_image_in_evaluate_is_named_or_skipped(named_model, tmp_path, capsys):
    model, data = named_model
    broken = Path(shutil.copytree(data, tmp_path / "data"))
    bad = next((broken / "test" / "red").iterdir())
    bad.write_bytes(b"\x89PNG broken")
    assert evaluate.main(["--model", str(model), "--dataset", str(broken), "--output-dir", str(tmp_path / "e")]) == 1
    line = one_line(capsys)
    assert bad.name in line and "--on-bad-image skip" in line
    assert evaluate_top1(model, broken, tmp_path / "skipped", "--on-bad-image", "skip") == 1.0
    report = json.loads((tmp_path / "skipped" / "report.json").read_text())
    assert [Path(p).name for p in report["skipped_images"]] == [bad.name]
    assert "skipped 1 unreadable images" in capsys.readouterr().out


def test_evaluate_on_a_folder_with_only_a_test_split_needs_no_training_split(named_model, tmp_path):
    model, data = named_model
    assert sorted(p.name for p in data.iterdir()) == ["test"]
    evaluate_top1(model, data, tmp_path / "e")


def crafted_torchscript(path: Path, kind: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        if kind == "global":
            archive.writestr("evil/data.pkl", pickle.dumps({"x": Marker(path.parent / "PWNED")}, protocol=2))
        elif kind == "empty data.pkl":
            archive.writestr("evil/data.pkl", b"")
        else:  # a persistent id with missing fields
            archive.writestr(
                "evil/data.pkl", b"\x80\x02}q\x00X\x01\x00\x00\x00xq\x01(X\x07\x00\x00\x00storageq\x02tq\x03Qs."
            )
        archive.writestr("evil/code/__torch__.py", "")
    return path


@pytest.mark.parametrize("kind", ["global", "empty data.pkl", "short persistent id"])
def test_a_crafted_torchscript_archive_is_one_line_and_runs_nothing(kind, tmp_path, capsys):
    path = crafted_torchscript(tmp_path / "evil.pt", kind)
    with pytest.raises(SystemExit) as exit_:
        convert.main(["--from", "torchvision", "--input", str(path), "--output", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "evil.pt" in err and "--trust-pickle" in err
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- 7 and 10. images


def image_kinds(tmp_path: Path) -> dict:
    gradient = np.linspace(0, 65535, 40 * 40).reshape(40, 40).astype(np.uint16)
    Image.fromarray(gradient).save(tmp_path / "16bit.png")
    Image.fromarray(gradient.astype(np.float32) / 65535, mode="F").save(tmp_path / "float.tiff")
    colour_image((200, 30, 30), 0).convert("L").save(tmp_path / "gray.png")
    colour_image((200, 30, 30), 0).convert("RGBA").save(tmp_path / "rgba.png")
    colour_image((200, 30, 30), 0).convert("P").save(tmp_path / "palette.png")
    colour_image((200, 30, 30), 0, size=1).save(tmp_path / "1x1.png")
    colour_image((200, 30, 30), 0).convert("CMYK").save(tmp_path / "cmyk.jpg")
    return {path.name: path for path in tmp_path.iterdir()}


@pytest.mark.parametrize(
    "name", ["16bit.png", "float.tiff", "gray.png", "rgba.png", "palette.png", "1x1.png", "cmyk.jpg"]
)
def test_every_image_mode_becomes_finite_normalised_rgb(name, tmp_path):
    path = image_kinds(tmp_path)[name]
    transform = ImageTransform(size=32, mean=(0.5,) * 3, std=(0.5,) * 3, train=True)
    pixels = transform(Image.open(path), 0, 0)
    assert pixels.shape == (3, 32, 32) and torch.isfinite(pixels).all()
    assert -1.0 <= pixels.min() and pixels.max() <= 1.0


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    image = Image.open(image_kinds(tmp_path)["16bit.png"])
    assert image.mode.startswith("I")
    rgb = np.asarray(to_rgb(image))
    assert (np.asarray(image.convert("RGB")) == 255).mean() > 0.9  # what Pillow's convert alone does
    assert (rgb == 255).mean() < 0.01 and abs(rgb.mean() - 127.5) < 2


@pytest.mark.parametrize("content", [b"", b"not an image", b"\x89PNG\r\n\x1a\n truncated"])
def test_an_unreadable_training_image_stops_naming_its_file(content, tmp_path):
    import datasets

    path = tmp_path / "bad.png"
    path.write_bytes(content)
    split = datasets.Dataset.from_dict({"image": [str(path)], "label": [0]}).cast_column("image", datasets.Image())
    transform = ImageTransform(size=32, mean=(0.5,) * 3, std=(0.5,) * 3, train=False)
    with pytest.raises(DataError, match=r"bad\.png.*--on-bad-image skip"):
        TransformedSplit(split, transform, "image", "label", skip_bad=False)[0]
    assert TransformedSplit(split, transform, "image", "label", skip_bad=True)[0] is None


def test_an_empty_data_dir_is_one_line(tmp_path, capsys):
    (tmp_path / "empty" / "red").mkdir(parents=True)
    assert train.main(train_args(tmp_path / "empty", tmp_path / "o")) == 1
    assert "holds no files" in one_line(capsys)


@pytest.mark.parametrize(
    ("pixel_values", "says"),
    [
        (torch.full((1, 3, 32, 32), float("nan")), "NaN or Inf"),
        (torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8), "integers"),
        (torch.randint(0, 256, (1, 3, 32, 32)).float(), "reach"),
    ],
    ids=["nan", "uint8", "0..255 floats"],
)
def test_the_model_warns_once_about_meaningless_pixel_values(pixel_values, says, monkeypatch, caplog):
    from modeling_lastvit import modeling_lastvit

    monkeypatch.setitem(modeling_lastvit.PIXEL_CHECKS, "left", 4)
    model = LastViTForImageClassification(tiny_config(num_labels=3)).eval()
    with caplog.at_level("WARNING", logger=modeling_lastvit.logger.name):
        model(pixel_values=torch.randn(1, 3, 32, 32))
        assert not caplog.records
        model(pixel_values=pixel_values)
        model(pixel_values=pixel_values)
    assert len(caplog.records) == 1 and says in caplog.records[0].getMessage()


def test_the_pixel_check_stays_out_of_traced_graphs(monkeypatch):
    from modeling_lastvit import modeling_lastvit

    monkeypatch.setitem(modeling_lastvit.PIXEL_CHECKS, "left", 4)
    model = LastViTForImageClassification(tiny_config(num_labels=3)).eval()
    traced = torch.jit.trace(model.lastvit.embeddings.patch_embeddings, torch.randn(1, 3, 32, 32), check_trace=False)
    assert modeling_lastvit.PIXEL_CHECKS["left"] == 4  # tracing ran no check
    assert "isfinite" not in str(traced.graph)


# --------------------------------------------------------------------------- 8. true texts


def test_finetune_peft_help_shows_the_defaults_the_run_uses(capsys):
    from lastvit.arguments import from_args
    from lastvit.training.config import TrainConfig
    from lastvit.training.peft import FINETUNE_DEFAULTS

    parser = finetune_peft.build_parser()
    config = from_args(TrainConfig, parser.parse_args(["--model-name-or-path", "x", "--output-dir", "o"]))
    helps = {action.dest: action.help for action in parser._actions}
    for name, value in FINETUNE_DEFAULTS.items():
        assert getattr(config, name) == value
        assert f"(default: {value})" in helps[name], helps[name]


def card_problems(card_path: Path) -> list[str]:
    from huggingface_hub import ModelCard

    card = ModelCard.load(card_path)
    title = next(line for line in card.text.splitlines() if line.startswith("# "))
    problems = []
    if not card.data.license:
        problems.append("no license")
    if "[More Information Needed]" in card.content or "PeftType." in card.content:
        problems.append("template text")
    if "PeftType" in title or title.strip() == "#":
        problems.append(f"title {title!r}")
    return problems


def test_every_card_a_run_writes_is_a_real_card(run, adapter):
    cards = [run / "README.md", run / "best" / "README.md", adapter / "README.md", adapter / "best" / "README.md"]
    assert {str(c): card_problems(c) for c in cards} == {str(c): [] for c in cards}
    assert "(LoRA adapter for a LastViT classifier)" in (adapter / "README.md").read_text()
    assert json.loads((adapter / "best" / "labels.json").read_text())["num_labels"] == 3


def vit_source(tmp_path: Path) -> Path:
    """A tiny transformers ViT folder for `lastvit-convert --from hf`."""
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    ViTModel(config).save_pretrained(tmp_path / "vit")
    return tmp_path / "vit"


@pytest.mark.parametrize("licence", ["apache-2.0", None])
def test_converted_cards_carry_the_source_licence(licence, tmp_path, capsys):
    source = vit_source(tmp_path)
    (source / "README.md").write_text("---\nlicense: bsd-3-clause\n---\n# a ViT\n")
    args = ["--from", "hf", "--input", str(source), "--output", str(tmp_path / "out")]
    assert convert.main([*args, *(["--license", licence] if licence else [])]) == 0
    assert card_problems(tmp_path / "out" / "README.md") == []
    from huggingface_hub import ModelCard

    assert ModelCard.load(tmp_path / "out" / "README.md").data.license == (licence or "bsd-3-clause")


def test_a_conversion_without_a_known_licence_says_publish_will_refuse_it(tmp_path, capsys):
    source = vit_source(tmp_path)
    assert convert.main(["--from", "hf", "--input", str(source), "--output", str(tmp_path / "out")]) == 0
    assert "pass --license" in capsys.readouterr().out
    with pytest.raises(hub.PublishError, match="license"):
        hub.validate_folder(tmp_path / "out")


# --------------------------------------------------------------------------- 9. --mixed-precision auto


@pytest.mark.parametrize(
    ("cuda", "capability", "bf16", "expected"),
    [
        (False, None, False, "no"),
        (True, (7, 0), False, "fp16"),
        (True, (7, 5), False, "fp16"),
        (True, (8, 0), True, "bf16"),
        (True, (9, 0), True, "bf16"),
    ],
    ids=["cpu", "V100", "T4", "A100", "H100"],
)
def test_auto_precision_follows_the_device(cuda, capability, bf16, expected, monkeypatch, capsys):
    from lastvit.training import precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert precision.device_precision() == expected
    assert precision.resolve_mixed_precision("auto") == expected
    assert f"--mixed-precision auto: {expected}" in capsys.readouterr().out
    assert precision.resolve_mixed_precision("fp16") == "fp16"  # an explicit choice is kept


def test_a_mixed_fleet_takes_what_every_device_supports():
    from lastvit.training.precision import weakest

    assert weakest(["bf16", "bf16"]) == "bf16"
    assert weakest(["bf16", "fp16", "bf16"]) == "fp16"  # one V100 among A100s
    assert weakest(["bf16", "no"]) == "no"


def test_a_distributed_run_gathers_every_process_choice(monkeypatch):
    from lastvit.training import precision

    class TwoProcesses:
        num_processes, is_main_process = 2, True

        def __init__(self, **kwargs):
            pass

    monkeypatch.setattr(precision, "device_precision", lambda: "bf16")  # this process: an A100
    monkeypatch.setattr("accelerate.PartialState", TwoProcesses)
    monkeypatch.setattr("accelerate.utils.gather_object", lambda objects: ["bf16", "fp16"])
    assert precision.resolve_mixed_precision("auto", say=lambda text: None) == "fp16"


def test_shipped_launch_configs_leave_the_precision_to_auto():
    import yaml

    folder = Path(__file__).resolve().parents[1] / "training_scripts" / "accelerate_configs"
    for path in folder.glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["mixed_precision"] == "no", path.name
        assert "--mixed-precision auto" in path.read_text()
