"""Deployable LastViT graphs: `torch.export` programs and ONNX files with a dynamic batch (and optionally dynamic
height and width), checked against the eager model, plus onnxruntime's int8 dynamic quantisation.

    from lastvit.export import export_onnx, onnx_session, run_onnx
    export_onnx(model, "model.onnx", example_pixels)              # the dynamo exporter, opset 18
    outputs = run_onnx(onnx_session("model.onnx"), pixels)        # {"logits": ..., "pooler_output": ...}

Inside any traced graph LazyStrike uses its matmul low-pass (`lazystrike_lowpass="auto"`), the same function as
the FFT (tests/test_lowpass_matmul.py), which both ONNX exporters and every runtime support.

`lastvit-export` (`run_export(ExportOptions(...))`) turns a saved model into a deployable folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from lastvit.data.arguments import DataArguments
from lastvit.export_options import DEFAULT_OPSET, EXPORTERS, ExportOptions

# The largest batch (and grid side, in multiples of the native one) a dynamic graph is declared for.
MAX_BATCH = 4096
MAX_GRID_FACTOR = 8


class ExportError(ValueError):
    """An export that cannot be made or does not match the eager model; the message says what to do."""


def output_names(model: nn.Module) -> tuple[str, ...]:
    """What the exported graph returns, by model class: a classifier's logits and pooled feature, a base model's
    pooled feature and final tokens, a backbone's feature maps."""
    name = type(model).__name__  # by name: remote-code classes are not the installed ones
    if name.endswith("ForImageClassification"):
        return ("logits", "pooler_output")
    if name.endswith("Backbone"):
        return tuple(f"feature_map_{stage}" for stage in model.out_features)
    return ("pooler_output", "last_hidden_state")


