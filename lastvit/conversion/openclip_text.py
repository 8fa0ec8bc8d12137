"""A whole OpenAI CLIP / open_clip model into a `LastViTCLIPModel` (`--from openclip --with-text-tower`).

The image tower is `openclip.convert_openclip_state_dict`'s (LastViT with `visual_projection`); the text
tower becomes transformers' `CLIPTextModelWithProjection`:

| OpenAI CLIP / open_clip                     | CLIPTextModelWithProjection                              |
|---------------------------------------------|----------------------------------------------------------|
| `token_embedding`, `positional_embedding`   | `text_model.embeddings.{token,position}_embedding`       |
| `transformer.resblocks.{i}.ln_1` / `ln_2`   | `text_model.encoder.layers.{i}.layer_norm1` / `2`        |
| `...attn.in_proj_weight` / `_bias`          | `...self_attn.{q,k,v}_proj` (split in three)             |
| `...attn.out_proj`, `mlp.c_fc`, `mlp.c_proj`| `...self_attn.out_proj`, `mlp.fc1`, `mlp.fc2`            |
| `ln_final`, `text_projection` [D, E]        | `text_model.final_layer_norm`, `text_projection` [E, D]  |
| `logit_scale`                               | `logit_scale`                                            |

Both run a causal mask; the MLP activation is the image tower's (`--clip-activation`). CLIP pools the
text at its end-of-text token (open_clip: the arg-max of the ids, the end-of-text id being the largest);
the config's `eos_token_id` is the tokenizer's, so transformers pools at that token's first position,
the same one. The text tower's heads are not recorded: width // 64, OpenAI's and open_clip's rule,
unless `--text-num-heads`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modeling_lastvit.image_processing_lastvit import LastViTImageProcessor

from .clip_tokenizer import load_clip_tokenizer
from .key_plan import FusedQKVBlock, KeyPlan, count_blocks, dropped_counts, require_key, strip_prefixes
from .openclip import convert_openclip_state_dict
from .options import ConversionError, ConversionOptions

TEXT_BLOCK = FusedQKVBlock(
    "ln_1", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"
)
TEXT_KEYS = ("token_embedding.weight", "positional_embedding", "text_projection", "logit_scale")
# OpenAI's TorchScript archives and some open_clip checkpoints keep these alongside the weights.
BOOKKEEPING = ("input_resolution", "context_length", "vocab_size")


@dataclass
class CLIPConversionResult:
    """A converted `LastViTCLIPModel` with its tokenizer and image processor, and what the conversion did."""

    model: torch.nn.Module  # LastViTCLIPModel
    image_processor: LastViTImageProcessor
    tokenizer: object  # a transformers tokenizer
    source: str
    description: str
    notes: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass
class TextTowerShape:
    """The text tower's sizes as the state dict and options give them."""

    vocab_size: int
    width: int
    context_length: int
    embed_dim: int
    layers: int
    heads: int


def convert_openclip_clip_state_dict(
    state_dict: dict[str, torch.Tensor], options: ConversionOptions, tokenizer=None
) -> CLIPConversionResult:
    """Image tower, text tower and `logit_scale` of an OpenAI CLIP / open_clip state dict as one
    `LastViTCLIPModel`. `tokenizer`: a transformers tokenizer, or a path / None for
    `clip_tokenizer.load_clip_tokenizer` (BPE file, tokenizer folder, open_clip's bundled BPE); its
    special-token ids go into the text config."""
    options.validate()
    source = "openclip"
    sd = strip_prefixes(state_dict, ("module.",))
    if not any(key.startswith("visual.") for key in sd):
        raise ConversionError(
            "--with-text-tower needs a whole CLIP checkpoint (keys under 'visual.' and the text tower's); this one "
            "holds no 'visual.' keys. Convert an image tower alone without --with-text-tower."
        )
    image = convert_openclip_state_dict(sd, options)
    if image.model.config.projection_dim is None:
        raise ConversionError("the checkpoint has no 'visual.proj', so its image tower has no joint-space projection.")
    for key in TEXT_KEYS:
        require_key(sd, key, source)
    context_length = sd["positional_embedding"].shape[0]
    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        tokenizer = load_clip_tokenizer(tokenizer, context_length)
    shape = text_tower_shape(sd, options, tokenizer, image.model.config.projection_dim)
    plan = plan_text_tower(sd, shape.layers)
    text_state = plan.execute()
    model = _clip_model(image.model, text_state, _text_config(sd, options, tokenizer, shape), shape.embed_dim)
    dropped = {k: v for k, v in dropped_counts(plan).items() if not k.startswith("image tower")}
    layers, width = shape.layers, shape.width
    return CLIPConversionResult(
        model=model,
        image_processor=image.image_processor,
        tokenizer=tokenizer,
        source=source,
        description=image.description.replace("CLIP visual tower", "CLIP model: image tower")
        + f" + text tower (width {width}, {layers} block{'s' if layers != 1 else ''}), joint space {shape.embed_dim}",
        notes=list(image.notes) + _text_notes(shape, options, tokenizer, sd["logit_scale"]),
        dropped=dropped,
    )


