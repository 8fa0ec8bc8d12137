"""LastViT: one configurable ViT encoder (CLS / registers / LayerScale / SwiGLU / ln_pre) with
CLS, mean, max or LazyStrike pooling, following transformers' in-tree vision models."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin, filter_output_hidden_states
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BackboneOutput,
    BaseModelOutput,
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_lastvit import LastViTConfig
from .pooling_lastvit import LazyStrikePooler, PooledFeatures, count_votes

logger = logging.get_logger(__name__)

# Eager forward passes (per process) whose pixel_values are still checked; one warning ends the checks.
PIXEL_CHECKS = {"left": 16}


def warn_on_suspicious_pixels(pixel_values: torch.Tensor) -> None:
    """Warn once about pixel_values that give meaningless outputs without an error: non-finite values,
    integers, or magnitudes above 10 (raw 0..255 pixels; normalised images stay within a few units).
    One small reduction on the first `PIXEL_CHECKS` eager passes only, never while tracing, compiling
    or exporting: compiled and exported graphs carry no check and no host sync."""
    if PIXEL_CHECKS["left"] <= 0 or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    if torch.fx._symbolic_trace.is_fx_symbolic_tracing() or getattr(torch.compiler, "is_exporting", bool)():
        return
    PIXEL_CHECKS["left"] -= 1
    if not pixel_values.is_floating_point():
        problem = f"are {pixel_values.dtype} integers, not normalised floats"
    else:
        values = pixel_values.detach()
        finite, peak = torch.stack([values.isfinite().all().float(), values.abs().nan_to_num(0, 0, 0).amax().float()])
        finite, peak = finite.tolist(), peak.tolist()
        problem = "hold NaN or Inf values" if not finite else (f"reach {peak:.4g}" if peak > 10 else None)
    if problem:
        PIXEL_CHECKS["left"] = 0
        logger.warning(
            f"LastViT: the pixel_values {problem}; the outputs will be meaningless. Prepare images with the "
            "image processor (rescale to 0..1, then normalise with its image_mean and image_std)."
        )


@dataclass
class LastViTModelOutput(BaseModelOutputWithPooling):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
        All final tokens (CLS, registers, patches) after the final LayerNorm.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        The global feature chosen by `config.pooling` (the LazyStrike token for LaSt-ViT).
    image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
        `pooler_output` through the projection, when `config.projection_dim` is set.
    patch_votes (`torch.LongTensor` of shape `(batch_size, num_patches)`, *optional*):
        For `lazystrike` and `max` pooling: how many channels selected each patch (sums to K * D).
    pooling_indices (`torch.LongTensor` of shape `(batch_size, K, hidden_size)`, *optional*):
        The patch each channel selected, with `return_pooling_indices=True`.
    """

    image_embeds: torch.FloatTensor | None = None
    patch_votes: torch.LongTensor | None = None
    pooling_indices: torch.LongTensor | None = None


@dataclass
class LastViTImageClassifierOutput(ImageClassifierOutput):
    r"""
    loss (`torch.FloatTensor` of shape `(1,)`, *optional*):
        Classification (or regression) loss, when `labels` are given.
    logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
        Scores before softmax (or sigmoid for multi-label).
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        The pooled global feature the classifier read.
    patch_votes (`torch.LongTensor` of shape `(batch_size, num_patches)`, *optional*):
        As in `LastViTModelOutput`.
    """

    pooler_output: torch.FloatTensor | None = None
    patch_votes: torch.LongTensor | None = None


class LastViTTokens(NamedTuple):
    cls: torch.Tensor | None
    registers: torch.Tensor
    patches: torch.Tensor


