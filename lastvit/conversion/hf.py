"""transformers models (`--from hf`): `ViTModel` / `ViTForImageClassification`, `DeiTModel` /
`DeiTForImageClassification` / `DeiTForImageClassificationWithTeacher`, `Dinov2Model` /
`Dinov2WithRegistersModel` and their `...ForImageClassification`, `CLIPVisionModel` /
`CLIPVisionModelWithProjection` / `CLIPModel` (vision tower and projection; the text tower is dropped).

How the outputs correspond (tested in `tests/test_conversion_hf.py`):

- `last_hidden_state` is LastViT's final LayerNorm applied to every token. For ViT, DeiT and DINOv2
  this is exactly the source's `last_hidden_state`. CLIP applies its `post_layernorm` (= LastViT's
  final LayerNorm) only to the CLS token, and its `last_hidden_state` is the encoder output BEFORE that
  norm: compare it with LastViT's `hidden_states[-1]`. `hidden_states` match layer by layer everywhere.
- `pooler_output`: ViT/DeiT base models' `pooler` (dense + tanh on CLS) becomes `pooler_dense_act="tanh"`;
  DINOv2's and CLIP's pooled CLS token is `pooling="cls"`. CLIP's projection gives `image_embeds`.
- DeiT's distillation token is hosted as register token 0 with the value `distillation_token + its
  position embedding` (registers have no position embedding; DeiT never resizes that one), so the
  token order [CLS, distillation, patches] is unchanged. The distilled head's averaged
  `(cls_classifier(CLS) + distillation_classifier(dist)) / 2` is one linear layer on both tokens
  (`classifier_input="pooled_and_first_register"`); DINOv2's classifiers read CLS and the patch mean
  (`classifier_input="pooled_and_patch_mean"`).
- Other resolutions resize exactly as transformers does (bicubic to the target grid; antialias for
  DINOv2 with registers).
"""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path
from typing import Any

import torch

from modeling_lastvit.image_processing_lastvit import LastViTImageProcessor
from modeling_lastvit.modeling_lastvit import LastViTForImageClassification

from .checkpoint_loading import CheckpointLoadError, check_safetensors_file, first_line
from .hf_recent import (
    RECENT_ARCHITECTURES,
    RECENT_PLANS,
    SOURCE_READOUTS,
    classifier_head,
    copy_visual_projection,
    drop_mask_token,
    drop_text_tower,
    hf_encoder_config,
    id2label_of,
    plan_clip_layers,
    plan_vit_layers,
    recent_source_outputs,
    vision_config_of,
)
from .key_plan import (
    PIL_BICUBIC,
    ConversionResult,
    KeyPlan,
    SourceHead,
    build_model,
    clip_eval_processor,
    dropped_counts,
    imagenet_eval_processor,
    resolve_head,
    zeros_like_bias,
)
from .options import ConversionError, ConversionOptions

HF_ARCHITECTURES = {
    "ViTModel": "vit",
    "ViTForImageClassification": "vit",
    "DeiTModel": "deit",
    "DeiTForImageClassification": "deit",
    "DeiTForImageClassificationWithTeacher": "deit",
    "Dinov2Model": "dinov2",
    "Dinov2ForImageClassification": "dinov2",
    "Dinov2WithRegistersModel": "dinov2",
    "Dinov2WithRegistersForImageClassification": "dinov2",
    "CLIPVisionModel": "clip",
    "CLIPVisionModelWithProjection": "clip",
    "CLIPModel": "clip",
    **RECENT_ARCHITECTURES,
}


def load_hf_model(name_or_path: str):
    """Load a supported transformers model in fp32 with the class named in its config. A local folder is
    checked first, so a missing folder or a truncated weights file is a one-line error naming it."""
    import transformers
    from transformers import AutoConfig

    local = check_hf_input(name_or_path)
    where = f"the folder {name_or_path}" if local else f"{name_or_path!r} (not a local folder, so a Hub id)"
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        fix = "save the model there with save_pretrained" if local else "check the path, or the Hub id and the network"
        raise ConversionError(
            f"no transformers config could be read from {where} ({first_line(error)}): {fix}."
        ) from error
    architecture = (getattr(config, "architectures", None) or [None])[0]
    if architecture not in HF_ARCHITECTURES:
        raise ConversionError(
            f"{name_or_path} is a {architecture or config.model_type!r}; the hf converter takes "
            f"{sorted(HF_ARCHITECTURES)}."
        )
    try:
        return getattr(transformers, architecture).from_pretrained(name_or_path, dtype=torch.float32).eval()
    except (OSError, ValueError, RuntimeError) as error:
        raise ConversionError(
            f"the weights of {where} cannot be loaded ({first_line(error)}): the weights file is missing, "
            "truncated or corrupt; save or download the model again."
        ) from error


