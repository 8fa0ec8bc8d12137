"""The Lappe & Giese analysis of a LastViT model (arXiv 2505.05892, "Register and CLS tokens yield a
decoupling of local and global features in large ViTs"): `analyze(model, pixel_values)` runs the
model over a set of images and returns every number of the report (`AnalysisResults`);
`lastvit.measure.decoupling_report` writes it as JSON, Markdown and figures.

Measured at the last layer (definitions in `lastvit.measure.lappe_giese`):

- where the CLS token attends (itself / registers / patches);
- the masked contributions o_full / o_patch / o_reg / o_cls_self of the CLS attention output and
  the skip path o_skip: norms, linear CKA over the images, the Gram decomposition. Default: the
  paper's Eq. 1-2, ``o_S = sum_{i in S} a_i v_i`` BEFORE the output projection; the same after the
  output projection and LayerScale (what is added to the residual stream) under ``*_after_projection``;
- the one-shot decoding test (with `one_shot` images): a cosine nearest-class-mean readout fitted on
  o_full of one training image per class, tested on o_full / o_patch / o_reg of one test image per class;
- register image-dependence at the penultimate layer, raw and after the last block's norm1;
- the layerwise CLS cosine, final patch-token norms, the readout and Point-in-Box (with boxes).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers.image_utils import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from transformers.image_utils import IMAGENET_DEFAULT_STD as IMAGENET_STD

from lastvit.errors import LastViTUserError

from .decoupling_summary import (
    VARIANTS,
    contribution_numbers,
    json_ready,
    norm_numbers,
    one_shot_numbers,
    readout_numbers,
    register_numbers,
    stats,
)
from .lappe_giese import cls_attention_share, layerwise_cls_cosine, masked_contributions, o_skip
from .maps import patch_scores, token_norms
from .metrics.localisation import point_in_box, random_patch_baseline


class AnalysisError(LastViTUserError):
    """The model or the images cannot be analysed; the message says why and what to do."""


@dataclass
class AnalysisResults:
    """What `analyze` measured: `numbers` (JSON-ready, what `analysis.json` holds) and `arrays`
    (per-image values and the first images, for the figures)."""

    numbers: dict
    arrays: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(json_ready(self.numbers), indent=2, allow_nan=False)


@dataclass
class OneShotImages:
    """Images for the one-shot decoding test: one training and one test image per class
    (preprocessed like the analysis images), their integer labels and optional class names."""

    train_pixel_values: torch.Tensor
    train_labels: torch.Tensor
    test_pixel_values: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str] | None = None
    source: str | None = None


def lastvit_base(model):
    """The `LastViTModel` inside `model` (a LastViTModel or LastViTForImageClassification, from the
    package or from remote code); anything else is a clear error."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "lastvit":
        kind = getattr(config, "model_type", type(model).__name__)
        raise AnalysisError(
            f"this is a {kind!r} model, not a LastViT one; convert it first (lastvit-convert --from hf ...), "
            "then analyse the converted folder."
        )
    base = getattr(model, "lastvit", model)
    if not (hasattr(base, "encoder") and hasattr(base, "pooler") and hasattr(base, "embeddings")):
        raise AnalysisError(
            f"{type(model).__name__} has no encoder and pooler; analyse a LastViTModel or LastViTForImageClassification."
        )
    return base


def load_model(path: str, device: str = "cpu", trust_remote_code: bool = False):
    """A LastViT checkpoint folder with eager attention (needed for attention maps), in eval mode,
    with this package's code (a folder's own code runs only with `trust_remote_code`)."""
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

    from lastvit.files import check_model_path, load_pretrained

    check_model_path(path, "--model")
    config = load_pretrained(AutoConfig, path, trust_remote_code=trust_remote_code)
    architectures = getattr(config, "architectures", None) or []
    # A classifier checkpoint loads as one (no "unexpected classifier weights" report); the head is not used.
    classifier = any("ForImageClassification" in a for a in architectures)
    auto = AutoModelForImageClassification if classifier else AutoModel
    model = load_pretrained(auto, path, trust_remote_code=trust_remote_code, attn_implementation="eager")
    lastvit_base(model)
    return model.to(device).eval()


