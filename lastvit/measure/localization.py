"""Measurements for LaSt-ViT (arXiv 2602.22394) and Lappe & Giese (arXiv 2505.05892).

Pure functions on what `LastViTModel` returns (patch tokens, pooled feature, votes, attention
maps, hidden states). Definitions follow the papers and the authors' code; each docstring cites its
source. Not a remote-code file: `save_pretrained` never copies it.

Conventions
-----------
* Per-patch values are ``[B, N]`` in row-major grid order (the order of the patch tokens and of
  `LastViTModel.patches_to_map`), or ``[B, rows, cols]`` maps.
* Boxes are ``(x0, y0, x1, y1)`` in pixels of the image they were annotated on (ImageNet XML /
  PIL / COCO-xyxy order). **Every size in the box functions is ``(width, height)``**, the order
  of PIL's ``Image.size`` and of the box itself; returned patch masks are ``[rows, cols]``.
* Token layout: ``[CLS] + registers + patches`` (CLS at index 0), as LastViT builds it.

Baselines
---------
Point-in-Box means little on its own (pasted or centred objects are salient). Report it next to
`random_patch_baseline`, `centre_patch_baseline`, an untrained copy of the same architecture
(`untrained_copy`) and `colour_outlier_scores`; `point_in_box_with_baselines` does all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

ORDERS = ("high", "low", "random")
PIB_RULES = ("overlap", "centre")


# --------------------------------------------------------------------------- small helpers


def _pair(value, name: str) -> tuple[int, int]:
    """``int`` or ``(a, b)`` -> ``(a, b)`` of positive ints."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v <= 0 for v in pair):
        raise ValueError(f"`{name}` must be a positive int or a pair of positive ints, got {value!r}.")
    return int(pair[0]), int(pair[1])


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _flat_scores(scores) -> torch.Tensor:
    """Per-patch values ``[B, N]`` / ``[B, rows, cols]`` / ``[N]`` -> ``[B, N]`` (float)."""
    scores = _as_tensor(scores).detach().float().cpu()
    if scores.ndim == 1:
        scores = scores[None]
    elif scores.ndim == 3:
        scores = scores.flatten(1)
    elif scores.ndim != 2:
        raise ValueError(f"Per-patch scores must be [B, N], [B, rows, cols] or [N], got shape {tuple(scores.shape)}.")
    return scores


def _grid(model_input, patch_size) -> tuple[int, int]:
    """Patch grid ``(rows, cols)`` of a ``(width, height)`` model input."""
    width, height = _pair(model_input, "model_input")
    patch_w, patch_h = _pair(patch_size, "patch_size")
    if width % patch_w or height % patch_h:
        raise ValueError(
            f"model_input {width}x{height} (w x h) is not divisible by the patch size {patch_w}x{patch_h}."
        )
    return height // patch_h, width // patch_w


# --------------------------------------------------------------------------- LaSt-ViT: scores


