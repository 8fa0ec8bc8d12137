"""Deployable LastViT graphs: `torch.export` programs and ONNX files with a dynamic batch (and optionally dynamic
height and width), checked against the eager model, plus onnxruntime's int8 dynamic quantisation.

    from lastvit.export import export_onnx, onnx_session, run_onnx
    export_onnx(model, "model.onnx", example_pixels)              # the dynamo exporter, opset 18
    outputs = run_onnx(onnx_session("model.onnx"), pixels)        # {"logits": ..., "pooler_output": ...}

Inside any traced graph LazyStrike uses its matmul low-pass (`lazystrike_lowpass="auto"`), the same function as
the FFT (tests/test_lowpass_matmul.py), which both ONNX exporters and every runtime support.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18
# The largest batch (and grid side, in multiples of the native one) a dynamic graph is declared for.
MAX_BATCH = 4096
MAX_GRID_FACTOR = 8


class ExportError(ValueError):
    """An export that cannot be made or does not match the eager model; the message says what to do."""


def output_names(model: nn.Module) -> tuple[str, ...]:
    """What the exported graph returns, by model class: a classifier's logits and pooled feature, a base model's
    pooled feature and final tokens, a backbone's feature maps."""
    from modeling_lastvit import LastViTBackbone, LastViTForImageClassification

    if isinstance(model, LastViTForImageClassification):
        return ("logits", "pooler_output")
    if isinstance(model, LastViTBackbone):
        return tuple(f"feature_map_{stage}" for stage in model.out_features)
    return ("pooler_output", "last_hidden_state")


class ExportableLastViT(nn.Module):
    """A LastViT model as a graph-friendly module: ``pixel_values`` in, a tuple of plain tensors out (named by
    `output_names`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.output_names = output_names(model)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(pixel_values=pixel_values)
        if self.output_names[0].startswith("feature_map_"):
            return tuple(outputs.feature_maps)
        return tuple(getattr(outputs, name) for name in self.output_names)


def dynamic_shapes(model: nn.Module, dynamic_size: bool = False) -> dict:
    """`torch.export` dynamic shapes for ``pixel_values``: a dynamic batch, and with `dynamic_size` a dynamic height
    and width in multiples of the patch size (from the smallest grid that still has K patches for LazyStrike with
    a fixed `lazystrike_top_k`, up to `MAX_GRID_FACTOR` times the native grid)."""
    from torch.export import Dim

    shapes = {0: Dim("batch", min=1, max=MAX_BATCH)}
    if dynamic_size:
        config = model.config
        top_k = config.lazystrike_top_k if config.pooling == "lazystrike" and config.lazystrike_top_k else 1
        smallest = max(1, math.ceil(math.sqrt(top_k)))
        for axis, name, patch, native in zip(
            (2, 3), ("grid_height", "grid_width"), config.patch_size_hw, config.image_size_hw
        ):
            grid = Dim(name, min=smallest, max=max(smallest + 1, MAX_GRID_FACTOR * native // patch))
            shapes[axis] = patch * grid
    return {"pixel_values": shapes}


def export_program(model: nn.Module, example: torch.Tensor, dynamic_size: bool = False):
    """`torch.export.ExportedProgram` of `model` (eval mode) for pixel values shaped like `example`, with a dynamic
    batch (and height/width with `dynamic_size`)."""
    model = model.eval()
    with torch.no_grad():
        return torch.export.export(
            ExportableLastViT(model), (example,), dynamic_shapes=dynamic_shapes(model, dynamic_size), strict=False
        )


def export_onnx(
    model: nn.Module,
    path,
    example: torch.Tensor,
    exporter: str = "dynamo",
    opset: int = DEFAULT_OPSET,
    dynamic_size: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write `model` as one ONNX file at `path` with a dynamic batch (and height/width with `dynamic_size`), through
    `torch.onnx.export`'s dynamo exporter or its TorchScript one; `metadata` goes into the file's metadata_props."""
    import onnx

    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; use one of {EXPORTERS}.")
    if opset < 17:
        raise ExportError(f"opset {opset} is too old: LastViT needs opset >= 17 (LayerNormalization).")
    path = Path(path)
    model = model.eval()
    wrapper = ExportableLastViT(model)
    names = list(wrapper.output_names)
    with torch.no_grad():
        if exporter == "dynamo":
            torch.onnx.export(
                wrapper,
                (example,),
                str(path),
                dynamo=True,
                input_names=["pixel_values"],
                output_names=names,
                dynamic_shapes=dynamic_shapes(model, dynamic_size),
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
        else:
            axes = {0: "batch"} if not dynamic_size else {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(
                wrapper,
                (example,),
                str(path),
                dynamo=False,
                input_names=["pixel_values"],
                output_names=names,
                dynamic_axes={"pixel_values": axes, **{name: {0: "batch"} for name in names}},
                opset_version=opset,
            )
    if metadata:
        graph = onnx.load(str(path))
        onnx.helper.set_model_props(graph, {**{p.key: p.value for p in graph.metadata_props}, **metadata})
        onnx.save(graph, str(path))
    return path


def onnx_session(path, threads: int | None = None):
    """An onnxruntime CPU session for the ONNX file at `path`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of an onnxruntime `session` for `pixel_values`, by name, as tensors."""
    outputs = session.run(None, {"pixel_values": pixel_values.detach().cpu().float().numpy()})
    return {meta.name: torch.from_numpy(value) for meta, value in zip(session.get_outputs(), outputs)}


def eager_outputs(model: nn.Module, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    """The eager model's outputs under the exported names."""
    wrapper = ExportableLastViT(model.eval())
    with torch.no_grad():
        return dict(zip(wrapper.output_names, wrapper(pixel_values)))


def max_differences(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> dict[str, float]:
    """Largest absolute difference per output."""
    return {name: (got[name].float() - value.float()).abs().max().item() for name, value in expected.items()}


def quantize_int8(source, target) -> Path:
    """onnxruntime's dynamic int8 quantisation of the ONNX file `source` (int8 weights of MatMul/Gemm, activations
    quantised per call) into `target`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return Path(target)


def processor_metadata(processor) -> dict[str, str]:
    """The image processor's settings as ONNX metadata_props (also written as preprocessor_config.json)."""
    return {"preprocessor_config": json.dumps(processor.to_dict(), sort_keys=True, default=str)}