def load_hf_processor_settings(name_or_path: str):
    """The source's image processor, or None without one. Processors that need torchvision (DINOv3's has only a
    torchvision backend) are read from `preprocessor_config.json` instead: their settings are what is copied."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(name_or_path)
    except ImportError:
        from types import SimpleNamespace

        from transformers.image_processing_base import ImageProcessingMixin

        settings, _ = ImageProcessingMixin.get_image_processor_dict(name_or_path)
        return SimpleNamespace(**settings)
    except (OSError, ValueError, KeyError):
        return None


def check_hf_input(name_or_path: str) -> bool:
    """True for a local model folder (whose safetensors files are complete), False for what can only be
    a Hub id; a path that exists as a file or cannot be a Hub id is a `ConversionError` saying what to give."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConversionError(
                f"{path} has no config.json, so it is not a transformers model folder: give the folder that "
                "save_pretrained wrote (or use --from torchvision / dino / openclip for a checkpoint file)."
            )
        for weights in sorted(path.glob("*.safetensors")):
            try:
                check_safetensors_file(weights)
            except CheckpointLoadError as error:
                raise ConversionError(str(error)) from error
        return True
    if path.exists():
        raise ConversionError(
            f"{path} is a file; --from hf takes a model folder (or a Hub id). For a checkpoint file use "
            "--from torchvision, dino or openclip."
        )
    if not _HUB_ID.fullmatch(name_or_path):
        raise ConversionError(
            f"no folder at {name_or_path!r}: give an existing folder saved with save_pretrained, or a Hub id "
            "such as google/vit-base-patch16-224."
        )
    return False


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _hf_config(config, **overrides) -> dict[str, Any]:
    return hf_encoder_config(config, layer_norm_eps=config.layer_norm_eps, **overrides)


def convert_hf_model(model, options: ConversionOptions, image_processor=None) -> ConversionResult:
    """A transformers ViT / DeiT / DINOv2 (+ registers) / CLIP vision model (with its head) to LastViT.

    `image_processor`: the source's image processor; its resize / crop / mean / std are copied. Without
    one, the family's usual evaluation preprocessing is used (and a note says so).
    """
    options.validate()
    architecture = type(model).__name__
    family = HF_ARCHITECTURES.get(architecture)
    if family is None:
        raise ConversionError(f"the hf converter takes {sorted(HF_ARCHITECTURES)}, not {architecture}.")
    state_dict = {key: value for key, value in model.state_dict().items()}
    converter = {"vit": _plan_hf_vit, "deit": _plan_hf_vit, "dinov2": _plan_hf_dinov2, "clip": _plan_hf_clip}
    plan, base, source_head = {**converter, **RECENT_PLANS}[family](model, state_dict)
    notes: list[str] = []
    head = resolve_head(source_head, options, notes)
    if source_head is not None and head is not source_head:
        plan.dropped["classification head (dropped or replaced)"] = plan.dropped.pop("classification head", [])
    source_pooling = base.get("pooling", "cls")
    if source_pooling == "map" and options.pooling not in ("source", "map"):
        plan.drop_targets("pooler.map_head.", f"attention-pooling head (the readout is now {options.pooling})")
    model_out = build_model(base, plan.execute(), head, options)
    processor, note = _processor_from_hf(image_processor, family, model.config)
    if note:
        notes.append(note)
    return ConversionResult(
        model=model_out,
        image_processor=processor,
        source="hf",
        description=f"transformers {architecture}",
        notes=notes,
        dropped=dropped_counts(plan),
        source_pooling=source_pooling,
        source_readout=SOURCE_READOUTS.get(family),
    )


