"""Top-k accuracy, once: the trainer's evaluation, the study's classification metrics and the local
`top_k_accuracy` evaluate module all count hits here."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def top_k_hits(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """``[n, k]`` booleans: column i says whether an example's label is its (i+1)-th highest-scoring
    class (`torch.topk`'s order). Row sums over the first j columns give top-j hits for every j <= k."""
    return scores.topk(k, dim=-1).indices == torch.as_tensor(labels, device=scores.device)[:, None]


def top_k_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: Iterable[int] = (1, 5)) -> dict[int, float]:
    """``{k: share of examples whose label is among their k highest scores}`` for every k in `ks` up to
    the number of classes (larger k are left out)."""
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise ValueError(f"k must be positive, got {ks}.")
    if len(labels) == 0:
        raise ValueError("top-k accuracy needs at least one example.")
    kept = [k for k in ks if k <= scores.shape[-1]]
    if not kept:
        return {}
    hits = top_k_hits(scores, labels, max(kept))
    return {k: hits[:, :k].any(dim=1).float().mean().item() for k in kept}


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """``{"top1", "top5" (or top-k with k = the number of classes when fewer), "num_images"}``."""
    k = min(5, logits.shape[1])
    accuracy = top_k_accuracy(logits, labels, (1, k))
    return {"top1": accuracy[1], f"top{k}": accuracy[k], "num_images": len(labels)}


__all__ = ["classification_metrics", "top_k_accuracy", "top_k_hits"]
