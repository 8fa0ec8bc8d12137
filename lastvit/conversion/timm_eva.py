"""timm `Eva` state dicts (`--from timm-eva`): EVA-01, EVA02 (and EVA02-CLIP's image towers), timm's DINOv3 ports and
the other pre-norm `Eva` ViTs with EVA attention.

Layout: `patch_embed.proj`, `cls_token`, `reg_token`, `pos_embed` (absent in RoPE-only models), `norm_pre`,
`blocks.{i}.{norm1, attn.{qkv | q_proj, k_proj, v_proj}, attn.{q_bias, v_bias}, attn.norm, attn.proj, gamma_1, norm2,
mlp.{fc1 | fc1_g, fc1_x}, mlp.norm, mlp.fc2, gamma_2}`, `norm` or `fc_norm`, `attn_pool`, `head`. The embedding and
readout keys are `VisionTransformer`'s and share its plans (`timm_vit.py`).

How it maps, by encoder options (never a subclass):

- EVA's RoPE (`rope_type="eva"`): timm's "cat" RoPE on the patch tokens, CLS and registers unrotated, patch indices
  scaled to `ref_feat_shape` (`rope_reference_grid`, 16 for every EVA02), temperature 10000. timm rotates interleaved
  channel pairs (2i, 2i + 1); LastViT rotates halves (i, i + head_dim / 2). Permuting each head's query and key
  channels (even ones first, then odd ones) turns one into the other exactly: attention scores are sums over the
  same products. timm's DINOv3 (`rope_type="dinov3"`) already rotates halves.
- EVA attention: a fused `qkv` without bias plus `q_bias` / `v_bias`, or separate `q_proj` / `k_proj` / `v_proj`; the
  key never has a bias (LastViT's is zero). EVA02-CLIP's `attn.norm` (`scale_attn_inner`) is `use_attention_sub_norm`.
- SwiGLU: packed (`mlp.fc1` of twice the width, gate first) or split (`fc1_g`, `fc1_x`), both `use_gated_mlp` with
  SiLU; EVA02's sub-LN inside the MLP (`mlp.norm`, `scale_mlp`) is `use_mlp_sub_norm`. `gamma_1` / `gamma_2` are
  LayerScale.
- Not in the state dict, so options say it (`--rope`, `--rope-reference-grid`, `--layer-norm-eps`, `--global-pool`),
  with defaults read from what the keys show. Refused with the key that shows them: q/k norms, gated attention,
  learned ("mixed") RoPE frequencies, `AttentionRope` blocks (fused qkv bias: PE, RoPE-ViT), attention-only
  LayerScale. Post-norm blocks (EVA02-E) leave no trace in the keys; this converter assumes pre-norm blocks.
"""

from __future__ import annotations

import torch

from .key_plan import (
    ConversionResult,
    KeyPlan,
    clip_eval_processor,
    count_blocks,
    encoder_config,
    imagenet_full_crop_processor,
    require_key,
    resolve_num_heads,
    strip_prefixes,
    zeros_like_bias,
)
from .options import ConversionError, ConversionOptions
from .timm_vit import GLOBAL_POOLS, build_timm_result, grid_and_layout, plan_timm_embeddings, plan_timm_readout

EVA02_REFERENCE_GRID = 16  # timm's ref_feat_shape of every EVA02 model (224 / 14)
DINOV3_IMAGE_SIZE = 256  # timm's DINOv3 pretrained_cfg input size (the state dict has no position table to tell)
_UNSUPPORTED_KEYS = {
    "blocks.0.attn.q_norm.weight": "q/k-normed attention (qk_norm=True)",
    "blocks.0.attn.gate.weight": "gated attention (gated_attn=True)",
    "blocks.0.attn.qkv.bias": "AttentionRope blocks (attn_type='rope': PE, RoPE-ViT)",
    "rope.freqs": "learned per-block RoPE frequencies (rope_type='mixed')",
}


