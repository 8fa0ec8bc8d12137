"""`lastvit-convert`: complete folders for every source kind, reloaded in a fresh process where the
package cannot be imported; one-line errors; `--help` without torch."""

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import save_file

from training_scripts.convert import build_parser, main

from .conversion_helpers import (
    ATOL,
    CLIP_MEAN,
    HF_PROCESSORS,
    IMAGENET_MEAN,
    NATIVE,
    REPO_ROOT,
    clip_reference,
    detectron2_file,
    dino_reference,
    hf_source,
    pixels,
    save_torchscript_clip,
    torchvision_reference,
)
from .reference_vits import dino_training_checkpoint


@pytest.fixture(scope="module")
def converted_folders(tmp_path_factory):
    """Converts one source of each kind with the CLI; records what a fresh process must reproduce."""
    root = tmp_path_factory.mktemp("convert")
    cases = {}

    def add(name, argv, auto_class, output, expected_fn, sizes=(NATIVE, (48, 40))):
        folder = root / name
        assert main([*argv, "--output", str(folder)]) == 0
        inputs = {f"x_{h}x{w}": pixels((h, w), seed=11) for h, w in sizes}
        with torch.no_grad():
            expected = {f"y_{key[2:]}": expected_fn(x) for key, x in inputs.items()}
        save_file({**inputs, **expected}, str(root / f"{name}.safetensors"))
        cases[name] = {
            "folder": str(folder),
            "auto_class": auto_class,
            "output": output,
            "tensors": str(root / f"{name}.safetensors"),
        }

    for name in (
        "ViTForImageClassification",
        "DeiTForImageClassificationWithTeacher",
        "Dinov2WithRegistersForImageClassification",
        "CLIPVisionModelWithProjection",
    ):
        source = hf_source(name)
        source.save_pretrained(root / f"src_{name}")
        HF_PROCESSORS[name]().save_pretrained(root / f"src_{name}")
        interpolate = {} if "Dinov2" in name else {"interpolate_pos_encoding": True}
        field = "image_embeds" if name.startswith("CLIP") else "logits"
        add(
            f"hf_{name}",
            ["--from", "hf", "--input", str(root / f"src_{name}")],
            "AutoModel" if name.startswith("CLIP") else "AutoModelForImageClassification",
            field,
            lambda x, s=source, f=field, kw=interpolate: getattr(s(pixel_values=x, **kw), f),
        )

    tv = torchvision_reference()
    add(
        "torchvision_lastvit",
        [
            "--from",
            "torchvision",
            "--input",
            str(detectron2_file(root / "ViT_190k.pth", tv)),
            "--num-heads",
            "4",
            "--pooling",
            "lazystrike",
            "--top-k",
            "1",
            "--released",
            "lastvit-vit-b16-supervised",
        ],
        "AutoModelForImageClassification",
        "logits",
        lambda x: tv(x, lazystrike_k=1),
    )

    dino = dino_reference()
    torch.save(dino_training_checkpoint(dino), root / "dino0080.pth")
    add(
        "dino_lastvit",
        [
            "--from",
            "dino",
            "--input",
            str(root / "dino0080.pth"),
            "--num-heads",
            "4",
            "--pooling",
            "lazystrike",
            "--top-k",
            "1",
            "--checkpoint-key",
            "teacher",
        ],
        "AutoModel",
        "last_hidden_state",
        dino,
    )

    clip = clip_reference()
    torch.save({"state_dict": clip.state_dict()}, root / "clip.pt")
    add(
        "openclip",
        ["--from", "openclip", "--input", str(root / "clip.pt"), "--num-heads", "4"],
        "AutoModel",
        "image_embeds",
        clip,
    )

    scripted = clip_reference()
    save_torchscript_clip(root / "openai_b_16.pt", scripted)
    scripted.half().float()
    add(
        "torchscript_lastvit",
        [
            "--from",
            "openclip",
            "--input",
            str(root / "openai_b_16.pt"),
            "--num-heads",
            "4",
            "--pooling",
            "lazystrike",
            "--top-k",
            "1",
        ],
        "AutoModel",
        "image_embeds",
        lambda x: scripted.visual(x, lazystrike_k=1),
    )
    return cases


