"""timm `VisionTransformer` state dicts (`--from timm`): CLS and register tokens (`reg_tokens`), positions with or
without class/register slots (`no_embed_class`), `norm_pre`, LayerScale, every `global_pool` (token, avg, avgmax,
max, map) with or without `fc_norm`, and the classifier `head`.

Layout: `patch_embed.proj`, `cls_token`, `reg_token`, `pos_embed`, `norm_pre`, `blocks.{i}.{norm1, attn.qkv,
attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}`, `norm` or `fc_norm`, `attn_pool.{latent, q, kv, proj,
norm, mlp}`, `head`. timm's LayerNorm eps is 1e-6 and its MLP uses exact GELU.

How it maps:

- Register tokens carry position slots in timm unless `no_embed_class`; LastViT registers have none, so a register
  is converted as `reg_token + its position` (a constant: timm never resizes prefix positions). With
  `no_embed_class` the CLS slot of LastViT's position table is zero.
- Other input sizes resize the patch positions as timm's `dynamic_img_size` does (bicubic to the grid, antialiased).
- `global_pool` is not stored in a state dict: `attn_pool.*` means `map`, `fc_norm.*` means `avg` (timm's default
  with fc_norm), else `token` with a CLS token and `avg` without; pass `--global-pool` for `max` / `avgmax` or to
  override. With `fc_norm` the final norm is applied after pooling (`use_fc_norm`). timm's MAP head reads the patch
  tokens only (its default `pool_include_prefix=False`), as LastViT's does.
- q/k-normed attention (`qk_norm`), SwiGLU MLPs and other block variants are refused with the key that shows them;
  timm `Eva` state dicts (EVA02, timm's DINOv3) are pointed to `--from timm-eva` (`timm_eva.py`), which shares the
  embedding and readout plans below.
"""

from __future__ import annotations

import math

import torch

from .key_plan import (
    PIL_BICUBIC,
    ConversionResult,
    FusedQKVBlock,
    KeyPlan,
    SourceHead,
    build_result,
    count_blocks,
    encoder_config,
    imagenet_eval_processor,
    preview_keys,
    require_key,
    resolve_head,
    resolve_num_heads,
    strip_prefixes,
    zeros_like_bias,
)
from .options import ConversionError, ConversionOptions

GLOBAL_POOLS = {"token": "cls", "avg": "mean", "avgmax": "avgmax", "max": "max", "map": "map"}
EVA_BLOCK_KEYS = ("gamma_1", "attn.q_bias", "attn.q_proj.weight")  # timm `Eva` blocks only
_UNSUPPORTED_BLOCK_KEYS = {
    "attn.q_norm.weight": "q/k-normed attention (qk_norm=True)",
    "mlp.fc1_g.weight": "a SwiGLU MLP",
    "mlp.norm.weight": "an MLP with an inner norm",
    "attn.norm.weight": "an attention with an inner norm (scale_attn_norm)",
}