def _plan_hf_vit(model, sd):
    """ViT and DeiT: `layers.{i}.layernorm_before / attention / layernorm_after / mlp`, final `layernorm`,
    optional `pooler` (dense + tanh); DeiT's distillation token becomes register 0."""
    config = model.config
    architecture = type(model).__name__
    is_deit = architecture.startswith("DeiT")
    prefix = _hf_prefix(model, sd)
    e = f"{prefix}embeddings."
    plan = KeyPlan("hf", sd)
    if is_deit:  # [CLS, dist, patches] + pos -> CLS/patch positions stay, dist + its position becomes register 0
        pos = f"{e}position_embeddings"
        plan.map("embeddings.position_embeddings", [pos], lambda t: torch.cat((t[:, :1], t[:, 2:]), dim=1))
        plan.map("embeddings.register_tokens", [f"{e}distillation_token", pos], lambda d, t: d + t[:, 1:2])
    else:
        plan.copy("embeddings.position_embeddings", f"{e}position_embeddings")
    plan.copy("embeddings.cls_token", f"{e}cls_token")
    plan.copy_linear("embeddings.patch_embeddings.projection", f"{e}patch_embeddings.projection")
    plan.copy_linear("layernorm", f"{prefix}layernorm")
    plan_vit_layers(plan, prefix, config.num_hidden_layers, config.qkv_bias)
    base = _hf_config(
        config,
        intermediate_size=config.intermediate_size,
        qkv_bias=config.qkv_bias,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        num_register_tokens=1 if is_deit else 0,
    )
    if f"{prefix}pooler.dense.weight" in sd:
        plan.copy_linear("pooler.dense", f"{prefix}pooler.dense")
        base.update(pooler_dense_act=config.pooler_act, pooler_dense_size=sd[f"{prefix}pooler.dense.weight"].shape[0])

    head = None
    if architecture.endswith("WithTeacher"):
        keys = [
            "cls_classifier.weight",
            "cls_classifier.bias",
            "distillation_classifier.weight",
            "distillation_classifier.bias",
        ]
        plan.drop("classification head", lambda k: k in keys)
        cls_w, cls_b, dist_w, dist_b = (sd[k] for k in keys)
        head = SourceHead(
            weight=0.5 * torch.cat((cls_w, dist_w), dim=1),
            bias=0.5 * (cls_b + dist_b),
            num_labels=cls_w.shape[0],
            classifier_input="pooled_and_first_register",
            id2label=id2label_of(config),
        )
    elif architecture.endswith("ForImageClassification"):
        head = classifier_head(plan, sd, config)
    return plan, base, head


def _hf_prefix(model, sd) -> str:
    """`vit.` / `dinov2.` ... when `sd` is a task model's state dict, else ''."""
    prefix = f"{model.base_model_prefix}."
    return prefix if any(k.startswith(prefix) for k in sd) else ""


def _plan_hf_dinov2(model, sd):
    """DINOv2 (+ registers): `encoder.layer.{i}.norm1 / attention / layer_scale1 / norm2 / mlp / layer_scale2`;
    the classifier reads [CLS, mean of patch tokens]."""
    config = model.config
    architecture = type(model).__name__
    prefix = _hf_prefix(model, sd)
    e = f"{prefix}embeddings."
    registers = getattr(config, "num_register_tokens", 0) if "WithRegisters" in architecture else 0
    plan = KeyPlan("hf", sd)
    plan.copy("embeddings.cls_token", f"{e}cls_token")
    plan.copy("embeddings.position_embeddings", f"{e}position_embeddings")
    if registers:
        plan.copy("embeddings.register_tokens", f"{e}register_tokens")
    plan.copy_linear("embeddings.patch_embeddings.projection", f"{e}patch_embeddings.projection")
    plan.copy_linear("layernorm", f"{prefix}layernorm")
    mlp = ("gate_proj", "up_proj", "down_proj") if config.use_swiglu_ffn else ("fc1", "fc2")
    for i in range(config.num_hidden_layers):
        src, dst = f"{prefix}encoder.layer.{i}.", f"encoder.layer.{i}."
        plan.copy_linear(f"{dst}norm1", f"{src}norm1")
        plan.copy_attention(f"{dst}attention", f"{src}attention", qkv_bias=config.qkv_bias)
        plan.copy(f"{dst}layer_scale1.lambda1", f"{src}layer_scale1.lambda1")
        plan.copy_linear(f"{dst}norm2", f"{src}norm2")
        for name in mlp:
            plan.copy_linear(f"{dst}mlp.{name}", f"{src}mlp.{name}")
        plan.copy(f"{dst}layer_scale2.lambda1", f"{src}layer_scale2.lambda1")
    drop_mask_token(plan, e)
    base = _hf_config(
        config,
        intermediate_size=int(config.hidden_size * config.mlp_ratio),
        qkv_bias=config.qkv_bias,
        layerscale_value=config.layerscale_value,
        use_swiglu_ffn=config.use_swiglu_ffn,
        drop_path_rate=config.drop_path_rate,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        num_register_tokens=registers,
        position_embedding_antialias="WithRegisters" in architecture,  # as transformers resizes them
    )
    head = None
    if architecture.endswith("ForImageClassification"):
        head = classifier_head(plan, sd, config, classifier_input="pooled_and_patch_mean")
    return plan, base, head