def test_cli_writes_a_complete_folder_for_every_source_kind(converted_folders):
    for name, case in converted_folders.items():
        folder = Path(case["folder"])
        files = {p.name for p in folder.iterdir()}
        assert {
            "model.safetensors",
            "config.json",
            "preprocessor_config.json",
            "README.md",
            "modeling_lastvit.py",
            "configuration_lastvit.py",
            "pooling_lastvit.py",
            "image_processing_lastvit.py",
        } <= files, name
        assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))], name
        config = json.loads((folder / "config.json").read_text())
        assert {"AutoConfig", "AutoModel", "AutoModelForImageClassification"} <= set(config["auto_map"]), name
        processor = json.loads((folder / "preprocessor_config.json").read_text())
        assert processor["auto_map"]["AutoImageProcessor"] == "image_processing_lastvit.LastViTImageProcessor"
        expected_mean = {
            "torchvision_lastvit": IMAGENET_MEAN,
            "dino_lastvit": IMAGENET_MEAN,
            "openclip": CLIP_MEAN,
            "torchscript_lastvit": CLIP_MEAN,
        }.get(name)
        if expected_mean:
            assert processor["image_mean"] == expected_mean, name
        card = ModelCard.load(folder / "README.md")
        assert card.data.library_name == "transformers" and "custom_code" in card.data.tags
        assert "model-index" not in card.content and "lastvit-convert --from" in card.content
        assert "| round trip (saved folder reloaded vs the converted model) | 0.00e+00 |" in card.content, name
    supervised = ModelCard.load(Path(converted_folders["torchvision_lastvit"]["folder"]) / "README.md")
    assert "42.7" in supervised.content and supervised.data.license == "mit"  # --released writes that card


def test_cli_reports_parity_for_transformers_sources(converted_folders):
    card = (Path(converted_folders["hf_DeiTForImageClassificationWithTeacher"]["folder"]) / "README.md").read_text()
    assert "| logits vs the transformers source |" in card


def test_cli_errors_are_one_clear_line_and_never_clobber_a_folder(tmp_path, capsys, converted_folders):
    occupied = tmp_path / "out"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    source = str(Path(converted_folders["openclip"]["folder"]).parent / "clip.pt")
    with pytest.raises(SystemExit) as exit_info:
        main(["--from", "openclip", "--input", source, "--output", str(occupied), "--num-heads", "4"])
    assert exit_info.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (occupied / "keep.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    with pytest.raises(SystemExit):
        main(["--from", "torchvision", "--input", source, "--output", str(tmp_path / "x")])
    assert "no 'conv_proj.weight'" in capsys.readouterr().err


_FRESH_PROCESS = textwrap.dedent(
    """
    import importlib, importlib.util, json, os, sys
    repo = os.path.realpath(sys.argv[1])
    inside = lambda p: (os.path.realpath(os.path.abspath(p or os.curdir)) + os.sep).startswith(repo + os.sep)  # noqa: E731
    sys.path[:] = [p for p in sys.path if not inside(p)]
    def _names(f):
        return " ".join(str(n) for n in (getattr(f, "__name__", ""), getattr(f, "__module__", ""), type(f).__name__))
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in _names(f).lower()]
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()
    assert importlib.util.find_spec("modeling_lastvit") is None, "the package is importable"
    import torch, transformers
    from safetensors.torch import load_file
    worst = {}
    for name, case in json.loads(sys.argv[2]).items():
        auto_class = getattr(transformers, case["auto_class"])
        model = auto_class.from_pretrained(case["folder"], trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model)
        tensors = load_file(case["tensors"])
        for key in [k for k in tensors if k.startswith("x_")]:
            with torch.no_grad():
                actual = getattr(model(tensors[key]), case["output"])
            expected = tensors["y_" + key[2:]]
            assert actual.shape == expected.shape, (name, key, actual.shape, expected.shape)
            worst[f"{name} {key[2:]}"] = (actual - expected).abs().max().item()
    assert not [m for m in sys.modules if m.split(".")[0] == "modeling_lastvit"], "package imported"
    print("DIFFS " + json.dumps(worst))
    """
)


def test_converted_folders_reproduce_the_sources_in_a_fresh_process_without_the_package(tmp_path, converted_folders):
    env = {
        **os.environ,
        "PYTHONPATH": "",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(REPO_ROOT), json.dumps(converted_folders)],
        cwd=tmp_path,
        env=env,
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    diffs = json.loads(result.stdout.split("DIFFS ", 1)[1])
    assert len(diffs) == 2 * len(converted_folders)
    too_far = {case: diff for case, diff in diffs.items() if diff > ATOL}
    assert not too_far, too_far


def test_console_script_is_declared_and_documents_every_flag():
    assert 'lastvit-convert = "training_scripts.convert:main"' in (REPO_ROOT / "pyproject.toml").read_text()
    text = build_parser().format_help()
    for flag in (
        "--from",
        "--input",
        "--output",
        "--pooling",
        "--top-k",
        "--top-k-ratio",
        "--num-labels",
        "--num-heads",
        "--checkpoint-key",
        "--clip-activation",
        "--trust-pickle",
        "--released",
    ):
        assert flag in text
    assert "UNSAFE" in text  # --trust-pickle says what it risks
    installed = [ep for ep in entry_points(group="console_scripts") if ep.name == "lastvit-convert"]
    if installed:  # `pip install -e .` has run
        assert installed[0].load() is main


# --------------------------------------------------------------------------------------------
# --help without torch, and inputs that are missing or broken
# --------------------------------------------------------------------------------------------


def run_python(code, *args):
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False, timeout=300, cwd=REPO_ROOT
    )


