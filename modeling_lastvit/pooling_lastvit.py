"""LazyStrike pooling (LaSt-ViT, arXiv 2602.22394), exactly as the authors' code computes it.

The global token is built per channel from the patch tokens whose value is *stable* under a
low-pass filter along the channel axis:

1. ``x_hat = ifft(ifftshift(fftshift(fft(x, dim=-1)) * g)).real`` with a max-normalised Gaussian
   window ``g`` over the code's index range ``arange(-D//2 + 1, D//2 + 1)``;
2. a signed stability score, ``x / |x_hat - x|`` (``"repo"``, the released code) or
   ``x_hat / (|x_hat - x| + eps)`` (``"paper"``, Eq. 5);
3. for every channel, the top-K patches by score; the pooled value is the mean of the ORIGINAL
   ``x`` over them. Each channel may pick different patches.

The selection is not differentiable, so gradients reach only the K selected entries of each
channel (1/K each). The score path therefore runs without autograd, in fp32 by default.
"""

import math
from typing import NamedTuple

import torch
from torch import nn

from .configuration_lastvit import SCORE_RULES


def gaussian_channel_window(dim: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """The authors' frequency window: ``exp(-pos^2 / 2 sigma^2)`` over ``arange(-dim//2+1, dim//2+1)``.

    Its peak sits one bin left of the centred DC term (index ``dim//2 - 1`` vs ``dim//2``); this
    off-by-one is part of the released checkpoints' behaviour and is kept on purpose.
    """
    pos = torch.arange(-dim // 2 + 1, dim // 2 + 1, device=device, dtype=dtype)
    window = torch.exp(-0.5 * (pos / sigma) ** 2)
    return window / window.max()


def lowpass_channels(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Low-pass real ``x`` along its last (channel) axis with the authors' FFT Gaussian window.

    The authors compute ``ifft(ifftshift(fftshift(fft(x)) * g)).real`` = ``Re(ifft(fft(x) * h))`` with
    ``h = ifftshift(g)``. For real ``x`` that equals ``ifft(fft(x) * (h[k] + h[-k]) / 2)``, a real and
    even filter, so a real FFT computes the same values up to rounding, without complex [..., D]
    buffers (about 2x faster pooling on CPU)."""
    return _lowpass(x, _rfft_window(x.shape[-1], sigma, x.device, x.dtype))


def _rfft_window(dim: int, sigma: float, device, dtype) -> torch.Tensor:
    """The real, even filter (h[k] + h[-k mod D]) / 2 on the rfft bins 0..D//2."""
    window = torch.fft.ifftshift(gaussian_channel_window(dim, sigma, device=device, dtype=dtype))
    return (0.5 * (window + window.flip(0).roll(1)))[: dim // 2 + 1]


def _lowpass(x: torch.Tensor, rfft_window: torch.Tensor) -> torch.Tensor:
    return torch.fft.irfft(torch.fft.rfft(x, dim=-1) * rfft_window, n=x.shape[-1], dim=-1)


def stability_score(x: torch.Tensor, x_hat: torch.Tensor, rule: str = "repo", eps: float = 1e-6) -> torch.Tensor:
    """Signed stability of every entry; large positive values are selected.

    ``"repo"``: ``x / max(|x_hat - x|, eps)`` (the released code, plus a clamp against division by 0).
    ``"paper"``: ``x_hat / (|x_hat - x| + eps)`` (Eq. 5 of the paper).
    """
    residual = (x_hat - x).abs()
    if rule == "repo":
        return x / residual.clamp_min(eps)
    if rule == "paper":
        return x_hat / (residual + eps)
    raise ValueError(f"Unknown LazyStrike score rule {rule!r}; use one of {SCORE_RULES}.")


def resolve_top_k(num_patches: int, top_k: int | None = None, top_k_ratio: float | None = None) -> int:
    """Number of patches each channel averages: ``top_k``, or ``round(top_k_ratio * N)`` (at least 1)."""
    if top_k_ratio is not None:
        return max(1, round(top_k_ratio * num_patches))
    if top_k is None:
        raise ValueError("LazyStrike needs `top_k` (a count) or `top_k_ratio` (a fraction of the patches).")
    if top_k > num_patches:
        raise ValueError(
            f"LazyStrike top_k={top_k} exceeds the {num_patches} patches of this input; use a larger input, "
            "a smaller `lazystrike_top_k`, or `lazystrike_top_k_ratio` to scale K with the patch count."
        )
    return top_k


class PooledFeatures(NamedTuple):
    pooled: torch.Tensor
    """[B, D] the global feature."""
    indices: torch.Tensor | None = None
    """[B, K, D] patch index chosen by each channel (positions within the patch tokens; unordered within K)."""
    votes: torch.Tensor | None = None
    """[B, N] how many channels chose each patch (Eq. 8); sums to K * D."""


def count_votes(indices: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Votes per patch [B, N] from per-channel selections [B, K, D]."""
    flat = indices.flatten(1)
    votes = torch.zeros(indices.shape[0], num_patches, dtype=torch.long, device=indices.device)
    return votes.scatter_add_(1, flat, torch.ones_like(flat))


# The score path works on batch chunks of at most this many entries (16 MiB per fp32 buffer, a few buffers
# live at once), so its fp32 temporaries stay bounded whatever the batch size. Chunking changes no value:
# every score depends on its own token only.
SCORE_CHUNK_ELEMENTS = 1 << 22


def select_top_k(scores: torch.Tensor, k: int, patches_last: bool | None = None) -> torch.Tensor:
    """Indices [B, K, D] of the K largest ``scores`` [B, N, D] of every channel, unordered within K.

    K = 1 is an arg-max, at a fraction of a top-K's cost: the entry ``topk(1)`` picks, except on exact ties
    of the maximal score, where it takes the first patch (``topk`` takes an unspecified one; both then hold
    the same score). For K > 1, ``patches_last`` runs the top-K on a
    contiguous [B, D, N] copy instead of a strided top-K over dim 1; it defaults to on for CUDA only,
    where that is faster (on CPU the copy costs more than it saves). Both select the same entries.
    """
    if k == 1:
        return scores.argmax(dim=1, keepdim=True)
    if patches_last is None:
        patches_last = scores.is_cuda
    if patches_last:
        return scores.transpose(1, 2).contiguous().topk(k, dim=-1, sorted=False).indices.transpose(1, 2)
    # sorted=False: the mean does not depend on the order, and sorting the K winners is half the cost of
    # the selection when K is large.
    return scores.topk(k, dim=1, sorted=False).indices


def lazystrike_pool(
    patch_tokens: torch.Tensor,
    top_k: int | None = 1,
    top_k_ratio: float | None = None,
    sigma: float | None = None,
    score_rule: str = "repo",
    eps: float = 1e-6,
    fft_in_fp32: bool = True,
    return_indices: bool = True,
) -> PooledFeatures:
    """LazyStrike readout of ``patch_tokens`` [B, N, D] (final, normed patch tokens only).

    ``return_indices=False`` leaves out the [B, K, D] selection (int64: twice the size of bf16 tokens at
    K = N/2) once each chunk has used it; the pooled feature and the votes are the same.
    """
    batch_size, num_patches, dim = patch_tokens.shape
    k = resolve_top_k(num_patches, top_k, top_k_ratio)
    sigma = math.sqrt(dim) if sigma is None else sigma
    score_dtype = torch.float32 if fft_in_fp32 and patch_tokens.dtype in (torch.float16, torch.bfloat16) else None
    window = _rfft_window(dim, sigma, patch_tokens.device, score_dtype or patch_tokens.dtype)
    rows = max(1, SCORE_CHUNK_ELEMENTS // (num_patches * dim))

    pooled, indices, votes = [], [], []
    for start in range(0, batch_size, rows):
        tokens = patch_tokens[start : start + rows]
        with torch.no_grad(), torch.autocast(device_type=tokens.device.type, enabled=False):
            x = tokens.detach() if score_dtype is None else tokens.detach().to(score_dtype)
            chunk_indices = select_top_k(stability_score(x, _lowpass(x, window), score_rule, eps), k)
            votes.append(count_votes(chunk_indices, num_patches))
        pooled.append(tokens.gather(1, chunk_indices).mean(dim=1))
        if return_indices:
            indices.append(chunk_indices)

    return PooledFeatures(pooled=_cat(pooled), indices=_cat(indices) if return_indices else None, votes=_cat(votes))


def _cat(chunks: list[torch.Tensor]) -> torch.Tensor:
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


class LazyStrikePooler(nn.Module):
    """Parameter-free LazyStrike readout configured from a `LastViTConfig`."""

    def __init__(self, config):
        super().__init__()
        self.top_k = config.lazystrike_top_k
        self.top_k_ratio = config.lazystrike_top_k_ratio
        self.sigma = config.lazystrike_sigma
        self.score_rule = config.lazystrike_score

    def forward(self, patch_tokens: torch.Tensor, return_indices: bool = True) -> PooledFeatures:
        return lazystrike_pool(
            patch_tokens,
            top_k=self.top_k,
            top_k_ratio=self.top_k_ratio,
            sigma=self.sigma,
            score_rule=self.score_rule,
            return_indices=return_indices,
        )

    def extra_repr(self) -> str:
        k = f"top_k_ratio={self.top_k_ratio}" if self.top_k_ratio is not None else f"top_k={self.top_k}"
        return f"{k}, sigma={self.sigma or 'sqrt(D)'}, score={self.score_rule!r}"