def _plan_hf_clip(model, sd):
    """CLIP vision: `pre_layrnorm`, `encoder.layers.{i}.layer_norm1 / self_attn / layer_norm2 / mlp`,
    `post_layernorm` (LastViT's final LayerNorm) and `visual_projection`; text tower dropped."""
    architecture = type(model).__name__
    config = model.config.vision_config if architecture == "CLIPModel" else model.config
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in sd) else ""
    e = f"{prefix}embeddings."
    plan = KeyPlan("hf", sd)
    plan.map("embeddings.cls_token", [f"{e}class_embedding"], lambda t: t.reshape(1, 1, -1))
    plan.map("embeddings.position_embeddings", [f"{e}position_embedding.weight"], lambda t: t.unsqueeze(0))
    plan.copy("embeddings.patch_embeddings.projection.weight", f"{e}patch_embedding.weight")
    plan.map("embeddings.patch_embeddings.projection.bias", [f"{e}patch_embedding.weight"], zeros_like_bias)
    plan.copy_linear("pre_layernorm", f"{prefix}pre_layrnorm")
    plan.copy_linear("layernorm", f"{prefix}post_layernorm")
    plan_clip_layers(plan, prefix, config.num_hidden_layers)
    projection_dim = copy_visual_projection(plan, sd)
    drop_text_tower(plan)
    base = _hf_config(
        config,
        intermediate_size=config.intermediate_size,
        qkv_bias=True,
        use_pre_norm=True,
        attention_probs_dropout_prob=config.attention_dropout,
        projection_dim=projection_dim,
    )
    return plan, base, None


def _processor_from_hf(source_processor, family: str, config) -> tuple[LastViTImageProcessor, str | None]:
    vision = vision_config_of(_ConfigHolder(config))
    image_size = getattr(vision, "image_size", None) or math.isqrt(vision.num_patches) * vision.patch_size
    image_size = image_size[0] if isinstance(image_size, (list, tuple)) else image_size
    if source_processor is None:
        default = (
            clip_eval_processor(image_size) if family == "clip" else imagenet_eval_processor(image_size, PIL_BICUBIC)
        )
        return default, (
            "The source had no image processor: the converted folder uses "
            + ("OpenAI CLIP's" if family == "clip" else "ImageNet")
            + " evaluation preprocessing; check it matches how the weights were trained."
        )
    kwargs = {}
    for key in ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb"):
        kwargs[key] = bool(getattr(source_processor, key, None))  # unset means off in transformers' processors
    for key in ("size", "resample", "crop_size", "rescale_factor", "image_mean", "image_std"):
        value = getattr(source_processor, key, None)
        if value is not None:
            kwargs[key] = dict(value) if isinstance(value, dict) else value
    if not kwargs["do_center_crop"]:  # keep `crop_size` the input size (what training reads) when nothing is cropped
        height, width = _height_width(kwargs.get("size")) or (image_size, image_size)
        kwargs["crop_size"] = {"height": height, "width": width}
    if family == "siglip2" and getattr(source_processor, "max_num_patches", None):
        native = {"height": image_size, "width": image_size}
        kwargs.update(size=native, do_center_crop=False)
        return LastViTImageProcessor(**kwargs), (
            f"SigLIP2's processor resizes each image, keeping its aspect ratio, to at most "
            f"{source_processor.max_num_patches} patches; the converted folder's processor resizes to the native "
            f"{image_size}x{image_size} (the same as SigLIP2's for square images). The model itself takes any height "
            "and width divisible by the patch size, so aspect-preserving inputs can be passed one image (or one "
            "shape) per batch."
        )
    return LastViTImageProcessor(**kwargs), None


