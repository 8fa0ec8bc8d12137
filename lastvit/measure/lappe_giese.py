"""Lappe & Giese (arXiv 2505.05892): how much of the global (CLS) output comes from patches,
registers and the CLS token's own path, measured at one attention layer.

Pure functions on a layer's weights and its input hidden states, and on what `LastViTModel`
returns (attention maps, hidden states). Definitions follow the paper; each docstring cites its section.
Token layout: ``[CLS] + registers + patches`` (CLS at index 0), as LastViT builds it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .grid import as_tensor


class AttentionShare(NamedTuple):
    cls_self: torch.Tensor
    """[B] CLS attention to itself."""
    registers: torch.Tensor
    """[B] CLS attention summed over the register tokens."""
    patches: torch.Tensor
    """[B] CLS attention summed over the patch tokens."""


def cls_attention_share(
    attentions_last_layer: torch.Tensor, num_registers: int, exclude_self: bool = False
) -> AttentionShare:
    """Where the CLS token looks (Lappe & Giese §3, measurement 1): post-softmax CLS-query attention
    ``[B, H, T, T]`` (eager attention), head-averaged, summed per token type. The three shares sum
    to 1; with `exclude_self` registers + patches are renormalised to 1 (the paper's reg/patch
    split)."""
    if attentions_last_layer.ndim != 4 or attentions_last_layer.shape[-1] < 1 + num_registers:
        raise ValueError(
            f"cls_attention_share needs attention weights [B, heads, T, T] with T > num_registers, got "
            f"{tuple(attentions_last_layer.shape)}; run the model with attn_implementation='eager' and "
            "output_attentions=True."
        )
    row = attentions_last_layer[:, :, 0].detach().float().mean(dim=1)  # [B, T]
    share = AttentionShare(row[:, 0], row[:, 1 : 1 + num_registers].sum(dim=1), row[:, 1 + num_registers :].sum(dim=1))
    if exclude_self:
        total = share.registers + share.patches
        share = AttentionShare(torch.zeros_like(share.cls_self), share.registers / total, share.patches / total)
    return share


class MaskedContributions(NamedTuple):
    o_full: torch.Tensor
    """[B, D] the CLS token's attention output (before the residual add): sum_i a_i v_i over all tokens."""
    o_cls_self: torch.Tensor
    """[B, D] the part carried by the CLS token's attention to itself."""
    o_reg: torch.Tensor
    """[B, D] the part carried by attention to the register tokens."""
    o_patch: torch.Tensor
    """[B, D] the part carried by attention to the patch tokens."""


