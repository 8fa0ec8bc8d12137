"""Per-patch maps: where a model's outputs say the object is. Each map is ``[B, N]`` in row-major
grid order (or ``[B, rows, cols]``), as the two papers define them:

- ``patch_score``: cosine of each final patch token with the pooled global feature (LaSt-ViT Eq. 3);
- ``patch_score_cls``: cosine with the final CLS output instead, what the authors' released
  Point-in-Box script (``evaluate_patch_hit.py``) uses, even for LazyStrike checkpoints;
- ``votes``: how many channels picked each patch (LazyStrike and max pooling, Eq. 8; `vote_map`);
- ``cls_attention``: last-layer CLS attention to the patches, head-averaged (eager attention).

A map's foreground is ``score > mean + std`` per image (`foreground_mask`, `coarse_segmentation`,
the protocol of CRATE in LaSt-ViT Tab. 6), and its predicted object box the box of the largest
4-connected foreground region (`foreground_boxes`, CorLoc's prediction in Tab. 7). Token-norm
statistics (Fig. 6) are here too, and the map-free baseline maps (the centre patch, a colour-outlier
heuristic). The zero-shot maps of image-text models are in `zero_shot`; how good a map is, in
`metrics`; what a map has to beat, in `baselines`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .grid import as_tensor, flat_scores, grid_maps, largest_component, mask_box, pair

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
    scores = as_tensor(scores).float()
    flat = scores.reshape(scores.shape[0], -1) if scores.ndim > 1 else scores[None]
    threshold = flat.mean(dim=1) + num_std * flat.std(dim=1, correction=0)
    return (flat > threshold[:, None]).reshape(scores.shape)


def vote_map(votes, grid: Sequence[int], relative_threshold: float | None = None) -> torch.Tensor:
    """LazyStrike vote map (Eq. 8) ``[B, rows, cols]`` from `patch_votes` ``[B, N]``.

    Values are divided by each image's maximum vote (Fig. 5 colours by fraction of the max), so
    they lie in [0, 1]. With `relative_threshold` (Fig. 5 uses 0.5 / 0.3 / 0.2) it returns the
    boolean map ``votes > relative_threshold * max`` instead. `grid` is ``(rows, cols)``.
    """
    votes = flat_scores(votes)
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


def coarse_segmentation(scores, grid: Sequence[int], num_std: float = 1.0) -> np.ndarray:
    """Foreground patches ``score > mean + num_std * std`` per image, as ``[B, rows, cols]`` booleans."""
    patches = grid_maps(scores, grid)
    return foreground_mask(torch.from_numpy(patches), num_std).numpy()


def foreground_boxes(patch_masks: np.ndarray, patch_size: Sequence[int]) -> list[tuple[int, int, int, int] | None]:
    """CorLoc's predicted box per image: the pixel box of the largest 4-connected component of each
    ``[rows, cols]`` foreground mask (None when the mask is empty)."""
    return [mask_box(largest_component(mask), patch_size) for mask in np.asarray(patch_masks, dtype=bool)]


def centre_patch_scores(grid: Sequence[int]) -> torch.Tensor:
    """Per-patch scores ``[rows * cols]`` that peak at the image centre (minus the distance of the
    patch centre to the image centre, in patch units): the centre-bias baseline's score map."""
    rows, cols = int(grid[0]), int(grid[1])
    y, x = torch.meshgrid(torch.arange(rows) + 0.5, torch.arange(cols) + 0.5, indexing="ij")
    return -torch.hypot(y - rows / 2, x - cols / 2).flatten()


def colour_outlier_scores(pixel_values: torch.Tensor, patch: int | Sequence[int]) -> torch.Tensor:
    """Colour-outlier saliency baseline, ``[B, N]``: the distance of each patch's mean colour from
    the image's per-channel median colour (no learning; finds anything pasted in an odd colour).
    Works in whatever space `pixel_values` [B, C, H, W] are in (normalised is fine); `patch` is
    ``(width, height)`` or an int."""
    patch_w, patch_h = pair(patch, "patch")
    if pixel_values.ndim != 4 or pixel_values.shape[-2] % patch_h or pixel_values.shape[-1] % patch_w:
        raise ValueError(
            f"colour_outlier_scores needs pixel_values [B, C, H, W] with H, W divisible by the patch size; "
            f"got {tuple(pixel_values.shape)} and patch {patch_w}x{patch_h}."
        )
    pixels = pixel_values.detach().float()
    patch_means = nn.functional.avg_pool2d(pixels, (patch_h, patch_w)).flatten(2)  # [B, C, N]
    median = pixels.flatten(2).median(dim=2).values  # [B, C]
    return (patch_means - median[:, :, None]).norm(dim=1)


def score_maps(encoded: dict) -> dict[str, torch.Tensor]:
    """The per-patch maps ``[B, N]`` this model has (see the module docstring)."""
    maps = {"patch_score": patch_scores(encoded["patches"], encoded["pooled"])}
    if encoded["cls"] is not None:
        maps["patch_score_cls"] = patch_scores(encoded["patches"], encoded["cls"])
    if encoded["votes"] is not None:
        maps["votes"] = encoded["votes"].float()
    if encoded["cls_attention"] is not None:
        maps["cls_attention"] = encoded["cls_attention"]
    return maps


@torch.no_grad()
def patch_score_maps(backbone, pixel_values, batch_size: int = 64) -> torch.Tensor:
    """``[B, N]`` Patch Score of a LastViT backbone on CPU: cosine of each final patch token with the
    pooled global feature (LazyStrike or CLS, per the config)."""
    backbone.eval()
    device = next(backbone.parameters()).device
    maps = []
    for start in range(0, len(pixel_values), batch_size):
        out = backbone(pixel_values=pixel_values[start : start + batch_size].to(device))
        patches = backbone.split_tokens(out.last_hidden_state).patches
        maps.append(patch_scores(patches.float(), out.pooler_output.float()).cpu())
    return torch.cat(maps)


__all__ = [
    "MAP_LABELS",
    "SHORT_LABELS",
    "TokenNorms",
    "centre_patch_scores",
    "coarse_segmentation",
    "colour_outlier_scores",
    "foreground_boxes",
    "foreground_mask",
    "patch_score_maps",
    "patch_scores",
    "score_maps",
    "token_norms",
    "vote_map",
]