def convert_timm_eva_state_dict(state_dict: dict[str, torch.Tensor], options: ConversionOptions) -> ConversionResult:
    """A timm `Eva` state dict (optionally under `module.` / `model.`) to LastViT."""
    options.validate()
    source = "timm-eva"
    sd = strip_prefixes(state_dict, ("module.", "model."))
    conv = require_key(sd, "patch_embed.proj.weight", source)
    hidden, patch = conv.shape[0], tuple(conv.shape[-2:])
    layers = count_blocks(sd, r"blocks\.(\d+)\.", source)
    for key, what in _UNSUPPORTED_KEYS.items():
        if key in sd:
            raise ConversionError(f"this timm Eva has {what} ({key}), which LastViT does not reproduce yet.")
    if "blocks.0.gamma_1" in sd and "blocks.0.gamma_2" not in sd:
        raise ConversionError("this timm Eva has LayerScale on the attention branch only (attn_only_layer_scale).")
    has_cls = "cls_token" in sd
    registers = sd["reg_token"].shape[1] if "reg_token" in sd else 0
    heads = resolve_num_heads(hidden, options.num_heads, source)
    mlp = _mlp_layout(sd)
    rope = options.rope or _default_rope(sd, mlp)
    if "pos_embed" in sd:
        grid, no_embed_class = grid_and_layout(sd["pos_embed"].shape[1], int(has_cls) + registers)
        image_size = [grid[0] * patch[0], grid[1] * patch[1]]
    else:
        no_embed_class = False
        image_size = [DINOV3_IMAGE_SIZE // patch[0] * patch[0], DINOV3_IMAGE_SIZE // patch[1] * patch[1]]

    plan = KeyPlan(source, sd)
    plan_timm_embeddings(plan, sd, has_cls, registers, no_embed_class)
    qkv_bias = "blocks.0.attn.q_bias" in sd or "blocks.0.attn.q_proj.bias" in sd
    permute = _interleaved_to_halves(hidden // heads) if rope == "eva" else None
    for i in range(layers):
        _plan_block(plan, sd, i, heads, qkv_bias, mlp, permute)

    global_pool = options.global_pool or ("map" if "attn_pool.latent" in sd else "avg")
    if global_pool == "token" and not has_cls:
        raise ConversionError("--global-pool token needs a CLS token; this timm Eva has none (class_token=False).")
    if global_pool == "map" and mlp != "plain":
        raise ConversionError(
            "this timm Eva combines a SwiGLU MLP with an attention-pool head (a GELU MLP); LastViT's MAP head shares "
            "the blocks' activation, so it cannot reproduce both."
        )
    global_pool, use_fc_norm = plan_timm_readout(plan, sd, global_pool)
    gated = mlp != "plain"
    intermediate = sd["blocks.0.mlp.fc2.weight"].shape[1]
    eps = options.layer_norm_eps or (1e-5 if rope == "dinov3" else 1e-6)
    reference = options.rope_reference_grid or EVA02_REFERENCE_GRID
    base = encoder_config(
        image_size=image_size,
        patch_size=list(patch),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        hidden_act="silu" if gated else "gelu",
        layer_norm_eps=eps,
        qkv_bias=qkv_bias,
        layerscale_value=1.0 if "blocks.0.gamma_1" in sd else None,
        use_gated_mlp=gated,
        use_mlp_sub_norm="blocks.0.mlp.norm.weight" in sd,
        use_attention_sub_norm="blocks.0.attn.norm.weight" in sd,
        use_cls_token=has_cls,
        num_register_tokens=registers,
        use_pre_norm="norm_pre.weight" in sd,
        position_embedding_type="learned" if "pos_embed" in sd else "none",
        position_embedding_antialias=True,
        rope_type=None if rope == "none" else rope,
        rope_theta=100.0 if rope == "dinov3" else 10000.0,
        rope_reference_grid=reference if rope == "eva" else None,
        use_fc_norm=use_fc_norm,
        pooling=GLOBAL_POOLS[global_pool],
    )
    notes, description = _eva_texts(base, rope, options, has_cls, global_pool)
    processor = (imagenet_full_crop_processor if rope == "dinov3" else clip_eval_processor)(image_size[0])
    return build_timm_result(plan, sd, base, options, processor, description, notes, global_pool, use_fc_norm)


def _eva_texts(base: dict, rope: str, options: ConversionOptions, has_cls: bool, global_pool: str):
    """The notes (what the state dict could not tell, the preprocessing) and the one-line description."""
    rope_text = {"eva": f"EVA RoPE (reference grid {base['rope_reference_grid']})", "dinov3": "DINOv3 RoPE"}
    rope_text = rope_text.get(rope, "no RoPE")
    preprocessing = (
        "ImageNet mean/std with a full crop (timm's DINOv3 pretrained_cfg)"
        if rope == "dinov3"
        else "CLIP mean/std with a full crop (timm's EVA02 fine-tuned pretrained_cfg)"
    )
    notes = [
        (
            f"timm state dicts record neither the RoPE nor the LayerNorm epsilon: converted with {rope_text} and eps "
            f"{base['layer_norm_eps']:g} ({'given' if options.rope else 'read from the keys'}); pass --rope / "
            "--rope-reference-grid / --layer-norm-eps if the model was built otherwise."
        ),
        (
            f"timm state dicts carry no preprocessing: the folder uses {preprocessing}; check it against the model's "
            "timm pretrained_cfg (mean/std, crop_pct, interpolation)."
        ),
    ]
    mlp = "GELU MLP"
    if base["use_gated_mlp"]:
        mlp = "SwiGLU MLP" + (" with sub-LN" if base["use_mlp_sub_norm"] else "")
    description = (
        f"timm Eva (patch {base['patch_size'][0]}, width {base['hidden_size']}, {base['num_hidden_layers']} blocks, "
        f"{'CLS, ' if has_cls else ''}{base['num_register_tokens']} registers, {rope_text}, {mlp}"
        f"{', attention sub-LN' if base['use_attention_sub_norm'] else ''}, global_pool={global_pool!r}"
        f"{', fc_norm' if base['use_fc_norm'] else ''})"
    )
    return notes, description


def _mlp_layout(sd: dict[str, torch.Tensor]) -> str:
    """`split` SwiGLU (fc1_g, fc1_x), `packed` SwiGLU (one fc1 of twice fc2's input width, gate first) or `plain`."""
    if "blocks.0.mlp.fc1_g.weight" in sd:
        return "split"
    fc1, fc2 = require_key(sd, "blocks.0.mlp.fc1.weight", "timm-eva"), sd["blocks.0.mlp.fc2.weight"]
    if "blocks.0.mlp.norm.weight" in sd and fc1.shape[0] == fc2.shape[1]:
        raise ConversionError("this timm Eva has a GELU MLP with an inner norm (blocks.0.mlp.norm); not supported.")
    return "packed" if fc1.shape[0] == 2 * fc2.shape[1] else "plain"


def _default_rope(sd: dict[str, torch.Tensor], mlp: str) -> str:
    if "pos_embed" not in sd:
        return "dinov3"
    return "none" if mlp == "plain" else "eva"


def _interleaved_to_halves(head_dim: int) -> torch.Tensor:
    """Channel order that puts each interleaved RoPE pair (2i, 2i + 1) at (i, i + head_dim / 2)."""
    return torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)))