@torch.no_grad()
def masked_contributions(
    layer: nn.Module, hidden_states_in: torch.Tensor, num_registers: int, *, after_projection: bool = False
) -> MaskedContributions:
    """Masked-contribution outputs of a `LastViTLayer` for the CLS token (Lappe & Giese Eq. 1-2, §3).

    Recomputes the CLS row of attention from the layer's weights: ``x = norm1(h)``,
    ``a_h = softmax(q_h(x_0) k_h(x)^T * scaling)``, and for each token type S (CLS itself,
    registers, patches) ``z_S = concat_h sum_{i in S} a_{h,i} v_{h,i}`` (``v`` includes the
    `v_proj` bias). Attention to the other types is zeroed WITHOUT renormalisation, so
    ``o_full = o_cls_self + o_reg + o_patch`` (up to float rounding). Dropout and drop-path are
    ignored (evaluation semantics).

    Default (the paper's definition): ``o_S = z_S``, the attention-weighted values BEFORE the output
    projection. With `after_projection`, ``o_S = ls1(W_o z_S + b_o * m_S)``: what the branch adds to
    the residual stream (after `o_proj` and LayerScale `layer_scale1`). Linear CKA and norms are not
    invariant to that anisotropic map, so the two variants give different numbers.

    Bias assignment after the projection: the `o_proj` bias is split over token types by the
    head-averaged attention mass ``m_S = mean_h sum_{i in S} a_{h,i}`` (the masses sum to 1), i.e.
    as if ``b_o / H`` were added to every head's value vector, exactly like the `v_proj` bias.

    `hidden_states_in` [B, T, D] is the layer's INPUT (``hidden_states[-2]`` of a LastViTModel
    run with ``output_hidden_states=True`` for the last layer); the model must have a CLS token
    at index 0. The residual path is `o_skip`.
    """
    attention = layer.attention
    config = getattr(attention, "config", None)
    if config is not None and not getattr(config, "use_cls_token", True):
        raise ValueError("masked_contributions decomposes the CLS token's output; this model has no CLS token.")
    if hidden_states_in.ndim != 3 or hidden_states_in.shape[1] < 1 + num_registers:
        raise ValueError(
            f"hidden_states_in must be [B, T, D] with T > num_registers, got {tuple(hidden_states_in.shape)}."
        )
    x = layer.norm1(hidden_states_in)
    batch, num_tokens, dim = x.shape
    head_dim = attention.head_dim
    num_heads = dim // head_dim
    query = attention.q_proj(x[:, :1]).view(batch, num_heads, head_dim)
    key = attention.k_proj(x).view(batch, num_tokens, num_heads, head_dim)
    value = attention.v_proj(x).view(batch, num_tokens, num_heads, head_dim)
    logits = torch.einsum("bhd,bthd->bht", query, key) * attention.scaling
    weights = logits.float().softmax(dim=-1).to(x.dtype)  # [B, H, T]

    bias = attention.o_proj.bias

    def part(token_slice: slice) -> torch.Tensor:
        a = weights[:, :, token_slice]
        z = torch.einsum("bht,bthd->bhd", a, value[:, token_slice]).reshape(batch, dim)
        if not after_projection:
            return z
        out = nn.functional.linear(z, attention.o_proj.weight)
        if bias is not None:
            out = out + a.sum(dim=-1).mean(dim=1, keepdim=True) * bias
        return layer.layer_scale1(out)

    return MaskedContributions(
        o_full=part(slice(0, num_tokens)),
        o_cls_self=part(slice(0, 1)),
        o_reg=part(slice(1, 1 + num_registers)),
        o_patch=part(slice(1 + num_registers, num_tokens)),
    )


def o_skip(hidden_states_in: torch.Tensor) -> torch.Tensor:
    """The CLS token's skip path into the attention sub-block (Lappe & Giese Eq. 6, ``o_prev``):
    the layer input's CLS token, ``[B, D]``. The sub-block's CLS output is ``o_skip + o_full``."""
    return hidden_states_in[:, 0]


def linear_cka(X, Y) -> float:
    """Linear CKA (Kornblith et al. 2019) between representations ``X [n, p]`` and ``Y [n, q]`` of
    the same n inputs: ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred Xc,
    Yc. In [0, 1]; 1 for X vs X; invariant to orthogonal transforms and isotropic scaling (not to
    anisotropic scaling). Computed in float64 (through the n x n Gram matrices when n < p + q).
    Returns NaN when a representation is constant over the n inputs."""
    X = as_tensor(X).detach().double().cpu()
    Y = as_tensor(Y).detach().double().cpu()
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"linear_cka needs X [n, p] and Y [n, q] with the same n; got {tuple(X.shape)} and {tuple(Y.shape)}."
        )
    X = X - X.mean(dim=0, keepdim=True)
    Y = Y - Y.mean(dim=0, keepdim=True)
    if X.shape[0] < X.shape[1] + Y.shape[1]:
        K, L = X @ X.T, Y @ Y.T
        numerator, norm_x, norm_y = (K * L).sum(), K.norm(), L.norm()
    else:
        numerator, norm_x, norm_y = (Y.T @ X).norm() ** 2, (X.T @ X).norm(), (Y.T @ Y).norm()
    denominator = norm_x * norm_y
    return float(numerator / denominator) if denominator > 0 else math.nan


