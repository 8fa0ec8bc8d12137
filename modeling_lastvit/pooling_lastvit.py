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


def _symmetric_window(dim: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """The real, even filter (h[k] + h[-k mod D]) / 2 over all D FFT bins, with ``h = ifftshift(g)``."""
    window = gaussian_channel_window(dim, sigma, device=device, dtype=dtype).roll(-(dim // 2))  # ifftshift
    return 0.5 * (window + window.flip(0).roll(1))


def _rfft_window(dim: int, sigma: float, device, dtype) -> torch.Tensor:
    """The real, even filter on the rfft bins 0..D//2."""
    return _symmetric_window(dim, sigma, device, dtype)[: dim // 2 + 1]


def _lowpass(x: torch.Tensor, rfft_window: torch.Tensor) -> torch.Tensor:
    return torch.fft.irfft(torch.fft.rfft(x, dim=-1) * rfft_window, n=x.shape[-1], dim=-1)


def channel_highpass_matrix(dim: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """The high-pass ``C - I`` [D, D] of the authors' low-pass, so that ``x_hat - x = x @ (C - I)``.

    The low-pass (shift, window, inverse FFT, real part, the one-bin offset included) is linear and
    shift-invariant along the channels, i.e. one fixed real circulant matrix ``C``: ``x_hat = x @ C`` with
    ``C[i, j] = c[(j - i) mod D]`` and ``c = ifft(filter)``, the kernel of the real, even filter (so ``C`` is
    symmetric). ``c`` is summed here as a cosine series in float64 (no FFT), then cast to ``dtype``.
    """
    k = torch.arange(dim, device=device, dtype=torch.float64)
    angles = (2 * math.pi / dim) * ((k[:, None] * k[None, :]) % dim)  # reduced mod D: exact float64 angles
    kernel = (torch.cos(angles) @ _symmetric_window(dim, sigma, device, torch.float64)) / dim
    kernel = 0.5 * (kernel + kernel.flip(0).roll(1))  # c[s] = c[-s] exactly, not just up to rounding
    circulant = kernel[(k[None, :] - k[:, None]).long() % dim]
    return (circulant - torch.eye(dim, device=device, dtype=torch.float64)).to(dtype)


def stability_score(
    x: torch.Tensor,
    x_hat: torch.Tensor | None,
    rule: str = "repo",
    eps: float = 1e-6,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Signed stability of every entry; large positive values are selected.

    ``"repo"``: ``x / max(|x_hat - x|, eps)`` (the released code, plus a clamp against division by 0).
    ``"paper"``: ``x_hat / (|x_hat - x| + eps)`` (Eq. 5 of the paper).
    ``residual`` (``x_hat - x``, the high-pass) may be given instead of ``x_hat``.
    """
    distance = (x_hat - x).abs() if residual is None else residual.abs()
    if rule == "repo":
        return x / distance.clamp_min(eps)
    if rule == "paper":
        return (x + residual if x_hat is None else x_hat) / (distance + eps)
    raise ValueError(f"Unknown LazyStrike score rule {rule!r}; use one of {SCORE_RULES}.")


def resolve_top_k(num_patches: int, top_k: int | None = None, top_k_ratio: float | None = None) -> int:
    """Number of patches each channel averages: ``top_k``, or ``round(top_k_ratio * N)`` (at least 1)."""
    if top_k_ratio is not None:
        if isinstance(num_patches, torch.SymInt):  # a dynamic token count: the same rounding in graph-safe ops
            return torch.sym_max(1, _round_half_even(top_k_ratio * num_patches))
        return max(1, round(top_k_ratio * num_patches))
    if top_k is None:
        raise ValueError("LazyStrike needs `top_k` (a count) or `top_k_ratio` (a fraction of the patches).")
    if top_k > num_patches:
        raise ValueError(
            f"LazyStrike top_k={top_k} exceeds the {num_patches} patches of this input; use a larger input, "
            "a smaller `lazystrike_top_k`, or `lazystrike_top_k_ratio` to scale K with the patch count."
        )
    return top_k


def _round_half_even(value):
    """Python's `round` (halves to even) of a positive symbolic float, in ops a saved torch.export program keeps."""
    whole = math.trunc(value)
    fraction = value - whole
    return whole + torch.sym_ite(fraction > 0.5, 1, 0) + torch.sym_ite(fraction == 0.5, 1, 0) * (whole % 2)


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


# In eager mode the score path works on batch chunks of at most this many entries (16 MiB per fp32 buffer, a few
# buffers live at once), so its fp32 temporaries stay bounded whatever the batch size. Chunking changes no value:
# every score depends on its own token only. Traced graphs (torch.compile, torch.export, ONNX) take the whole
# batch at once, so that they hold no Python loop over the batch and stay valid for any batch size.
SCORE_CHUNK_ELEMENTS = 1 << 22

LOWPASS_PATHS = ("auto", "matmul", "fft")


def is_tracing() -> bool:
    """Whether this code runs inside a graph capture (torch.compile/export, TorchScript or torch.fx tracing)."""
    return (
        torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or _is_fx_symbolic_tracing()
    )


# torch >= 2.6 tells torch.fx.symbolic_trace apart from torch.export; older versions have only `is_fx_tracing`.
_is_fx_symbolic_tracing = getattr(
    torch.fx._symbolic_trace, "is_fx_symbolic_tracing", torch.fx._symbolic_trace.is_fx_tracing
)


def resolve_lowpass(lowpass: str, device: torch.device) -> str:
    """``"auto"``: the FFT in CPU eager mode (cheaper there, benchmarks/RESULTS_EXPORT.md), the matmul on other
    devices and in every traced graph (it exports to any runtime and runs on tensor cores). On CUDA with TF32
    matmuls allowed (``torch.backends.cuda.matmul.allow_tf32`` or ``set_float32_matmul_precision("high")``) the
    matmul rounds to TF32; pick ``"fft"`` there for the fp32 scores."""
    if lowpass not in LOWPASS_PATHS:
        raise ValueError(f"Unknown LazyStrike low-pass {lowpass!r}; use one of {LOWPASS_PATHS}.")
    if lowpass != "auto":
        return lowpass
    return "fft" if device.type == "cpu" and not is_tracing() else "matmul"


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
    lowpass: str = "auto",
    highpass: torch.Tensor | None = None,
) -> PooledFeatures:
    """LazyStrike readout of ``patch_tokens`` [B, N, D] (final, normed patch tokens only).

    ``lowpass`` picks how the channel low-pass is computed; both give the same function up to rounding:
    ``"fft"`` (real FFT, as the authors), ``"matmul"`` (one [D, D] product with the high-pass matrix
    ``C - I`` of `channel_highpass_matrix`, which ``highpass`` may hold prebuilt in the score dtype) or
    ``"auto"`` (see `resolve_lowpass`). ``return_indices=False`` leaves out the [B, K, D] selection (int64:
    twice the size of bf16 tokens at K = N/2) once each chunk has used it; the pooled feature and the votes
    are the same.
    """
    num_patches, dim = patch_tokens.shape[1:]
    k = resolve_top_k(num_patches, top_k, top_k_ratio)
    sigma = math.sqrt(dim) if sigma is None else sigma
    score_dtype = torch.float32 if fft_in_fp32 and patch_tokens.dtype in (torch.float16, torch.bfloat16) else None
    score_dtype = score_dtype or patch_tokens.dtype
    if resolve_lowpass(lowpass, patch_tokens.device) == "fft":
        window, highpass = _rfft_window(dim, sigma, patch_tokens.device, score_dtype), None
    elif highpass is None or highpass.dtype != score_dtype or highpass.device != patch_tokens.device:
        highpass = channel_highpass_matrix(dim, sigma, patch_tokens.device, score_dtype)
    rows = max(1, SCORE_CHUNK_ELEMENTS // (num_patches * dim))

    pooled, indices, votes = [], [], []
    for tokens in (patch_tokens,) if is_tracing() else patch_tokens.split(rows):
        with torch.no_grad(), torch.autocast(device_type=tokens.device.type, enabled=False):
            x = tokens.detach().to(score_dtype)
            x_hat, residual = (_lowpass(x, window), None) if highpass is None else (None, x @ highpass)
            chunk_indices = select_top_k(stability_score(x, x_hat, score_rule, eps, residual), k)
            votes.append(count_votes(chunk_indices, num_patches))
        pooled.append(tokens.gather(1, chunk_indices).mean(dim=1))
        if return_indices:
            indices.append(chunk_indices)

    return PooledFeatures(pooled=_cat(pooled), indices=_cat(indices) if return_indices else None, votes=_cat(votes))


def _cat(chunks: list[torch.Tensor]) -> torch.Tensor:
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


class LazyStrikePooler(nn.Module):
    """Parameter-free LazyStrike readout configured from a `LastViTConfig`.

    It holds the high-pass matrix ``C - I`` [D, D] of the matmul low-pass as a non-persistent buffer (never in
    a state dict or checkpoint), in fp32, or fp64 for an fp64 model: moving the model to fp16/bf16 rebuilds it
    in fp32, where the scores are computed, from its definition rather than from rounded values.
    """

    def __init__(self, config):
        super().__init__()
        self.top_k = config.lazystrike_top_k
        self.top_k_ratio = config.lazystrike_top_k_ratio
        self.sigma = config.lazystrike_sigma
        self.score_rule = config.lazystrike_score
        self.lowpass = config.lazystrike_lowpass
        self.hidden_size = config.hidden_size
        self.register_buffer("highpass", self.build_highpass(), persistent=False)

    def build_highpass(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """The high-pass matrix of this pooler's width and sigma."""
        return channel_highpass_matrix(self.hidden_size, self.sigma or math.sqrt(self.hidden_size), device, dtype)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.highpass.device.type != "meta":
            dtype = self.highpass.dtype if self.highpass.dtype == torch.float64 else torch.float32
            self.highpass = self.build_highpass(self.highpass.device, dtype)
        return self

    def forward(self, patch_tokens: torch.Tensor, return_indices: bool = True) -> PooledFeatures:
        return lazystrike_pool(
            patch_tokens,
            top_k=self.top_k,
            top_k_ratio=self.top_k_ratio,
            sigma=self.sigma,
            score_rule=self.score_rule,
            return_indices=return_indices,
            lowpass=self.lowpass,
            highpass=self.highpass,
        )

    def extra_repr(self) -> str:
        k = f"top_k_ratio={self.top_k_ratio}" if self.top_k_ratio is not None else f"top_k={self.top_k}"
        return f"{k}, sigma={self.sigma or 'sqrt(D)'}, score={self.score_rule!r}, lowpass={self.lowpass!r}"
