"""LastViT configuration: one ViT encoder for every ViT-family checkpoint, and the pooling rule."""

import math

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneConfigMixin

POOLING_TYPES = ("cls", "mean", "max", "lazystrike", "map", "avgmax")
ROPE_TYPES = ("dinov3", "eva")
POSITION_EMBEDDING_TYPES = ("learned", "none", "sincos_2d")
NORM_TYPES = ("layer_norm", "rms_norm")
INTERPOLATION_MODES = ("bicubic", "bilinear")
SCORE_RULES = ("repo", "paper")
LOWPASS_PATHS = ("auto", "matmul", "fft")
CLASSIFIER_INPUTS = ("pooled", "pooled_and_patch_mean", "pooled_and_first_register")

# Written into every saved config so that a checkpoint opens with any of these Auto classes via
# `trust_remote_code=True`, whichever class saved it (transformers only records the saver's own).
AUTO_MAP = {
    "AutoConfig": "configuration_lastvit.LastViTConfig",
    "AutoModel": "modeling_lastvit.LastViTModel",
    "AutoModelForImageClassification": "modeling_lastvit.LastViTForImageClassification",
    "AutoBackbone": "modeling_lastvit.LastViTBackbone",
}


@strict
class LastViTConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a LastViT model: a plain pre-norm ViT encoder (optionally with CLS token,
    register tokens, LayerScale, SwiGLU MLP and a pre-encoder LayerNorm) followed by a final
    LayerNorm and a pooling rule. The defaults give a ViT-B/16 at 224 px with LazyStrike (K=1),
    the authors' released supervised configuration.

    Args:
        image_size (`int` or `tuple[int, int]`, defaults to 224): native input size; the position
            embeddings are learned for this grid and interpolated for any other size divisible by
            `patch_size`.
        patch_size (`int` or `tuple[int, int]`, defaults to 16): side of the square patches.
        num_channels (`int`, defaults to 3): input channels.
        hidden_size (`int`, defaults to 768): token width D.
        num_hidden_layers (`int`, defaults to 12): transformer blocks.
        num_attention_heads (`int`, defaults to 12): heads per block; must divide `hidden_size`.
        intermediate_size (`int`, defaults to 3072): MLP width (the SwiGLU MLP uses its own
            rounding of two thirds of it, as DINOv2 does).
        hidden_act (`str`, defaults to `"gelu"`): MLP activation, any key of `transformers.activations.ACT2FN`
            (`"gelu"`, `"quick_gelu"` for OpenAI CLIP, ...).
        layer_norm_eps (`float`, defaults to 1e-6): epsilon of every LayerNorm.
        qkv_bias (`bool`, defaults to `True`): bias on the query/key/value projections.
        layerscale_value (`float`, *optional*): initial LayerScale value; `None` means no LayerScale
            (ViT, DeiT, CLIP); DINOv2 uses it.
        use_swiglu_ffn (`bool`, defaults to `False`): SwiGLU MLP instead of fc1-act-fc2 (DINOv2-g).
        use_gated_mlp (`bool`, defaults to `False`): gated MLP ``down(act(gate(x)) * up(x))`` of exactly
            `intermediate_size` with `hidden_act` (SwiGLU with `"silu"`), as DINOv3's and AIMv2's. Not with
            `use_swiglu_ffn`.
        norm_type (`str`, defaults to `"layer_norm"`): every norm of the model: `"layer_norm"` or `"rms_norm"`
            (RMSNorm in fp32 with a weight and no bias, as AIMv2's; `layer_norm_eps` is its epsilon).
        use_patch_norm (`bool`, defaults to `False`): a norm (of `norm_type`) on the patch tokens right after
            the patch projection, before the position embeddings are added (AIMv2).
        position_embedding_type (`str`, defaults to `"learned"`): `"learned"` absolute position embeddings
            (interpolated for other grids), `"none"` (models that encode position with RoPE only, DINOv3) or
            `"sincos_2d"`: fixed 2-D sin-cos positions computed for each input's grid, laid out
            [sin(x), cos(x), sin(y), cos(y)] with `hidden_size / 4` frequencies `10000 ** -(i / (hidden_size / 4))`
            (AIMv2's "native" models, MAE's layout); no parameters, CLS and registers get none.
        rope_type (`str`, *optional*): 2-D rotary position embeddings on the patch tokens' queries and keys in
            every block; `None` (default) means none. `"dinov3"`: DINOv3's variant (patch centres normalised to
            [-1, 1] per axis, `head_dim / 4` frequencies `rope_theta ** -arange(0, 1, 4 / head_dim)` per axis, angles
            `2 pi * coordinate * frequency` laid out [y, x] and tiled twice, rotate-half). CLS and register tokens are
            not rotated. Needs `head_dim` divisible by 4. `"eva"`: EVA02's variant (timm `eva.py`): patch indices
            (row, column) as coordinates, each axis rescaled by `rope_reference_grid / grid` when that is set, the same
            frequencies, angles ``coordinate * frequency`` (no 2 pi) in the same [y, x] tiled rotate-half layout (EVA's
            interleaved pairs become this layout by permuting the query and key channels at conversion).
        rope_theta (`float`, defaults to 100.0): base of the RoPE frequencies (DINOv3 uses 100, EVA02 10000).
        rope_reference_grid (`int` or `tuple[int, int]`, *optional*): with `rope_type="eva"`, the patch grid the
            coordinates are scaled to (timm's `ref_feat_shape`; EVA02 uses 16 x 16 at every input size); `None`: the
            raw patch indices.
        use_attention_sub_norm (`bool`, defaults to `False`): a norm (of `norm_type`) on the attention output before
            its output projection in every block (sub-LN: EVA02-CLIP's `scale_attn_inner`).
        use_mlp_sub_norm (`bool`, defaults to `False`): a norm (of `norm_type`, width `intermediate_size`) on the gated
            MLP's hidden activations before `down_proj` (sub-LN: EVA02's SwiGLU with `scale_mlp`). Needs
            `use_gated_mlp`.
        drop_path_rate (`float`, defaults to 0.0): stochastic depth, the same rate in every block.
        hidden_dropout_prob (`float`, defaults to 0.0): dropout on embeddings and block outputs.
        attention_probs_dropout_prob (`float`, defaults to 0.0): dropout on attention weights.
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal initialisation.
        use_cls_token (`bool`, defaults to `True`): prepend a learned CLS token. With LazyStrike it
            still runs through every block (it acts like a register) but is not read out.
        num_register_tokens (`int`, defaults to 0): register tokens inserted after the CLS token;
            they have no position embedding and are never pooled.
        use_pre_norm (`bool`, defaults to `False`): LayerNorm on the embeddings before the first
            block (CLIP's `ln_pre`).
        position_embedding_interpolation (`str`, defaults to `"bicubic"`): how learned position embeddings are
            resized for another grid: `"bicubic"` (ViT, DINOv2, CLIP, SigLIP, timm) or `"bilinear"` (SigLIP2).
        position_embedding_antialias (`bool`, defaults to `False`): antialias when the position
            embeddings are resized for another grid (DINOv2 with registers, SigLIP2 and timm use it).
        position_embedding_interpolation_offset (`float`, *optional*): `None` resizes the position
            embeddings to the target grid (`size=`, as transformers' ViT/DINOv2/CLIP do). A value in
            (0, 1) resizes them by `scale_factor = (grid + offset) / native_grid` instead, as the original
            facebookresearch/dino code does with 0.1: the output grid is the same but the sampling points
            differ slightly, so use it only to reproduce such checkpoints exactly.
        pooling (`str`, defaults to `"lazystrike"`): global feature `pooler_output`: `"cls"` (final
            CLS token), `"mean"` / `"max"` (over patch tokens), `"lazystrike"` (LazyStrike over patch tokens),
            `"map"` (multi-head attention pooling of the final patch tokens by a learned probe, as SigLIP's, AIMv2's
            and timm's attention-pool heads; its weights live in `pooler.map_head`), `"avgmax"` (the average of
            the mean and the per-channel max over patch tokens, timm's `global_pool="avgmax"`).
        use_fc_norm (`bool`, defaults to `False`): apply the final norm to the pooled feature instead of to the
            tokens (timm's `fc_norm`, used with its `avg` / `max` / `avgmax` pools): `last_hidden_state` is then
            the last block's output, un-normed, and every pooling rule reads those tokens. Not with
            `pooler_dense_act`.
        map_head_query_projection (`bool`, defaults to `True`): with `pooling="map"`, the probe goes through a
            query projection (SigLIP, timm); `False` uses the probe as the query itself (AIMv2).
        map_head_mlp (`bool`, defaults to `True`): with `pooling="map"`, the attended probe gets a residual
            ``x + mlp(norm(x))`` (SigLIP, timm; the MLP is fc1-act-fc2 of `intermediate_size`); `False`: none (AIMv2).
        lazystrike_top_k (`int`, *optional*, defaults to 1): patches each channel averages.
        lazystrike_top_k_ratio (`float`, *optional*): K as a fraction in (0, 1] of the patch count
            (rounded, at least 1); set it to `None` or leave `lazystrike_top_k` unset: exactly one is used.
        lazystrike_sigma (`float`, *optional*): width of the frequency window; `None` means sqrt(D)
            as in the authors' code.
        lazystrike_score (`str`, defaults to `"repo"`): `"repo"` = x / |x_hat - x| (released code,
            required for checkpoint parity), `"paper"` = x_hat / (|x_hat - x| + eps) (Eq. 5).
        lazystrike_lowpass (`str`, defaults to `"auto"`): how the channel low-pass is computed; both are the
            same function (tests/test_lowpass_matmul.py). `"fft"`: a real FFT, as the authors; `"matmul"`: one
            product with the fixed [D, D] high-pass matrix C - I (exports to ONNX/TorchScript, runs on tensor
            cores); `"auto"`: `"fft"` in CPU eager mode, where the matmul measured 1.2x / 2.0x / 2.4x the FFT's
            cost for the whole pooling (the filter alone 1.9x / 3.3x / 4.8x) at D = 384 / 768 / 1024, N = 196,
            batch 16, one thread (benchmarks/RESULTS_EXPORT.md); `"matmul"` on every other device and inside
            torch.compile / torch.export / ONNX graphs.
        pooler_dense_act (`str`, *optional*): if set, `pooler_output` is `act(dense(pooled))`: a linear
            layer on the pooled feature followed by this activation (a key of `ACT2FN`). `"tanh"`
            reproduces the `pooler` of transformers' `ViTModel` / `DeiTModel` (on the CLS token) and
            torchvision's `heads.pre_logits`. `None` (default): `pooler_output` is the pooled feature.
        pooler_dense_size (`int`, *optional*): output width of that dense layer; `None` means
            `hidden_size`. Only with `pooler_dense_act`.
        classifier_input (`str`, defaults to `"pooled"`): what `LastViTForImageClassification`'s linear
            classifier reads: `"pooled"` (`pooler_output`), `"pooled_and_patch_mean"` (`pooler_output`
            concatenated with the mean of the final patch tokens, as DINOv2's classifiers do) or
            `"pooled_and_first_register"` (`pooler_output` concatenated with the first register token, which
            hosts DeiT's distillation token: one linear layer on it equals DeiT's averaged CLS and
            distillation heads).
        projection_dim (`int`, *optional*): if set, a bias-free linear map of `pooler_output` to
            this size, returned as `image_embeds` (CLIP's `proj`).
        out_features / out_indices (*optional*): stages returned by `LastViTBackbone`
            (`"stem"`, `"stage1"` ... `"stageL"`); default: the last stage.

    Example:

    ```python
    >>> from modeling_lastvit import LastViTConfig, LastViTModel
    >>> config = LastViTConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
    ...                        intermediate_size=768, num_register_tokens=4, lazystrike_top_k_ratio=0.25,
    ...                        lazystrike_top_k=None)
    >>> model = LastViTModel(config)
    ```
    """

    model_type = "lastvit"

    image_size: int | list[int] | tuple[int, int] = 224
    patch_size: int | list[int] | tuple[int, int] = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    layerscale_value: float | None = None
    use_swiglu_ffn: bool = False
    use_gated_mlp: bool = False
    norm_type: str = "layer_norm"
    use_patch_norm: bool = False
    position_embedding_type: str = "learned"
    rope_type: str | None = None
    rope_theta: float = 100.0
    rope_reference_grid: int | list[int] | tuple[int, int] | None = None
    use_attention_sub_norm: bool = False
    use_mlp_sub_norm: bool = False
    drop_path_rate: float | int = 0.0
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    initializer_range: float = 0.02
    use_cls_token: bool = True
    num_register_tokens: int = 0
    use_pre_norm: bool = False
    position_embedding_interpolation: str = "bicubic"
    position_embedding_antialias: bool = False
    position_embedding_interpolation_offset: float | None = None
    pooling: str = "lazystrike"
    lazystrike_top_k: int | None = 1
    lazystrike_top_k_ratio: float | None = None
    lazystrike_sigma: float | None = None
    lazystrike_score: str = "repo"
    lazystrike_lowpass: str = "auto"
    pooler_dense_act: str | None = None
    pooler_dense_size: int | None = None
    classifier_input: str = "pooled"
    projection_dim: int | None = None
    map_head_query_projection: bool = True
    map_head_mlp: bool = True
    use_fc_norm: bool = False
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs):
        # The same check `validate()` runs (with transformers' own validators) after construction and before
        # every save; run first here so that a bad argument fails with its one-line ValueError.
        self._check_options()
        self.stage_names = ["stem"] + [f"stage{idx}" for idx in range(1, self.num_hidden_layers + 1)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        kwargs["auto_map"] = {**AUTO_MAP, **(kwargs.get("auto_map") or {})}
        super().__post_init__(**kwargs)

    @property
    def image_size_hw(self) -> tuple[int, int]:
        return _pair(self.image_size)

    @property
    def patch_size_hw(self) -> tuple[int, int]:
        return _pair(self.patch_size)

    @property
    def pooled_feature_size(self) -> int:
        """Width of `pooler_output`: `pooler_dense_size` with a dense pooler, else `hidden_size`."""
        if self.pooler_dense_act is not None and self.pooler_dense_size is not None:
            return self.pooler_dense_size
        return self.hidden_size

    @property
    def classifier_input_size(self) -> int:
        """Width of the classifier's input (see `classifier_input`)."""
        extra = 0 if self.classifier_input == "pooled" else self.hidden_size
        return self.pooled_feature_size + extra

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: the CLS token (if any) and the registers."""
        return int(self.use_cls_token) + self.num_register_tokens

    def validate_lastvit_options(self):
        """A `@strict` class validator: `config.validate()` (which transformers also runs before saving) checks
        every option, including values assigned after construction, and raises `LastViTConfigError` (a
        `StrictDataclassClassValidationError`) with the one-line message of `_check_options`."""
        try:
            self._check_options()
        except ValueError as error:
            raise LastViTConfigError(str(error)) from None

    def _check_options(self):
        """Every option's check; raises a one-line `ValueError` naming the option and what to use."""

        def fail(message):
            raise ValueError(f"Invalid LastViTConfig: {message}")

        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "num_channels"):
            if getattr(self, name) < 1:
                fail(f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        if self.hidden_size % self.num_attention_heads:
            fail(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        image_hw, patch_hw = _pair(self.image_size), _pair(self.patch_size)
        if min(patch_hw) < 1 or any(i % p for i, p in zip(image_hw, patch_hw)):
            fail(f"`image_size` {image_hw} must be a positive multiple of `patch_size` {patch_hw}.")
        if self.num_register_tokens < 0:
            fail(f"`num_register_tokens` must be >= 0, got {self.num_register_tokens}.")
        for name in ("drop_path_rate", "hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                fail(f"`{name}` must be in [0, 1), got {getattr(self, name)}.")
        offset = self.position_embedding_interpolation_offset
        if offset is not None and not 0.0 < offset < 1.0:
            fail(f"`position_embedding_interpolation_offset` must be in (0, 1) or None, got {offset}.")
        self._validate_encoder_options(fail)
        if self.pooling not in POOLING_TYPES:
            fail(f"unknown `pooling` {self.pooling!r}; use one of {POOLING_TYPES}.")
        if self.pooling == "cls" and not self.use_cls_token:
            fail("`pooling='cls'` needs `use_cls_token=True`; pick 'mean', 'max' or 'lazystrike' instead.")
        if self.lazystrike_top_k_ratio is not None:
            if self.lazystrike_top_k is not None:
                fail(
                    "set only one of `lazystrike_top_k` (a count) and `lazystrike_top_k_ratio` (a fraction); "
                    "pass `lazystrike_top_k=None` with a ratio."
                )
            if not 0.0 < self.lazystrike_top_k_ratio <= 1.0:
                fail(f"`lazystrike_top_k_ratio` must be in (0, 1], got {self.lazystrike_top_k_ratio}.")
        elif self.lazystrike_top_k is None:
            fail("set `lazystrike_top_k` (a count >= 1) or `lazystrike_top_k_ratio` (a fraction in (0, 1]).")
        elif self.lazystrike_top_k < 1:
            fail(f"`lazystrike_top_k` must be >= 1, got {self.lazystrike_top_k}.")
        elif self.lazystrike_top_k > math.prod(i // p for i, p in zip(image_hw, patch_hw)):
            fail(
                f"`lazystrike_top_k` ({self.lazystrike_top_k}) exceeds the number of patches at "
                f"`image_size` {image_hw} with `patch_size` {patch_hw}."
            )
        if self.lazystrike_sigma is not None and self.lazystrike_sigma <= 0:
            fail(f"`lazystrike_sigma` must be > 0 (or None for sqrt(hidden_size)), got {self.lazystrike_sigma}.")
        if self.lazystrike_score not in SCORE_RULES:
            fail(f"unknown `lazystrike_score` {self.lazystrike_score!r}; use one of {SCORE_RULES}.")
        if self.lazystrike_lowpass not in LOWPASS_PATHS:
            fail(f"unknown `lazystrike_lowpass` {self.lazystrike_lowpass!r}; use one of {LOWPASS_PATHS}.")
        if self.projection_dim is not None and self.projection_dim < 1:
            fail(f"`projection_dim` must be a positive integer or None, got {self.projection_dim}.")
        if self.pooler_dense_act is not None and self.pooler_dense_act not in ACT2FN:
            fail(f"unknown `pooler_dense_act` {self.pooler_dense_act!r}; use a key of transformers' ACT2FN ('tanh').")
        if self.pooler_dense_size is not None:
            if self.pooler_dense_act is None:
                fail("`pooler_dense_size` needs a dense pooler: set `pooler_dense_act` (e.g. 'tanh') too.")
            if self.pooler_dense_size < 1:
                fail(f"`pooler_dense_size` must be a positive integer or None, got {self.pooler_dense_size}.")
        if self.classifier_input not in CLASSIFIER_INPUTS:
            fail(f"unknown `classifier_input` {self.classifier_input!r}; use one of {CLASSIFIER_INPUTS}.")
        if self.classifier_input == "pooled_and_first_register" and self.num_register_tokens < 1:
            fail("`classifier_input='pooled_and_first_register'` needs `num_register_tokens >= 1`.")

    def _validate_encoder_options(self, fail):
        """The options that reproduce newer ViT families (DINOv3, SigLIP, AIMv2, ...); all off by default."""
        if self.norm_type not in NORM_TYPES:
            fail(f"unknown `norm_type` {self.norm_type!r}; use one of {NORM_TYPES}.")
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            fail(
                f"unknown `position_embedding_type` {self.position_embedding_type!r}; "
                f"use one of {POSITION_EMBEDDING_TYPES}."
            )
        if self.position_embedding_interpolation not in INTERPOLATION_MODES:
            fail(
                f"unknown `position_embedding_interpolation` {self.position_embedding_interpolation!r}; "
                f"use one of {INTERPOLATION_MODES}."
            )
        if self.position_embedding_type == "sincos_2d" and self.hidden_size % 4:
            fail(f"`position_embedding_type='sincos_2d'` needs `hidden_size` divisible by 4, got {self.hidden_size}.")
        if self.use_gated_mlp and self.use_swiglu_ffn:
            fail("set only one of `use_gated_mlp` (exact width) and `use_swiglu_ffn` (DINOv2's 2/3 width).")
        if self.use_fc_norm and self.pooler_dense_act is not None:
            fail("`use_fc_norm` (norm after pooling) does not combine with a dense pooler (`pooler_dense_act`).")
        if self.rope_type is not None:
            if self.rope_type not in ROPE_TYPES:
                fail(f"unknown `rope_type` {self.rope_type!r}; use one of {ROPE_TYPES} or None.")
            if self.head_dim % 4:
                fail(f"`rope_type` needs a head dimension divisible by 4, got {self.head_dim}.")
            if self.rope_theta <= 0:
                fail(f"`rope_theta` must be > 0, got {self.rope_theta}.")
        if self.rope_reference_grid is not None:
            if self.rope_type != "eva":
                fail("`rope_reference_grid` only applies with `rope_type='eva'`; remove it or set the rope type.")
            if min(_pair(self.rope_reference_grid)) < 1:
                fail(f"`rope_reference_grid` must be positive, got {self.rope_reference_grid}.")
        if self.use_mlp_sub_norm and not self.use_gated_mlp:
            fail("`use_mlp_sub_norm` norms the gated MLP's hidden activations: set `use_gated_mlp=True` too.")


class LastViTConfigError(StrictDataclassClassValidationError):
    """A bad `LastViTConfig` option found by `config.validate()`, in one line: the option and what to use.
    (huggingface_hub wraps a validator's `ValueError` in a two-line message; this error passes through as is.)"""

    def __init__(self, message: str):
        Exception.__init__(self, message)


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if len(value) != 2:
        raise ValueError(f"Invalid LastViTConfig: expected an int or a (height, width) pair, got {value!r}.")
    return (int(value[0]), int(value[1]))


__all__ = ["LastViTConfig", "LastViTConfigError"]