def layerwise_cls_cosine(hidden_states: Sequence[torch.Tensor], reference: torch.Tensor | None = None) -> torch.Tensor:
    """Layerwise ``cos(CLS_l, CLS_L)`` (Lappe & Giese §4): cosine of every layer's CLS token with the
    last one, ``[B, L+1]`` for the L+1 `hidden_states` of a LastViTModel (embeddings, then each
    block's output; the last entry is before the final LayerNorm, so its own cosine is 1). Pass
    `reference` [B, D] (e.g. the post-LN CLS) to compare with something else."""
    cls = torch.stack([h[:, 0] for h in hidden_states], dim=1).float()  # [B, L+1, D]
    reference = cls[:, -1] if reference is None else reference.float()
    return nn.functional.cosine_similarity(cls, reference[:, None, :], dim=-1)


class GramDecomposition(NamedTuple):
    patch_patch: torch.Tensor
    """[n, n] X_p X_p^T (the only term attention maps explain)."""
    patch_reg: torch.Tensor
    """[n, n] X_p X_r^T."""
    reg_patch: torch.Tensor
    """[n, n] X_r X_p^T."""
    reg_reg: torch.Tensor
    """[n, n] X_r X_r^T."""
    total: torch.Tensor
    """[n, n] X X^T with X = X_p + X_r (the sum of the four terms)."""
    shares: dict
    """<term, total>_F / ||total||_F^2 per term name; they sum to 1."""
    patch_cosine: torch.Tensor
    """[n] cos(X_p[i], X[i]): how well the patch part alone points like the full output."""


def gram_decomposition(X_patch, X_reg) -> GramDecomposition:
    """Gram decomposition (Lappe & Giese §3, measurement 5): ``X X^T = X_p X_p^T + X_p X_r^T +
    X_r X_p^T + X_r X_r^T`` for ``X = X_p + X_r`` ([n, D] each, one row per image). For a LastViT
    layer pass ``X_patch = o_patch`` and ``X_reg = o_reg + o_cls_self`` (the CLS self-path plays
    the register role), so that X is ``o_full``. Computed in float64."""
    P = as_tensor(X_patch).detach().double().cpu()
    R = as_tensor(X_reg).detach().double().cpu()
    if P.shape != R.shape or P.ndim != 2:
        raise ValueError(
            f"gram_decomposition needs X_patch and X_reg of one shape [n, D]; got {tuple(P.shape)}, {tuple(R.shape)}."
        )
    X = P + R
    terms = {"patch_patch": P @ P.T, "patch_reg": P @ R.T, "reg_patch": R @ P.T, "reg_reg": R @ R.T}
    total = X @ X.T
    energy = (total * total).sum()
    shares = {name: float((term * total).sum() / energy) if energy > 0 else math.nan for name, term in terms.items()}
    cosine = nn.functional.cosine_similarity(P, X, dim=-1)
    return GramDecomposition(**terms, total=total, shares=shares, patch_cosine=cosine)


