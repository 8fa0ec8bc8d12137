"""lastvit-analysis: the Lappe & Giese report for any LastViT checkpoint (including converted DINOv2).

Lappe & Giese (arXiv 2505.05892) ask whether a ViT's global (CLS) output is really built from its
patch tokens, as attention maps suggest. This script measures it at the last layer of a LastViT
folder (trained with `lastvit-train`, or converted with `lastvit-convert`) on a set of images:

- where the CLS token attends (itself / registers / patches), mean and std over images;
- the masked contributions o_full / o_patch / o_reg / o_cls_self of the CLS attention output and
  the CLS skip path o_skip, their norms, and linear CKA between them over the images;
- the Gram decomposition of o_full into patch and register (+ CLS self) parts;
- the cosine of every layer's CLS token with the final one;
- the norms of the final patch tokens (high-norm tokens);
- the readout: whether the pooled feature is patch-only by construction (LazyStrike, mean, max).

It writes `analysis.json` (every number), `analysis.md` (a table with a line on each measurement,
and the figures) and PNG figures into --output-dir, atomically.

    lastvit-analysis --model runs/tiny --dataset scenes --num-images 256 --output-dir runs/tiny/analysis
    lastvit-analysis --model converted/dinov2-small-reg --dataset imagefolder --data-dir val/ \\
        --eval-split train --output-dir reports/dinov2-s-reg
    lastvit-analysis --model runs/tiny --random-images 8 --output-dir /tmp/smoke     # no data needed

Images are preprocessed as the trainer evaluates: resize the short side, centre crop at the
checkpoint processor's crop size (the model's input size without one), its mean and std.
From Python, `analyze(model, pixel_values)` and `write_report(results, folder)` do the same on a
model in memory.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import UnidentifiedImageError

from lastvit.data.loading import SCENES, DataError, ImageTransform, _decode, load_splits, transform_with_boxes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PATCH_ONLY_POOLINGS = ("lazystrike", "mean", "max")
JSON_NAME, MARKDOWN_NAME = "analysis.json", "analysis.md"

# One line per measurement, for the report's table.
EXPLAIN = {
    "attention_share.cls_self": "last-layer CLS attention to itself (head-averaged, post-softmax)",
    "attention_share.registers": "last-layer CLS attention summed over register tokens",
    "attention_share.patches": "last-layer CLS attention summed over patch tokens (the three shares sum to 1)",
    "attention_share_without_self.registers": (
        "register share of CLS attention with self-attention left out (Lappe & Giese's reg/patch split)"
    ),
    "contribution_norms.o_full": "‖o_full‖: the CLS output of the last attention branch (after LayerScale)",
    "contribution_norms.o_patch": "‖o_patch‖: the part of o_full carried by attention to patches",
    "contribution_norms.o_reg": "‖o_reg‖: the part carried by attention to registers",
    "contribution_norms.o_cls_self": "‖o_cls_self‖: the part carried by CLS attention to itself",
    "contribution_norms.o_skip": "‖o_skip‖: the CLS residual input of the last layer (the skip path)",
    "contribution_norms.skip_to_patch_ratio": "‖o_skip‖ / ‖o_patch‖ per image (Lappe & Giese §4; > 1: skip dominates)",
    "cka.o_full_vs_o_patch": "linear CKA over images: does the patch part alone explain o_full? (1 = yes)",
    "cka.o_full_vs_o_reg": "linear CKA of o_full with the register part",
    "cka.o_full_vs_o_cls_self": "linear CKA of o_full with the CLS self part",
    "cka.o_full_vs_o_skip": "linear CKA of o_full with the skip path",
    "cka.residual_vs_o_patch": "linear CKA of o_skip + o_full (the CLS after the attention sub-block) with patch-only",
    "cka.residual_vs_o_skip": "linear CKA of o_skip + o_full with skip-only",
    "gram.patch_patch": (
        "share of ‖XXᵀ‖² in X_p X_pᵀ (rows: images; X = o_full, X_p = o_patch): the only term attention maps explain"
    ),
    "gram.cross": "share in the cross terms X_p X_rᵀ + X_r X_pᵀ (X_r = o_reg + o_cls_self)",
    "gram.reg_reg": "share in X_r X_rᵀ (registers and CLS self); patch_patch + cross + reg_reg = 1",
    "gram.patch_cosine": "cos(o_patch, o_full) per image",
    "cls_cosine.penultimate": "cos(CLS after block L-1, CLS after block L): near 1 = CLS done before the last block",
    "cls_cosine.last_layer_jump": "1 - that cosine: how much the last layer still moves the CLS token",
    "token_norms.max_norm": "largest final (post-LN) patch-token L2 norm per image",
    "token_norms.mean_norm": "mean final patch-token L2 norm",
    "token_norms.max_abs_value": "largest absolute entry of any final patch token per image (LaSt-ViT Fig. 6)",
    "token_norms.high_norm_per_image": "patch tokens per image with norm above the threshold",
    "token_norms.images_with_high_norm": "share of images with at least one high-norm patch token",
    "token_norms.register_norm": "mean final register-token L2 norm",
    "readout.cka_pooled_vs_patch_mean": "linear CKA of the pooled feature with the mean of the final patch tokens",
    "readout.cka_pooled_vs_final_cls": "linear CKA of the pooled feature with the final (post-LN) CLS token",
    "readout.cka_pooled_vs_selected_patches": (
        "linear CKA of the pooled feature with the mean of the patches it selected (1 by construction)"
    ),
    "localisation.cls_attention_pib": "Point-in-Box: the arg-max of last-layer CLS->patch attention is in the GT box",
    "localisation.readout_pib": "Point-in-Box of the readout map (LazyStrike/max votes, else cos(patch, global))",
    "localisation.random_patch_pib": "Point-in-Box of a random patch (baseline)",
}


class AnalysisError(ValueError):
    """The model or the images cannot be analysed; the message says why and what to do."""


@dataclass
class AnalysisResults:
    """What `analyze` measured: `numbers` (JSON-ready, what `analysis.json` holds) and `arrays`
    (per-image values and the first images, for the figures)."""

    numbers: dict
    arrays: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(_json_ready(self.numbers), indent=2, allow_nan=False)


# --------------------------------------------------------------------------- small helpers


def _json_ready(value):
    """NaN / inf -> None, tensors and numpy scalars -> Python numbers, recursively."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return _json_ready(np.asarray(value).tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _stats(values) -> dict:
    """Mean and population std of per-image values."""
    array = np.asarray(torch.as_tensor(values).double().cpu())
    return {"mean": float(array.mean()), "std": float(array.std())}