# --------------------------------------------------------------------------- measuring


class _LastAttention:
    """Forward hook on the last attention module: keeps its CLS output and, under eager attention,
    its post-softmax weights. Needs no `output_attentions` (which would keep every layer's maps)."""

    def __init__(self, module):
        self.cls_output = self.weights = None
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        attn_output, weights = output if isinstance(output, tuple) else (output, None)
        self.cls_output = attn_output[:, 0].detach()
        self.weights = weights.detach() if weights is not None else None


@torch.no_grad()
def _measure_batch(base, pixel_values: torch.Tensor, hook: _LastAttention) -> dict[str, torch.Tensor]:
    """Per-image quantities of one batch, all on the CPU in float32."""
    config = base.config
    registers = config.num_register_tokens
    out = base(pixel_values, output_hidden_states=True)
    tokens = base.split_tokens(out.last_hidden_state)
    pre = base.pooler.pool(out.last_hidden_state)  # the pooled feature before any dense pooler layer
    layer = base.encoder.layer[-1]
    layer_input = out.hidden_states[-2]
    measured = {}

    norms = token_norms(tokens.patches)
    measured["patch_norms"] = norms.norms
    measured["max_abs_value"] = norms.max_abs_value
    measured["pre_norm_max_norm"] = base.split_tokens(out.hidden_states[-1]).patches.float().norm(dim=-1).amax(dim=1)
    if registers:
        measured["register_norms"] = tokens.registers.float().norm(dim=-1).mean(dim=1)
        measured["penultimate_registers"] = base.split_tokens(layer_input).registers
        measured["penultimate_registers_norm1"] = base.split_tokens(layer.norm1(layer_input)).registers
    measured["pooled"] = out.pooler_output
    measured["patch_mean"] = tokens.patches.mean(dim=1)
    measured["readout_map"] = pre.votes.float() if pre.votes is not None else patch_scores(tokens.patches, pre.pooled)
    if pre.indices is not None:
        selected = torch.gather(tokens.patches, 1, pre.indices).mean(dim=1)
        measured["selected_mean"] = selected
        measured["selection_error"] = (selected - pre.pooled).abs().amax(dim=1)

    if config.use_cls_token:
        measured["final_cls"] = tokens.cls
        if hook.weights is None:
            raise AnalysisError(
                "the last layer returned no attention weights; run the model with attn_implementation='eager'."
            )
        share = cls_attention_share(hook.weights, registers)
        measured.update(cls_self=share.cls_self, registers=share.registers, patches=share.patches)
        measured["cls_patch_attention"] = hook.weights[:, :, 0, config.num_prefix_tokens :].float().mean(dim=1)
        measured["o_skip"] = o_skip(layer_input)
        for suffix in VARIANTS:
            parts = masked_contributions(layer, layer_input, registers, after_projection=bool(suffix))
            measured.update({name + suffix: value for name, value in parts._asdict().items()})
            measured["o_full_vs_sum" + suffix] = (parts.o_full - parts.o_patch - parts.o_reg - parts.o_cls_self).abs()
        measured["o_full_vs_layer"] = (
            (measured["o_full_after_projection"] - layer.layer_scale1(hook.cls_output)).abs().amax(dim=1)
        )
        for suffix in VARIANTS:
            measured["o_full_vs_sum" + suffix] = measured["o_full_vs_sum" + suffix].amax(dim=1)
        measured["cls_cosine"] = layerwise_cls_cosine(out.hidden_states)
    return {name: value.detach().float().cpu() for name, value in measured.items()}