def text_tower_shape(sd: dict[str, torch.Tensor], options: ConversionOptions, tokenizer, image_projection_dim: int):
    """The text tower's `TextTowerShape` (its `TEXT_KEYS` present), checked against the image tower's joint
    space and the tokenizer."""
    vocab_size, width = sd["token_embedding.weight"].shape
    embed_dim = sd["text_projection"].shape[1]
    if embed_dim != image_projection_dim:
        raise ConversionError(
            f"text_projection maps to {embed_dim} dimensions but visual.proj to {image_projection_dim}: "
            "not one joint space."
        )
    layers = count_blocks(sd, r"transformer\.resblocks\.(\d+)\.", "openclip")
    heads = options.text_num_heads or width // 64
    if heads < 1 or width % heads:
        raise ConversionError(
            f"the text tower is {width} wide; width // 64 = {width // 64} heads does not fit it: pass --text-num-heads."
        )
    if len(tokenizer) > vocab_size:
        raise ConversionError(
            f"the tokenizer has {len(tokenizer)} tokens but the text tower embeds {vocab_size}: it is not this "
            "model's tokenizer (--tokenizer)."
        )
    if tokenizer.eos_token_id is None:
        raise ConversionError("the tokenizer has no end-of-text (eos) token, where CLIP pools the text.")
    return TextTowerShape(vocab_size, width, sd["positional_embedding"].shape[0], embed_dim, layers, heads)


def plan_text_tower(sd: dict[str, torch.Tensor], layers: int) -> KeyPlan:
    """The key plan of the text tower and `logit_scale` (the table in the module docstring)."""
    plan = KeyPlan("openclip", sd)
    plan.copy("text_model.embeddings.token_embedding.weight", "token_embedding.weight")
    plan.copy("text_model.embeddings.position_embedding.weight", "positional_embedding")
    for i in range(layers):
        src, dst = f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        plan.copy_linear(f"{dst}layer_norm1", src + TEXT_BLOCK.norm1)
        plan.split_qkv(f"{dst}self_attn", src + TEXT_BLOCK.qkv_weight, src + TEXT_BLOCK.qkv_bias)
        plan.copy_linear(f"{dst}self_attn.out_proj", src + TEXT_BLOCK.o_proj)
        plan.copy_linear(f"{dst}layer_norm2", src + TEXT_BLOCK.norm2)
        plan.copy_linear(f"{dst}mlp.fc1", src + TEXT_BLOCK.fc1)
        plan.copy_linear(f"{dst}mlp.fc2", src + TEXT_BLOCK.fc2)
    plan.copy_linear("text_model.final_layer_norm", "ln_final")
    plan.map("text_projection.weight", ["text_projection"], lambda t: t.t().contiguous())
    plan.map("logit_scale", ["logit_scale"], lambda t: t.reshape(()))
    plan.drop("image tower, converted above", lambda k: k.startswith("visual."))
    plan.drop("bookkeeping buffers (input_resolution, context_length, vocab_size)", lambda k: k in BOOKKEEPING)
    plan.drop("causal attention masks (rebuilt by the model)", lambda k: re.fullmatch(r".*\battn_mask", k) is not None)
    return plan


def _text_config(sd: dict[str, torch.Tensor], options: ConversionOptions, tokenizer, shape: TextTowerShape):
    """transformers' `CLIPTextConfig` of the text tower, with the tokenizer's special-token ids."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=shape.vocab_size,
        hidden_size=shape.width,
        intermediate_size=require_key(sd, "transformer.resblocks.0.mlp.c_fc.weight", "openclip").shape[0],
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        max_position_embeddings=shape.context_length,
        hidden_act=options.clip_activation,
        layer_norm_eps=1e-5,
        projection_dim=shape.embed_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )


def _clip_model(image_model, text_state: dict[str, torch.Tensor], text_config, embed_dim: int):
    """The `LastViTCLIPModel` with the converted image tower, text tower and `logit_scale` loaded."""
    from modeling_lastvit import LastViTCLIPConfig, LastViTCLIPModel

    config = LastViTCLIPConfig(
        vision_config=image_model.config.to_dict(),
        text_config=text_config.to_dict(),
        projection_dim=embed_dim,
        logit_scale_init_value=float(text_state["logit_scale"]),
    )
    model = LastViTCLIPModel(config).eval()
    model.vision_model.load_state_dict(image_model.state_dict())
    model.text_model.load_state_dict({k: v for k, v in text_state.items() if k != "logit_scale"})
    with torch.no_grad():
        model.logit_scale.copy_(text_state["logit_scale"])
    return model


def _text_notes(shape: TextTowerShape, options: ConversionOptions, tokenizer, logit_scale: torch.Tensor) -> list[str]:
    """What the card says of the text tower: its sizes, where it pools, and the temperature."""
    s = "s" if shape.layers != 1 else ""
    notes = [
        f"Text tower: width {shape.width}, {shape.layers} block{s}, {shape.heads} heads"
        + (" (--text-num-heads)" if options.text_num_heads else " (width // 64)")
        + f", vocabulary {shape.vocab_size}, context {shape.context_length} tokens; pooled at the end-of-text token "
        f"(id {tokenizer.eos_token_id})."
    ]
    if tokenizer.eos_token_id != shape.vocab_size - 1:
        notes.append(
            f"The tokenizer's end-of-text id ({tokenizer.eos_token_id}) is not the largest id "
            f"({shape.vocab_size - 1}): the text is pooled at its first end-of-text token, where open_clip's arg-max "
            "of the ids could differ."
        )
    scale = float(logit_scale.reshape(()))
    notes.append(f"logit_scale {scale:.4f} (temperature 1/{logit_scale.exp().item():.2f}).")
    return notes