class LastViTPatchEmbeddings(nn.Module):
    """Non-overlapping patches to tokens with one strided convolution."""

    def __init__(self, config: LastViTConfig):
        super().__init__()
        self.num_channels = config.num_channels
        self.patch_size = config.patch_size_hw
        self.grid_size = tuple(i // p for i, p in zip(config.image_size_hw, self.patch_size))
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, self.patch_size, stride=self.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4:
            raise ValueError(
                f"LastViT expects pixel_values of shape (batch, channels, height, width), got {tuple(pixel_values.shape)}."
            )
        batch_size, num_channels, height, width = pixel_values.shape
        if batch_size == 0:
            raise ValueError("LastViT got an empty batch (batch size 0); pass at least one image.")
        if num_channels != self.num_channels:
            raise ValueError(
                f"LastViT expects {self.num_channels} input channels (config.num_channels) but got {num_channels}; "
                "convert the images (e.g. to RGB) or use a config with matching `num_channels`."
            )
        if height % self.patch_size[0] or width % self.patch_size[1]:
            raise ValueError(
                f"Input size {height}x{width} is not divisible by the patch size {self.patch_size[0]}x"
                f"{self.patch_size[1]}; resize or crop the images (the image processor does) to a multiple of it."
            )
        warn_on_suspicious_pixels(pixel_values)
        pixel_values = pixel_values.to(self.projection.weight.dtype)
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class LastViTEmbeddings(nn.Module):
    """Patch tokens plus position embeddings, then ``[CLS] + registers + patches``.

    Position embeddings cover the CLS token (if any) and the native patch grid; registers have
    none. For another grid they are resized (once per call, never when the grid is native).
    """

    def __init__(self, config: LastViTConfig):
        super().__init__()
        self.config = config
        self.patch_embeddings = LastViTPatchEmbeddings(config)
        num_patches = self.patch_embeddings.grid_size[0] * self.patch_embeddings.grid_size[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if config.use_cls_token else None
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, config.num_register_tokens, config.hidden_size))
            if config.num_register_tokens
            else None
        )
        self.position_embeddings = (
            nn.Parameter(torch.zeros(1, num_patches + int(config.use_cls_token), config.hidden_size))
            if config.position_embedding_type == "learned"
            else None
        )
        self.patch_norm = make_norm(config) if config.use_patch_norm else None
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def interpolate_pos_encoding(self, grid_height: int, grid_width: int) -> torch.Tensor:
        """Position embeddings for a ``grid_height x grid_width`` patch grid (any aspect ratio).

        With a symbolic grid (torch.export / torch.compile with dynamic height or width) or under TorchScript
        tracing, it always resizes: the graph then holds no branch on the input size. Resizing to the native grid
        is exact (every sampling point falls on a source point), so the outputs match the eager ones."""
        native_height, native_width = self.patch_embeddings.grid_size
        symbolic = isinstance(grid_height, torch.SymInt) or isinstance(grid_width, torch.SymInt)
        if not symbolic and (grid_height, grid_width) == (native_height, native_width) and not torch.jit.is_tracing():
            return self.position_embeddings
        num_cls = int(self.config.use_cls_token)
        cls_pos, patch_pos = self.position_embeddings[:, :num_cls], self.position_embeddings[:, num_cls:]
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, native_height, native_width, dim).permute(0, 3, 1, 2)
        offset = self.config.position_embedding_interpolation_offset
        if offset is None:
            target = {"size": (grid_height, grid_width)}
        else:  # facebookresearch/dino: resize by a scale factor nudged by `offset`
            target = {"scale_factor": ((grid_height + offset) / native_height, (grid_width + offset) / native_width)}
        patch_pos = nn.functional.interpolate(
            patch_pos.float(),
            **target,
            mode=self.config.position_embedding_interpolation,
            align_corners=False,
            antialias=self.config.position_embedding_antialias,
        ).to(self.position_embeddings.dtype)
        if offset is not None and patch_pos.shape[-2:] != (grid_height, grid_width):
            raise ValueError(
                f"Resizing the position embeddings gave a {tuple(patch_pos.shape[-2:])} grid instead of "
                f"{(grid_height, grid_width)}; check `position_embedding_interpolation_offset`."
            )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_height * grid_width, dim)
        return torch.cat((cls_pos, patch_pos), dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embeddings(pixel_values)  # validates the input first
        if self.patch_norm is not None:
            patches = self.patch_norm(patches)
        batch_size, _, height, width = pixel_values.shape
        num_cls = int(self.config.use_cls_token)
        cls_token = self.cls_token
        if self.position_embeddings is not None:
            patch_height, patch_width = self.patch_embeddings.patch_size
            position_embeddings = self.interpolate_pos_encoding(height // patch_height, width // patch_width)
            patches = patches + position_embeddings[:, num_cls:]
            if cls_token is not None:
                cls_token = cls_token + position_embeddings[:, :num_cls]
        elif self.config.position_embedding_type == "sincos_2d":
            patch_height, patch_width = self.patch_embeddings.patch_size
            patches = patches + sincos_2d_positions(height // patch_height, width // patch_width, patches)
        # [CLS + its position] + registers + [patches + their positions], in one concatenation
        tokens = [patches]
        if self.register_tokens is not None:
            tokens.insert(0, self.register_tokens.expand(batch_size, -1, -1))
        if cls_token is not None:
            tokens.insert(0, cls_token.expand(batch_size, -1, -1))
        tokens = torch.cat(tokens, dim=1) if len(tokens) > 1 else tokens[0]
        return self.dropout(tokens) if self.training else tokens


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention that also returns the post-softmax weights (the only one that can)."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class LastViTAttention(nn.Module):
    """Multi-head self-attention through transformers' attention interface (eager/sdpa/flash/flex)."""

    def __init__(self, config: LastViTConfig):
        super().__init__()
        self.config = config
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = False
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.sub_norm = make_norm(config) if config.use_attention_sub_norm else None

    def forward(
        self, hidden_states: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        rotary = kwargs.pop("position_embeddings", None)
        if rotary is not None:
            query, key = apply_rotary_to_patches(query, key, *rotary)

        # Only eager attention returns the maps: a call that asks for them runs eagerly (the encoder warns once).
        implementation = "eager" if kwargs.get("output_attentions") else self.config._attn_implementation
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            None,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1)
        if self.sub_norm is not None:  # EVA02-CLIP's sub-LN
            attn_output = self.sub_norm(attn_output)
        return self.o_proj(attn_output), attn_weights


class LastViTLayerScale(nn.Module):
    def __init__(self, config: LastViTConfig):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((config.hidden_size,), float(config.layerscale_value)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * self.lambda1


class LastViTDropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return hidden_states
        keep_prob = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        mask = hidden_states.new_empty(shape).bernoulli_(keep_prob)
        return hidden_states * mask / keep_prob

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


def _gelu_(x: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.gelu_(x)


def _gelu_tanh_(x: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.gelu_(x, approximate="tanh")


def _silu_(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.silu(x, inplace=True)


# In-place twins of `hidden_act` activations, used only where autograd does not need the input.
INPLACE_ACTIVATIONS = {"gelu": _gelu_, "gelu_pytorch_tanh": _gelu_tanh_, "relu": torch.relu_, "silu": _silu_}


class LastViTMLP(nn.Module):
    def __init__(self, config: LastViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.inplace_activation_fn = INPLACE_ACTIVATIONS.get(config.hidden_act)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.fc1(hidden_states)
        if hidden_states.requires_grad or self.inplace_activation_fn is None:
            return self.fc2(self.activation_fn(hidden_states))
        # Without autograd, activate in place: one [B, T, intermediate_size] buffer less at the peak.
        return self.fc2(self.inplace_activation_fn(hidden_states))


class LastViTSwiGLUMLP(nn.Module):
    """DINOv2's SwiGLU MLP; its width is 2/3 of `intermediate_size`, rounded up to a multiple of 8."""

    def __init__(self, config: LastViTConfig):
        super().__init__()
        hidden_features = (int(config.intermediate_size * 2 / 3) + 7) // 8 * 8
        self.gate_proj = nn.Linear(config.hidden_size, hidden_features)
        self.up_proj = nn.Linear(config.hidden_size, hidden_features)
        self.down_proj = nn.Linear(hidden_features, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(hidden_states)) * self.up_proj(hidden_states))


class LastViTLayer(GradientCheckpointingLayer):
    """Pre-norm block: ``x + drop_path(ls1(attn(norm1(x))))``, then the same with the MLP."""

    def __init__(self, config: LastViTConfig):
        super().__init__()
        has_layerscale = config.layerscale_value is not None
        self.norm1 = make_norm(config)
        self.attention = LastViTAttention(config)
        self.layer_scale1 = LastViTLayerScale(config) if has_layerscale else nn.Identity()
        self.norm2 = make_norm(config)
        if config.use_gated_mlp:
            self.mlp = LastViTGatedMLP(config)
        else:
            self.mlp = LastViTSwiGLUMLP(config) if config.use_swiglu_ffn else LastViTMLP(config)
        self.layer_scale2 = LastViTLayerScale(config) if has_layerscale else nn.Identity()
        self.drop_path = LastViTDropPath(config.drop_path_rate) if config.drop_path_rate > 0 else nn.Identity()
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
        attn_output, _ = self.attention(self.norm1(hidden_states), **kwargs)
        hidden_states = hidden_states + self.residual_branch(attn_output, self.layer_scale1)
        del attn_output  # not kept alive through the MLP, where memory peaks: one [B, T, D] buffer less
        return hidden_states + self.residual_branch(self.mlp(self.norm2(hidden_states)), self.layer_scale2)

    def residual_branch(self, output: torch.Tensor, layer_scale: nn.Module) -> torch.Tensor:
        """``drop_path(layer_scale(dropout(output)))``. In eval mode dropout and drop-path are identities and
        are not called: each module call costs host time, which bounds batch-1 latency."""
        if self.training:
            output = self.dropout(output)
        output = layer_scale(output)  # called even as an Identity: analysis hooks attach to it
        if self.training:
            output = self.drop_path(output)
        return output


class LastViTPooler(nn.Module):
    """Reads the global feature from the final tokens: CLS, mean/max over patches, or LazyStrike,
    optionally followed by a dense layer and an activation (`config.pooler_dense_act`, ViT's pooler).

    Patch-based rules only ever see the patch tokens, never the CLS or register tokens.
    Selection indices and votes exist for `max` and `lazystrike`.
    """

    def __init__(self, config: LastViTConfig):
        super().__init__()
        self.pooling = config.pooling
        self.num_prefix_tokens = config.num_prefix_tokens
        self.lazystrike = LazyStrikePooler(config) if config.pooling == "lazystrike" else None
        self.map_head = LastViTAttentionPoolingHead(config) if config.pooling == "map" else None
        self.dense = nn.Linear(config.hidden_size, config.pooled_feature_size) if config.pooler_dense_act else None
        self.activation = ACT2FN[config.pooler_dense_act] if config.pooler_dense_act else None

    def forward(self, sequence_output: torch.Tensor, return_indices: bool = True) -> PooledFeatures:
        pooled = self.pool(sequence_output, return_indices)
        if self.dense is None:
            return pooled
        return pooled._replace(pooled=self.activation(self.dense(pooled.pooled)))

    def pool(self, sequence_output: torch.Tensor, return_indices: bool = True) -> PooledFeatures:
        """The pooled feature; `return_indices=False` lets LazyStrike drop its [B, K, D] selection early."""
        if self.pooling == "cls":
            return PooledFeatures(sequence_output[:, 0])
        patches = sequence_output[:, self.num_prefix_tokens :]
        if self.pooling == "map":
            return PooledFeatures(self.map_head(patches))
        if self.pooling == "mean":
            return PooledFeatures(patches.mean(dim=1))
        if self.pooling == "avgmax":
            return PooledFeatures(0.5 * (patches.amax(dim=1) + patches.mean(dim=1)))
        if self.pooling == "max":
            pooled, indices = patches.max(dim=1, keepdim=True)
            return PooledFeatures(pooled.squeeze(1), indices, count_votes(indices, patches.shape[1]))
        return self.lazystrike(patches, return_indices)

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}"


# ------------------------------------------------------------------------------------------------
# Encoder options of newer ViT families (DINOv3, SigLIP, AIMv2, ...): all off by default
# ------------------------------------------------------------------------------------------------


class LastViTRMSNorm(nn.Module):
    """RMSNorm as AIMv2 (and T5) compute it: in fp32, ``weight * x / sqrt(mean(x^2) + eps)``, no bias."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.eps)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


def make_norm(config: LastViTConfig, width: int | None = None) -> nn.Module:
    """The norm `config.norm_type` names (LayerNorm by default), of width `width` (default `hidden_size`)."""
    width = width or config.hidden_size
    if config.norm_type == "rms_norm":
        return LastViTRMSNorm(width, eps=config.layer_norm_eps)
    return nn.LayerNorm(width, eps=config.layer_norm_eps)


class LastViTGatedMLP(nn.Module):
    """``down(act(gate(x)) * up(x))`` of exactly `intermediate_size` (DINOv3's gated MLP, AIMv2's SwiGLU); with
    `config.use_mlp_sub_norm`, ``down(norm(act(gate(x)) * up(x)))`` (EVA02's SwiGLU with sub-LN)."""

    def __init__(self, config: LastViTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.sub_norm = make_norm(config, config.intermediate_size) if config.use_mlp_sub_norm else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.activation_fn(self.gate_proj(hidden_states)) * self.up_proj(hidden_states)
        if self.sub_norm is not None:
            hidden_states = self.sub_norm(hidden_states)
        return self.down_proj(hidden_states)


class LastViTRotaryEmbedding(nn.Module):
    """2-D rotary position embeddings of the patch grid (`config.rope_type`).

    `"dinov3"`: patch centres normalised to [-1, 1] per axis; each axis gets `head_dim / 4` frequencies
    ``rope_theta ** -arange(0, 1, 4 / head_dim)``; the angles ``2 pi * coordinate * frequency``.
    `"eva"`: patch indices (scaled to `rope_reference_grid` if set) as coordinates, frequencies
    ``rope_theta ** -(i / (head_dim / 4))`` computed as timm's EVA does, angles ``coordinate * frequency``.
    Both lay the angles out [y frequencies, x frequencies] tiled twice to `head_dim`. Returns (cos, sin), each
    [N, head_dim], for `apply_rotary_to_patches`. Computed per call from the input's grid, so any size works; no
    parameters.
    """

    def __init__(self, config: LastViTConfig):
        super().__init__()
        self.rope_type = config.rope_type
        self.patch_size = config.patch_size_hw
        self.theta = config.rope_theta
        self.head_dim = config.head_dim
        reference = config.rope_reference_grid
        self.reference_grid = None if reference is None else tuple(int(r) for r in _pair_of(reference))

    def forward(self, pixel_values: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        grid_h = pixel_values.shape[-2] // self.patch_size[0]
        grid_w = pixel_values.shape[-1] // self.patch_size[1]
        device = pixel_values.device
        if self.rope_type == "eva":
            angles = self.eva_angles(grid_h, grid_w, device)
        else:
            inv_freq = 1 / self.theta ** torch.arange(0, 1, 4 / self.head_dim, dtype=torch.float32, device=device)
            coords_h = torch.arange(0.5, grid_h, dtype=torch.float32, device=device) / grid_h
            coords_w = torch.arange(0.5, grid_w, dtype=torch.float32, device=device) / grid_w
            coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1)
            coords = 2.0 * coords - 1.0
            angles = (2 * math.pi * coords[:, :, None] * inv_freq[None, None, :]).flatten(1, 2)
        angles = angles.tile(2)
        return torch.cos(angles).to(dtype), torch.sin(angles).to(dtype)

    def eva_angles(self, grid_h: int, grid_w: int, device) -> torch.Tensor:
        """[N, head_dim / 2] angles of EVA's RoPE, in the order of timm's arithmetic (the same float32 values)."""
        num_bands = self.head_dim // 4
        bands = 1.0 / self.theta ** (torch.arange(num_bands, device=device).float() / num_bands)
        coords = [torch.arange(grid_h, device=device).float(), torch.arange(grid_w, device=device).float()]
        if self.reference_grid is not None:
            coords = [c / size * ref for c, size, ref in zip(coords, (grid_h, grid_w), self.reference_grid)]
        grid = torch.stack(torch.meshgrid(*coords, indexing="ij"), dim=-1).flatten(0, 1)
        return (grid[:, :, None] * bands).flatten(1, 2)

    def extra_repr(self) -> str:
        reference = f", reference_grid={self.reference_grid}" if self.reference_grid else ""
        return f"{self.rope_type}, theta={self.theta}{reference}"


def _pair_of(value) -> tuple:
    return (value, value) if isinstance(value, int) else tuple(value)


def sincos_2d_positions(grid_height: int, grid_width: int, like: torch.Tensor) -> torch.Tensor:
    """Fixed 2-D sin-cos positions [1, grid_height * grid_width, D] (`position_embedding_type="sincos_2d"`), row-major,
    laid out [sin(x), cos(x), sin(y), cos(y)] with D/4 frequencies ``10000 ** -(i / (D/4))``, computed in float64
    (AIMv2's native models; the layout MAE uses) and cast to `like`'s dtype."""
    dim = like.shape[-1]
    compute = torch.float64 if like.device.type != "mps" else torch.float32
    omega = 1.0 / 10000.0 ** (torch.arange(dim // 4, dtype=compute, device=like.device) / (dim // 4))
    rows = torch.arange(grid_height, dtype=compute, device=like.device)
    cols = torch.arange(grid_width, dtype=compute, device=like.device)
    rows, cols = torch.meshgrid(rows, cols, indexing="ij")
    angle_y, angle_x = rows.flatten().outer(omega), cols.flatten().outer(omega)
    return torch.cat([angle_x.sin(), angle_x.cos(), angle_y.sin(), angle_y.cos()], dim=1).to(like.dtype).unsqueeze(0)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary_to_patches(
    query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate the patch tokens (the last ``cos.shape[0]``) of query and key [B, heads, T, head_dim]; the
    prefix tokens before them (CLS, registers) are left as they are."""
    num_patches = cos.shape[-2]
    num_prefix = query.shape[-2] - num_patches

    def rotate(x):
        prefix, patches = x.split((num_prefix, num_patches), dim=-2)
        return torch.cat((prefix, patches * cos + _rotate_half(patches) * sin), dim=-2)

    return rotate(query), rotate(key)


class LastViTAttentionPoolingHead(nn.Module):
    """`pooling="map"`: a learned probe attends to the final patch tokens with multi-head attention; then, with
    `config.map_head_mlp`, ``x + mlp(norm(x))``. SigLIP's and timm's MAP head project the probe
    (`map_head_query_projection=True`); AIMv2's uses it as the query directly and has no MLP."""

    def __init__(self, config: LastViTConfig):
        super().__init__()
        dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.probe = nn.Parameter(torch.zeros(1, 1, dim))
        self.q_proj = nn.Linear(dim, dim, bias=config.qkv_bias) if config.map_head_query_projection else None
        self.k_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.o_proj = nn.Linear(dim, dim)
        self.norm = make_norm(config) if config.map_head_mlp else None
        self.mlp = LastViTMLP(config) if config.map_head_mlp else None

    def forward(self, sequence_output: torch.Tensor) -> torch.Tensor:
        batch_size, num_tokens, dim = sequence_output.shape
        query = self.probe if self.q_proj is None else self.q_proj(self.probe)
        query = query.reshape(1, 1, self.num_heads, -1).transpose(1, 2).expand(batch_size, -1, -1, -1)
        key = self.k_proj(sequence_output).view(batch_size, num_tokens, self.num_heads, -1).transpose(1, 2)
        value = self.v_proj(sequence_output).view(batch_size, num_tokens, self.num_heads, -1).transpose(1, 2)
        attended = nn.functional.scaled_dot_product_attention(query, key, value)
        pooled = self.o_proj(attended.transpose(1, 2).reshape(batch_size, dim))
        if self.mlp is not None:
            pooled = pooled + self.mlp(self.norm(pooled))
        return pooled


class LastViTPreTrainedModel(PreTrainedModel):
    config: LastViTConfig
    base_model_prefix = "lastvit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["LastViTEmbeddings", "LastViTLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs: ClassVar[dict] = {"hidden_states": LastViTLayer, "attentions": LastViTAttention}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, LastViTRMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, LastViTAttentionPoolingHead):
            init.trunc_normal_(module.probe, mean=0.0, std=std)
        elif isinstance(module, LastViTEmbeddings):
            if module.position_embeddings is not None:
                init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            if module.cls_token is not None:
                init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            if module.register_tokens is not None:
                # Registers have no position embedding: equal initial values would stay equal forever.
                init.trunc_normal_(module.register_tokens, mean=0.0, std=std)
        elif isinstance(module, LastViTLayerScale):
            init.constant_(module.lambda1, self.config.layerscale_value)
        elif isinstance(module, LazyStrikePooler):  # a non-persistent buffer: rebuilt, never loaded
            init.copy_(module.highpass, module.build_highpass(module.highpass.device, module.highpass.dtype))

    def split_tokens(self, hidden_states: torch.Tensor) -> LastViTTokens:
        """Split a token sequence [B, 1 + R + N, D] into (CLS or None, registers [B, R, D], patches [B, N, D])."""
        num_cls = int(self.config.use_cls_token)
        return LastViTTokens(
            cls=hidden_states[:, 0] if num_cls else None,
            registers=hidden_states[:, num_cls : self.config.num_prefix_tokens],
            patches=hidden_states[:, self.config.num_prefix_tokens :],
        )

    def patch_grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (rows, columns) of an input of ``height x width`` pixels."""
        patch_height, patch_width = self.config.patch_size_hw
        return height // patch_height, width // patch_width

    def patches_to_map(self, patch_tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Reshape patch tokens [B, N, D] (or per-patch values [B, N]) of a ``height x width`` input
        to a map [B, D, h, w] (or [B, h, w])."""
        grid = self.patch_grid(height, width)
        if patch_tokens.shape[1] != grid[0] * grid[1]:
            raise ValueError(
                f"Got {patch_tokens.shape[1]} patch tokens but a {height}x{width} input has {grid[0]}x{grid[1]} "
                "patches; pass the patches only (see `split_tokens`) and the input's pixel size."
            )
        if patch_tokens.ndim == 2:
            return patch_tokens.reshape(patch_tokens.shape[0], *grid)
        return patch_tokens.transpose(1, 2).reshape(patch_tokens.shape[0], -1, *grid)


class LastViTEncoder(LastViTPreTrainedModel):
    """The stack of blocks; records hidden states (its input first) and attention maps on request."""

    def __init__(self, config: LastViTConfig):
        super().__init__(config)
        self.layer = nn.ModuleList([LastViTLayer(config) for _ in range(config.num_hidden_layers)])
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, hidden_states: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BaseModelOutput:
        if kwargs.get("output_attentions") and self.config._attn_implementation != "eager":
            logger.warning_once(
                f"Attention maps need eager attention; this model uses {self.config._attn_implementation!r}, so "
                "calls with `output_attentions=True` run eager attention (slower, more memory). Load the model "
                "with `attn_implementation='eager'` to use it throughout."
            )
        for layer in self.layer:
            hidden_states = layer(hidden_states, **kwargs)
        return BaseModelOutput(last_hidden_state=hidden_states)


class LastViTModel(LastViTPreTrainedModel):
    """The LastViT encoder with its pooled global feature (LazyStrike by default)."""

    def __init__(self, config: LastViTConfig):
        super().__init__(config)
        self.embeddings = LastViTEmbeddings(config)
        self.rotary_embeddings = LastViTRotaryEmbedding(config) if config.rope_type else None
        self.pre_layernorm = make_norm(config) if config.use_pre_norm else None
        self.encoder = LastViTEncoder(config)
        self.layernorm = make_norm(config)
        self.pooler = LastViTPooler(config)
        self.visual_projection = (
            nn.Linear(config.pooled_feature_size, config.projection_dim, bias=False) if config.projection_dim else None
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        return_pooling_indices: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> LastViTModelOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Images; any height and width divisible by the patch size.
        return_pooling_indices (`bool`, defaults to `False`):
            Also return the patch each channel selected (`max` / `lazystrike` pooling).
        """
        if pixel_values is None:
            raise ValueError("LastViT needs `pixel_values`; prepare them with the image processor.")
        hidden_states = self.embeddings(pixel_values)
        if self.pre_layernorm is not None:
            hidden_states = self.pre_layernorm(hidden_states)
        if self.rotary_embeddings is not None:
            kwargs["position_embeddings"] = self.rotary_embeddings(pixel_values, hidden_states.dtype)
        encoder_outputs: BaseModelOutput = self.encoder(hidden_states, **kwargs)
        if self.config.use_fc_norm:  # timm's fc_norm: pool the un-normed tokens, then norm the pooled feature
            sequence_output = encoder_outputs.last_hidden_state
            pooled = self.pooler(sequence_output, return_indices=return_pooling_indices)
            pooled = pooled._replace(pooled=self.layernorm(pooled.pooled))
        else:
            sequence_output = self.layernorm(encoder_outputs.last_hidden_state)
            pooled = self.pooler(sequence_output, return_indices=return_pooling_indices)
        return LastViTModelOutput(
            last_hidden_state=sequence_output,
            pooler_output=pooled.pooled,
            image_embeds=self.visual_projection(pooled.pooled) if self.visual_projection is not None else None,
            patch_votes=pooled.votes,
            pooling_indices=pooled.indices if return_pooling_indices else None,
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )


class LastViTForImageClassification(LastViTPreTrainedModel):
    """LastViT with a linear classifier on the pooled feature (the LazyStrike token by default), or on
    the pooled feature concatenated with another one (`config.classifier_input`)."""

    def __init__(self, config: LastViTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.lastvit = LastViTModel(config)
        self.classifier = (
            nn.Linear(config.classifier_input_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    def classifier_features(self, outputs: LastViTModelOutput) -> torch.Tensor:
        """The classifier's input [B, `config.classifier_input_size`] from the base model's outputs."""
        if self.config.classifier_input == "pooled":
            return outputs.pooler_output
        tokens = self.lastvit.split_tokens(outputs.last_hidden_state)
        if self.config.classifier_input == "pooled_and_patch_mean":
            return torch.cat((outputs.pooler_output, tokens.patches.mean(dim=1)), dim=-1)
        return torch.cat((outputs.pooler_output, tokens.registers[:, 0]), dim=-1)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> LastViTImageClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Class indices for single-label classification, multi-hot floats of shape
            `(batch_size, num_labels)` for multi-label, or targets for regression (`num_labels == 1`);
            `config.problem_type` picks the loss as in every transformers classifier.
        """
        outputs: LastViTModelOutput = self.lastvit(pixel_values, **kwargs)
        logits = self.classifier(self.classifier_features(outputs))
        loss = self.loss_function(labels, logits, self.config, **kwargs) if labels is not None else None
        return LastViTImageClassifierOutput(
            loss=loss,
            logits=logits,
            pooler_output=outputs.pooler_output,
            patch_votes=outputs.patch_votes,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class LastViTBackbone(BackboneMixin, LastViTPreTrainedModel):
    """Feature maps [B, D, h, w] of the chosen stages (final-normed patch tokens, no CLS/registers),
    for dense heads such as DPT, Mask2Former or ViTDet-style detectors."""

    def __init__(self, config: LastViTConfig):
        super().__init__(config)
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)
        self.embeddings = LastViTEmbeddings(config)
        self.rotary_embeddings = LastViTRotaryEmbedding(config) if config.rope_type else None
        self.pre_layernorm = make_norm(config) if config.use_pre_norm else None
        self.encoder = LastViTEncoder(config)
        self.layernorm = make_norm(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    @can_return_tuple
    @filter_output_hidden_states
    def forward(self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BackboneOutput:
        hidden_states = self.embeddings(pixel_values)
        if self.pre_layernorm is not None:
            hidden_states = self.pre_layernorm(hidden_states)
        if self.rotary_embeddings is not None:
            kwargs["position_embeddings"] = self.rotary_embeddings(pixel_values, hidden_states.dtype)
        outputs: BaseModelOutput = self.encoder(hidden_states, **kwargs)
        height, width = pixel_values.shape[-2:]
        feature_maps = tuple(
            self.patches_to_map(self.split_tokens(self.layernorm(hidden_state)).patches, height, width)
            for stage, hidden_state in zip(self.stage_names, outputs.hidden_states)
            if stage in self.out_features
        )
        return BackboneOutput(
            feature_maps=feature_maps, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "LastViTBackbone",
    "LastViTForImageClassification",
    "LastViTModel",
    "LastViTPreTrainedModel",
]