@contextmanager
def _measuring(model):
    """`model` in eval mode under eager attention with the last-attention hook; restored afterwards."""
    base = lastvit_base(model)
    was_training = model.training
    previous = getattr(model.config, "_attn_implementation", None)
    if base.config.use_cls_token and previous != "eager":
        try:
            model.set_attn_implementation("eager")  # the only backend that returns attention weights
        except (AttributeError, ValueError) as error:
            raise AnalysisError(
                f"the model uses {previous!r} attention and cannot switch to eager ({error}); load it with "
                "attn_implementation='eager'."
            ) from error
    hook = _LastAttention(base.encoder.layer[-1].attention)
    try:
        model.eval()
        yield base, hook
    finally:
        hook.handle.remove()
        model.train(was_training)
        if base.config.use_cls_token and previous not in (None, "eager"):
            model.set_attn_implementation(previous)


def _measure(base, hook, pixel_values, batch_size: int, progress: bool, desc: str) -> dict[str, torch.Tensor]:
    from tqdm.auto import tqdm

    parameter = next(base.parameters())
    batches = []
    for start in tqdm(range(0, len(pixel_values), batch_size), desc=desc, unit="batch", disable=not progress):
        chunk = pixel_values[start : start + batch_size].to(parameter.device, parameter.dtype)
        batches.append(_measure_batch(base, chunk, hook))
    return {name: torch.cat([b[name] for b in batches]) for name in batches[0]}


def _one_shot_numbers(base, hook, images: OneShotImages, batch_size: int, progress: bool) -> dict:
    train_labels, test_labels = torch.as_tensor(images.train_labels), torch.as_tensor(images.test_labels)
    if len(train_labels) != len(images.train_pixel_values) or len(test_labels) != len(images.test_pixel_values):
        raise AnalysisError("the one-shot test needs one label per training and per test image.")
    classes = sorted(set(train_labels.tolist()))
    if len(classes) < 2 or not set(test_labels.tolist()) <= set(classes):
        raise AnalysisError(
            f"the one-shot test needs >= 2 classes and test labels among the training labels; got training classes "
            f"{classes} and test classes {sorted(set(test_labels.tolist()))}."
        )
    train = _measure(base, hook, images.train_pixel_values, batch_size, progress, "one-shot train")
    test = _measure(base, hook, images.test_pixel_values, batch_size, progress, "one-shot test")
    return one_shot_numbers(train, test, train_labels, test_labels, images.source)


# --------------------------------------------------------------------------- the analysis


def _check_inputs(config, pixel_values: torch.Tensor, boxes, batch_size: int, one_shot) -> None:
    if pixel_values.ndim != 4:
        raise AnalysisError(f"pixel_values must be [n, channels, height, width], got {tuple(pixel_values.shape)}.")
    num_images = len(pixel_values)
    if num_images < 2:
        raise AnalysisError(
            f"got {num_images} image(s); CKA and the Gram decomposition compare images: give at least 2."
        )
    if batch_size < 1:
        raise AnalysisError(f"batch_size must be >= 1, got {batch_size}.")
    if boxes is not None and len(boxes) != num_images:
        raise AnalysisError(f"got {len(boxes)} boxes for {num_images} images; give one box per image or none.")
    if one_shot is not None and not config.use_cls_token:
        raise AnalysisError("the one-shot test decodes the CLS attention output; this model has no CLS token.")


def _model_numbers(base, height: int, width: int) -> dict:
    """What was analysed: the model's shape and the input it saw."""
    config = base.config
    rows, cols = base.patch_grid(height, width)
    return {
        "pooling": config.pooling,
        "use_cls_token": bool(config.use_cls_token),
        "num_register_tokens": int(config.num_register_tokens),
        "num_hidden_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "num_attention_heads": config.num_attention_heads,
        "layerscale": config.layerscale_value is not None,
        "input_size": [int(height), int(width)],
        "patch_size": list(config.patch_size_hw),
        "num_patches": rows * cols,
        "parameters": sum(p.numel() for p in base.parameters()),
    }


