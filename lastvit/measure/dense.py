"""Dense evaluations from per-patch maps, with exact object masks (LaSt-ViT Tab. 6 and 7).

- Coarse segmentation (Tab. 6, the protocol of CRATE): the foreground is ``score > mean + std``
  of each image's patch scores (`localization.foreground_mask`); each foreground patch covers its
  whole patch of pixels; quality is the IoU with the exact object mask.
- CorLoc (Tab. 7, unsupervised object discovery): the box of the largest 4-connected component of
  that foreground, in pixels; an image counts as localised when its IoU with the object's box is
  at least 0.5 (with any of its object boxes, when it has several).

CorLoc's rule is `corloc_hits`, which the local `evaluate` module ``corloc``
(`lastvit.measure.load_metric("corloc")`) calls too: one definition.

Maps are ``[B, N]`` in row-major grid order (or ``[B, rows, cols]``); masks are boolean pixel
maps ``[B, H, W]`` at the model's input size; boxes are ``(x0, y0, x1, y1)`` pixels (x1/y1
exclusive, the PIL/NumPy slicing convention).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
import torch

from .localization import _boxes_per_image, foreground_mask

CORLOC_IOU = 0.5


def _grid_maps(maps, grid: Sequence[int]) -> np.ndarray:
    array = maps.detach().float().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps, dtype=float)
    rows, cols = int(grid[0]), int(grid[1])
    if array.ndim == 1:
        array = array[None]
    if array.shape[-1] * (array.shape[-2] if array.ndim == 3 else 1) != rows * cols:
        raise ValueError(f"Maps of shape {array.shape} do not fit a {rows}x{cols} patch grid.")
    return array.reshape(-1, rows, cols)


def coarse_segmentation(scores, grid: Sequence[int], num_std: float = 1.0) -> np.ndarray:
    """Foreground patches ``score > mean + num_std * std`` per image, as ``[B, rows, cols]`` booleans."""
    patches = _grid_maps(scores, grid)
    return foreground_mask(torch.from_numpy(patches), num_std).numpy()


def patch_mask_to_pixels(patch_masks: np.ndarray, patch_size: Sequence[int]) -> np.ndarray:
    """Each patch's value over its ``patch_h x patch_w`` pixels: ``[B, rows, cols] -> [B, H, W]``."""
    patch_h, patch_w = int(patch_size[0]), int(patch_size[1])
    return np.repeat(np.repeat(np.asarray(patch_masks, dtype=bool), patch_h, axis=-2), patch_w, axis=-1)


def mask_iou(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image IoU of boolean masks ``[B, H, W]`` (an empty union counts as IoU 0)."""
    predicted, target = np.asarray(predicted, dtype=bool), np.asarray(target, dtype=bool)
    if predicted.shape != target.shape:
        raise ValueError(f"mask_iou needs masks of one shape; got {predicted.shape} and {target.shape}.")
    axes = tuple(range(1, predicted.ndim))
    intersection = (predicted & target).sum(axis=axes)
    union = (predicted | target).sum(axis=axes)
    return np.where(union > 0, intersection / np.maximum(union, 1), 0.0)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean ``[rows, cols]`` mask (ties: the first found
    in row-major order); all False when the mask is empty."""
    mask = np.asarray(mask, dtype=bool)
    labels = np.zeros(mask.shape, dtype=np.int32)
    best_label, best_size, label = 0, 0, 0
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        label += 1
        labels[start] = label
        queue, size = deque([start]), 0
        while queue:
            r, c = queue.popleft()
            size += 1
            for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= nr < mask.shape[0] and 0 <= nc < mask.shape[1] and mask[nr, nc] and not labels[nr, nc]:
                    labels[nr, nc] = label
                    queue.append((nr, nc))
        if size > best_size:
            best_label, best_size = label, size
    return labels == best_label if best_size else np.zeros_like(mask)


def mask_box(mask: np.ndarray, patch_size: Sequence[int] = (1, 1)) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` pixel box (x1, y1 exclusive) around a ``[rows, cols]`` mask whose cells
    are ``patch_size`` pixels; None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    patch_h, patch_w = int(patch_size[0]), int(patch_size[1])
    return (
        int(xs.min()) * patch_w,
        int(ys.min()) * patch_h,
        (int(xs.max()) + 1) * patch_w,
        (int(ys.max()) + 1) * patch_h,
    )


def box_iou(a: Sequence[float] | None, b: Sequence[float] | None) -> float:
    """IoU of two ``(x0, y0, x1, y1)`` boxes; 0 when either is missing or the union is empty."""
    if a is None or b is None:
        return 0.0
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return float(intersection / union) if union > 0 else 0.0


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
    references = _boxes_per_image(reference_boxes, len(predicted_boxes))
    hits = []
    for box, candidates in zip(predicted_boxes, references):
        if box is not None and len(box) not in (0, 4):
            raise ValueError(f"A predicted box is (x0, y0, x1, y1) or empty; got {box}.")
        box = None if box is None or len(box) == 0 else box
        hits.append(any(box_iou(box, reference) >= threshold for reference in candidates))
    return np.array(hits, dtype=bool)


def foreground_boxes(patch_masks: np.ndarray, patch_size: Sequence[int]) -> list[tuple[int, int, int, int] | None]:
    """CorLoc's predicted box per image: the pixel box of the largest 4-connected component of each
    ``[rows, cols]`` foreground mask (None when the mask is empty)."""
    return [mask_box(largest_component(mask), patch_size) for mask in np.asarray(patch_masks, dtype=bool)]


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
        pixels = patch_mask_to_pixels(patch_masks, patch_size)
        metrics["segmentation_iou"] = float(mask_iou(pixels, object_masks).mean())
    return metrics


__all__ = [
    "CORLOC_IOU",
    "box_iou",
    "coarse_segmentation",
    "corloc",
    "corloc_hits",
    "dense_metrics",
    "foreground_boxes",
    "largest_component",
    "mask_box",
    "mask_iou",
    "patch_mask_to_pixels",
]
