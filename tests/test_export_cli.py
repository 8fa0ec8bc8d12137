"""lastvit-export: a trained tiny model round-trips into onnxruntime (and torch.export), checked before writing."""

import json

import datasets
import pytest
import torch

from lastvit.export import onnx_session, run_onnx
from modeling_lastvit import LastViTForImageClassification, LastViTImageProcessor
from training_scripts import export as export_cli
from training_scripts import train

from .test_training import colour_split


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "colours"
    datasets.DatasetDict(train=colour_split(32, 0), test=colour_split(12, 1)).save_to_disk(str(path))
    return str(path)


@pytest.fixture(scope="module")
def trained_model(toy_dataset, tmp_path_factory):
    """A LazyStrike ViT trained for one epoch (4 steps) by lastvit-train."""
    from accelerate.state import AcceleratorState, PartialState

    out = tmp_path_factory.mktemp("runs") / "trained"
    argv = ["--dataset", toy_dataset, "--preset", "tiny", "--image-size", "32", "--patch-size", "8"]
    argv += ["--batch-size", "8", "--top-k-ratio", "0.25", "--no-progress", "--epochs", "1", "--output-dir", str(out)]
    assert train.main(argv) == 0
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    return out


def export(model, out, dataset, *extra):
    return export_cli.main(["--model", str(model), "--output-dir", str(out), "--dataset", dataset, *extra])


def test_onnx_export_round_trips_a_trained_model(trained_model, toy_dataset, tmp_path, capsys):
    out = tmp_path / "exported"
    assert export(trained_model, out, toy_dataset, "--quantize", "int8", "--check-images", "4") == 0
    printed = capsys.readouterr().out
    assert "max |export - eager|" in printed and "int8: top-1" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "export_report.json",
        "image_processing_lastvit.py",  # the processor's remote code, for AutoImageProcessor(trust_remote_code=True)
        "model.int8.onnx",
        "model.onnx",
        "preprocessor_config.json",
    ]
    report = json.loads((out / "export_report.json").read_text())
    assert max(report["max_abs_difference"].values()) <= 1e-4
    assert report["int8"]["images"] == 12 and 0.0 <= report["int8"]["int8_agrees_with_fp32"] <= 1.0
    # onnxruntime on other images, at two batch sizes, against the eager model
    model = LastViTForImageClassification.from_pretrained(trained_model).eval()
    processor = LastViTImageProcessor.from_pretrained(out)
    session = onnx_session(out / "model.onnx")
    for n in (1, 5):
        pixels = processor(images=list(colour_split(n, 7)["image"]), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            expected = model(pixel_values=pixels)
        got = run_onnx(session, pixels)
        torch.testing.assert_close(got["logits"], expected.logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got["pooler_output"], expected.pooler_output, rtol=1e-4, atol=1e-4)


def test_pt2_export_with_remote_code_and_dynamic_size(trained_model, toy_dataset, tmp_path):
    out = tmp_path / "pt2"
    assert export(trained_model, out, toy_dataset, "--format", "pt2", "--dynamic-size", "--trust-remote-code") == 0
    program = torch.export.load(str(out / "model.pt2")).module()
    model = LastViTForImageClassification.from_pretrained(trained_model).eval()
    pixels = torch.randn(3, 3, 40, 24)
    with torch.no_grad():
        torch.testing.assert_close(program(pixels)[0], model(pixel_values=pixels).logits, rtol=1e-4, atol=1e-4)


def test_existing_output_is_kept_without_overwrite_and_on_a_failed_export(
    trained_model, toy_dataset, tmp_path, capsys
):
    out = tmp_path / "exported"
    out.mkdir()
    (out / "keep.txt").write_text("previous export")
    assert export(trained_model, out, toy_dataset) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    # an export that fails its check (tolerance below any difference) writes nothing, even with --overwrite
    assert export(trained_model, out, toy_dataset, "--overwrite", "--tolerance", "-1") == 1
    assert "differs from eager" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert export(trained_model, out, toy_dataset, "--overwrite", "--check-images", "2") == 0
    assert (out / "model.onnx").exists() and not (out / "keep.txt").exists()


def test_bad_options_are_one_line_errors(trained_model, toy_dataset, tmp_path, capsys):
    assert export(trained_model, tmp_path / "a", toy_dataset, "--format", "pt2", "--quantize", "int8") == 1
    assert "use it with --format onnx" in capsys.readouterr().err
    assert export(tmp_path / "missing", tmp_path / "b", toy_dataset) == 1
    assert "does not exist" in capsys.readouterr().err
