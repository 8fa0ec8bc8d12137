"""How well a per-patch map finds the object (LaSt-ViT Tab. 1/3, 6 and 7), each rule defined once;
the local `evaluate` modules ``point_in_box`` and ``corloc`` call these functions too.

- Point-in-Box (`point_in_box`, the paper's "Patch-BBox Hit Ratio"): the arg-max patch lies in the
  ground-truth box, with the authors' image filter `pib_filter`, and its expectation for a random
  patch (`random_patch_baseline`) and the centre patch (`centre_patch_baseline`).
- AUROC against exact object coverage (`per_image_auroc`, `mean_auroc`): threshold-free and
  sign-aware, the primary map score; below 0.5 the map ranks background above the object.
- CorLoc (`corloc_hits`, `corloc`; Tab. 7, unsupervised object discovery): the box of the largest
  4-connected foreground region (`maps.foreground_boxes`) has IoU >= 0.5 with an object box.
- Coarse segmentation (Tab. 6, CRATE's protocol): the IoU (`mask_iou`) of the foreground patches,
  each covering its whole patch of pixels, with the exact object mask.

`map_metrics` gives all of them for one kind of map. Geometry (box to patches, coverage) is
`lastvit.measure.grid`; the maps and their foreground `lastvit.measure.maps`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..grid import (
    OBJECT_PATCH_COVERAGE,
    as_tensor,
    box_iou,
    box_masks,
    boxes_per_image,
    flat_scores,
    map_box,
    object_patches,
    pair,
    patch_grid,
    patches_to_pixels,
    sizes_per_image,
)
from ..maps import centre_patch_scores, coarse_segmentation, foreground_boxes

PIB_RULES = ("overlap", "centre")
CORLOC_IOU = 0.5


def point_in_box(
    scores,
    boxes,
    image_sizes=None,
    model_input: int | Sequence[int] = 224,
    patch_size: int | Sequence[int] = 16,
    resize: int | None = 256,
    rule: str = "overlap",
    edge: str = "exclusive",
) -> np.ndarray:
    """Point-in-Box hits (LaSt-ViT Tab. 1/3, "Patch-BBox Hit Ratio"): is each image's arg-max patch
    inside its ground-truth box? Returns a bool array ``[B]``; PiB is its mean.

    `scores` [B, N] or [B, rows, cols]; `boxes` one ``(x0, y0, x1, y1)`` or a list of boxes per
    image (hit if inside any); `image_sizes` one ``(width, height)`` per image, or one for all, or
    None when the inputs were already at model size. ``rule="overlap"`` (authors): the arg-max is
    one of the patches the box overlaps (`box_to_patches` with its `edge` rule); ``rule="centre"`` (a third-party
    variant): the arg-max patch's centre lies inside the mapped box. Ties go to the first patch.
    Filter the images first with `pib_filter` to reproduce the paper's protocol.
    """
    if rule not in PIB_RULES:
        raise ValueError(f"Unknown Point-in-Box rule {rule!r}; use one of {PIB_RULES}.")
    scores = flat_scores(scores)
    rows, cols = patch_grid(model_input, patch_size)
    if scores.shape[1] != rows * cols:
        raise ValueError(
            f"Scores have {scores.shape[1]} patches per image, but a {model_input} input with {patch_size}-px "
            f"patches has {rows}x{cols}; pass the matching model_input (width, height) and patch_size."
        )
    top = scores.argmax(dim=1).numpy()
    if rule == "overlap":
        masks = box_masks(boxes, image_sizes, len(top), model_input, patch_size, resize, edge)
        masks = masks.reshape(len(top), -1)
        return masks[np.arange(len(top)), top]
    patch_w, patch_h = pair(patch_size, "patch_size")
    hits = np.zeros(len(top), dtype=bool)
    per_image = zip(boxes_per_image(boxes, len(top)), sizes_per_image(image_sizes, len(top)))
    for i, (entries, size) in enumerate(per_image):
        cx, cy = (top[i] % cols + 0.5) * patch_w, (top[i] // cols + 0.5) * patch_h
        for box in entries:
            x0, y0, x1, y1 = map_box(box, size, model_input, resize)
            hits[i] |= x0 <= cx <= x1 and y0 <= cy <= y1
    return hits


def pib_filter(boxes, image_sizes, max_area_ratio: float = 0.25) -> np.ndarray:
    """The Point-in-Box image filter (authors' ImageNet-val loader): keep images with exactly one
    object whose box area ``(x1-x0)*(y1-y0)`` is below ``max_area_ratio * W * H`` (original
    pixels). `boxes`: a list of boxes per image; `image_sizes`: ``(width, height)`` per image.
    Returns a bool array ``[B]`` of the images to keep."""
    per_image = boxes_per_image(boxes, len(boxes))
    sizes = sizes_per_image(image_sizes, len(per_image))
    keep = np.zeros(len(per_image), dtype=bool)
    for i, (entries, size) in enumerate(zip(per_image, sizes)):
        if len(entries) != 1:
            continue
        width, height = pair(size, "image_size")
        x0, y0, x1, y1 = entries[0]
        keep[i] = (x1 - x0) * (y1 - y0) < max_area_ratio * width * height
    return keep


def random_patch_baseline(
    boxes, image_sizes=None, model_input=224, patch_size=16, resize: int | None = 256
) -> np.ndarray:
    """Expected Point-in-Box hit of a uniformly random patch, per image: ``|patch set| / N``
    (exact, no sampling). Its mean is the random-patch PiB baseline."""
    batch_size = len(boxes_per_image(boxes, len(boxes)))
    masks = box_masks(boxes, image_sizes, batch_size, model_input, patch_size, resize)
    return masks.reshape(batch_size, -1).mean(axis=1)


def centre_patch_baseline(
    boxes, image_sizes=None, model_input=224, patch_size=16, resize: int | None = 256, rule: str = "overlap"
) -> np.ndarray:
    """Point-in-Box hit of always pointing at the centre patch, per image. On even grids (14x14)
    2 or 4 patches are equally central; the value is then the fraction of them that hit (the
    expectation of picking one at random), so it is not biased to one quadrant."""
    rows, cols = patch_grid(model_input, patch_size)
    scores = centre_patch_scores((rows, cols))
    central = torch.nonzero(scores == scores.max()).flatten()
    batch_size = len(boxes_per_image(boxes, len(boxes)))
    hits = []
    for index in central.tolist():
        one_hot = torch.zeros(batch_size, rows * cols)
        one_hot[:, index] = 1.0
        hits.append(point_in_box(one_hot, boxes, image_sizes, model_input, patch_size, resize, rule))
    return np.mean(hits, axis=0)


def per_image_auroc(scores, positives, chunk: int = 256) -> np.ndarray:
    """Per-image AUROC ``[B]`` of a map against binary patch labels (threshold-free and sign-aware).

    AUROC = P(score of a random object patch > score of a random background patch), ties counted
    one half: the Mann-Whitney form, equal to the rank form ``(R+ - P(P+1)/2) / (P * Q)`` with
    average ranks for ties (R+: the sum of the P positives' ranks, Q negatives). 1 = every object
    patch above every background patch, 0.5 = chance (or a constant map), below 0.5 = the map
    ranks *background* above the object. Images whose patches are all one class have no AUROC:
    NaN (count them with ``np.isnan``).
    """
    scores = flat_scores(scores)
    positives = as_tensor(positives).reshape(scores.shape).bool()
    result = np.full(len(scores), np.nan)
    for start in range(0, len(scores), chunk):
        s, pos = scores[start : start + chunk], positives[start : start + chunk]
        greater = (s[:, :, None] > s[:, None, :]).float() + 0.5 * (s[:, :, None] == s[:, None, :]).float()
        pairs = pos[:, :, None] & ~pos[:, None, :]  # (object patch i, background patch j)
        counts = pairs.sum(dim=(1, 2)).float()
        wins = (greater * pairs).sum(dim=(1, 2))
        valid = counts > 0
        values = torch.where(valid, wins / counts.clamp_min(1), torch.full_like(wins, float("nan")))
        result[start : start + chunk] = values.numpy()
    return result


def mean_auroc(scores, positives) -> tuple[float, int]:
    """``(mean per-image AUROC, images with an AUROC)`` of a map against binary object patches
    (`per_image_auroc`); images whose patches are all one class are left out, and the mean is NaN
    when no image has both."""
    auroc = per_image_auroc(scores, positives)
    valid = ~np.isnan(auroc)
    return (float(auroc[valid].mean()) if valid.any() else float("nan")), int(valid.sum())


def auroc_against_coverage(scores, coverage, min_coverage: float = OBJECT_PATCH_COVERAGE) -> float:
    """Mean per-image AUROC of a patch map `scores` ``[B, N]`` against the patches whose object
    `coverage` ``[B, N]`` (`grid.patch_coverage`) is at least `min_coverage` (`mean_auroc`). 0.5 is
    chance, 1.0 the ceiling (the coverage map itself), below 0.5 a map that ranks the background first."""
    return mean_auroc(scores, torch.as_tensor(coverage) >= min_coverage)[0]


def mask_iou(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image IoU of boolean masks ``[B, H, W]`` (an empty union counts as IoU 0)."""
    predicted, target = np.asarray(predicted, dtype=bool), np.asarray(target, dtype=bool)
    if predicted.shape != target.shape:
        raise ValueError(f"mask_iou needs masks of one shape; got {predicted.shape} and {target.shape}.")
    axes = tuple(range(1, predicted.ndim))
    intersection = (predicted & target).sum(axis=axes)
    union = (predicted | target).sum(axis=axes)
    return np.where(union > 0, intersection / np.maximum(union, 1), 0.0)


def corloc_hits(predicted_boxes, reference_boxes, threshold: float = CORLOC_IOU) -> np.ndarray:
    """CorLoc's rule per image: a hit when the predicted box has IoU ``>= threshold`` with any of the
    image's reference boxes. `predicted_boxes`: one ``(x0, y0, x1, y1)`` per image, or None / empty
    when nothing was found (a miss); `reference_boxes`: one box or a list of boxes per image (an
    empty list: a miss)."""
    predicted_boxes = list(predicted_boxes)
    if len(reference_boxes) != len(predicted_boxes):
        raise ValueError(
            f"Got {len(reference_boxes)} reference box entries for {len(predicted_boxes)} images; "
            "give one box (or list of boxes) per image."
        )
    references = boxes_per_image(reference_boxes, len(predicted_boxes))
    hits = []
    for box, candidates in zip(predicted_boxes, references):
        if box is not None and len(box) not in (0, 4):
            raise ValueError(f"A predicted box is (x0, y0, x1, y1) or empty; got {box}.")
        box = None if box is None or len(box) == 0 else box
        hits.append(any(box_iou(box, reference) >= threshold for reference in candidates))
    return np.array(hits, dtype=bool)


def corloc(patch_masks: np.ndarray, boxes, patch_size: Sequence[int], threshold: float = CORLOC_IOU) -> np.ndarray:
    """Per-image CorLoc hits (`corloc_hits`) of the `foreground_boxes` of `patch_masks`
    ``[B, rows, cols]``; `boxes` one ``(x0, y0, x1, y1)`` (or a list of them) per image in
    model-input pixels."""
    patch_masks = np.asarray(patch_masks, dtype=bool)
    if len(boxes) != len(patch_masks):
        raise ValueError(f"Got {len(boxes)} boxes for {len(patch_masks)} masks; give one box per image.")
    return corloc_hits(foreground_boxes(patch_masks, patch_size), boxes, threshold)


def dense_metrics(scores, grid: Sequence[int], patch_size: Sequence[int], boxes, object_masks=None) -> dict:
    """Coarse-segmentation IoU (when exact `object_masks` ``[B, H, W]`` are given) and CorLoc of
    one kind of per-patch map, as means over the images."""
    patch_masks = coarse_segmentation(scores, grid)
    metrics = {"corloc": float(corloc(patch_masks, boxes, patch_size).mean())}
    if object_masks is not None:
        pixels = patches_to_pixels(patch_masks, patch_size)
        metrics["segmentation_iou"] = float(mask_iou(pixels, object_masks).mean())
    return metrics


def map_metrics(scores, boxes, masks, patch_size: Sequence[int], grid: Sequence[int]) -> dict:
    """Every localisation number of one kind of map on images at model input size: with exact
    `masks` ``[B, H, W]`` its mean per-image AUROC against exact object coverage (``auroc``;
    ``auroc_images`` images had both object and background patches), then the paper's Point-in-Box
    (`boxes` in model-input pixels), CorLoc and (with masks) coarse-segmentation IoU (`dense_metrics`).
    `patch_size` is ``(patch_h, patch_w)``, `grid` ``(rows, cols)``."""
    patch_h, patch_w = int(patch_size[0]), int(patch_size[1])
    metrics = {}
    if masks is not None:
        metrics["auroc"], metrics["auroc_images"] = mean_auroc(scores, object_patches(masks, (patch_w, patch_h)))
    model_input = (int(grid[1]) * patch_w, int(grid[0]) * patch_h)
    hits = point_in_box(scores, boxes, None, model_input, (patch_w, patch_h), resize=None)
    metrics["point_in_box"] = float(hits.mean())
    metrics.update(dense_metrics(scores, grid, (patch_h, patch_w), boxes, masks))
    return metrics


__all__ = [
    "CORLOC_IOU",
    "PIB_RULES",
    "auroc_against_coverage",
    "centre_patch_baseline",
    "corloc",
    "corloc_hits",
    "dense_metrics",
    "map_metrics",
    "mask_iou",
    "mean_auroc",
    "per_image_auroc",
    "pib_filter",
    "point_in_box",
    "random_patch_baseline",
]