def nearest_class_mean_accuracy(
    train_features, train_labels, test_features, test_labels, ks: Sequence[int] = (1, 5)
) -> dict[int, float]:
    """Top-k accuracy of a nearest-class-mean readout by cosine similarity (Lappe & Giese §3,
    measurement 3): class means of `train_features` [m, D] per label, then each row of
    `test_features` [n, D] ranks the classes by cosine with their means. With one training image
    per class (the one-shot test) the class mean is that image's vector, i.e. cosine nearest
    neighbour. Fit on ``o_full`` and test on ``o_patch`` / ``o_reg`` to ask whether a readout of the
    full output transfers to a part. k larger than the number of classes counts as that number.
    Returns ``{k: accuracy}``."""
    train = as_tensor(train_features).detach().double().cpu()
    test = as_tensor(test_features).detach().double().cpu()
    train_labels = as_tensor(train_labels).long().cpu()
    test_labels = as_tensor(test_labels).long().cpu()
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise ValueError(
            f"need train [m, D] and test [n, D] features of one width; got {tuple(train.shape)}, {tuple(test.shape)}."
        )
    if len(train_labels) != len(train) or len(test_labels) != len(test):
        raise ValueError("give one label per feature row, for the training and the test features.")
    classes = train_labels.unique()  # sorted
    means = torch.stack([train[train_labels == c].mean(dim=0) for c in classes])
    similarity = nn.functional.normalize(test, dim=-1) @ nn.functional.normalize(means, dim=-1).T  # [n, C]
    ranked = classes[similarity.argsort(dim=1, descending=True, stable=True)]  # [n, C] class ids
    hits = ranked == test_labels[:, None]
    return {int(k): float(hits[:, : min(int(k), len(classes))].any(dim=1).double().mean()) for k in ks}


class RegisterDependence(NamedTuple):
    top_norm_share: torch.Tensor
    """[R] share of images in which this register has the largest L2 norm of all registers (ties share)."""
    mean_rank: torch.Tensor
    """[R] mean norm rank over images (1 = the largest norm)."""
    mean_norm: torch.Tensor
    """[R] mean L2 norm over images."""
    mean_pairwise_cosine: torch.Tensor
    """[R] mean cosine between this register's vectors of two different images (over all pairs)."""


def register_image_dependence(registers) -> RegisterDependence:
    """How image-dependent each register token is (Lappe & Giese §3, measurement 4): for
    `registers` [n, R, D] (n >= 2 images), per register, the norm ranking among the registers
    across images and the mean pairwise cosine across images. Apply it to the penultimate block's
    output and to the same tokens after the last block's `norm1`: a few outlier dimensions can make
    raw cosines close to 1 while the normalised tokens (what q/k/v see, after the LayerNorm's learned
    scale has shrunk those dimensions) still vary with the image."""
    R = as_tensor(registers).detach().double().cpu()
    if R.ndim != 3 or R.shape[0] < 2 or R.shape[1] < 1:
        raise ValueError(f"registers must be [n >= 2 images, R >= 1 registers, D]; got {tuple(R.shape)}.")
    n = R.shape[0]
    norms = R.norm(dim=-1)  # [n, R]
    # Norms equal to a relative 1e-6 tie (e.g. registers initialised identically): they share the top
    # place and get the mean of their ranks, so no register wins by its index.
    tolerance = 1e-6 * norms.abs().amax(dim=1, keepdim=True)
    greater = (norms[:, None, :] > norms[:, :, None] + tolerance[..., None]).sum(dim=-1)  # [n, R] strictly larger
    tied = ((norms[:, None, :] - norms[:, :, None]).abs() <= tolerance[..., None]).sum(dim=-1)  # self included
    ranks = 1 + greater + (tied - 1) / 2  # 1 = the largest
    is_top = (greater == 0).double()
    top = (is_top / is_top.sum(dim=1, keepdim=True)).mean(dim=0)
    unit = nn.functional.normalize(R, dim=-1)  # [n, R, D]
    summed = unit.sum(dim=0)  # sum over images: |sum|^2 = sum over all ordered pairs, diagonal included
    pairwise = ((summed * summed).sum(dim=-1) - (unit * unit).sum(dim=(0, 2))) / (n * (n - 1))
    return RegisterDependence(
        top.float(), ranks.double().mean(dim=0).float(), norms.mean(dim=0).float(), pairwise.float()
    )


__all__ = [
    "AttentionShare",
    "GramDecomposition",
    "MaskedContributions",
    "RegisterDependence",
    "cls_attention_share",
    "gram_decomposition",
    "layerwise_cls_cosine",
    "linear_cka",
    "masked_contributions",
    "nearest_class_mean_accuracy",
    "o_skip",
    "register_image_dependence",
]