def _cls_numbers(config, per_image: dict, one_shot_numbers: dict | None, na: dict) -> dict:
    """Every measurement of the CLS token: where it attends, its masked contributions (CKA, norms,
    Gram), the layerwise cosine, the consistency checks and the one-shot test."""
    registers = int(config.num_register_tokens)
    numbers = {}
    shares = {name: per_image[name] for name in ("cls_self", "registers", "patches")}
    numbers["attention_share"] = {name: stats(values) for name, values in shares.items()}
    numbers["attention_share"]["sum"] = stats(sum(shares.values()))
    if registers:
        other = shares["registers"] + shares["patches"]
        numbers["attention_share_without_self"] = {
            "registers": stats(shares["registers"] / other),
            "patches": stats(shares["patches"] / other),
        }
    numbers.update(contribution_numbers(per_image, registers, na))
    cosine = per_image["cls_cosine"]
    numbers["cls_cosine"] = {
        "layers": list(range(cosine.shape[1])),
        "layer_names": ["embeddings"] + [f"block {i + 1}" for i in range(cosine.shape[1] - 1)],
        "mean": cosine.mean(dim=0).tolist(),
        "std": cosine.std(dim=0, correction=0).tolist(),
        "penultimate": stats(cosine[:, -2]),
        "last_layer_jump": stats(1 - cosine[:, -2]),
        "reference": "the CLS token after the last block, before the final LayerNorm",
    }
    numbers["checks"] = {
        "o_full_after_projection_vs_layer_attention_output_max_abs_diff": float(per_image["o_full_vs_layer"].max()),
        "o_full_vs_sum_of_parts_max_abs_diff": float(per_image["o_full_vs_sum"].max()),
        "o_full_after_projection_vs_sum_of_parts_max_abs_diff": float(
            per_image["o_full_vs_sum_after_projection"].max()
        ),
    }
    if one_shot_numbers is not None:
        numbers["one_shot"] = one_shot_numbers
    else:
        na["one_shot"] = "not run: it needs labelled images (lastvit-analysis --one-shot with a labelled dataset)."
    if config.pooling != "cls":
        numbers["cls_note"] = (
            f"This model reads out with {config.pooling!r} pooling: its final CLS output is discarded, and the "
            "CLS measurements describe a token that acts like a register in the intermediate layers."
        )
    return numbers


def _localisation_numbers(config, per_image: dict, box_list: list, height: int, width: int) -> dict:
    """Point-in-Box of the readout map (and of the CLS attention) next to a random patch."""
    patch_h, patch_w = config.patch_size_hw
    grid_args = {"model_input": (int(width), int(height)), "patch_size": (patch_w, patch_h), "resize": None}
    localisation = {
        "readout_pib": float(point_in_box(per_image["readout_map"], box_list, **grid_args).mean()),
        "random_patch_pib": float(random_patch_baseline(box_list, **grid_args).mean()),
        "rule": "overlap (the authors' rule), boxes in model-input pixels",
    }
    if config.use_cls_token:
        localisation["cls_attention_pib"] = float(
            point_in_box(per_image["cls_patch_attention"], box_list, **grid_args).mean()
        )
    return localisation


def _figure_arrays(base, per_image: dict, shown: torch.Tensor, box_list, display) -> dict:
    """What the figures draw: the `shown` images (their boxes, maps and display mean/std) and the
    per-image norms and CLS cosines of the whole set."""
    keep = len(shown)
    arrays = {
        "images": shown.detach().float().cpu(),
        "boxes": box_list[:keep] if box_list is not None else None,
        "grid": base.patch_grid(*shown.shape[-2:]),
        "image_mean": tuple(display[0]),
        "image_std": tuple(display[1]),
        "patch_norms": per_image["patch_norms"],
        "readout_map": per_image["readout_map"][:keep],
    }
    if base.config.use_cls_token:
        arrays["cls_patch_attention"] = per_image["cls_patch_attention"][:keep]
        arrays["cls_cosine"] = per_image["cls_cosine"]
    return arrays


