"""Patch-grid geometry: what lies under which patch. Boxes and masks to patches and back, the patch
grid of an input, per-patch object coverage, connected regions of a patch mask, box overlap.

Everything else in `lastvit.measure` reads pixels and patches through these functions.

Conventions
-----------
* Per-patch values are ``[B, N]`` in row-major grid order (the order of the patch tokens and of
  `LastViTModel.patches_to_map`), or ``[B, rows, cols]`` maps.
* Boxes are ``(x0, y0, x1, y1)`` in pixels of the image they were annotated on (ImageNet XML /
  PIL / COCO-xyxy order), right/bottom edges exclusive (the PIL/NumPy slicing convention). **Every
  size in the box functions is ``(width, height)``**, the order of PIL's ``Image.size`` and of the
  box itself; returned patch masks are ``[rows, cols]``. The pixel functions of patch masks
  (`patches_to_pixels`, `mask_box`) take ``(patch_h, patch_w)``, the order of the array axes.
* Token layout: ``[CLS] + registers + patches`` (CLS at index 0), as LastViT builds it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

BOX_EDGES = ("exclusive", "authors")


def pair(value, name: str) -> tuple[int, int]:
    """``int`` or ``(a, b)`` -> ``(a, b)`` of positive ints."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v <= 0 for v in pair):
        raise ValueError(f"`{name}` must be a positive int or a pair of positive ints, got {value!r}.")
    return int(pair[0]), int(pair[1])


def as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def flat_scores(scores) -> torch.Tensor:
    """Per-patch values ``[B, N]`` / ``[B, rows, cols]`` / ``[N]`` -> ``[B, N]`` (float)."""
    scores = as_tensor(scores).detach().float().cpu()
    if scores.ndim == 1:
        scores = scores[None]
    elif scores.ndim == 3:
        scores = scores.flatten(1)
    elif scores.ndim != 2:
        raise ValueError(f"Per-patch scores must be [B, N], [B, rows, cols] or [N], got shape {tuple(scores.shape)}.")
    return scores


def patch_grid(model_input, patch_size) -> tuple[int, int]:
    """Patch grid ``(rows, cols)`` of a ``(width, height)`` model input."""
    width, height = pair(model_input, "model_input")
    patch_w, patch_h = pair(patch_size, "patch_size")
    if width % patch_w or height % patch_h:
        raise ValueError(
            f"model_input {width}x{height} (w x h) is not divisible by the patch size {patch_w}x{patch_h}."
        )
    return height // patch_h, width // patch_w


def grid_maps(maps, grid: Sequence[int]) -> np.ndarray:
    array = maps.detach().float().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps, dtype=float)
    rows, cols = int(grid[0]), int(grid[1])
    if array.ndim == 1:
        array = array[None]
    if array.shape[-1] * (array.shape[-2] if array.ndim == 3 else 1) != rows * cols:
        raise ValueError(f"Maps of shape {array.shape} do not fit a {rows}x{cols} patch grid.")
    return array.reshape(-1, rows, cols)


def map_box(
    box: Sequence[float],
    image_size: Sequence[int] | None = None,
    model_input: int | Sequence[int] = 224,
    resize: int | None = 256,
) -> tuple[float, float, float, float]:
    """Map a box from the original image into model-input pixels, clipped to the input.

    With `resize` (the ImageNet evaluation, LaSt-ViT's ``evaluate_patch_hit.py``): the short side
    is resized to `resize`, then centre-cropped to `model_input`:
    ``scale = resize / min(W, H)``, ``left = (int(W * scale) - crop_w) // 2`` (``top`` alike),
    ``x' = clip(x * scale - left, 0, crop_w)``. `LastViTImageProcessor` crops with the same
    floor rule (torchvision's CenterCrop rounds instead; they differ by at most one pixel).
    With ``resize=None``: a plain rescale ``x' = x * crop_w / W`` (identity when the image is
    already at model size; `image_size` may then be omitted).
    Sizes are ``(width, height)``; returns ``(x0, y0, x1, y1)``.
    """
    if len(box) != 4:
        raise ValueError(f"A box is (x0, y0, x1, y1); got {box!r}.")
    crop_w, crop_h = pair(model_input, "model_input")
    width, height = pair(image_size if image_size is not None else (crop_w, crop_h), "image_size")
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"Box {tuple(box)} has x1 < x0 or y1 < y0; boxes are (x0, y0, x1, y1).")
    if resize is None:
        sx, sy, left, top = crop_w / width, crop_h / height, 0.0, 0.0
    else:
        scale = resize / min(width, height)
        sx = sy = scale
        left = (int(width * scale) - crop_w) // 2
        top = (int(height * scale) - crop_h) // 2
    return (
        max(0.0, min(float(crop_w), x0 * sx - left)),
        max(0.0, min(float(crop_h), y0 * sy - top)),
        max(0.0, min(float(crop_w), x1 * sx - left)),
        max(0.0, min(float(crop_h), y1 * sy - top)),
    )


