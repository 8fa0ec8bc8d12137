"""facebookresearch/dino ViT checkpoints (`--from dino`), including the authors' LaSt-ViT DINO (`dino0080.pth`).

Layout: `cls_token`, `pos_embed`, `patch_embed.proj`, `blocks.{i}...`, `norm`; a bare backbone or a
training checkpoint with `teacher` / `student` dicts (the CLI picks `teacher` unless `--checkpoint-key`
says otherwise). `module.` / `backbone.` prefixes are stripped and the DINO projection head (`head.*`)
is dropped. Other input sizes resize as the original repository does (bicubic, scale factor with a
0.1 offset).
"""

from __future__ import annotations

import torch

from .key_plan import (
    PIL_BICUBIC,
    ConversionResult,
    FusedQKVBlock,
    KeyPlan,
    build_result,
    count_blocks,
    encoder_config,
    imagenet_eval_processor,
    require_key,
    resolve_head,
    resolve_num_heads,
    square_grid,
    strip_prefixes,
)
from .options import ConversionOptions

DINO_BLOCK = FusedQKVBlock("norm1", "attn.qkv.weight", "attn.qkv.bias", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")


def convert_dino_state_dict(state_dict: dict[str, torch.Tensor], options: ConversionOptions) -> ConversionResult:
    """A facebookresearch/dino `VisionTransformer` state dict (a `teacher` / `student` dict of a training
    checkpoint or the released backbone) to LastViT: LayerNorm eps 1e-6, GELU, fused `attn.qkv`, the
    final `norm`, and DINO's position-embedding resize (bicubic, scale factor with a 0.1 offset)."""
    options.validate()
    source = "dino"
    sd = strip_prefixes(state_dict, ("module.",))
    sd = {key.removeprefix("backbone."): value for key, value in sd.items()}
    conv = require_key(sd, "patch_embed.proj.weight", source)
    pos = require_key(sd, "pos_embed", source)
    hidden, patch = conv.shape[0], conv.shape[-1]
    grid = square_grid(pos.shape[1] - 1, "pos_embed")
    layers = count_blocks(sd, r"blocks\.(\d+)\.", source)
    qkv_bias = "blocks.0.attn.qkv.bias" in sd

    plan = KeyPlan(source, sd)
    plan.copy_all(
        [
            ("embeddings.cls_token", "cls_token"),
            ("embeddings.position_embeddings", "pos_embed"),
            ("embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight"),
            ("embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias"),
            ("layernorm.weight", "norm.weight"),
            ("layernorm.bias", "norm.bias"),
        ]
    )
    for i in range(layers):
        plan.copy_fused_qkv_block(i, f"blocks.{i}.", DINO_BLOCK, qkv_bias)
    plan.drop("DINO projection head (training only)", lambda k: k.startswith("head."))

    base = encoder_config(
        image_size=grid * patch,
        patch_size=patch,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=resolve_num_heads(hidden, options.num_heads, source),
        intermediate_size=require_key(sd, "blocks.0.mlp.fc1.weight", source).shape[0],
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias=qkv_bias,
        position_embedding_interpolation_offset=0.1,
    )
    notes: list[str] = []
    head = resolve_head(None, options, notes)
    return build_result(
        plan,
        base,
        head,
        options,
        imagenet_eval_processor(grid * patch, PIL_BICUBIC),
        f"facebookresearch/dino ViT (patch {patch}, width {hidden}, {layers} blocks)",
        notes,
    )