def patch_scores(patch_tokens: torch.Tensor, global_feature: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Patch Score (LaSt-ViT Eq. 3): ``cos(x_patch, Q)`` for every patch, ``[B, N]``.

    `patch_tokens` [B, N, D] are the final (post-LN) patch tokens, `global_feature` [B, D] the
    pooled feature: for LaSt-ViT the LazyStrike token (`pooler_output`), for a CLS model the CLS
    output, for a ConvNet the GAP feature (the LaSt-ViT paper's localization metrics).
    """
    if patch_tokens.ndim != 3 or global_feature.ndim != 2 or patch_tokens.shape[::2] != global_feature.shape:
        raise ValueError(
            f"patch_scores needs patch_tokens [B, N, D] and global_feature [B, D]; got {tuple(patch_tokens.shape)} "
            f"and {tuple(global_feature.shape)}."
        )
    return nn.functional.cosine_similarity(patch_tokens, global_feature[:, None, :], dim=-1, eps=eps)


def foreground_mask(scores, num_std: float = 1.0) -> torch.Tensor:
    """Unsupervised foreground (the LaSt-ViT paper's localization metrics): ``score > mean + num_std * std`` per image.

    `scores` [B, N] (or [B, rows, cols]); mean and the population std (ddof=0) are taken over
    each image's patches. Returns a boolean tensor of the input's shape.
    """
    scores = _as_tensor(scores).float()
    flat = scores.reshape(scores.shape[0], -1) if scores.ndim > 1 else scores[None]
    threshold = flat.mean(dim=1) + num_std * flat.std(dim=1, correction=0)
    return (flat > threshold[:, None]).reshape(scores.shape)


def vote_map(votes, grid: Sequence[int], relative_threshold: float | None = None) -> torch.Tensor:
    """LazyStrike vote map (Eq. 8) ``[B, rows, cols]`` from `patch_votes` ``[B, N]``.

    Values are divided by each image's maximum vote (Fig. 5 colours by fraction of the max), so
    they lie in [0, 1]. With `relative_threshold` (Fig. 5 uses 0.5 / 0.3 / 0.2) it returns the
    boolean map ``votes > relative_threshold * max`` instead. `grid` is ``(rows, cols)``.
    """
    votes = _flat_scores(votes)
    rows, cols = int(grid[0]), int(grid[1])
    if votes.shape[1] != rows * cols:
        raise ValueError(f"Got {votes.shape[1]} votes per image, but a {rows}x{cols} grid has {rows * cols} patches.")
    relative = votes / votes.amax(dim=1, keepdim=True).clamp_min(1e-12)
    relative = relative.reshape(-1, rows, cols)
    return relative if relative_threshold is None else relative > relative_threshold


class TokenNorms(NamedTuple):
    norms: torch.Tensor
    """[B, N] L2 norm of every patch token."""
    max_norm: torch.Tensor
    """[B] largest patch-token norm per image."""
    max_abs_value: torch.Tensor
    """[B] largest absolute entry of any patch token (Fig. 6's "max value")."""
    num_high_norm: torch.Tensor | None
    """[B] patches with norm > threshold (None without a threshold)."""


def token_norms(patch_tokens: torch.Tensor, threshold: float | None = None) -> TokenNorms:
    """Feature-norm statistics of patch tokens ``[B, N, D]`` (LaSt-ViT Fig. 6; Darcet et al.'s
    high-norm tokens): per-token L2 norms, their max, the largest |entry|, and the count of
    tokens whose norm exceeds `threshold`."""
    if patch_tokens.ndim != 3:
        raise ValueError(f"token_norms needs patch tokens [B, N, D], got shape {tuple(patch_tokens.shape)}.")
    tokens = patch_tokens.detach().float()
    norms = tokens.norm(dim=-1)
    high = (norms > threshold).sum(dim=1) if threshold is not None else None
    return TokenNorms(norms, norms.amax(dim=1), tokens.abs().flatten(1).amax(dim=1), high)


# --------------------------------------------------------------------------- Point-in-Box


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
    crop_w, crop_h = _pair(model_input, "model_input")
    width, height = _pair(image_size if image_size is not None else (crop_w, crop_h), "image_size")
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
) -> np.ndarray:
    """The authors' box-to-patch rule (the LaSt-ViT paper's localization metrics): every patch the mapped box overlaps.

    The box is mapped with `map_box`; the patch set is rows ``floor(y0/ph) .. min(floor(y1/ph),
    rows-1)`` and the same for columns (a box edge exactly on a patch border includes the next
    patch, as in the authors' code). A box cut away by the crop collapses onto the crop border:
    on the left/top it still marks column/row 0, on the right/bottom (``x0 = crop_w``) its set is
    empty, also as in the authors' code.
    Sizes are ``(width, height)``; `patch` may be non-square. Returns a bool mask ``[rows, cols]``
    (``mask.reshape(-1)`` indexes the patch tokens).
    """
    rows, cols = _grid(model_input, patch)
    patch_w, patch_h = _pair(patch, "patch")
    x0, y0, x1, y1 = map_box(box, image_size, model_input, resize)
    mask = np.zeros((rows, cols), dtype=bool)
    row0, row1 = int(y0 // patch_h), min(int(y1 // patch_h), rows - 1)
    col0, col1 = int(x0 // patch_w), min(int(x1 // patch_w), cols - 1)
    if row0 <= row1 and col0 <= col1:
        mask[row0 : row1 + 1, col0 : col1 + 1] = True
    return mask


def _boxes_per_image(boxes, batch_size: int) -> list[list[Sequence[float]]]:
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


def _sizes_per_image(image_sizes, batch_size: int) -> list:
    if image_sizes is None:
        return [None] * batch_size
    sizes = np.asarray(image_sizes).tolist()
    if sizes and not isinstance(sizes[0], list):  # one (width, height) for every image
        return [sizes] * batch_size
    if len(sizes) != batch_size:
        raise ValueError(f"Got {len(sizes)} image sizes for {batch_size} images.")
    return sizes


def _box_masks(boxes, image_sizes, batch_size, model_input, patch_size, resize) -> np.ndarray:
    """Union of the patch sets of each image's boxes, ``[B, rows, cols]``."""
    masks = []
    for entries, size in zip(_boxes_per_image(boxes, batch_size), _sizes_per_image(image_sizes, batch_size)):
        mask = np.zeros(_grid(model_input, patch_size), dtype=bool)
        for box in entries:
            mask |= box_to_patches(box, size, model_input, patch_size, resize)
        masks.append(mask)
    return np.stack(masks)


def point_in_box(
    scores,
    boxes,
    image_sizes=None,
    model_input: int | Sequence[int] = 224,
    patch_size: int | Sequence[int] = 16,
    resize: int | None = 256,
    rule: str = "overlap",
) -> np.ndarray:
    """Point-in-Box hits (LaSt-ViT Tab. 1/3, "Patch-BBox Hit Ratio"): is each image's arg-max patch
    inside its ground-truth box? Returns a bool array ``[B]``; PiB is its mean.

    `scores` [B, N] or [B, rows, cols]; `boxes` one ``(x0, y0, x1, y1)`` or a list of boxes per
    image (hit if inside any); `image_sizes` one ``(width, height)`` per image, or one for all, or
    None when the inputs were already at model size. ``rule="overlap"`` (authors): the arg-max is
    one of the patches the box overlaps (`box_to_patches`); ``rule="centre"`` (a third-party
    variant): the arg-max patch's centre lies inside the mapped box. Ties go to the first patch.
    Filter the images first with `pib_filter` to reproduce the paper's protocol.
    """
    if rule not in PIB_RULES:
        raise ValueError(f"Unknown Point-in-Box rule {rule!r}; use one of {PIB_RULES}.")
    scores = _flat_scores(scores)
    rows, cols = _grid(model_input, patch_size)
    if scores.shape[1] != rows * cols:
        raise ValueError(
            f"Scores have {scores.shape[1]} patches per image, but a {model_input} input with {patch_size}-px "
            f"patches has {rows}x{cols}; pass the matching model_input (width, height) and patch_size."
        )
    top = scores.argmax(dim=1).numpy()
    if rule == "overlap":
        masks = _box_masks(boxes, image_sizes, len(top), model_input, patch_size, resize).reshape(len(top), -1)
        return masks[np.arange(len(top)), top]
    patch_w, patch_h = _pair(patch_size, "patch_size")
    hits = np.zeros(len(top), dtype=bool)
    per_image = zip(_boxes_per_image(boxes, len(top)), _sizes_per_image(image_sizes, len(top)))
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
    per_image = _boxes_per_image(boxes, len(boxes))
    sizes = _sizes_per_image(image_sizes, len(per_image))
    keep = np.zeros(len(per_image), dtype=bool)
    for i, (entries, size) in enumerate(zip(per_image, sizes)):
        if len(entries) != 1:
            continue
        width, height = _pair(size, "image_size")
        x0, y0, x1, y1 = entries[0]
        keep[i] = (x1 - x0) * (y1 - y0) < max_area_ratio * width * height
    return keep


# --------------------------------------------------------------------------- baselines


def random_patch_baseline(
    boxes, image_sizes=None, model_input=224, patch_size=16, resize: int | None = 256
) -> np.ndarray:
    """Expected Point-in-Box hit of a uniformly random patch, per image: ``|patch set| / N``
    (exact, no sampling). Its mean is the random-patch PiB baseline."""
    batch_size = len(_boxes_per_image(boxes, len(boxes)))
    masks = _box_masks(boxes, image_sizes, batch_size, model_input, patch_size, resize)
    return masks.reshape(batch_size, -1).mean(axis=1)


def centre_patch_scores(grid: Sequence[int]) -> torch.Tensor:
    """Per-patch scores ``[rows * cols]`` that peak at the image centre (minus the distance of the
    patch centre to the image centre, in patch units): the centre-bias baseline's score map."""
    rows, cols = int(grid[0]), int(grid[1])
    y, x = torch.meshgrid(torch.arange(rows) + 0.5, torch.arange(cols) + 0.5, indexing="ij")
    return -torch.hypot(y - rows / 2, x - cols / 2).flatten()


def centre_patch_baseline(
    boxes, image_sizes=None, model_input=224, patch_size=16, resize: int | None = 256, rule: str = "overlap"
) -> np.ndarray:
    """Point-in-Box hit of always pointing at the centre patch, per image. On even grids (14x14)
    2 or 4 patches are equally central; the value is then the fraction of them that hit (the
    expectation of picking one at random), so it is not biased to one quadrant."""
    rows, cols = _grid(model_input, patch_size)
    scores = centre_patch_scores((rows, cols))
    central = torch.nonzero(scores == scores.max()).flatten()
    batch_size = len(_boxes_per_image(boxes, len(boxes)))
    hits = []
    for index in central.tolist():
        one_hot = torch.zeros(batch_size, rows * cols)
        one_hot[:, index] = 1.0
        hits.append(point_in_box(one_hot, boxes, image_sizes, model_input, patch_size, resize, rule))
    return np.mean(hits, axis=0)


def colour_outlier_scores(pixel_values: torch.Tensor, patch: int | Sequence[int]) -> torch.Tensor:
    """Colour-outlier saliency baseline, ``[B, N]``: the distance of each patch's mean colour from
    the image's per-channel median colour (no learning; finds anything pasted in an odd colour).
    Works in whatever space `pixel_values` [B, C, H, W] are in (normalised is fine); `patch` is
    ``(width, height)`` or an int."""
    patch_w, patch_h = _pair(patch, "patch")
    if pixel_values.ndim != 4 or pixel_values.shape[-2] % patch_h or pixel_values.shape[-1] % patch_w:
        raise ValueError(
            f"colour_outlier_scores needs pixel_values [B, C, H, W] with H, W divisible by the patch size; "
            f"got {tuple(pixel_values.shape)} and patch {patch_w}x{patch_h}."
        )
    pixels = pixel_values.detach().float()
    patch_means = nn.functional.avg_pool2d(pixels, (patch_h, patch_w)).flatten(2)  # [B, C, N]
    median = pixels.flatten(2).median(dim=2).values  # [B, C]
    return (patch_means - median[:, :, None]).norm(dim=1)


def untrained_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A freshly initialised model of the same class and config (the "same architecture,
    untrained" baseline), in eval mode; the global RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model)(model.config)
    return fresh.to(next(model.parameters()).device).eval()


def point_in_box_with_baselines(
    scores,
    boxes,
    image_sizes=None,
    model_input=224,
    patch_size=16,
    resize: int | None = 256,
    rule: str = "overlap",
    pixel_values: torch.Tensor | None = None,
    untrained_scores=None,
    extra_scores: dict | None = None,
) -> dict[str, float]:
    """Point-in-Box of `scores` next to its baselines, as a dict of rates in [0, 1]:
    ``point_in_box``, ``random_patch``, ``centre_patch``, ``colour_outlier`` (if `pixel_values`,
    at model input size, are given), ``untrained`` (if `untrained_scores`, e.g. from
    `untrained_copy`, are given), any `extra_scores` by name, and ``num_images``."""
    args = (image_sizes, model_input, patch_size, resize)
    report = {
        "point_in_box": float(point_in_box(scores, boxes, *args, rule=rule).mean()),
        "random_patch": float(random_patch_baseline(boxes, *args).mean()),
        "centre_patch": float(centre_patch_baseline(boxes, *args, rule=rule).mean()),
    }
    if pixel_values is not None:
        outlier = colour_outlier_scores(pixel_values, patch_size)
        report["colour_outlier"] = float(point_in_box(outlier, boxes, *args, rule=rule).mean())
    if untrained_scores is not None:
        report["untrained"] = float(point_in_box(untrained_scores, boxes, *args, rule=rule).mean())
    for name, values in (extra_scores or {}).items():
        report[name] = float(point_in_box(values, boxes, *args, rule=rule).mean())
    report["num_images"] = len(_flat_scores(scores))
    return report


# --------------------------------------------------------------------------- masking probe


def rank_patches(scores, order: str = "high", generator: torch.Generator | None = None) -> torch.Tensor:
    """Patch indices ``[B, N]`` in masking order: highest score first (``"high"``), lowest first
    (``"low"``), or a random permutation per image (``"random"``). Ties keep grid order."""
    scores = _flat_scores(scores)
    if order == "high":
        return torch.argsort(scores, dim=1, descending=True, stable=True)
    if order == "low":
        return torch.argsort(scores, dim=1, stable=True)
    if order == "random":
        return torch.stack([torch.randperm(scores.shape[1], generator=generator) for _ in range(len(scores))])
    raise ValueError(f"Unknown masking order {order!r}; use one of {ORDERS}.")


def mask_patches(
    pixel_values: torch.Tensor, patch_indices: torch.Tensor, patch_size, fill_value: float = 0.0
) -> torch.Tensor:
    """Copy of `pixel_values` [B, C, H, W] with the patches `patch_indices` [B, k] (row-major grid
    indices) set to `fill_value` (0 in normalised space = the dataset mean colour)."""
    patch_w, patch_h = _pair(patch_size, "patch_size")
    batch, _, height, width = pixel_values.shape
    rows, cols = height // patch_h, width // patch_w
    keep = torch.ones(batch, rows * cols, dtype=torch.bool, device=pixel_values.device)
    keep.scatter_(1, patch_indices.to(keep.device).long(), False)
    keep = keep.reshape(batch, 1, rows, 1, cols, 1).expand(batch, 1, rows, patch_h, cols, patch_w)
    keep = keep.reshape(batch, 1, height, width)
    return torch.where(keep, pixel_values, torch.full_like(pixel_values, fill_value))


@torch.no_grad()
def masking_probe(
    model_fn: Callable[[torch.Tensor], torch.Tensor],
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    scores,
    ks: Sequence[int],
    order: str = "high",
    patch_size: int | Sequence[int] = 16,
    fill_value: float = 0.0,
    batch_size: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """Masking probe (LaSt-ViT Fig. 2b): accuracy after masking k patches chosen by Patch Score.

    For each k in `ks`, the k top-scored (``order="high"``), bottom-scored (``"low"``) or random
    (``"random"``, one fixed permutation per image from `seed`, so the masked sets are nested)
    patches of each image are set to `fill_value` in normalised pixel space and
    ``model_fn(pixel_values) -> logits`` (e.g. ``lambda x: model(x).logits``) is re-evaluated.
    Returns top-1 accuracies ``[len(ks)]``.
    The paper's finding: masking high-score patches barely hurts, masking low-score ones does.
    """
    num_patches = _flat_scores(scores).shape[1]
    bad = [k for k in ks if not 0 <= int(k) <= num_patches]
    if bad:
        raise ValueError(f"Masking counts {bad} are outside [0, {num_patches}] (the patches per image).")
    generator = torch.Generator().manual_seed(seed)
    ranking = rank_patches(scores, order, generator)
    labels = _as_tensor(labels)
    accuracies = []
    for k in ks:
        correct = 0
        for start in range(0, len(pixel_values), batch_size):
            stop = start + batch_size
            masked = mask_patches(pixel_values[start:stop], ranking[start:stop, : int(k)], patch_size, fill_value)
            predictions = model_fn(masked).argmax(dim=-1).cpu()
            correct += int((predictions == labels[start:stop].cpu()).sum())
        accuracies.append(correct / len(pixel_values))
    return np.asarray(accuracies)


__all__ = [
    "TokenNorms",
    "box_to_patches",
    "centre_patch_baseline",
    "centre_patch_scores",
    "colour_outlier_scores",
    "foreground_mask",
    "map_box",
    "mask_patches",
    "masking_probe",
    "patch_scores",
    "pib_filter",
    "point_in_box",
    "point_in_box_with_baselines",
    "random_patch_baseline",
    "rank_patches",
    "token_norms",
    "untrained_copy",
    "vote_map",
]
