"""torchvision `VisionTransformer` state dicts (`--from torchvision`), including the authors' supervised
LaSt-ViT (`ViT_190k.pth`, a detectron2 file whose keys carry a `model.` prefix).

Layout: `conv_proj`, `class_token`, `encoder.pos_embedding`, `encoder.layers.encoder_layer_{i}...`,
`encoder.ln`, `heads.head` (and `heads.pre_logits` + tanh when the model has a representation layer).
torchvision cannot run at other input sizes itself; LastViT's resize is used there (bicubic to the grid).
"""

from __future__ import annotations

import torch

from .key_plan import (
    PIL_BILINEAR,
    ConversionResult,
    FusedQKVBlock,
    KeyPlan,
    SourceHead,
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


def convert_torchvision_state_dict(
    state_dict: dict[str, torch.Tensor], options: ConversionOptions
) -> ConversionResult:
    """A torchvision `VisionTransformer` state dict (optionally with detectron2's `model.` / DDP's
    `module.` prefix) to LastViT. torchvision: LayerNorm eps 1e-6, exact GELU, q/k/v fused in
    `in_proj_weight`, `heads.head` on the final CLS token (`heads.pre_logits` + tanh if present)."""
    options.validate()
    source = "torchvision"
    sd = strip_prefixes(state_dict, ("module.", "model."))
    conv = require_key(sd, "conv_proj.weight", source)
    pos = require_key(sd, "encoder.pos_embedding", source)
    hidden, patch = conv.shape[0], conv.shape[-1]
    grid = square_grid(pos.shape[1] - 1, "encoder.pos_embedding")
    layers = count_blocks(sd, r"encoder\.layers\.encoder_layer_(\d+)\.", source)
    block0 = "encoder.layers.encoder_layer_0."
    fc1 = "mlp.0" if f"{block0}mlp.0.weight" in sd else "mlp.linear_1"  # torchvision < 0.13 names
    fc2 = "mlp.3" if fc1 == "mlp.0" else "mlp.linear_2"
    qkv_bias = f"{block0}self_attention.in_proj_bias" in sd

    plan = KeyPlan(source, sd)
    plan.copy_all(
        [
            ("embeddings.cls_token", "class_token"),
            ("embeddings.position_embeddings", "encoder.pos_embedding"),
            ("embeddings.patch_embeddings.projection.weight", "conv_proj.weight"),
            ("embeddings.patch_embeddings.projection.bias", "conv_proj.bias"),
            ("layernorm.weight", "encoder.ln.weight"),
            ("layernorm.bias", "encoder.ln.bias"),
        ]
    )
    block = FusedQKVBlock(
        "ln_1",
        "self_attention.in_proj_weight",
        "self_attention.in_proj_bias",
        "self_attention.out_proj",
        "ln_2",
        fc1,
        fc2,
    )
    for i in range(layers):
        plan.copy_fused_qkv_block(i, f"encoder.layers.encoder_layer_{i}.", block, qkv_bias)

    base = encoder_config(
        image_size=grid * patch,
        patch_size=patch,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=resolve_num_heads(hidden, options.num_heads, source),
        intermediate_size=require_key(sd, f"{block0}{fc1}.weight", source).shape[0],
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias=qkv_bias,
    )
    notes: list[str] = []
    source_head = None
    if "heads.head.weight" in sd:
        head_weight = sd["heads.head.weight"]
        source_head = SourceHead(head_weight, sd.get("heads.head.bias"), head_weight.shape[0])
    head = resolve_head(source_head, options, notes)
    if head is source_head and head is not None:
        plan.drop("classification head (converted separately)", lambda k: k.startswith("heads.head."))
        if "heads.pre_logits.weight" in sd:
            plan.copy_linear("pooler.dense", "heads.pre_logits")
            base.update(pooler_dense_act="tanh", pooler_dense_size=sd["heads.pre_logits.weight"].shape[0])
    else:
        plan.drop("classification head (dropped or replaced)", lambda k: k.startswith("heads."))

    return build_result(
        plan,
        base,
        head,
        options,
        imagenet_eval_processor(grid * patch, PIL_BILINEAR),
        f"torchvision VisionTransformer (patch {patch}, width {hidden}, {layers} blocks)",
        notes,
    )
