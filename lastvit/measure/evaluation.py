"""Evaluate one LastViT classifier: accuracy and where it looks, each map next to its baselines.

For each map (`maps.score_maps`: Patch Score with the pooled feature and with the final CLS output,
votes, last-layer CLS attention), with exact object masks: per-image AUROC against exact per-patch
object coverage (object patch = at least half covered; threshold-free and sign-aware, the primary
map score: below 0.5 the map ranks background above the object); then the paper's Point-in-Box,
CorLoc and coarse-segmentation IoU (`metrics.localisation.map_metrics`). Every metric comes with the
same numbers for the same architecture untrained (`baselines.untrained_copy`), its ceiling and the
map-free baselines (`baselines`). Plus the masking probe on the paper's grid (`masking`), token norms
before the final LayerNorm per layer (with CLS / register / patch ratios) and after it, and, given
counterfactual test sets, the background test (`background_test`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from lastvit.errors import LastViTUserError

from .baselines import baseline_metrics, ceiling_metrics, untrained_copy
from .forward import autocast, encode, predictions, resolve_device
from .maps import TokenNorms, score_maps, token_norms
from .masking import PROBE_ORDERS, masking_grid, masking_probe
from .metrics.accuracy import classification_metrics
from .metrics.localisation import map_metrics

BACKGROUND_SETS = ("original", "only_fg", "only_bg", "mixed_same", "mixed_rand")


@dataclass
class EvaluationData:
    """Evaluation tensors at the model's input size: normalised ``pixel_values`` [B, C, H, W],
    ``labels`` [B], object ``boxes`` (x0, y0, x1, y1) per image or None, exact object ``masks``
    [B, H, W] (bool) or None."""

    pixel_values: torch.Tensor
    labels: torch.Tensor
    boxes: list | None = None
    masks: np.ndarray | None = None
    skipped: list[str] = dataclasses.field(default_factory=list)  # unreadable images left out (--on-bad-image skip)


def prepare_evaluation_data(
    split,
    size: int,
    mean,
    std,
    image_column: str = "image",
    label_column: str = "label",
    limit: int | None = None,
    progress: bool = False,
    skip_bad: bool = False,
    label_map: list[int] | None = None,
) -> EvaluationData:
    """Evaluation tensors of a `datasets` split at model input `size`: images resized and
    centre-cropped (used as they are when already at that size), its ``bbox`` column ([x, y, w, h]
    pixels) mapped to (x0, y0, x1, y1) model-input boxes and its ``mask`` column (exact object
    masks, e.g. the scenes') cropped the same way, when the split has them. An unreadable image
    stops with its file's name, or with `skip_bad` is left out and named in ``skipped``;
    `label_map` (`lastvit.data.loading.match_labels`) turns dataset labels into the model's."""
    import datasets

    from lastvit.data.loading import ImageTransform, decode_or_skip, transform_with_boxes

    transform = ImageTransform(size=size, mean=tuple(mean), std=tuple(std), train=False)
    rows = split if limit is None else split.select(range(min(limit, len(split))))
    has_boxes = "bbox" in rows.column_names
    encoded = rows.cast_column(image_column, datasets.Image(decode=False))[image_column]
    images, kept, skipped = [], [], []
    for index, item in enumerate(encoded):
        image = decode_or_skip(item, index, skip_bad)
        if image is None:
            skipped.append(item.get("path") or f"example {index}")
        else:
            images.append(image)
            kept.append(index)
    if not kept:
        from lastvit.data.loading import DataError

        raise DataError("no readable image to evaluate (every one was skipped).")
    if skipped:
        rows = rows.select(kept)

    def pairs():
        for image, row in zip(images, rows.remove_columns(image_column), strict=True):
            box = None
            if has_boxes:
                x, y, w, h = row["bbox"]
                box = (x, y, x + w, y + h)
            yield image, box

    pixel_values, boxes = transform_with_boxes(pairs(), transform, progress)
    masks = None
    if "mask" in rows.column_names:
        # The same resize + centre crop as the pixels (bilinear, then back to a boolean at 1/2).
        masks = np.stack([np.asarray(transform.geometry(mask.convert("L"))) >= 128 for mask in rows["mask"]])
    labels = rows[label_column]
    if label_map is not None:
        labels = [label_map[label] for label in labels]
    return EvaluationData(pixel_values, torch.tensor(labels), boxes, masks, skipped)


def input_size(model) -> int:
    height, width = model.config.image_size_hw
    if height != width:
        raise LastViTUserError(f"evaluation crops square inputs; this model's image_size is {height}x{width}.")
    return height


def layer_norm_metrics(layer_norms: torch.Tensor, num_prefix: int, has_cls: bool) -> list[dict]:
    """Per layer (before the final LayerNorm): mean L2 norm of the CLS token, the registers and the
    patches, the mean per-image largest patch norm, its ratio to the image's median patch norm
    (high-norm outliers, Darcet et al., make it large), the register / patch and CLS / patch
    ratios, and the patch tokens per image above mean + 3 std of that layer's patch norms."""
    layers = []
    for index in range(layer_norms.shape[1]):
        norms = layer_norms[:, index]
        patches = norms[:, num_prefix:]
        patch_mean = patches.mean().item()
        threshold = patches.mean() + 3 * patches.std()
        entry = {
            "layer": index + 1,
            "patch_mean": patch_mean,
            "patch_max": patches.amax(dim=1).mean().item(),
            "patch_max_over_median": (patches.amax(dim=1) / patches.median(dim=1).values).mean().item(),
            "high_norm_patches_per_image": (patches > threshold).sum(dim=1).float().mean().item(),
            "cls_mean": None,
            "register_mean": None,
            "cls_to_patch": None,
            "register_to_patch": None,
        }
        if has_cls:
            entry["cls_mean"] = norms[:, 0].mean().item()
            entry["cls_to_patch"] = entry["cls_mean"] / patch_mean
        if num_prefix > int(has_cls):
            entry["register_mean"] = norms[:, int(has_cls) : num_prefix].mean().item()
            entry["register_to_patch"] = entry["register_mean"] / patch_mean
        layers.append(entry)
    return layers


def background_test(model, sets: dict, labels: torch.Tensor, batch_size: int = 128, device=None) -> dict:
    """The backgrounds challenge (Xiao et al. 2020) on counterfactual renderings of the same test
    objects. `sets` maps each of `BACKGROUND_SETS` to pixel values ``[B, C, H, W]`` (image i of
    every set holds the same object at the same place). Returns each set's top-1 (``only_bg``
    against the object's label: what the background alone gives away), ``bg_gap`` = mixed_same -
    mixed_rand, and ``flip_rate``: the share of images whose prediction changes between original
    and mixed_rand."""
    missing = [name for name in BACKGROUND_SETS if name not in sets]
    if missing:
        raise ValueError(f"background_test needs every set of {BACKGROUND_SETS}; missing {missing}.")
    predicted = {name: predictions(model, sets[name], batch_size, device) for name in BACKGROUND_SETS}
    result = {name: (predicted[name] == labels).float().mean().item() for name in BACKGROUND_SETS}
    result["bg_gap"] = result["mixed_same"] - result["mixed_rand"]
    result["flip_rate"] = (predicted["original"] != predicted["mixed_rand"]).float().mean().item()
    result["num_images"] = len(labels)
    return result


def localisation_numbers(model, data: EvaluationData, maps: dict, fresh: dict | None) -> dict:
    """The maps' numbers (each with its untrained twin's, from the `fresh` encoding) next to the
    map-free baselines, the ceiling and the mean box area (`data` must have boxes)."""
    size, patch_size = input_size(model), tuple(model.config.patch_size_hw)
    grid = model.patch_grid(size, size)
    located = {name: map_metrics(values, data.boxes, data.masks, patch_size, grid) for name, values in maps.items()}
    if fresh is not None:
        for name, values in score_maps(fresh).items():
            located[name]["untrained"] = map_metrics(values, data.boxes, data.masks, patch_size, grid)
    return {
        "maps": located,
        "baselines": baseline_metrics(data.pixel_values, data.boxes, data.masks, patch_size, grid),
        "ceiling": ceiling_metrics(data.boxes, data.masks, patch_size, grid),
        "box_area_fraction": float(np.mean([(b[2] - b[0]) * (b[3] - b[1]) / (size * size) for b in data.boxes])),
    }


def probe_numbers(model, data: EvaluationData, scores, *, batch_size, device, seed, probe_images) -> dict:
    """The masking probe on the first `probe_images` images, masking by `scores` (the Patch Score)."""
    size = input_size(model)
    rows, cols = model.patch_grid(size, size)
    num_patches = rows * cols
    ks = masking_grid(num_patches)
    n = len(data.pixel_values) if probe_images is None else min(probe_images, len(data.pixel_values))
    model.to(device)

    def logits_of(x):
        with autocast(device):
            return model(pixel_values=x.to(device)).logits.float().cpu()

    probe = {
        order: masking_probe(
            logits_of,
            data.pixel_values[:n],
            data.labels[:n],
            scores[:n],
            ks,
            order,
            model.config.patch_size_hw[0],
            batch_size=batch_size,
            seed=seed,
        ).tolist()
        for order in PROBE_ORDERS
    }
    return {"k": ks, "num_patches": num_patches, "num_images": n, "map": "patch_score", **probe}


def norm_numbers(model, encoded: dict, fresh: dict | None, norm_threshold: float | None) -> tuple[dict, TokenNorms]:
    """Token norms before the final LayerNorm per layer (and the untrained twin's, from `fresh`) and
    after it; returns ``(numbers, TokenNorms)``."""
    config = model.config
    norms = token_norms(encoded["patches"])
    threshold = norm_threshold if norm_threshold is not None else float(norms.norms.mean() + 3 * norms.norms.std())
    high = (norms.norms > threshold).sum(dim=1).float()
    before = {"layers": layer_norm_metrics(encoded["layer_norms"], config.num_prefix_tokens, config.use_cls_token)}
    if fresh is not None:
        before["untrained_layers"] = layer_norm_metrics(
            fresh["layer_norms"], config.num_prefix_tokens, config.use_cls_token
        )
    numbers = {
        "before_final_layernorm": before,
        "after_final_layernorm": {
            "mean_norm": norms.norms.mean().item(),
            "max_norm": norms.max_norm.max().item(),
            "mean_max_abs_value": norms.max_abs_value.mean().item(),
            "threshold": threshold,
            "high_norm_tokens_per_image": high.mean().item(),
            "images_with_high_norm_tokens": (high > 0).float().mean().item(),
            "note": "after the final LayerNorm every token's norm is close to sqrt(D) by construction",
        },
    }
    return numbers, norms


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
    counterfactual: dict | None = None,
) -> tuple[dict, dict]:
    """Every measurement of one classifier. Returns ``(metrics, arrays)``: `metrics` is
    JSON-ready; `arrays` holds the per-image maps for figures. The masking probe re-runs the
    model once per (k, order) on the first `probe_images` images. `counterfactual`: pixel values
    of the `BACKGROUND_SETS` of `data`'s images (``original`` is ``data.pixel_values``) for the
    background test, run on the model and on its untrained twin."""
    device = resolve_device(device)
    size = input_size(model)
    encoded = encode(model, data.pixel_values, batch_size, device, progress, attention=attention, hidden_states=True)
    maps = score_maps(encoded)
    metrics = {"classification": classification_metrics(encoded["logits"], data.labels), "device": str(device)}
    fresh_model = untrained_copy(model, seed=seed) if untrained else None
    fresh = None  # the untrained twin's encoding, measured with the maps (boxes needed)
    if data.boxes is not None:
        if fresh_model is not None:
            fresh = encode(fresh_model, data.pixel_values, batch_size, device, attention=attention, hidden_states=True)
            metrics["untrained_classification"] = classification_metrics(fresh["logits"], data.labels)
        metrics.update(localisation_numbers(model, data, maps, fresh))
    if counterfactual is not None:
        sets = {"original": data.pixel_values, **counterfactual}
        metrics["background_test"] = background_test(model, sets, data.labels, batch_size, device)
        if fresh_model is not None:
            metrics["background_test"]["untrained"] = background_test(
                fresh_model, sets, data.labels, batch_size, device
            )
    metrics["masking_probe"] = probe_numbers(
        model,
        data,
        maps["patch_score"],
        batch_size=batch_size,
        device=device,
        seed=seed,
        probe_images=probe_images,
    )
    metrics["token_norms"], norms = norm_numbers(model, encoded, fresh, norm_threshold)
    del fresh_model
    arrays = {"maps": maps, "norms": norms.norms, "grid": model.patch_grid(size, size)}
    return metrics, arrays


__all__ = [
    "BACKGROUND_SETS",
    "EvaluationData",
    "background_test",
    "evaluate_model",
    "input_size",
    "layer_norm_metrics",
    "localisation_numbers",
    "norm_numbers",
    "prepare_evaluation_data",
    "probe_numbers",
]