def box_to_patches(
    box: Sequence[float],
    image_size: Sequence[int] | None = None,
    model_input: int | Sequence[int] = 224,
    patch: int | Sequence[int] = 16,
    resize: int | None = 256,
    edge: str = "exclusive",
) -> np.ndarray:
    """Every patch the mapped box overlaps (the LaSt-ViT paper's localization metrics).

    The box is mapped with `map_box`. Its right/bottom edge is exclusive (``x1``/``y1`` are one
    past the last pixel, the PIL/NumPy convention of every box here), so with ``edge="exclusive"``
    (the default) the patch set is rows ``floor(y0/ph) .. ceil(y1/ph) - 1`` and the same for
    columns: a box ending exactly on a patch border gains no patch, and a box of zero width or
    height (e.g. cut away by the crop) marks none. ``edge="authors"`` reproduces the authors'
    ``evaluate_patch_hit.py``, which counts the edge as inside: rows ``floor(y0/ph) ..
    min(floor(y1/ph), rows-1)`` (a box ending on a border includes the next patch; a box
    collapsed onto the left/top crop border still marks column/row 0, on the right/bottom none).
    The two differ only when an edge falls exactly on a patch border.
    Sizes are ``(width, height)``; `patch` may be non-square. Returns a bool mask ``[rows, cols]``
    (``mask.reshape(-1)`` indexes the patch tokens).
    """
    if edge not in BOX_EDGES:
        raise ValueError(f"Unknown box edge rule {edge!r}; use one of {BOX_EDGES}.")
    rows, cols = patch_grid(model_input, patch)
    patch_w, patch_h = pair(patch, "patch")
    x0, y0, x1, y1 = map_box(box, image_size, model_input, resize)
    mask = np.zeros((rows, cols), dtype=bool)
    if edge == "exclusive":
        row0, row1 = int(y0 // patch_h), min(math.ceil(y1 / patch_h) - 1, rows - 1)
        col0, col1 = int(x0 // patch_w), min(math.ceil(x1 / patch_w) - 1, cols - 1)
    else:
        row0, row1 = int(y0 // patch_h), min(int(y1 // patch_h), rows - 1)
        col0, col1 = int(x0 // patch_w), min(int(x1 // patch_w), cols - 1)
    if row0 <= row1 and col0 <= col1:
        mask[row0 : row1 + 1, col0 : col1 + 1] = True
    return mask


def boxes_per_image(boxes, batch_size: int) -> list[list[Sequence[float]]]:
    """One box or a list of boxes per image -> list (per image) of lists of boxes."""
    if isinstance(boxes, (np.ndarray, torch.Tensor)):
        boxes = np.asarray(boxes).tolist()
    boxes = list(boxes)
    if len(boxes) != batch_size:
        raise ValueError(
            f"Got {len(boxes)} box entries for {batch_size} images; give one box (or list of boxes) each."
        )
    per_image = []
    for entry in boxes:
        entry = np.asarray(entry, dtype=float).tolist()
        per_image.append([entry] if entry and not isinstance(entry[0], list) else entry)
    return per_image


def sizes_per_image(image_sizes, batch_size: int) -> list:
    if image_sizes is None:
        return [None] * batch_size
    sizes = np.asarray(image_sizes).tolist()
    if sizes and not isinstance(sizes[0], list):  # one (width, height) for every image
        return [sizes] * batch_size
    if len(sizes) != batch_size:
        raise ValueError(f"Got {len(sizes)} image sizes for {batch_size} images.")
    return sizes


def box_masks(boxes, image_sizes, batch_size, model_input, patch_size, resize, edge="exclusive") -> np.ndarray:
    """Union of the patch sets of each image's boxes, ``[B, rows, cols]``."""
    masks = []
    for entries, size in zip(boxes_per_image(boxes, batch_size), sizes_per_image(image_sizes, batch_size)):
        mask = np.zeros(patch_grid(model_input, patch_size), dtype=bool)
        for box in entries:
            mask |= box_to_patches(box, size, model_input, patch_size, resize, edge)
        masks.append(mask)
    return np.stack(masks)


OBJECT_PATCH_COVERAGE = 0.5
"""A patch counts as an object patch when at least this share of its pixels is object."""


def patch_coverage(masks, patch: int | Sequence[int]) -> torch.Tensor:
    """Exact per-patch object coverage ``[B, N]`` (row-major): the share of each patch's pixels
    that the boolean object mask ``[B, H, W]`` covers. Through any map metric it is the perfect
    map at that grid, the metric's ceiling."""
    patch_w, patch_h = pair(patch, "patch")
    masks = as_tensor(masks).float()
    if masks.ndim != 3 or masks.shape[-2] % patch_h or masks.shape[-1] % patch_w:
        raise ValueError(
            f"patch_coverage needs masks [B, H, W] with H, W divisible by the patch size; got {tuple(masks.shape)} "
            f"and patch {patch_w}x{patch_h}."
        )
    return nn.functional.avg_pool2d(masks[:, None], (patch_h, patch_w)).flatten(1)


def object_patches(masks, patch: int | Sequence[int], min_coverage: float = OBJECT_PATCH_COVERAGE) -> torch.Tensor:
    """Binary object patches ``[B, N]``: exact coverage (`patch_coverage`) at least `min_coverage`."""
    return patch_coverage(masks, patch) >= min_coverage


def patches_to_pixels(values, patch_size: Sequence[int], grid: Sequence[int] | None = None) -> np.ndarray:
    """Each patch's value over its ``patch_h x patch_w`` pixels: ``[B, rows, cols] -> [B, H, W]``
    (boolean masks, class labels, anything). Flat ``[B, N]`` values need the `grid` ``(rows, cols)``."""
    array = values.cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if grid is not None:
        array = array.reshape(-1, int(grid[0]), int(grid[1]))
    patch_h, patch_w = int(patch_size[0]), int(patch_size[1])
    return np.repeat(np.repeat(array, patch_h, axis=-2), patch_w, axis=-1)


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


__all__ = [
    "BOX_EDGES",
    "OBJECT_PATCH_COVERAGE",
    "box_iou",
    "box_to_patches",
    "largest_component",
    "map_box",
    "mask_box",
    "object_patches",
    "patch_coverage",
    "patch_grid",
    "patches_to_pixels",
]
