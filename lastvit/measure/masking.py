"""The masking probe (LaSt-ViT Fig. 2b): accuracy after masking the k patches a map ranks highest,
lowest or at random. The paper's finding: masking high-score patches barely hurts, masking low-score
ones does. `masking_grid` is the paper's grid of k (steps of N/7).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .grid import as_tensor, flat_scores, pair

ORDERS = ("high", "low", "random")
PROBE_ORDERS = ("high", "random", "low")  # the order in which reports show them
PROBE_STEPS = 7  # the paper's masking grid: k = 0, N/7, 2N/7, ...


def rank_patches(scores, order: str = "high", generator: torch.Generator | None = None) -> torch.Tensor:
    """Patch indices ``[B, N]`` in masking order: highest score first (``"high"``), lowest first
    (``"low"``), or a random permutation per image (``"random"``). Ties keep grid order."""
    scores = flat_scores(scores)
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
    patch_w, patch_h = pair(patch_size, "patch_size")
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
    num_patches = flat_scores(scores).shape[1]
    bad = [k for k in ks if not 0 <= int(k) <= num_patches]
    if bad:
        raise ValueError(f"Masking counts {bad} are outside [0, {num_patches}] (the patches per image).")
    generator = torch.Generator().manual_seed(seed)
    ranking = rank_patches(scores, order, generator)
    labels = as_tensor(labels)
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


def masking_grid(num_patches: int, steps: int = PROBE_STEPS) -> list[int]:
    """k = 0, N/steps, 2N/steps, ... (N excluded: a fully masked image says nothing)."""
    return sorted({round(i * num_patches / steps) for i in range(steps)})


__all__ = ["ORDERS", "PROBE_ORDERS", "PROBE_STEPS", "mask_patches", "masking_grid", "masking_probe", "rank_patches"]
