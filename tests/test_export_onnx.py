"""ONNX: both exporters (dynamo and TorchScript) give graphs that onnxruntime runs at any batch size, matching the
eager model within 1e-4 for every pooling, with and without registers."""

import json

import pytest
import torch

from lastvit.export import (
    eager_outputs,
    export_onnx,
    max_differences,
    onnx_session,
    processor_metadata,
    quantize_int8,
    run_onnx,
)
from modeling_lastvit import LastViTForImageClassification, LastViTImageProcessor, LastViTModel

from .tiny import tiny_config

POOLINGS = ["cls", "mean", "max", "lazystrike"]


def classifier(pooling, registers, **overrides):
    torch.manual_seed(0)
    options = {"lazystrike_top_k": 2, "num_labels": 5, **overrides}
    return LastViTForImageClassification(tiny_config(pooling=pooling, num_register_tokens=registers, **options)).eval()


def assert_onnx_matches_eager(model, path, shapes=((1, 3, 32, 32), (3, 3, 32, 32))):
    session = onnx_session(path)
    for shape in shapes:
        pixels = torch.randn(shape)
        expected, got = eager_outputs(model, pixels), run_onnx(session, pixels)
        assert set(got) == set(expected)
        differences = max_differences(expected, got)
        assert max(differences.values()) <= 1e-4, (shape, differences)


@pytest.mark.parametrize("registers", [0, 2])
@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_onnx_runs_any_batch_and_matches_eager(exporter, pooling, registers, tmp_path):
    model = classifier(pooling, registers)
    path = export_onnx(model, tmp_path / "model.onnx", torch.randn(2, 3, 32, 32), exporter=exporter, opset=17)
    assert_onnx_matches_eager(model, path)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_onnx_with_dynamic_height_and_width(exporter, tmp_path):
    model = classifier("lazystrike", 2)
    path = export_onnx(model, tmp_path / "model.onnx", torch.randn(2, 3, 32, 32), exporter=exporter, dynamic_size=True)
    assert_onnx_matches_eager(model, path, shapes=((1, 3, 32, 32), (3, 3, 48, 24)))


def test_base_model_exports_pooled_features_and_tokens(tmp_path):
    torch.manual_seed(0)
    model = LastViTModel(tiny_config(num_register_tokens=2, lazystrike_top_k=3)).eval()
    path = export_onnx(model, tmp_path / "model.onnx", torch.randn(2, 3, 32, 32))
    assert [o.name for o in onnx_session(path).get_outputs()] == ["pooler_output", "last_hidden_state"]
    assert_onnx_matches_eager(model, path)


def test_processor_settings_travel_in_the_file(tmp_path):
    import onnx

    processor = LastViTImageProcessor(size={"shortest_edge": 37}, crop_size={"height": 32, "width": 32})
    path = export_onnx(
        classifier("cls", 0), tmp_path / "m.onnx", torch.randn(1, 3, 32, 32), metadata=processor_metadata(processor)
    )
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    settings = json.loads(props["preprocessor_config"])
    assert settings["size"] == {"shortest_edge": 37} and settings["crop_size"] == {"height": 32, "width": 32}
    assert settings["image_mean"] == list(processor.image_mean)


def test_int8_quantisation_gives_a_runnable_smaller_file(tmp_path):
    model = classifier("lazystrike", 2, hidden_size=64, intermediate_size=128)
    path = export_onnx(model, tmp_path / "model.onnx", torch.randn(2, 3, 32, 32))
    quantized = quantize_int8(path, tmp_path / "model.int8.onnx")
    assert quantized.stat().st_size < path.stat().st_size
    pixels = torch.randn(3, 3, 32, 32)
    got = run_onnx(onnx_session(quantized), pixels)
    assert got["logits"].shape == (3, 5) and torch.isfinite(got["logits"]).all()


def test_unknown_exporter_and_old_opset_are_clear_errors(tmp_path):
    from lastvit.export import ExportError

    with pytest.raises(ExportError, match="unknown exporter 'tflite'"):
        export_onnx(classifier("cls", 0), tmp_path / "m.onnx", torch.randn(1, 3, 32, 32), exporter="tflite")
    with pytest.raises(ExportError, match="opset 13 is too old"):
        export_onnx(classifier("cls", 0), tmp_path / "m.onnx", torch.randn(1, 3, 32, 32), opset=13)
