"""OpenAI CLIP / open_clip visual towers (`--from openclip`), including the authors' `openai_b_16.pt`.

Layout: `visual.conv1`, `visual.class_embedding`, `visual.positional_embedding`, `visual.ln_pre`,
`visual.transformer.resblocks.{i}...`, `visual.ln_post`, `visual.proj`; the text tower is dropped here
(`openclip_text` converts the whole model, `--with-text-tower`).
Pickled dicts and TorchScript archives both load (see `checkpoint_loading`). OpenAI CLIP cannot run
at other input sizes itself; LastViT's resize is used there (bicubic to the grid, as transformers'
CLIP does).
"""

from __future__ import annotations

import re

import torch

from .key_plan import (
    ConversionResult,
    FusedQKVBlock,
    KeyPlan,
    build_result,
    clip_eval_processor,
    count_blocks,
    encoder_config,
    require_key,
    resolve_head,
    resolve_num_heads,
    square_grid,
    strip_prefixes,
    zeros_like_bias,
)
from .options import ConversionOptions

OPENCLIP_BLOCK = FusedQKVBlock(
    "ln_1", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"
)


def convert_openclip_state_dict(state_dict: dict[str, torch.Tensor], options: ConversionOptions) -> ConversionResult:
    """The visual tower of an OpenAI CLIP / open_clip state dict to LastViT: `ln_pre` (use_pre_norm),
    bias-free `conv1`, fused `attn.in_proj`, `mlp.c_fc` / `mlp.c_proj` with QuickGELU (OpenAI; GELU with
    `clip_activation="gelu"`), LayerNorm eps 1e-5, `ln_post` as the final LayerNorm and `proj` as the
    bias-free projection (`image_embeds`). Text-tower tensors are dropped."""
    options.validate()
    source = "openclip"
    sd = strip_prefixes(state_dict, ("module.",))
    prefix = "visual." if any(key.startswith("visual.") for key in sd) else ""
    v = prefix
    conv = require_key(sd, f"{v}conv1.weight", source)
    pos = require_key(sd, f"{v}positional_embedding", source)
    hidden, patch = conv.shape[0], conv.shape[-1]
    grid = square_grid(pos.shape[0] - 1, "positional_embedding")
    layers = count_blocks(sd, rf"{re.escape(v)}transformer\.resblocks\.(\d+)\.", source)
    block0 = f"{v}transformer.resblocks.0."
    layerscale = f"{block0}ls_1.gamma" in sd

    plan = KeyPlan(source, sd)
    plan.map("embeddings.cls_token", [f"{v}class_embedding"], lambda t: t.reshape(1, 1, -1))
    plan.map("embeddings.position_embeddings", [f"{v}positional_embedding"], lambda t: t.unsqueeze(0))
    plan.copy("embeddings.patch_embeddings.projection.weight", f"{v}conv1.weight")
    plan.map("embeddings.patch_embeddings.projection.bias", [f"{v}conv1.weight"], zeros_like_bias)
    plan.copy_linear("pre_layernorm", f"{v}ln_pre")
    plan.copy_linear("layernorm", f"{v}ln_post")
    for i in range(layers):
        src, dst = f"{v}transformer.resblocks.{i}.", f"encoder.layer.{i}."
        plan.copy_fused_qkv_block(i, src, OPENCLIP_BLOCK)
        if layerscale:
            plan.copy(f"{dst}layer_scale1.lambda1", f"{src}ls_1.gamma")
            plan.copy(f"{dst}layer_scale2.lambda1", f"{src}ls_2.gamma")
    projection_dim = None
    if f"{v}proj" in sd:
        projection_dim = sd[f"{v}proj"].shape[1]
        plan.map("visual_projection.weight", [f"{v}proj"], lambda t: t.t().contiguous())
    if prefix:
        plan.drop("text tower and other non-visual tensors", lambda k: not k.startswith("visual."))

    base = encoder_config(
        image_size=grid * patch,
        patch_size=patch,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=resolve_num_heads(hidden, options.num_heads, source),
        intermediate_size=require_key(sd, f"{block0}mlp.c_fc.weight", source).shape[0],
        hidden_act=options.clip_activation,
        layer_norm_eps=1e-5,
        qkv_bias=True,
        use_pre_norm=True,
        projection_dim=projection_dim,
        layerscale_value=1.0 if layerscale else None,
    )
    notes = [
        f"MLP activation: {options.clip_activation} ("
        + (
            "OpenAI CLIP weights; use --clip-activation gelu for open_clip models trained with nn.GELU)."
            if options.clip_activation == "quick_gelu"
            else "open_clip models trained with nn.GELU)."
        )
    ]
    head = resolve_head(None, options, notes)
    return build_result(
        plan,
        base,
        head,
        options,
        clip_eval_processor(grid * patch),
        f"CLIP visual tower (patch {patch}, width {hidden}, {layers} blocks)",
        notes,
    )
