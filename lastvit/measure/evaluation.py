"""Evaluate one LastViT classifier: accuracy and where it looks, each map next to its baselines.

The maps (per-patch values ``[B, N]``), as the two papers define them:
- ``patch_score``: cosine of each final patch token with the pooled global feature (LaSt-ViT Eq. 3);
- ``patch_score_cls``: cosine with the final CLS output instead, what the authors' released
  Point-in-Box script (``evaluate_patch_hit.py``) uses, even for LazyStrike checkpoints;
- ``votes``: how many channels picked each patch (LazyStrike and max pooling, Eq. 8);
- ``cls_attention``: last-layer CLS attention to the patches, head-averaged (eager attention).

For each map: Point-in-Box (arg-max patch in the box), CorLoc and coarse-segmentation IoU
(`dense`, mask = score > mean + std, against the exact object mask when there is one), and the
same numbers for the same architecture untrained (`untrained_copy`). Map-free baselines: a
random patch, the centre patch and a colour-outlier heuristic. Plus the masking probe on the
paper's grid (k in steps of N/7) and patch-token norms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import dense
from . import localization as L
from .accuracy import top_k_accuracy

MAP_LABELS = {
    "patch_score": "Patch Score (pooled feature, Eq. 3)",
    "patch_score_cls": "Patch Score (final CLS output, the authors' PiB script)",
    "votes": "LazyStrike votes",
    "cls_attention": "last-layer CLS attention",
}
SHORT_LABELS = {
    "patch_score": "Patch Score (pooled)",
    "patch_score_cls": "Patch Score (CLS)",
    "votes": "votes",
    "cls_attention": "CLS attention",
}
PROBE_STEPS = 7  # the paper's masking grid: k = 0, N/7, 2N/7, ...
PROBE_ORDERS = ("high", "random", "low")


@dataclass
class EvaluationData:
    """Evaluation tensors at the model's input size: normalised ``pixel_values`` [B, C, H, W],
    ``labels`` [B], object ``boxes`` (x0, y0, x1, y1) per image or None, exact object ``masks``
    [B, H, W] (bool) or None."""

    pixel_values: torch.Tensor
    labels: torch.Tensor
    boxes: list | None = None
    masks: np.ndarray | None = None


def prepare_evaluation_data(
    split,
    size: int,
    mean,
    std,
    image_column: str = "image",
    label_column: str = "label",
    limit: int | None = None,
    progress: bool = False,
) -> EvaluationData:
    """Evaluation tensors of a `datasets` split at model input `size`: images resized and
    centre-cropped (used as they are when already at that size), its ``bbox`` column ([x, y, w, h]
    pixels) mapped to (x0, y0, x1, y1) model-input boxes and its ``mask`` column (exact object
    masks, e.g. the scenes') cropped the same way, when the split has them."""
    from lastvit.data.loading import ImageTransform, transform_with_boxes

    transform = ImageTransform(size=size, mean=tuple(mean), std=tuple(std), train=False)
    rows = split if limit is None else split.select(range(min(limit, len(split))))
    has_boxes = "bbox" in rows.column_names

    def pairs():
        for row in rows:
            box = None
            if has_boxes:
                x, y, w, h = row["bbox"]
                box = (x, y, x + w, y + h)
            yield row[image_column], box

    pixel_values, boxes = transform_with_boxes(pairs(), transform, progress)
    masks = None
    if "mask" in rows.column_names:
        # The same resize + centre crop as the pixels (bilinear, then back to a boolean at 1/2).
        masks = np.stack([np.asarray(transform.geometry(mask.convert("L"))) >= 128 for mask in rows["mask"]])
    return EvaluationData(pixel_values, torch.tensor(rows[label_column]), boxes, masks)


def resolve_device(device: str | None = None) -> torch.device:
    """``"auto"``/None: CUDA when available, else CPU; anything else as given."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _autocast(device: torch.device):
    """bf16 autocast on CUDA (as the trainer's GPU configs), full precision on the CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _set_eager(model) -> str | None:
    """Eager attention (the backend that returns attention weights); returns the one to restore."""
    previous = getattr(model.config, "_attn_implementation", None)
    if previous != "eager":
        model.set_attn_implementation("eager")
    return previous


@torch.no_grad()
def encode(
    model,
    pixel_values: torch.Tensor,
    batch_size: int = 128,
    device=None,
    progress: bool = False,
    attention: bool = False,
) -> dict:
    """Run the classifier once over `pixel_values`; keep (on the CPU, float32) logits, the pooled
    feature, the final CLS output (None without a CLS token), the final patch tokens, the votes
    (None unless the pooling votes) and, with `attention`, the last layer's head-averaged CLS
    attention to the patches."""
    from tqdm.auto import tqdm

    device = resolve_device(device)
    model.to(device).eval()
    config = model.config
    attention = attention and config.use_cls_token
    previous = _set_eager(model) if attention else None
    keys = ("logits", "pooled", "cls", "patches", "votes", "cls_attention")
    out = {key: [] for key in keys}
    try:
        for start in tqdm(range(0, len(pixel_values), batch_size), desc="encoding", disable=not progress):
            batch = pixel_values[start : start + batch_size].to(device)
            with _autocast(device):
                base = model.base_model(pixel_values=batch, output_attentions=attention)
                logits = model.classifier(model.classifier_features(base))  # the head's own input rule
            tokens = model.split_tokens(base.last_hidden_state)
            out["logits"].append(logits)
            out["pooled"].append(base.pooler_output)
            out["patches"].append(tokens.patches)
            if tokens.cls is not None:
                out["cls"].append(tokens.cls.reshape(len(batch), -1))
            if base.patch_votes is not None:
                out["votes"].append(base.patch_votes)
            if attention:
                last = base.attentions[-1]  # [B, heads, T, T]
                out["cls_attention"].append(last[:, :, 0, config.num_prefix_tokens :].mean(dim=1))
    finally:
        if previous is not None and previous != "eager":
            model.set_attn_implementation(previous)
    return {key: torch.cat(values).float().cpu() if values else None for key, values in out.items()}


def score_maps(encoded: dict) -> dict[str, torch.Tensor]:
    """The per-patch maps ``[B, N]`` this model has (see the module docstring)."""
    maps = {"patch_score": L.patch_scores(encoded["patches"], encoded["pooled"])}
    if encoded["cls"] is not None:
        maps["patch_score_cls"] = L.patch_scores(encoded["patches"], encoded["cls"])
    if encoded["votes"] is not None:
        maps["votes"] = encoded["votes"].float()
    if encoded["cls_attention"] is not None:
        maps["cls_attention"] = encoded["cls_attention"]
    return maps


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    k = min(5, logits.shape[1])
    accuracy = top_k_accuracy(logits, labels, (1, k))
    return {"top1": accuracy[1], f"top{k}": accuracy[k], "num_images": len(labels)}


def localisation_metrics(scores, data: EvaluationData, size: int, patch: int, grid: Sequence[int]) -> dict:
    """Point-in-Box, CorLoc and (with exact masks) coarse-segmentation IoU of one map."""
    metrics = {"point_in_box": float(L.point_in_box(scores, data.boxes, None, size, patch, resize=None).mean())}
    metrics.update(dense.dense_metrics(scores, grid, (patch, patch), data.boxes, data.masks))
    return metrics


def baseline_metrics(data: EvaluationData, size: int, patch: int, grid: Sequence[int]) -> dict:
    """The map-free baselines: a random patch (exact expectation for Point-in-Box), the centre
    patch, and the colour-outlier heuristic (distance of a patch's mean colour from the median)."""
    n = len(data.pixel_values)
    centre = L.centre_patch_scores(grid).expand(n, -1)
    outlier = L.colour_outlier_scores(data.pixel_values, patch)
    random_scores = torch.rand(n, grid[0] * grid[1], generator=torch.Generator().manual_seed(0))
    baselines = {
        "centre_patch": localisation_metrics(centre, data, size, patch, grid),
        "colour_outlier": localisation_metrics(outlier, data, size, patch, grid),
        "random_patch": localisation_metrics(random_scores, data, size, patch, grid),
    }
    baselines["centre_patch"]["point_in_box"] = float(
        L.centre_patch_baseline(data.boxes, None, size, patch, None).mean()
    )
    baselines["random_patch"]["point_in_box"] = float(
        L.random_patch_baseline(data.boxes, None, size, patch, None).mean()
    )
    return baselines


def masking_grid(num_patches: int, steps: int = PROBE_STEPS) -> list[int]:
    """k = 0, N/steps, 2N/steps, ... (N excluded: a fully masked image says nothing)."""
    return sorted({round(i * num_patches / steps) for i in range(steps)})


def input_size(model) -> int:
    height, width = model.config.image_size_hw
    if height != width:
        raise ValueError(f"evaluation crops square inputs; this model's image_size is {height}x{width}.")
    return height


def evaluate_model(
    model,
    data: EvaluationData,
    *,
    batch_size: int = 128,
    device=None,
    progress: bool = False,
    seed: int = 0,
    probe_images: int | None = None,
    norm_threshold: float | None = None,
    untrained: bool = True,
    attention: bool = True,
) -> tuple[dict, dict]:
    """Every measurement of one classifier. Returns ``(metrics, arrays)``: `metrics` is
    JSON-ready; `arrays` holds the per-image maps for figures. The masking probe re-runs the
    model once per (k, order) on the first `probe_images` images."""
    device = resolve_device(device)
    size, patch = input_size(model), model.config.patch_size_hw[0]
    grid = model.patch_grid(size, size)
    num_patches = grid[0] * grid[1]

    encoded = encode(model, data.pixel_values, batch_size, device, progress, attention=attention)
    maps = score_maps(encoded)
    metrics = {"classification": classification_metrics(encoded["logits"], data.labels), "device": str(device)}

    if data.boxes is not None:
        located = {name: localisation_metrics(values, data, size, patch, grid) for name, values in maps.items()}
        if untrained:
            fresh_model = L.untrained_copy(model, seed=seed)
            fresh = encode(fresh_model, data.pixel_values, batch_size, device, attention=attention)
            fresh_maps = score_maps(fresh)
            for name, values in fresh_maps.items():
                located[name]["untrained"] = localisation_metrics(values, data, size, patch, grid)
            metrics["untrained_classification"] = classification_metrics(fresh["logits"], data.labels)
            del fresh_model
        metrics["maps"] = located
        metrics["baselines"] = baseline_metrics(data, size, patch, grid)
        metrics["box_area_fraction"] = float(
            np.mean([(b[2] - b[0]) * (b[3] - b[1]) / (size * size) for b in data.boxes])
        )

    ks = masking_grid(num_patches)
    n = len(data.pixel_values) if probe_images is None else min(probe_images, len(data.pixel_values))
    model.to(device)

    def logits_of(x):
        with _autocast(device):
            return model(pixel_values=x.to(device)).logits.float().cpu()

    probe = {
        order: L.masking_probe(
            logits_of,
            data.pixel_values[:n],
            data.labels[:n],
            maps["patch_score"][:n],
            ks,
            order,
            patch,
            batch_size=batch_size,
            seed=seed,
        ).tolist()
        for order in PROBE_ORDERS
    }
    metrics["masking_probe"] = {"k": ks, "num_patches": num_patches, "num_images": n, "map": "patch_score", **probe}

    norms = L.token_norms(encoded["patches"])
    threshold = norm_threshold if norm_threshold is not None else float(norms.norms.mean() + 3 * norms.norms.std())
    high = (norms.norms > threshold).sum(dim=1).float()
    metrics["token_norms"] = {
        "mean_norm": norms.norms.mean().item(),
        "max_norm": norms.max_norm.max().item(),
        "mean_max_abs_value": norms.max_abs_value.mean().item(),
        "threshold": threshold,
        "high_norm_tokens_per_image": high.mean().item(),
        "images_with_high_norm_tokens": (high > 0).float().mean().item(),
    }
    arrays = {"maps": maps, "norms": norms.norms, "grid": grid}
    return metrics, arrays


__all__ = [
    "MAP_LABELS",
    "SHORT_LABELS",
    "EvaluationData",
    "classification_metrics",
    "encode",
    "evaluate_model",
    "input_size",
    "masking_grid",
    "prepare_evaluation_data",
    "resolve_device",
    "score_maps",
]