def test_python_dash_m_cli_help_works():
    result = subprocess.run(
        [sys.executable, "-m", "training_scripts.convert", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage: lastvit-convert" in result.stdout and "--trust-pickle" in result.stdout


_HELP_IMPORTS_TORCH = textwrap.dedent(
    """
    import runpy, sys
    sys.argv = ["lastvit-convert", "--help"]
    try:
        runpy.run_module("training_scripts.convert", run_name="__main__")
    except SystemExit:
        pass
    print("TORCH", "torch" in sys.modules)
    """
)


def test_lastvit_convert_help_does_not_import_torch():
    result = run_python(_HELP_IMPORTS_TORCH)
    assert "TORCH False" in result.stdout, result.stdout + result.stderr[-2000:]


def truncated_copy(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def assert_one_line_error(capsys, argv, *expected):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lastvit-convert: error: "), err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, (text, err)


def test_a_missing_input_is_one_line_naming_it(tmp_path, capsys):
    missing = tmp_path / "no" / "such.pth"
    assert_one_line_error(
        capsys, ["--from", "dino", "--input", str(missing), "--output", str(tmp_path / "o")], str(missing), "--input"
    )
    assert_one_line_error(
        capsys,
        ["--from", "hf", "--input", str(tmp_path / "no-folder"), "--output", str(tmp_path / "o")],
        "no-folder",
        "save_pretrained",
    )
    assert not (tmp_path / "o").exists()


def test_truncated_checkpoint_files_are_one_line_naming_them(tmp_path, capsys, converted_folders):
    clip_pt = Path(converted_folders["openclip"]["folder"]).parent / "clip.pt"
    weights = Path(converted_folders["openclip"]["folder"]) / "model.safetensors"
    for broken in (
        truncated_copy(clip_pt, tmp_path / "cut.pt"),
        truncated_copy(weights, tmp_path / "cut.safetensors"),
    ):
        argv = ["--from", "openclip", "--input", str(broken), "--num-heads", "4", "--output", str(tmp_path / "o")]
        assert_one_line_error(capsys, argv, str(broken), "truncated or corrupt", "download or copy it again")
    assert not (tmp_path / "o").exists()


def test_a_transformers_folder_with_a_truncated_safetensors_file_is_one_line_naming_it(
    tmp_path, capsys, converted_folders
):
    source = Path(converted_folders["hf_ViTForImageClassification"]["folder"]).parent / "src_ViTForImageClassification"
    broken = tmp_path / "vit"
    broken.mkdir()
    for file in source.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    truncated_copy(source / "model.safetensors", broken / "model.safetensors")
    argv = ["--from", "hf", "--input", str(broken), "--output", str(tmp_path / "o")]
    assert_one_line_error(capsys, argv, str(broken / "model.safetensors"), "truncated or corrupt")
    (broken / "config.json").unlink()
    assert_one_line_error(capsys, argv, str(broken), "no config.json")