def _lastvit_base(model):
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
            f"{type(model).__name__} has no encoder and pooler; "
            "analyse a LastViTModel or LastViTForImageClassification."
        )
    return base


def _cka(x, y):
    from lastvit.measure.lappe_giese import linear_cka

    return linear_cka(x, y)


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
    from lastvit.measure import (
        cls_attention_share,
        layerwise_cls_cosine,
        masked_contributions,
        o_skip,
        patch_scores,
        token_norms,
    )

    config = base.config
    registers = config.num_register_tokens
    out = base(pixel_values, output_hidden_states=True)
    tokens = base.split_tokens(out.last_hidden_state)
    pre = base.pooler.pool(out.last_hidden_state)  # the pooled feature before any dense pooler layer
    measured = {}

    norms = token_norms(tokens.patches)
    measured["patch_norms"] = norms.norms
    measured["max_abs_value"] = norms.max_abs_value
    measured["pre_norm_max_norm"] = base.split_tokens(out.hidden_states[-1]).patches.float().norm(dim=-1).amax(dim=1)
    if registers:
        measured["register_norms"] = tokens.registers.float().norm(dim=-1).mean(dim=1)
    measured["pooled"] = out.pooler_output
    measured["patch_mean"] = tokens.patches.mean(dim=1)
    if pre.votes is not None:
        measured["readout_map"] = pre.votes.float()
    else:
        measured["readout_map"] = patch_scores(tokens.patches, pre.pooled)
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
        layer = base.encoder.layer[-1]
        layer_input = out.hidden_states[-2]
        parts = masked_contributions(layer, layer_input, registers)
        measured.update(parts._asdict())
        measured["o_skip"] = o_skip(layer_input)
        measured["o_full_vs_layer"] = (parts.o_full - layer.layer_scale1(hook.cls_output)).abs().amax(dim=1)
        measured["o_full_vs_sum"] = (parts.o_full - parts.o_patch - parts.o_reg - parts.o_cls_self).abs().amax(dim=1)
        measured["cls_cosine"] = layerwise_cls_cosine(out.hidden_states)
    return {name: value.detach().float().cpu() for name, value in measured.items()}


def _eager(model):
    """Switch `model` to eager attention (the only backend returning attention weights); returns
    the implementation to restore."""
    previous = getattr(model.config, "_attn_implementation", None)
    if previous != "eager":
        try:
            model.set_attn_implementation("eager")
        except (AttributeError, ValueError) as error:
            raise AnalysisError(
                f"the model uses {previous!r} attention and cannot switch to eager ({error}); load it with "
                "attn_implementation='eager'."
            ) from error
    return previous