@torch.no_grad()
def analyze(
    model,
    pixel_values: torch.Tensor,
    *,
    boxes=None,
    one_shot: OneShotImages | None = None,
    batch_size: int = 16,
    norm_threshold: float | None = None,
    norm_threshold_std: float = 3.0,
    num_overlays: int = 4,
    image_mean=IMAGENET_MEAN,
    image_std=IMAGENET_STD,
    progress: bool = True,
    metadata: dict | None = None,
) -> AnalysisResults:
    """The Lappe & Giese measurements of `model` at its last layer, over the images `pixel_values`.

    `model`: a LastViTModel or LastViTForImageClassification (package or remote code); it is run in
    eval mode under eager attention and left as it was found. `pixel_values` [n, 3, H, W], n >= 2
    (CKA and the Gram decomposition compare images), preprocessed for the model. `boxes`: one
    ``(x0, y0, x1, y1)`` per image in model-input pixels, or None (then no Point-in-Box numbers).
    `one_shot`: labelled images for the one-shot decoding test (needs a CLS token), or None.
    High-norm tokens: norm > `norm_threshold`, or by default > mean + `norm_threshold_std` x std of
    all final patch-token norms of the set. The first `num_overlays` images (with `image_mean` /
    `image_std` for display) are kept for the figures. `metadata` (e.g. where the images come from)
    is stored under ``numbers["data"]``.
    """
    config = lastvit_base(model).config
    _check_inputs(config, pixel_values, boxes, batch_size, one_shot)
    with _measuring(model) as (base, hook):
        per_image = _measure(base, hook, pixel_values, batch_size, progress, "analysing")
        one_shot_numbers = _one_shot_numbers(base, hook, one_shot, batch_size, progress) if one_shot else None

    height, width = pixel_values.shape[-2:]
    numbers: dict = {
        "model": _model_numbers(base, height, width),
        "data": {"num_images": len(pixel_values), "has_boxes": boxes is not None, **(metadata or {})},
        "analysed_layer": config.num_hidden_layers - 1,
        "contributions": {
            "default": "before the output projection: o_S = sum_{i in S} a_i v_i (Lappe & Giese Eq. 1-2)",
            "after_projection": "o_S = LayerScale(W_o o_S + b_o m_S): what the attention branch adds to the "
            "residual stream (keys ending in _after_projection)",
        },
        "not_applicable": {},
        "checks": {},
    }
    na = numbers["not_applicable"]
    if config.use_cls_token:
        numbers.update(_cls_numbers(config, per_image, one_shot_numbers, na))
    else:
        reason = "the model has no CLS token (use_cls_token=False): there is no CLS query, output or skip path."
        for name in ("attention_share", "contribution_norms", "cka", "gram", "cls_cosine", "one_shot"):
            na[name] = reason
    if config.num_register_tokens:
        numbers["register_dependence"] = register_numbers(per_image)
    else:
        na["register_dependence"] = "the model has no register tokens."
    numbers["token_norms"] = norm_numbers(per_image, norm_threshold, norm_threshold_std)
    numbers["readout"] = readout_numbers(config, per_image)
    numbers["readout_map"] = (
        f"{config.pooling} votes per patch"
        if config.pooling in ("lazystrike", "max")
        else "cos(patch, pooled feature)"
    )
    box_list = None if boxes is None else [[float(v) for v in box] for box in boxes]
    if box_list is not None:
        numbers["localisation"] = _localisation_numbers(config, per_image, box_list, height, width)

    arrays = _figure_arrays(base, per_image, pixel_values[:num_overlays], box_list, (image_mean, image_std))
    return AnalysisResults(numbers=numbers, arrays=arrays)


__all__ = [
    "AnalysisError",
    "AnalysisResults",
    "OneShotImages",
    "analyze",
    "json_ready",
    "lastvit_base",
    "load_model",
]