def _height_width(size) -> tuple[int, int] | None:
    """(height, width) of a processor's `size` when it names both (a dict or transformers' SizeDict), else None."""
    get = size.get if isinstance(size, dict) else (lambda key: getattr(size, key, None))
    height, width = (get("height"), get("width")) if size is not None else (None, None)
    return (height, width) if height and width else None


class _ConfigHolder:
    def __init__(self, config):
        self.config = config


def _call_accepts(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


@torch.no_grad()
def compare_with_hf_source(source, converted, pixel_values: torch.Tensor) -> dict[str, float]:
    """Max abs differences between a transformers source and its conversion on `pixel_values`
    (per output, using the correspondences in this module's docstring)."""
    architecture = type(source).__name__
    if architecture in RECENT_ARCHITECTURES:
        return _compare_recent(source, converted, pixel_values)
    kwargs = {"output_hidden_states": True}
    native = converted.config.image_size_hw
    if tuple(pixel_values.shape[-2:]) != native:
        forward = source.get_image_features if architecture == "CLIPModel" else source.forward
        if _call_accepts(forward, "interpolate_pos_encoding"):
            kwargs["interpolate_pos_encoding"] = True
    if architecture == "CLIPModel":
        expected = source.get_image_features(pixel_values=pixel_values, **kwargs)
    else:
        expected = source(pixel_values=pixel_values, **kwargs)
    base = converted.lastvit if isinstance(converted, LastViTForImageClassification) else converted
    actual = base(pixel_values, output_hidden_states=True)

    def diff(a, b):
        return (a - b).abs().max().item()

    diffs = {"hidden_states": max(diff(a, b) for a, b in zip(expected.hidden_states, actual.hidden_states))}
    if isinstance(converted, LastViTForImageClassification):
        diffs["logits"] = diff(expected.logits, converted(pixel_values).logits)
    elif architecture.startswith("CLIP"):
        diffs["last_hidden_state (CLIP, pre post-LN) vs hidden_states[-1]"] = diff(
            expected.last_hidden_state, actual.hidden_states[-1]
        )
        if architecture == "CLIPVisionModel":
            diffs["pooler_output"] = diff(expected.pooler_output, actual.pooler_output)
        elif architecture == "CLIPVisionModelWithProjection":
            diffs["image_embeds"] = diff(expected.image_embeds, actual.image_embeds)
        else:
            diffs["image_embeds"] = diff(expected.pooler_output, actual.image_embeds)
    else:
        diffs["last_hidden_state"] = diff(expected.last_hidden_state, actual.last_hidden_state)
        diffs["pooler_output"] = diff(expected.pooler_output, actual.pooler_output)
    return diffs


def recent_output_pairs(source, converted, pixel_values: torch.Tensor) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(output, source tensor, converted tensor) for every output a recent-family source defines (`hf_recent`)."""
    expected = recent_source_outputs(source, pixel_values)
    is_classifier = isinstance(converted, LastViTForImageClassification)
    base = converted.lastvit if is_classifier else converted
    with torch.no_grad():
        actual = base(pixel_values, output_hidden_states=True)
        pairs = [
            (f"hidden_states[{i}]", a, b) for i, (a, b) in enumerate(zip(expected.hidden_states, actual.hidden_states))
        ]
        if len(expected.hidden_states) != len(actual.hidden_states):
            raise ConversionError("internal error: the source and the conversion record different numbers of layers.")
        if is_classifier:
            return pairs + [("logits", expected.logits, converted(pixel_values).logits)]
        pairs.append(("last_hidden_state", expected.last_hidden_state, actual.last_hidden_state))
        same_readout = converted.config.pooling in ("cls", "map")  # the readouts of the recent sources with one
        if expected.pooler_output is not None and same_readout:
            pairs.append(("pooler_output", expected.pooler_output, actual.pooler_output))
        if getattr(expected, "image_embeds", None) is not None and same_readout:
            pairs.append(("image_embeds", expected.image_embeds, actual.image_embeds))
    return pairs


def _compare_recent(source, converted, pixel_values: torch.Tensor) -> dict[str, float]:
    pairs = recent_output_pairs(source, converted, pixel_values)
    diffs = {"hidden_states": max((a - b).abs().max().item() for name, a, b in pairs if name.startswith("hidden_"))}
    diffs.update({name: (a - b).abs().max().item() for name, a, b in pairs if not name.startswith("hidden_")})
    return diffs