@torch.no_grad()
def analyze(
    model,
    pixel_values: torch.Tensor,
    *,
    boxes=None,
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
    High-norm tokens: norm > `norm_threshold`, or by default > mean + `norm_threshold_std` x std of
    all final patch-token norms of the set. The first `num_overlays` images (with `image_mean` /
    `image_std` for display) are kept for the figures. `metadata` (e.g. where the images come from)
    is stored under ``numbers["data"]``.
    """
    from tqdm.auto import tqdm

    from lastvit.measure import gram_decomposition, point_in_box, random_patch_baseline

    base = _lastvit_base(model)
    config = base.config
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

    has_cls, registers = bool(config.use_cls_token), int(config.num_register_tokens)
    parameter = next(base.parameters())
    was_training = model.training
    previous = _eager(model) if has_cls else None
    hook = _LastAttention(base.encoder.layer[-1].attention)
    batches: list[dict[str, torch.Tensor]] = []
    try:
        model.eval()
        starts = range(0, num_images, batch_size)
        for start in tqdm(starts, desc="analysing", unit="batch", disable=not progress):
            chunk = pixel_values[start : start + batch_size].to(parameter.device, parameter.dtype)
            batches.append(_measure_batch(base, chunk, hook))
    finally:
        hook.handle.remove()
        model.train(was_training)
        if previous is not None and previous != "eager":
            model.set_attn_implementation(previous)
    per_image = {name: torch.cat([b[name] for b in batches]) for name in batches[0]}

    height, width = pixel_values.shape[-2:]
    rows, cols = base.patch_grid(height, width)
    patch_h, patch_w = config.patch_size_hw
    numbers: dict = {
        "model": {
            "pooling": config.pooling,
            "use_cls_token": has_cls,
            "num_register_tokens": registers,
            "num_hidden_layers": config.num_hidden_layers,
            "hidden_size": config.hidden_size,
            "num_attention_heads": config.num_attention_heads,
            "layerscale": config.layerscale_value is not None,
            "input_size": [int(height), int(width)],
            "patch_size": [patch_h, patch_w],
            "num_patches": rows * cols,
            "parameters": sum(p.numel() for p in base.parameters()),
        },
        "data": {"num_images": num_images, "has_boxes": boxes is not None, **(metadata or {})},
        "analysed_layer": config.num_hidden_layers - 1,
        "not_applicable": {},
        "checks": {},
    }
    na = numbers["not_applicable"]

    if has_cls:
        shares = {name: per_image[name] for name in ("cls_self", "registers", "patches")}
        numbers["attention_share"] = {name: _stats(values) for name, values in shares.items()}
        numbers["attention_share"]["sum"] = _stats(sum(shares.values()))
        if registers:
            other = shares["registers"] + shares["patches"]
            numbers["attention_share_without_self"] = {
                "registers": _stats(shares["registers"] / other),
                "patches": _stats(shares["patches"] / other),
            }
        o = {name: per_image[name] for name in ("o_full", "o_patch", "o_reg", "o_cls_self", "o_skip")}
        norms = {name: value.norm(dim=-1) for name, value in o.items()}
        numbers["contribution_norms"] = {name: _stats(value) for name, value in norms.items()}
        numbers["contribution_norms"]["skip_to_patch_ratio"] = _stats(
            norms["o_skip"] / norms["o_patch"].clamp_min(1e-12)
        )
        residual = o["o_skip"] + o["o_full"]
        cka = {
            "o_full_vs_o_patch": _cka(o["o_full"], o["o_patch"]),
            "o_full_vs_o_cls_self": _cka(o["o_full"], o["o_cls_self"]),
            "o_full_vs_o_skip": _cka(o["o_full"], o["o_skip"]),
            "residual_vs_o_patch": _cka(residual, o["o_patch"]),
            "residual_vs_o_skip": _cka(residual, o["o_skip"]),
        }
        if registers:
            cka["o_full_vs_o_reg"] = _cka(o["o_full"], o["o_reg"])
        else:
            cka["o_full_vs_o_reg"] = math.nan
            na["cka.o_full_vs_o_reg"] = "the model has no register tokens, so o_reg is 0 and CKA is undefined."
        for name, value in cka.items():
            if not math.isfinite(value) and f"cka.{name}" not in na:
                na[f"cka.{name}"] = "one side is constant over the images, so CKA is undefined."
        numbers["cka"] = cka
        gram = gram_decomposition(o["o_patch"], o["o_reg"] + o["o_cls_self"])
        numbers["gram"] = {
            **gram.shares,
            "cross": gram.shares["patch_reg"] + gram.shares["reg_patch"],
            "patch_cosine": _stats(gram.patch_cosine),
            "register_part": "o_reg + o_cls_self" if registers else "o_cls_self (no registers)",
        }
        cosine = per_image["cls_cosine"]
        numbers["cls_cosine"] = {
            "layers": list(range(cosine.shape[1])),
            "layer_names": ["embeddings"] + [f"block {i + 1}" for i in range(cosine.shape[1] - 1)],
            "mean": cosine.mean(dim=0).tolist(),
            "std": cosine.std(dim=0, correction=0).tolist(),
            "penultimate": _stats(cosine[:, -2]),
            "last_layer_jump": _stats(1 - cosine[:, -2]),
            "reference": "the CLS token after the last block, before the final LayerNorm",
        }
        numbers["checks"]["o_full_vs_layer_attention_output_max_abs_diff"] = float(per_image["o_full_vs_layer"].max())
        numbers["checks"]["o_full_vs_sum_of_parts_max_abs_diff"] = float(per_image["o_full_vs_sum"].max())
        if config.pooling != "cls":
            numbers["cls_note"] = (
                f"This model reads out with {config.pooling!r} pooling: its final CLS output is discarded, and the "
                "CLS measurements describe a token that acts like a register in the intermediate layers."
            )
    else:
        reason = "the model has no CLS token (use_cls_token=False): there is no CLS query, output or skip path."
        for name in ("attention_share", "contribution_norms", "cka", "gram", "cls_cosine", "cls_attention_overlay"):
            na[name] = reason

    all_norms = per_image["patch_norms"]
    if norm_threshold is None:
        threshold = float(all_norms.mean() + norm_threshold_std * all_norms.std(correction=0))
        rule = f"mean + {norm_threshold_std:g} std of all final patch-token norms of the set"
    else:
        threshold, rule = float(norm_threshold), "given (--norm-threshold)"
    high = (all_norms > threshold).sum(dim=1).float()
    numbers["token_norms"] = {
        "tokens": "final patch tokens (after the final LayerNorm, what the pooler reads)",
        "threshold": threshold,
        "threshold_rule": rule,
        "max_norm": _stats(all_norms.amax(dim=1)),
        "overall_max_norm": float(all_norms.max()),
        "mean_norm": _stats(all_norms.mean(dim=1)),
        "max_abs_value": _stats(per_image["max_abs_value"]),
        "high_norm_per_image": _stats(high),
        "high_norm_total": int(high.sum()),
        "images_with_high_norm": float((high > 0).double().mean()),
        "pre_norm_max_norm": _stats(per_image["pre_norm_max_norm"]),
    }
    if registers:
        numbers["token_norms"]["register_norm"] = _stats(per_image["register_norms"])

    readout = {
        "pooling": config.pooling,
        "patch_only_by_construction": config.pooling in PATCH_ONLY_POOLINGS,
        "cka_pooled_vs_patch_mean": _cka(per_image["pooled"], per_image["patch_mean"]),
    }
    if config.pooling in PATCH_ONLY_POOLINGS:
        readout["note"] = (
            f"The pooled feature ({config.pooling}) is computed from the final patch tokens only, never from the CLS "
            "or register tokens: Lappe & Giese's patch integration assumption holds at the readout by construction "
            "(the patch tokens themselves still mixed with every token in earlier layers)."
        )
    else:
        readout["note"] = (
            "The pooled feature is the final CLS token: whether it integrates the patches is what the CKA and Gram "
            "numbers above measure."
        )
    if has_cls:
        readout["cka_pooled_vs_final_cls"] = _cka(per_image["pooled"], per_image["final_cls"])
    if "selected_mean" in per_image:
        readout["cka_pooled_vs_selected_patches"] = _cka(per_image["pooled"], per_image["selected_mean"])
        readout["selected_patches_max_abs_diff"] = float(per_image["selection_error"].max())
        if config.pooler_dense_act:
            readout["selected_patches_note"] = "compared before the dense pooler layer; CKA uses the pooler output"
    numbers["readout"] = readout
    numbers["readout_map"] = (
        f"{config.pooling} votes per patch"
        if config.pooling in ("lazystrike", "max")
        else "cos(patch, pooled feature)"
    )

    box_list = None
    if boxes is not None:
        box_list = [[float(v) for v in box] for box in boxes]
        grid_args = {"model_input": (int(width), int(height)), "patch_size": (patch_w, patch_h), "resize": None}
        localisation = {
            "readout_pib": float(point_in_box(per_image["readout_map"], box_list, **grid_args).mean()),
            "random_patch_pib": float(random_patch_baseline(box_list, **grid_args).mean()),
            "rule": "overlap (the authors' rule), boxes in model-input pixels",
        }
        if has_cls:
            localisation["cls_attention_pib"] = float(
                point_in_box(per_image["cls_patch_attention"], box_list, **grid_args).mean()
            )
        numbers["localisation"] = localisation

    keep = min(num_overlays, num_images)
    arrays = {
        "images": pixel_values[:keep].detach().float().cpu(),
        "boxes": box_list[:keep] if box_list is not None else None,
        "grid": (rows, cols),
        "image_mean": tuple(image_mean),
        "image_std": tuple(image_std),
        "patch_norms": all_norms,
        "readout_map": per_image["readout_map"][:keep],
    }
    if has_cls:
        arrays["cls_patch_attention"] = per_image["cls_patch_attention"][:keep]
        arrays["cls_cosine"] = per_image["cls_cosine"]
    return AnalysisResults(numbers=numbers, arrays=arrays)


# --------------------------------------------------------------------------- the report


def _plot_cls_cosine(cosine: torch.Tensor, path: Path) -> Path:
    """Mean (and +-1 std band) of cos(CLS_l, CLS_L) over images, per layer."""
    from lastvit.measure.plots import _figure, _save

    mean, std = cosine.mean(dim=0).numpy(), cosine.std(dim=0, correction=0).numpy()
    layers = np.arange(len(mean))
    figure = _figure(5, 4)
    axis = figure.subplots()
    axis.plot(layers, mean, marker="o", color="tab:blue", label="mean over images")
    axis.fill_between(layers, mean - std, mean + std, color="tab:blue", alpha=0.2, label="+-1 std")
    axis.set_xticks(layers)
    axis.set_xticklabels(["emb"] + [str(i) for i in layers[1:]])
    axis.set_xlabel("layer (block output)")
    axis.set_ylabel("cos(CLS_l, CLS_L)")
    axis.set_ylim(min(-0.05, float((mean - std).min()) - 0.05), 1.05)
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title("layerwise CLS cosine to the final CLS")
    return _save(figure, path)


def _draw_figures(results: AnalysisResults, folder: Path, progress: bool) -> dict[str, list[str]]:
    from tqdm.auto import tqdm

    from lastvit.measure.plots import plot_norm_histogram, plot_patch_map

    arrays = results.arrays
    figures: dict[str, list[str]] = {"cls_attention": [], "readout_map": [], "cls_cosine": [], "norm_histogram": []}
    images, boxes = arrays["images"], arrays["boxes"]
    display = {"mean": arrays["image_mean"], "std": arrays["image_std"], "grid": arrays["grid"]}
    jobs = []
    for i in range(len(images)):
        box = boxes[i] if boxes is not None else None
        if "cls_patch_attention" in arrays:
            jobs.append(
                (
                    "cls_attention",
                    i,
                    arrays["cls_patch_attention"][i],
                    box,
                    f"image {i}: last-layer CLS->patch attention",
                )
            )
        jobs.append(("readout_map", i, arrays["readout_map"][i], box, f"image {i}: {results.numbers['readout_map']}"))
    for kind, i, values, box, title in tqdm(jobs, desc="figures", unit="png", disable=not progress):
        name = f"{kind}_{i}.png"
        plot_patch_map(images[i], values, folder / name, box=box, title=title, **display)
        figures[kind].append(name)
    if "cls_cosine" in arrays:
        _plot_cls_cosine(arrays["cls_cosine"], folder / "cls_cosine.png")
        figures["cls_cosine"].append("cls_cosine.png")
    norms = results.numbers["token_norms"]
    plot_norm_histogram(
        arrays["patch_norms"],
        folder / "norm_histogram.png",
        threshold=norms["threshold"],
        title="final patch-token norms",
    )
    figures["norm_histogram"].append("norm_histogram.png")
    return {kind: names for kind, names in figures.items() if names}


def _format(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, dict) and "mean" in value:
        return f"{_format(value['mean'])} ± {_format(value['std'])}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _lookup(numbers: dict, dotted: str):
    value = numbers
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def render_markdown(numbers: dict, title: str | None = None) -> str:
    """`analysis.md` from the numbers (JSON-ready, with ``numbers["figures"]``)."""
    model, data = numbers["model"], numbers["data"]
    lines = [f"# {title or 'Lappe & Giese analysis'}", ""]
    source = data.get("model_path")
    if source:
        lines += [f"Model: `{source}`", ""]
    layout = "CLS" if model["use_cls_token"] else "no CLS"
    boxes = " (with ground-truth boxes)" if data.get("has_boxes") else ""
    lines += [
        f"- architecture: {model['num_hidden_layers']} blocks, width {model['hidden_size']}, "
        + f"{model['num_attention_heads']} heads, {layout}, {model['num_register_tokens']} registers, "
        + f"LayerScale {'on' if model['layerscale'] else 'off'}, pooling `{model['pooling']}`",
        f"- input {model['input_size'][0]}x{model['input_size'][1]} px, patches "
        + f"{model['patch_size'][0]}x{model['patch_size'][1]} ({model['num_patches']} per image)",
        f"- images: {data['num_images']} from {data.get('source', 'the caller')}{boxes}",
        f"- measured at the last layer (block {numbers['analysed_layer'] + 1}); mean ± std over images "
        + "where a value is per image",
        "",
        "## Numbers",
        "",
        "| measurement | value | what it says |",
        "|---|---|---|",
    ]
    for key, explanation in EXPLAIN.items():
        value = _lookup(numbers, key)
        not_applicable = key in numbers["not_applicable"]
        if value is None and not not_applicable:
            continue  # a measurement this model does not have (e.g. register norms without registers)
        lines.append(f"| `{key}` | {_format(value)} | {explanation.replace('|', chr(92) + '|')} |")
    norms = numbers["token_norms"]
    lines += ["", f"High-norm threshold: {norms['threshold']:.4g} ({norms['threshold_rule']}).", ""]
    if "cls_cosine" in numbers:
        cosine = numbers["cls_cosine"]
        curve = ", ".join(f"{name}: {mean:.3f}" for name, mean in zip(cosine["layer_names"], cosine["mean"]))
        lines += [f"Layerwise cos(CLS_l, CLS_L), mean over images: {curve}.", ""]
    lines += ["## Readout (the LaSt-ViT link)", "", numbers["readout"]["note"], ""]
    if "cls_note" in numbers:
        lines += [numbers["cls_note"], ""]
    if numbers["not_applicable"]:
        lines += ["## Not applicable", ""]
        by_reason: dict[str, list[str]] = {}
        for name, reason in numbers["not_applicable"].items():
            by_reason.setdefault(reason, []).append(f"`{name}`")
        lines += [f"- {', '.join(names)}: {reason}" for reason, names in by_reason.items()]
        lines.append("")
    checks = numbers.get("checks") or {}
    if checks:
        lines += ["## Checks", ""]
        lines += [f"- `{name}`: {_format(value)}" for name, value in checks.items()]
        lines.append("")
    figures = numbers.get("figures") or {}
    captions = {
        "cls_attention": "Last-layer CLS→patch attention (head-averaged) over the image; green: ground-truth box, "
        "white: arg-max patch.",
        "readout_map": f"Readout map: {numbers['readout_map']}.",
        "cls_cosine": "Cosine of each layer's CLS token with the final one (mean ± std over images).",
        "norm_histogram": "Final patch-token L2 norms over all images; dashed: the high-norm threshold.",
    }
    if figures:
        lines += ["## Figures", ""]
        for kind, names in figures.items():
            lines += [captions.get(kind, kind), ""]
            lines += [f"![{kind} {i}]({name})" for i, name in enumerate(names)]
            lines.append("")
    return "\n".join(lines)


def write_report(
    results: AnalysisResults,
    output_dir,
    *,
    overwrite: bool = False,
    title: str | None = None,
    progress: bool = True,
) -> Path:
    """Write `analysis.json`, `analysis.md` and the PNG figures into `output_dir`, atomically (into a
    staging folder that is then renamed into place). A non-empty `output_dir` is refused unless
    `overwrite`. Returns the folder."""
    from lastvit.files import write_folder

    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise AnalysisError(f"{output_dir} is a file; choose a folder for --output-dir.")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise AnalysisError(
            f"{output_dir} already holds files; pass --overwrite to replace them or choose another folder."
        )

    def write(folder: Path) -> None:
        numbers = dict(results.numbers)
        numbers["figures"] = _draw_figures(results, folder, progress)
        (folder / JSON_NAME).write_text(AnalysisResults(numbers).to_json() + "\n")
        (folder / MARKDOWN_NAME).write_text(render_markdown(_json_ready(numbers), title) + "\n")

    write_folder(output_dir, write)
    return output_dir


# --------------------------------------------------------------------------- images


def generated_scenes(count: int, size: int, seed: int = 0):
    """`count` generated scenes (one ellipse on a smooth textured background, its box known) of
    ``size`` pixels: ``[(PIL image, (x0, y0, x1, y1)), ...]``; image i depends only on (seed, i)."""
    from lastvit.data.scenes import ellipse_scene

    return [ellipse_scene(size, seed=seed * 1_000_003 + i) for i in range(count)]


def dataset_images(args):
    """``[(PIL image, xyxy box or None)]`` for `args.num_images` images of the evaluation split
    (a seeded random subset when the split is larger), and a description of the source."""
    import datasets

    scenes_kwargs = {"num_train": 0, "num_test": args.num_images, "seed": args.seed, "clutter": args.scenes_clutter}
    try:
        # load_splits insists on a training split; only the evaluation split is read here.
        _, split = load_splits(args.dataset, args.eval_split or "train", args.eval_split, args.data_dir, scenes_kwargs)
    except DataError as error:
        if args.eval_split is None and "no split 'train'" in str(error):
            raise DataError(
                f"{args.dataset} has no 'train' split to find the default evaluation split beside; "
                "pass --eval-split NAME."
            ) from error
        raise
    if args.image_column not in split.column_names:
        raise DataError(
            f"the split has no column {args.image_column!r}; its columns are {split.column_names} "
            "(set --image-column)."
        )
    if len(split) == 0:
        raise DataError(f"the evaluation split of {args.dataset} is empty.")
    if len(split) > args.num_images:
        rng = np.random.default_rng(args.seed)
        split = split.select(sorted(rng.choice(len(split), args.num_images, replace=False).tolist()))
    has_box = args.bbox_column in split.column_names
    split = split.cast_column(args.image_column, datasets.Image(decode=False))
    items = []
    for index, row in enumerate(split):
        encoded = row[args.image_column]
        try:
            image = _decode(encoded)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            where = encoded.get("path") or f"example {index} of the selection"
            raise DataError(f"cannot read image {where}: {error}. Fix or remove it.") from error
        box = None
        if has_box and row[args.bbox_column] is not None:
            values = np.asarray(row[args.bbox_column], dtype=float).reshape(-1, 4)[0]  # the first box
            box = (
                values.tolist()
                if args.bbox_format == "xyxy"
                else [values[0], values[1], values[0] + values[2], values[1] + values[3]]
            )
        items.append((image, box))
    where = f"{args.dataset} ({split.split or args.eval_split or 'evaluation split'})"
    return items, where


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lastvit-analysis", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", required=True, help="a LastViT checkpoint folder (LastViTModel or ...ForImageClassification)"
    )
    p.add_argument("--output-dir", type=Path, required=True, help="folder for analysis.json, analysis.md and the PNGs")
    p.add_argument("--overwrite", action="store_true", help="replace an --output-dir that already holds files")

    data = p.add_argument_group("images (the trainer's data flags, or --random-images)")
    data.add_argument(
        "--dataset",
        default=None,
        help="'scenes' (built-in, offline), 'imagefolder' (with --data-dir), a save_to_disk folder, "
        "or a Hub dataset name (default: scenes, unless --random-images)",
    )
    data.add_argument("--data-dir", help="folder of class subfolders for --dataset imagefolder")
    data.add_argument("--eval-split", help="split to analyse (default: validation, else test)")
    data.add_argument("--image-column", default="image", help="column holding the images (default: image)")
    data.add_argument(
        "--bbox-column",
        default="bbox",
        help="column with one ground-truth box per image, used when present (default: bbox)",
    )
    data.add_argument(
        "--bbox-format",
        choices=("xywh", "xyxy"),
        default="xywh",
        help="box layout in original-image pixels: [x, y, w, h] (scenes, COCO) or [x0, y0, x1, y1]",
    )
    data.add_argument(
        "--num-images",
        type=int,
        default=256,
        help="images to analyse, a seeded random subset of the split (default: 256)",
    )
    data.add_argument("--scenes-clutter", type=int, default=0, help="scenes: clutter fragments per image")
    data.add_argument(
        "--random-images",
        type=int,
        metavar="N",
        help="analyse N generated scenes (an ellipse on a textured background, box known) instead "
        "of a dataset: a quick smoke run with no data",
    )
    data.add_argument("--seed", type=int, default=0, help="seed for the subset, the scenes and generated images")

    run = p.add_argument_group("measurement and run")
    run.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: 16)")
    run.add_argument(
        "--norm-threshold",
        type=float,
        help="high-norm token threshold on the L2 norm (default: mean + --norm-std x std of the set)",
    )
    run.add_argument(
        "--norm-std",
        type=float,
        default=3.0,
        help="standard deviations above the mean for the default threshold (default: 3)",
    )
    run.add_argument("--num-overlays", type=int, default=4, help="images drawn with attention overlays (default: 4)")
    run.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device (default: cuda if available, else cpu)",
    )
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def check_args(args) -> None:
    if args.random_images is not None and (args.dataset is not None or args.data_dir is not None):
        raise DataError("pass either --random-images or a dataset (--dataset/--data-dir), not both.")
    count = args.random_images if args.random_images is not None else args.num_images
    if count < 2:
        raise DataError(f"need at least 2 images (CKA compares images), got {count}.")
    if args.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {args.batch_size}.")
    if args.num_overlays < 0:
        raise DataError(f"--num-overlays must be >= 0, got {args.num_overlays}.")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise DataError(f"--output-dir {args.output_dir} is a file; choose a folder.")
    if args.output_dir.exists() and any(args.output_dir.iterdir()) and not args.overwrite:
        raise DataError(
            f"{args.output_dir} already holds files; pass --overwrite to replace them or choose another --output-dir."
        )


def load_model(path: str, device: str = "cpu"):
    """A LastViT checkpoint folder with eager attention (needed for attention maps), in eval mode."""
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

    import modeling_lastvit  # noqa: F401  (registers the Auto classes for folders without remote code)

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=True)
        architectures = getattr(config, "architectures", None) or []
        # A classifier checkpoint loads as one (no "unexpected classifier weights" report); the head is not used.
        auto = (
            AutoModelForImageClassification if any("ForImageClassification" in a for a in architectures) else AutoModel
        )
        model = auto.from_pretrained(path, trust_remote_code=True, attn_implementation="eager")
    except (OSError, ValueError) as error:
        raise AnalysisError(f"cannot load a model from {path}: {error}") from error
    _lastvit_base(model)
    return model.to(device).eval()


def eval_transform(processor, config) -> ImageTransform:
    """The trainer's evaluation transform with the processor's crop size (the model's input size
    when it does not crop), short-side resize (256/224 of the crop when it has none), mean and std."""
    size = int(config.image_size_hw[0])
    if getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None) is not None:
        size = int(processor.crop_size.get("height") or size)
    shortest = (getattr(processor, "size", None) or {}).get("shortest_edge")
    return ImageTransform(
        size=size,
        mean=tuple(processor.image_mean),
        std=tuple(processor.image_std),
        train=False,
        resize_ratio=shortest / size if shortest else 256 / 224,
    )


def run(args) -> dict:
    """Load, measure, write; returns the numbers."""
    from lastvit.data.loading import build_processor

    check_args(args)
    progress = not args.no_progress
    model = load_model(args.model, args.device)
    transform = eval_transform(build_processor(model, args.model), model.config)
    size, mean, std = transform.size, transform.mean, transform.std
    if args.random_images is not None:
        items = generated_scenes(args.random_images, round(size * transform.resize_ratio), args.seed)
        source = f"{args.random_images} generated scenes (seed {args.seed})"
    else:
        args.dataset = args.dataset or SCENES
        items, source = dataset_images(args)
    pixel_values, boxes = transform_with_boxes(items, transform, progress)
    metadata = {
        "source": source,
        "model_path": str(args.model),
        "preprocessing": (
            f"resize short side to {round(size * transform.resize_ratio)}, centre crop {size}, mean {list(mean)}, "
            f"std {list(std)} (the trainer's evaluation transform, bilinear)"
        ),
    }
    results = analyze(
        model,
        pixel_values,
        boxes=boxes,
        batch_size=args.batch_size,
        norm_threshold=args.norm_threshold,
        norm_threshold_std=args.norm_std,
        num_overlays=args.num_overlays,
        image_mean=mean,
        image_std=std,
        progress=progress,
        metadata=metadata,
    )
    write_report(
        results,
        args.output_dir,
        overwrite=args.overwrite,
        progress=progress,
        title=f"Lappe & Giese analysis of {Path(args.model).name}",
    )
    return results.numbers


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        numbers = run(args)
    except (DataError, AnalysisError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary = {
        key: numbers[key] for key in ("attention_share", "cka", "gram", "token_norms", "readout") if key in numbers
    }
    print(json.dumps(_json_ready(summary), indent=2))
    print(f"report: {args.output_dir / MARKDOWN_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