def _permuted(tensor: torch.Tensor, heads: int, order: torch.Tensor | None) -> torch.Tensor:
    """Reorder each head's output channels of a query/key weight [D, in] or bias [D] by `order`."""
    if order is None:
        return tensor
    shape = tensor.shape
    return tensor.reshape(heads, -1, *shape[1:])[:, order].reshape(shape)


def _plan_block(plan, sd, i: int, heads: int, qkv_bias: bool, mlp: str, order: torch.Tensor | None) -> None:
    src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
    attn = f"{dst}attention."
    plan.copy_linear(f"{dst}norm1", f"{src}norm1")
    if f"{src}attn.qkv.weight" in sd:  # fused, bias-free; q and v biases stored apart
        for index, name in enumerate(("q_proj", "k_proj", "v_proj")):
            rotate = order if name != "v_proj" else None
            plan.map(
                f"{attn}{name}.weight",
                [f"{src}attn.qkv.weight"],
                lambda t, i=index, o=rotate: _permuted(t.chunk(3, dim=0)[i], heads, o),
            )
    else:
        plan.map(f"{attn}q_proj.weight", [f"{src}attn.q_proj.weight"], lambda t: _permuted(t, heads, order))
        plan.map(f"{attn}k_proj.weight", [f"{src}attn.k_proj.weight"], lambda t: _permuted(t, heads, order))
        plan.copy(f"{attn}v_proj.weight", f"{src}attn.v_proj.weight")
    if qkv_bias:
        q_bias, v_bias = (
            (f"{src}attn.q_bias", f"{src}attn.v_bias")
            if f"{src}attn.q_bias" in sd
            else (f"{src}attn.q_proj.bias", f"{src}attn.v_proj.bias")
        )
        plan.map(f"{attn}q_proj.bias", [q_bias], lambda t: _permuted(t, heads, order))
        plan.map(f"{attn}k_proj.bias", [q_bias], zeros_like_bias)  # EVA's key has no bias
        plan.copy(f"{attn}v_proj.bias", v_bias)
    if f"{src}attn.norm.weight" in sd:
        plan.copy_linear(f"{attn}sub_norm", f"{src}attn.norm")
    plan.copy_linear(f"{attn}o_proj", f"{src}attn.proj")
    plan.copy_linear(f"{dst}norm2", f"{src}norm2")
    if mlp == "split":
        plan.copy_linear(f"{dst}mlp.gate_proj", f"{src}mlp.fc1_g")
        plan.copy_linear(f"{dst}mlp.up_proj", f"{src}mlp.fc1_x")
    elif mlp == "packed":
        for index, name in enumerate(("gate_proj", "up_proj")):
            for part in ("weight", "bias"):
                plan.map(f"{dst}mlp.{name}.{part}", [f"{src}mlp.fc1.{part}"], lambda t, i=index: t.chunk(2, dim=0)[i])
    else:
        plan.copy_linear(f"{dst}mlp.fc1", f"{src}mlp.fc1")
    if f"{src}mlp.norm.weight" in sd:
        plan.copy_linear(f"{dst}mlp.sub_norm", f"{src}mlp.norm")
    plan.copy_linear(f"{dst}mlp.{'fc2' if mlp == 'plain' else 'down_proj'}", f"{src}mlp.fc2")
    if f"{src}gamma_1" in sd:
        plan.copy(f"{dst}layer_scale1.lambda1", f"{src}gamma_1")
        plan.copy(f"{dst}layer_scale2.lambda1", f"{src}gamma_2")