class ExportableLastViT(nn.Module):
    """A LastViT model as a graph-friendly module: ``pixel_values`` in, a tuple of plain tensors out (named by
    `output_names`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.output_names = output_names(model)
        self.train(model.training)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(pixel_values=pixel_values)
        if self.output_names[0].startswith("feature_map_"):
            return tuple(outputs.feature_maps)
        return tuple(getattr(outputs, name) for name in self.output_names)


def dynamic_shapes(model: nn.Module, dynamic_size: bool = False) -> dict:
    """`torch.export` dynamic shapes for ``pixel_values``: a dynamic batch, and with `dynamic_size` a dynamic height
    and width in multiples of the patch size, from 2 patches a side (torch.export specialises sizes of 1; more
    where LazyStrike's fixed `lazystrike_top_k` needs more patches) up to `MAX_GRID_FACTOR` times the native grid."""
    from torch.export import Dim

    shapes = {0: Dim("batch", min=1, max=MAX_BATCH)}
    if dynamic_size:
        config = model.config
        top_k = config.lazystrike_top_k if config.pooling == "lazystrike" and config.lazystrike_top_k else 1
        smallest = max(2, math.ceil(math.sqrt(top_k)))
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


@contextlib.contextmanager
def matmul_lowpass(model: nn.Module):
    """Run `model`'s LazyStrike poolers with the matmul low-pass (what every exported graph holds) inside the block,
    so that an export is checked against the same computation in eager mode."""
    from modeling_lastvit.pooling_lastvit import LazyStrikePooler

    poolers = [m for m in model.modules() if isinstance(m, LazyStrikePooler) or type(m).__name__ == "LazyStrikePooler"]
    previous = [pooler.lowpass for pooler in poolers]
    try:
        for pooler in poolers:
            pooler.lowpass = "matmul"
        yield model
    finally:
        for pooler, lowpass in zip(poolers, previous):
            pooler.lowpass = lowpass


# ----- lastvit-export -----


def load_model(path: str, trust_remote_code: bool = False) -> nn.Module:
    """The model saved at `path` (folder or Hub id) in eval mode, with the class its config names: the installed
    LastViT classes, or with `trust_remote_code` the checkpoint's own code."""
    from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification

    if trust_remote_code:
        config = AutoConfig.from_pretrained(path, trust_remote_code=True)
        auto = {"Backbone": AutoBackbone, "ForImageClassification": AutoModelForImageClassification}
    else:
        from modeling_lastvit import LastViTBackbone, LastViTConfig, LastViTForImageClassification, LastViTModel

        config = LastViTConfig.from_pretrained(path)
        if config.model_type != "lastvit":
            raise ExportError(
                f"{path} holds a {config.model_type!r} model, not a LastViT one; convert it first (lastvit-convert)."
            )
        auto = {"Backbone": LastViTBackbone, "ForImageClassification": LastViTForImageClassification}
    architecture = (config.architectures or ["LastViTModel"])[0]
    loader = next((cls for suffix, cls in auto.items() if architecture.endswith(suffix)), None)
    if loader is None:
        loader = AutoModel if trust_remote_code else LastViTModel
    kwargs = {"trust_remote_code": True} if trust_remote_code else {}
    return loader.from_pretrained(path, **kwargs).eval()


def load_processor(path: str, model: nn.Module, trust_remote_code: bool = False):
    """The checkpoint's image processor (its preprocessor_config.json), else the LaSt-ViT evaluation preprocessing
    at the model's input size."""
    from modeling_lastvit import LastViTImageProcessor

    try:
        if trust_remote_code:
            from transformers import AutoImageProcessor

            return AutoImageProcessor.from_pretrained(path, trust_remote_code=True)
        return LastViTImageProcessor.from_pretrained(path)
    except OSError:
        size = model.config.image_size_hw[0]
        return LastViTImageProcessor(
            size={"shortest_edge": round(size * 256 / 224)}, crop_size={"height": size, "width": size}
        )


def held_out_split(data: DataArguments):
    """The evaluation split the check and the int8 accuracy use (never training images)."""
    from lastvit.data.loading import load_splits

    scenes = {"num_train": 1, "num_test": data.scenes_test, "clutter": data.scenes_clutter}
    _, split = load_splits(data.dataset, data.train_split, data.eval_split, data.data_dir, scenes_kwargs=scenes)
    return split


def _pixels(processor, split, image_column: str, start: int, stop: int) -> torch.Tensor:
    images = [image.convert("RGB") for image in split[start:stop][image_column]]
    return processor(images=images, return_tensors="pt")["pixel_values"]


class _Runtime:
    """The exported file as a callable: pixel values in, outputs by name out."""

    def __init__(self, path: Path, format: str):
        self.path = path
        if format == "onnx":
            session = onnx_session(path)
            self.run = lambda pixels: run_onnx(session, pixels)
        else:
            program = torch.export.load(str(path)).module()
            names = None

            def run(pixels):
                nonlocal names
                with torch.no_grad():
                    outputs = program(pixels)
                names = names or [f"output_{i}" for i in range(len(outputs))]
                return dict(zip(names, outputs))

            self.run = run


def check_export(model: nn.Module, runtime: _Runtime, pixels: torch.Tensor, names: tuple[str, ...]) -> dict:
    """Largest difference from eager (matmul low-pass) per output, at batch 1 and at the whole check batch."""
    differences = {}
    with matmul_lowpass(model):
        for batch in (pixels[:1], pixels):
            expected = eager_outputs(model, batch)
            got = dict(zip(names, runtime.run(batch).values()))
            for name, value in max_differences(expected, got).items():
                differences[name] = max(differences.get(name, 0.0), value)
    return differences


def _accuracy(predict, processor, split, data: DataArguments, count: int, batch: int = 32) -> list[int]:
    predictions = []
    for start in range(0, count, batch):
        pixels = _pixels(processor, split, data.image_column, start, min(count, start + batch))
        predictions += predict(pixels).argmax(-1).tolist()
    return predictions


def quantization_accuracy(model, fp32: _Runtime, int8: _Runtime, processor, split, options: ExportOptions) -> dict:
    """Top-1 of eager, ONNX fp32 and ONNX int8 on up to `eval_images` held-out images, and how often int8 agrees
    with fp32 (classifiers with labels in the split); the largest logit change otherwise reported alone."""
    data = options.data
    count = min(options.eval_images, len(split))
    labels = split[:count][data.label_column] if data.label_column in split.column_names else None
    if not type(model).__name__.endswith("ForImageClassification") or labels is None:
        return {"images": count, "note": "no labels or no classifier: accuracy not measured"}
    with torch.no_grad():
        eager = _accuracy(lambda p: model(pixel_values=p).logits, processor, split, data, count)
    onnx_fp32 = _accuracy(lambda p: fp32.run(p)["logits"], processor, split, data, count)
    onnx_int8 = _accuracy(lambda p: int8.run(p)["logits"], processor, split, data, count)

    def top1(predictions):
        return sum(p == y for p, y in zip(predictions, labels)) / count

    return {
        "images": count,
        "split": data.eval_split or "validation/test",
        "top1_eager": top1(eager),
        "top1_onnx_fp32": top1(onnx_fp32),
        "top1_onnx_int8": top1(onnx_int8),
        "top1_change_int8": top1(onnx_int8) - top1(onnx_fp32),
        "int8_agrees_with_fp32": sum(a == b for a, b in zip(onnx_int8, onnx_fp32)) / count,
    }


def run_export(options: ExportOptions) -> dict:
    """Export `options.model` into `options.output_dir` (whole or not at all): the model file, its image processor's
    preprocessor_config.json, a README.md card and export_report.json. The export is checked against eager on
    held-out images before anything is written; an existing folder is replaced only with `overwrite`, and only
    once the new export passed. Returns the report."""
    from lastvit.files import check_model_path, is_nonempty_dir, write_folder

    target = Path(options.output_dir)
    if is_nonempty_dir(target) and not options.overwrite:
        raise ExportError(
            f"{target} already holds files; pass --overwrite to replace them (kept if the export fails)."
        )
    if options.format == "pt2" and options.quantize:
        raise ExportError("--quantize int8 is onnxruntime's: use it with --format onnx.")
    if options.check_images < 1:
        raise ExportError(f"--check-images must be >= 1, got {options.check_images}.")
    if options.opset < 17:
        raise ExportError(f"--opset {options.opset} is too old: LastViT needs opset >= 17 (LayerNormalization).")
    source = check_model_path(options.model, "--model")
    model = load_model(source, options.trust_remote_code)
    processor = load_processor(source, model, options.trust_remote_code)
    split = held_out_split(options.data)
    pixels = _pixels(processor, split, options.data.image_column, 0, min(options.check_images, len(split)))
    example = pixels if len(pixels) > 1 else pixels.repeat(2, 1, 1, 1)  # a batch of 1 would be specialised
    names = output_names(model)

    def write(staging: Path) -> dict:
        started = time.perf_counter()
        filename = "model.onnx" if options.format == "onnx" else "model.pt2"
        with matmul_lowpass(model):
            if options.format == "onnx":
                metadata = {**processor_metadata(processor), "lastvit_outputs": json.dumps(list(names))}
                export_onnx(
                    model, staging / filename, example, options.exporter, options.opset, options.dynamic_size, metadata
                )
            else:
                torch.export.save(export_program(model, example, options.dynamic_size), str(staging / filename))
        runtime = _Runtime(staging / filename, options.format)
        differences = check_export(model, runtime, pixels, names)
        worst = max(differences.values())
        if not worst <= options.tolerance:
            raise ExportError(
                f"the exported model differs from eager by {worst:.3g} (> --tolerance {options.tolerance:g}) on "
                f"{len(pixels)} held-out images ({differences}); nothing was written."
            )
        report = {
            "model": options.model,
            "format": options.format,
            "file": filename,
            "outputs": list(names),
            "exporter": options.exporter if options.format == "onnx" else "torch.export",
            "opset": options.opset if options.format == "onnx" else None,
            "dynamic_axes": ["batch", "height", "width"] if options.dynamic_size else ["batch"],
            "check_images": len(pixels),
            "max_abs_difference": differences,
            "versions": _versions(),
        }
        if options.quantize:
            quantize_int8(staging / filename, staging / "model.int8.onnx")
            int8 = _Runtime(staging / "model.int8.onnx", "onnx")
            report["int8"] = quantization_accuracy(model, runtime, int8, processor, split, options)
        processor.save_pretrained(staging)
        report["seconds"] = round(time.perf_counter() - started, 1)
        (staging / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
        (staging / "README.md").write_text(export_card(report, processor))
        return report

    return write_folder(target, write)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("lastvit", "torch", "transformers", "onnx", "onnxruntime", "onnxscript"):
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name)
    return versions


def export_card(report: dict, processor) -> str:
    """A short README.md for the exported folder."""
    settings = processor.to_dict()
    crop = settings.get("crop_size") or {}
    lines = [
        f"# {Path(report['model']).name}: exported LastViT ({report['format']})",
        "",
        f"Exported from `{report['model']}` by `lastvit-export` ({report['exporter']}"
        + (f", opset {report['opset']}" if report["opset"] else "")
        + f"). Dynamic axes: {', '.join(report['dynamic_axes'])}.",
        "",
        (
            f"- Input `pixel_values`: float32 [batch, 3, {crop.get('height', 'H')}, {crop.get('width', 'W')}], "
            f"prepared as `preprocessor_config.json` says (resize {settings.get('size')}, centre crop {crop}, mean "
            f"{settings.get('image_mean')}, std {settings.get('image_std')}); the same settings are in the ONNX "
            "file's metadata `preprocessor_config`."
        ),
        f"- Outputs: {', '.join(f'`{name}`' for name in report['outputs'])}.",
        (
            f"- Checked against the eager model on {report['check_images']} held-out images before writing: "
            f"largest absolute difference {max(report['max_abs_difference'].values()):.2e}."
        ),
    ]
    if "int8" in report:
        q = report["int8"]
        if "top1_onnx_int8" in q:
            lines.append(
                f"- `model.int8.onnx` (onnxruntime dynamic int8): top-1 {q['top1_onnx_int8']:.3f} vs fp32 "
                f"{q['top1_onnx_fp32']:.3f} ({q['top1_change_int8']:+.3f}) on {q['images']} held-out images; agrees "
                f"with fp32 on {q['int8_agrees_with_fp32']:.1%} of them."
            )
        else:
            lines.append(f"- `model.int8.onnx` (onnxruntime dynamic int8): {q['note']}.")
    if report["format"] == "onnx":
        lines += [
            "",
            "```python",
            "import onnxruntime as ort",
            "from modeling_lastvit import LastViTImageProcessor  # or transformers' AutoImageProcessor",
            "session = ort.InferenceSession('model.onnx')",
            "pixels = LastViTImageProcessor.from_pretrained('.')(images, return_tensors='np')['pixel_values']",
            f"{', '.join(report['outputs'])} = session.run(None, {{'pixel_values': pixels}})",
            "```",
        ]
    else:
        lines += ["", "```python", "program = torch.export.load('model.pt2').module()", "```"]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    return "\n".join(lines)


def options_summary(options: ExportOptions) -> dict:
    """The options as JSON-ready values (for logs)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items() if k != "data"}