def convert_timm_state_dict(state_dict: dict[str, torch.Tensor], options: ConversionOptions) -> ConversionResult:
    """A timm `VisionTransformer` state dict (optionally under `module.` / `model.`) to LastViT."""
    options.validate()
    source = "timm"
    sd = strip_prefixes(state_dict, ("module.", "model."))
    conv = require_key(sd, "patch_embed.proj.weight", source)
    pos = require_key(sd, "pos_embed", source)
    hidden, patch = conv.shape[0], tuple(conv.shape[-2:])
    layers = count_blocks(sd, r"blocks\.(\d+)\.", source)
    eva_keys = [f"blocks.0.{key}" for key in EVA_BLOCK_KEYS if f"blocks.0.{key}" in sd]
    if eva_keys:
        raise ConversionError(
            f"this is a timm Eva state dict (EVA / EVA02 / timm's DINOv3; it has {eva_keys[0]}), not a "
            "VisionTransformer: convert it with --from timm-eva."
        )
    for key, what in _UNSUPPORTED_BLOCK_KEYS.items():
        if f"blocks.0.{key}" in sd:
            raise ConversionError(f"this timm ViT has {what} (blocks.0.{key}), which LastViT does not reproduce yet.")
    has_cls = "cls_token" in sd
    registers = sd["reg_token"].shape[1] if "reg_token" in sd else 0
    prefix = int(has_cls) + registers
    grid, no_embed_class = grid_and_layout(pos.shape[1], prefix)

    plan = KeyPlan(source, sd)
    plan_timm_embeddings(plan, sd, has_cls, registers, no_embed_class)
    block = FusedQKVBlock("norm1", "attn.qkv.weight", "attn.qkv.bias", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
    qkv_bias = "blocks.0.attn.qkv.bias" in sd
    layerscale = "blocks.0.ls1.gamma" in sd
    for i in range(layers):
        plan.copy_fused_qkv_block(i, f"blocks.{i}.", block, qkv_bias)
        if layerscale:
            plan.copy(f"encoder.layer.{i}.layer_scale1.lambda1", f"blocks.{i}.ls1.gamma")
            plan.copy(f"encoder.layer.{i}.layer_scale2.lambda1", f"blocks.{i}.ls2.gamma")

    global_pool, use_fc_norm = plan_timm_readout(plan, sd, options.global_pool or _default_global_pool(sd, has_cls))
    if global_pool == "token" and not has_cls:
        raise ConversionError("--global-pool token needs a CLS token; this timm ViT has none (class_token=False).")

    base = encoder_config(
        image_size=[grid[0] * patch[0], grid[1] * patch[1]],
        patch_size=list(patch),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=resolve_num_heads(hidden, options.num_heads, source),
        intermediate_size=sd["blocks.0.mlp.fc1.weight"].shape[0],
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias=qkv_bias,
        layerscale_value=1.0 if layerscale else None,
        use_cls_token=has_cls,
        num_register_tokens=registers,
        use_pre_norm="norm_pre.weight" in sd,
        position_embedding_antialias=True,
        use_fc_norm=use_fc_norm,
        pooling=GLOBAL_POOLS[global_pool],
    )
    notes = [
        (
            "timm state dicts carry no preprocessing: the folder uses ImageNet evaluation preprocessing (bicubic, "
            "crop 0.875); check it against the model's timm pretrained_cfg (mean/std, crop_pct, interpolation)."
        )
    ]
    description = (
        f"timm VisionTransformer (patch {patch[0]}, width {hidden}, {layers} blocks, "
        f"{'CLS, ' if has_cls else ''}{registers} registers, global_pool={global_pool!r}"
        f"{', fc_norm' if use_fc_norm else ''}{', no_embed_class' if no_embed_class else ''})"
    )
    processor = imagenet_eval_processor(grid[0] * patch[0], PIL_BICUBIC)
    return build_timm_result(plan, sd, base, options, processor, description, notes, global_pool, use_fc_norm)


def plan_timm_embeddings(
    plan: KeyPlan, sd: dict[str, torch.Tensor], has_cls: bool, registers: int, no_embed_class: bool
) -> None:
    """timm's patch embedding, CLS and register tokens, absolute positions (if any) and `norm_pre` (timm's
    `VisionTransformer` and `Eva` store them alike)."""
    plan.copy("embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight")
    if "patch_embed.proj.bias" in sd:
        plan.copy("embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias")
    else:  # pre_norm (CLIP-style) ViTs have a bias-free patch projection: a zero bias adds nothing
        plan.map("embeddings.patch_embeddings.projection.bias", ["patch_embed.proj.weight"], zeros_like_bias)
    if has_cls:
        plan.copy("embeddings.cls_token", "cls_token")
    prefix = int(has_cls) + registers
    if "pos_embed" not in sd:  # RoPE-only models (timm's DINOv3): no positions at all
        if registers:
            plan.copy("embeddings.register_tokens", "reg_token")
    elif no_embed_class:  # no prefix positions: LastViT's CLS slot is zero
        plan.map("embeddings.position_embeddings", ["pos_embed"], lambda t: _with_zero_slots(t, int(has_cls)))
        if registers:
            plan.copy("embeddings.register_tokens", "reg_token")
    else:  # [CLS, registers, patches] slots: CLS and patch slots stay, each register absorbs its own slot
        c = int(has_cls)
        plan.map("embeddings.position_embeddings", ["pos_embed"], lambda t: torch.cat((t[:, :c], t[:, prefix:]), 1))
        if registers:
            plan.map("embeddings.register_tokens", ["reg_token", "pos_embed"], lambda r, t: r + t[:, c:prefix])
    if "norm_pre.weight" in sd:
        plan.copy_linear("pre_layernorm", "norm_pre")


def plan_timm_readout(plan: KeyPlan, sd: dict[str, torch.Tensor], global_pool: str) -> tuple[str, bool]:
    """The final norm (`norm`, or `fc_norm` after pooling) and the attention pool of a timm ViT; returns the
    global pool and whether the norm comes after pooling."""
    use_fc_norm = "fc_norm.weight" in sd
    final_norm = "fc_norm" if use_fc_norm else "norm"
    if f"{final_norm}.weight" not in sd:
        raise ConversionError(
            f"this timm ViT has neither `norm` nor `fc_norm` weights (final_norm=False); its keys: {preview_keys(sd)}."
        )
    plan.copy_linear("layernorm", final_norm)
    if global_pool == "map":
        _plan_attention_pool(plan, sd)
    elif "attn_pool.latent" in sd:
        raise ConversionError(
            f"--global-pool {global_pool}: this timm ViT has an attention-pool head (global_pool='map')."
        )
    return global_pool, use_fc_norm


def build_timm_result(
    plan: KeyPlan,
    sd: dict[str, torch.Tensor],
    base: dict,
    options: ConversionOptions,
    processor,
    description: str,
    notes: list[str],
    global_pool: str,
    use_fc_norm: bool,
) -> ConversionResult:
    """timm's classifier `head` (kept, dropped or replaced), the readout's card text, and the converted model."""
    source_head = None
    if "head.weight" in sd:
        source_head = SourceHead(sd["head.weight"], sd["head.bias"], sd["head.weight"].shape[0])
    head = resolve_head(source_head, options, notes)
    reason = (
        "classification head (converted separately)"
        if head is source_head
        else "classification head (dropped or replaced)"
    )
    plan.drop(reason, lambda k: k.startswith("head."))
    source_pooling = base["pooling"]
    if source_pooling == "map" and options.pooling not in ("source", "map"):
        plan.drop_targets("pooler.map_head.", f"attention-pooling head (the readout is now {options.pooling})")
    result = build_result(plan, base, head, options, processor, description, notes)
    result.source_pooling = source_pooling
    result.source_readout = f"timm's global_pool={global_pool!r}" + (" followed by fc_norm" if use_fc_norm else "")
    return result


def grid_and_layout(num_positions: int, prefix: int) -> tuple[tuple[int, int], bool]:
    """The (square) patch grid and whether the position table leaves the prefix tokens out (`no_embed_class`)."""
    with_prefix = num_positions - prefix > 0 and math.isqrt(num_positions - prefix) ** 2 == num_positions - prefix
    without_prefix = math.isqrt(num_positions) ** 2 == num_positions
    if prefix and with_prefix and without_prefix:
        raise ConversionError(
            f"pos_embed has {num_positions} rows: both a square grid with and without {prefix} prefix slots; "
            "cannot tell whether the model used no_embed_class."
        )
    if not with_prefix and not (prefix and without_prefix):
        raise ConversionError(
            f"pos_embed has {num_positions} rows, which is no square grid (+ {prefix} prefix tokens)."
        )
    side = math.isqrt(num_positions - prefix) if with_prefix else math.isqrt(num_positions)
    return (side, side), bool(prefix) and not with_prefix


def _with_zero_slots(positions: torch.Tensor, slots: int) -> torch.Tensor:
    return torch.cat((positions.new_zeros(1, slots, positions.shape[-1]), positions), dim=1)


def _default_global_pool(sd: dict[str, torch.Tensor], has_cls: bool) -> str:
    if "attn_pool.latent" in sd:
        return "map"
    if "fc_norm.weight" in sd or not has_cls:
        return "avg"
    return "token"


def _plan_attention_pool(plan: KeyPlan, sd: dict[str, torch.Tensor]) -> None:
    """timm's `AttentionPoolLatent`: latent -> q, fused kv, proj, then `x + mlp(norm(x))`."""
    latent = require_key(sd, "attn_pool.latent", "timm")
    if latent.shape[1] != 1:
        raise ConversionError(f"the attention pool has {latent.shape[1]} latent queries; LastViT's MAP head has one.")
    if "attn_pool.q_norm.weight" in sd or "attn_pool.pos_embed" in sd:
        raise ConversionError("this timm attention pool has q/k norms or its own position embedding; not supported.")
    dst = "pooler.map_head."
    plan.copy(f"{dst}probe", "attn_pool.latent")
    plan.copy_linear(f"{dst}q_proj", "attn_pool.q")
    for index, name in enumerate(("k_proj", "v_proj")):
        plan.map(f"{dst}{name}.weight", ["attn_pool.kv.weight"], lambda t, i=index: t.chunk(2, dim=0)[i])
        plan.map(f"{dst}{name}.bias", ["attn_pool.kv.bias"], lambda t, i=index: t.chunk(2, dim=0)[i])
    plan.copy_linear(f"{dst}o_proj", "attn_pool.proj")
    plan.copy_linear(f"{dst}norm", "attn_pool.norm")
    plan.copy_linear(f"{dst}mlp.fc1", "attn_pool.mlp.fc1")
    plan.copy_linear(f"{dst}mlp.fc2", "attn_pool.mlp.fc2")
