"""transformers ViT families of 2025-26 (`--from hf`): `DINOv3ViTModel`, `SiglipVisionModel` / `SiglipModel`
(vision tower), `Siglip2VisionModel` / `Siglip2Model` (vision tower), `Aimv2VisionModel` / `Aimv2Model`
(vision tower and projection) and `IJepaModel` / `IJepaForImageClassification`.

Each becomes a `LastViTModel` by encoder options, never a subclass:

- DINOv3: CLS + registers, no absolute position embedding, `rope_type="dinov3"` on the patch tokens, LayerScale,
  plain or gated MLP. A projection without a bias (DINOv3's key, and every projection of a model built with
  `*_bias=False`) is converted with a zero bias: adding 0 changes no value. `pooler_output` is the CLS token.
  DINOv3's training-time RoPE coordinate augmentation (`pos_embed_shift/jitter/rescale`) is not carried: it only
  acts in training mode, and the converted model always uses the exact patch coordinates.
- SigLIP / SigLIP2: no CLS token, learned positions on patches only, final LayerNorm on every token
  (= `last_hidden_state`), and the attention-pool head as `pooling="map"`. SigLIP2's patch projection is a linear
  map of pre-cut patches; it becomes the same convolution (its input order is (row, column, channel) within a
  patch), and SigLIP2 resizes its position grid per image (bilinear, antialiased) for any grid, which the converted
  model does for any input `height x width`: variable aspect ratios work image by image. A padded SigLIP2 batch of
  mixed shapes (its processor's `pixel_values`, `spatial_shapes`) is turned back into images by `siglip2_images`;
  each image's outputs equal the valid tokens of SigLIP2's masked batch.
- AIMv2: RMSNorm everywhere (`norm_type="rms_norm"`), an RMSNorm on the patch tokens before the positions
  (`use_patch_norm`), learned positions or, for "native" models, 2-D sin-cos positions computed per input
  (`position_embedding_type="sincos_2d"`), SwiGLU (`use_gated_mlp`), no CLS, and its attention-pool head (`map_head_query_projection=False`,
  `map_head_mlp=False`). `Aimv2Model`'s `visual_projection` gives `image_embeds`.
- I-JEPA: a plain pre-norm ViT without a CLS token, read out by the mean of the patch tokens (`pooling="mean"`, what
  `IJepaForImageClassification` classifies).

The mapping never imports from `hf.py` (which imports this module).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .key_plan import KeyPlan, SourceHead, encoder_config, zeros_like_bias
from .options import ConversionError

RECENT_ARCHITECTURES = {
    "DINOv3ViTModel": "dinov3",
    "SiglipVisionModel": "siglip",
    "SiglipModel": "siglip",
    "Siglip2VisionModel": "siglip2",
    "Siglip2Model": "siglip2",
    "Aimv2VisionModel": "aimv2",
    "Aimv2Model": "aimv2",
    "IJepaModel": "ijepa",
    "IJepaForImageClassification": "ijepa",
}
# What each family's `pooler_output` (or image embedding) is, for the model card.
SOURCE_READOUTS = {
    "dinov3": "the final CLS token",
    "siglip": "its multi-head attention-pooling (MAP) head over the final tokens",
    "siglip2": "its multi-head attention-pooling (MAP) head over the final tokens",
    "aimv2": "its attention-pooling head (a learned query, no MLP) over the final tokens",
    "ijepa": "the mean of the final patch tokens (I-JEPA has no CLS token)",
}


def vision_config_of(model):
    """The vision tower's config of a full image-text model, else the model's own config."""
    return getattr(model.config, "vision_config", model.config)


def _copy_linear_or_zero_bias(plan: KeyPlan, target: str, key: str, sd: dict) -> None:
    """`key`.weight / .bias into `target`; a missing bias becomes zeros (exact: adding 0 changes nothing)."""
    plan.copy(f"{target}.weight", f"{key}.weight")
    if f"{key}.bias" in sd:
        plan.copy(f"{target}.bias", f"{key}.bias")
    else:
        plan.map(f"{target}.bias", [f"{key}.weight"], zeros_like_bias)


def _attention(plan: KeyPlan, dst: str, src: str, sd: dict, out_proj: str, qkv_bias: bool) -> None:
    for name in ("q_proj", "k_proj", "v_proj"):
        if qkv_bias:
            _copy_linear_or_zero_bias(plan, f"{dst}.{name}", f"{src}.{name}", sd)
        else:
            plan.copy(f"{dst}.{name}.weight", f"{src}.{name}.weight")
    _copy_linear_or_zero_bias(plan, f"{dst}.o_proj", f"{src}.{out_proj}", sd)


def id2label_of(config) -> dict[int, str] | None:
    """The source config's class names, if it has any."""
    return dict(config.id2label) if getattr(config, "id2label", None) else None


def plan_vit_layers(plan: KeyPlan, prefix: str, num_layers: int, qkv_bias: bool) -> None:
    """Blocks under transformers' ViT names (`{prefix}layers.{i}.layernorm_before / attention /
    layernorm_after / mlp.fc1 / mlp.fc2`: ViT, DeiT, I-JEPA), and the masked-image-modeling token dropped."""
    for i in range(num_layers):
        src, dst = f"{prefix}layers.{i}.", f"encoder.layer.{i}."
        plan.copy_linear(f"{dst}norm1", f"{src}layernorm_before")
        plan.copy_attention(f"{dst}attention", f"{src}attention", qkv_bias=qkv_bias)
        plan.copy_linear(f"{dst}norm2", f"{src}layernorm_after")
        plan.copy_linear(f"{dst}mlp.fc1", f"{src}mlp.fc1")
        plan.copy_linear(f"{dst}mlp.fc2", f"{src}mlp.fc2")
    drop_mask_token(plan, f"{prefix}embeddings.")


def plan_clip_layers(plan: KeyPlan, prefix: str, num_layers: int) -> None:
    """Blocks under transformers' CLIP names (`{prefix}encoder.layers.{i}.layer_norm1 / self_attn / layer_norm2 /
    mlp.fc1 / mlp.fc2`: CLIP, SigLIP, SigLIP2)."""
    for i in range(num_layers):
        src, dst = f"{prefix}encoder.layers.{i}.", f"encoder.layer.{i}."
        plan.copy_linear(f"{dst}norm1", f"{src}layer_norm1")
        plan.copy_attention(f"{dst}attention", f"{src}self_attn", out_proj="out_proj")
        plan.copy_linear(f"{dst}norm2", f"{src}layer_norm2")
        plan.copy_linear(f"{dst}mlp.fc1", f"{src}mlp.fc1")
        plan.copy_linear(f"{dst}mlp.fc2", f"{src}mlp.fc2")


def copy_visual_projection(plan: KeyPlan, sd: dict) -> int | None:
    """A full image-text model's `visual_projection` (kept as LastViT's); returns its output width, or None."""
    if "visual_projection.weight" not in sd:
        return None
    plan.copy("visual_projection.weight", "visual_projection.weight")
    return sd["visual_projection.weight"].shape[0]


def drop_mask_token(plan: KeyPlan, embeddings: str) -> None:
    """Drop the `{embeddings}mask_token` a masked-image-modeling source carries (no inference use)."""
    plan.drop("mask token (masked image modeling only)", lambda k: k == f"{embeddings}mask_token")


def classifier_head(plan: KeyPlan, sd: dict, config, **kwargs) -> SourceHead:
    """A `...ForImageClassification`'s `classifier` (dropped from the plan, converted as the head)."""
    plan.drop("classification head", lambda k: k.startswith("classifier."))
    weight = sd["classifier.weight"]
    return SourceHead(weight, sd["classifier.bias"], weight.shape[0], id2label=id2label_of(config), **kwargs)


def hf_encoder_config(config, **overrides) -> dict[str, Any]:
    """The LastViT encoder fields every transformers ViT-family config names alike (image and patch size, width,
    depth, heads, activation), with `overrides`."""
    image_size, patch_size = config.image_size, config.patch_size
    return encoder_config(
        image_size=list(image_size) if isinstance(image_size, (list, tuple)) else image_size,
        patch_size=list(patch_size) if isinstance(patch_size, (list, tuple)) else patch_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        hidden_act=config.hidden_act,
        **overrides,
    )


def _base(config, **overrides) -> dict[str, Any]:
    return hf_encoder_config(config, intermediate_size=config.intermediate_size, **overrides)


def plan_dinov3(model, sd):
    """DINOv3ViTModel: `embeddings.{cls_token, register_tokens, patch_embeddings}`, `model.layer.{i}`, `norm`."""
    config = model.config
    plan = KeyPlan("hf", sd)
    plan.copy("embeddings.cls_token", "embeddings.cls_token")
    if config.num_register_tokens:
        plan.copy("embeddings.register_tokens", "embeddings.register_tokens")
    else:
        plan.drop("empty register-token tensor (no registers)", lambda k: k == "embeddings.register_tokens")
    plan.copy_linear("embeddings.patch_embeddings.projection", "embeddings.patch_embeddings")
    plan.copy_linear("layernorm", "norm")
    mlp = {"gate_proj": "gate_proj", "up_proj": "up_proj", "down_proj": "down_proj"}
    if not config.use_gated_mlp:
        mlp = {"fc1": "up_proj", "fc2": "down_proj"}
    for i in range(config.num_hidden_layers):
        src, dst = f"model.layer.{i}.", f"encoder.layer.{i}."
        plan.copy_linear(f"{dst}norm1", f"{src}norm1")
        _attention(plan, f"{dst}attention", f"{src}attention", sd, "o_proj", qkv_bias=True)
        plan.copy(f"{dst}layer_scale1.lambda1", f"{src}layer_scale1.lambda1")
        plan.copy_linear(f"{dst}norm2", f"{src}norm2")
        for ours, theirs in mlp.items():
            _copy_linear_or_zero_bias(plan, f"{dst}mlp.{ours}", f"{src}mlp.{theirs}", sd)
        plan.copy(f"{dst}layer_scale2.lambda1", f"{src}layer_scale2.lambda1")
    drop_mask_token(plan, "embeddings.")
    base = _base(
        config,
        layer_norm_eps=config.layer_norm_eps,
        qkv_bias=True,
        layerscale_value=config.layerscale_value,
        use_gated_mlp=config.use_gated_mlp,
        drop_path_rate=config.drop_path_rate,
        attention_probs_dropout_prob=config.attention_dropout,
        num_register_tokens=config.num_register_tokens,
        position_embedding_type="none",
        rope_type="dinov3",
        rope_theta=config.rope_theta,
        pooling="cls",
    )
    return plan, base, None


def _tower_prefix(sd) -> str:
    return "vision_model." if any(k.startswith("vision_model.") for k in sd) else ""


def drop_text_tower(plan: KeyPlan) -> None:
    """Drop the text tower, its projection and the logit scale (and bias) of a full image-text model."""
    plan.drop(
        "text tower",
        lambda k: k.startswith(("text_model.", "text_projection.")) or k in ("logit_scale", "logit_bias"),
    )


def plan_siglip(model, sd):
    """SigLIP / SigLIP2 vision: `embeddings.{patch_embedding, position_embedding}`, `encoder.layers.{i}`,
    `post_layernorm`, `head` (probe, torch MultiheadAttention, LayerNorm, MLP)."""
    architecture = type(model).__name__
    config = vision_config_of(model)
    is_siglip2 = architecture.startswith("Siglip2")
    prefix = _tower_prefix(sd)
    e = f"{prefix}embeddings."
    plan = KeyPlan("hf", sd)
    num_positions = sd[f"{e}position_embedding.weight"].shape[0]
    grid = math.isqrt(num_positions)
    if grid * grid != num_positions:
        raise ConversionError(f"the SigLIP position table has {num_positions} rows, not a square grid.")
    patch, channels = config.patch_size, config.num_channels
    if is_siglip2:  # a Linear on patches cut as (row, column, channel) -> the equivalent Conv2d
        plan.map(
            "embeddings.patch_embeddings.projection.weight",
            [f"{e}patch_embedding.weight"],
            lambda t: t.reshape(t.shape[0], patch, patch, channels).permute(0, 3, 1, 2).contiguous(),
        )
        plan.copy("embeddings.patch_embeddings.projection.bias", f"{e}patch_embedding.bias")
    else:
        plan.copy_linear("embeddings.patch_embeddings.projection", f"{e}patch_embedding")
    plan.map("embeddings.position_embeddings", [f"{e}position_embedding.weight"], lambda t: t.unsqueeze(0))
    plan.copy_linear("layernorm", f"{prefix}post_layernorm")
    plan_clip_layers(plan, prefix, config.num_hidden_layers)
    use_head = f"{prefix}head.probe" in sd
    if use_head:
        h, dst = f"{prefix}head.", "pooler.map_head."
        plan.copy(f"{dst}probe", f"{h}probe")
        plan.split_qkv(dst.rstrip("."), f"{h}attention.in_proj_weight", f"{h}attention.in_proj_bias")
        plan.copy_linear(f"{dst}o_proj", f"{h}attention.out_proj")
        plan.copy_linear(f"{dst}norm", f"{h}layernorm")
        plan.copy_linear(f"{dst}mlp.fc1", f"{h}mlp.fc1")
        plan.copy_linear(f"{dst}mlp.fc2", f"{h}mlp.fc2")
    drop_text_tower(plan)
    interpolation = dict(position_embedding_interpolation="bilinear", position_embedding_antialias=True)
    base = encoder_config(
        image_size=grid * patch,
        patch_size=patch,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        layer_norm_eps=config.layer_norm_eps,
        qkv_bias=True,
        attention_probs_dropout_prob=config.attention_dropout,
        use_cls_token=False,
        pooling="map" if use_head else "mean",
        **(interpolation if is_siglip2 else {}),
    )
    return plan, base, None


def plan_aimv2(model, sd):
    """AIMv2 vision: `embeddings.{patch_embed, rms_norm, position_embedding}`, `encoder.layers.{i}.{rms_norm1,
    attention, rms_norm2, ffn}`, `rms_norm`, `head` (k/v projections, a learned query `cls_token`, `output_proj`)."""
    config = vision_config_of(model)
    prefix = _tower_prefix(sd)
    e = f"{prefix}embeddings."
    plan = KeyPlan("hf", sd)
    plan.copy_linear("embeddings.patch_embeddings.projection", f"{e}patch_embed")
    plan.copy("embeddings.patch_norm.weight", f"{e}rms_norm.weight")
    if not config.is_native:  # native models compute 2-D sin-cos positions for each input instead
        plan.map("embeddings.position_embeddings", [f"{e}position_embedding.weight"], lambda t: t.unsqueeze(0))
    plan.copy("layernorm.weight", f"{prefix}rms_norm.weight")
    for i in range(config.num_hidden_layers):
        src, dst = f"{prefix}encoder.layers.{i}.", f"encoder.layer.{i}."
        plan.copy(f"{dst}norm1.weight", f"{src}rms_norm1.weight")
        _attention(plan, f"{dst}attention", f"{src}attention", sd, "out_proj", qkv_bias=config.qkv_bias)
        plan.copy(f"{dst}norm2.weight", f"{src}rms_norm2.weight")
        for name in ("gate_proj", "up_proj", "down_proj"):
            _copy_linear_or_zero_bias(plan, f"{dst}mlp.{name}", f"{src}ffn.{name}", sd)
    use_head = f"{prefix}head.cls_token" in sd
    if use_head:
        h, dst = f"{prefix}head.", "pooler.map_head."
        plan.copy(f"{dst}probe", f"{h}cls_token")
        for name in ("k_proj", "v_proj"):
            if config.qkv_bias:
                plan.copy_linear(f"{dst}{name}", f"{h}{name}")
            else:
                plan.copy(f"{dst}{name}.weight", f"{h}{name}.weight")
        plan.copy_linear(f"{dst}o_proj", f"{h}output_proj")
    projection_dim = copy_visual_projection(plan, sd)
    drop_text_tower(plan)
    base = _base(
        config,
        layer_norm_eps=config.rms_norm_eps,
        qkv_bias=config.qkv_bias,
        attention_probs_dropout_prob=config.attention_dropout,
        use_cls_token=False,
        norm_type="rms_norm",
        use_patch_norm=True,
        position_embedding_type="sincos_2d" if config.is_native else "learned",
        use_gated_mlp=True,
        pooling="map" if use_head else "mean",
        map_head_query_projection=False,
        map_head_mlp=False,
        projection_dim=projection_dim,
    )
    return plan, base, None


def plan_ijepa(model, sd):
    """I-JEPA: ViT names (`layers.{i}.layernorm_before / attention / layernorm_after / mlp`, `layernorm`), no CLS;
    `IJepaForImageClassification` classifies the mean of the final tokens."""
    config = model.config
    architecture = type(model).__name__
    prefix = "ijepa." if any(k.startswith("ijepa.") for k in sd) else ""
    e = f"{prefix}embeddings."
    plan = KeyPlan("hf", sd)
    plan.copy("embeddings.position_embeddings", f"{e}position_embeddings")
    plan.copy_linear("embeddings.patch_embeddings.projection", f"{e}patch_embeddings.projection")
    plan.copy_linear("layernorm", f"{prefix}layernorm")
    plan_vit_layers(plan, prefix, config.num_hidden_layers, config.qkv_bias)
    if f"{prefix}pooler.dense.weight" in sd:
        raise ConversionError(
            "this IJepaModel was built with add_pooling_layer=True (a dense layer on the first patch token), which "
            "has no LastViT equivalent; save it without the pooling layer (I-JEPA's own readout is the patch mean)."
        )
    base = _base(
        config,
        layer_norm_eps=config.layer_norm_eps,
        qkv_bias=config.qkv_bias,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        use_cls_token=False,
        pooling="mean",
    )
    head = None
    if architecture.endswith("ForImageClassification"):
        head = classifier_head(plan, sd, config)
    return plan, base, head


RECENT_PLANS = {
    "dinov3": plan_dinov3,
    "siglip": plan_siglip,
    "siglip2": plan_siglip,
    "aimv2": plan_aimv2,
    "ijepa": plan_ijepa,
}


def patchify_for_siglip2(pixel_values: torch.Tensor, patch_size: int) -> dict[str, torch.Tensor]:
    """SigLIP2's inputs for whole images [B, C, H, W]: patches cut as its image processor cuts them, (row, column,
    channel) within a patch, every patch valid, and each image's grid as its spatial shape."""
    batch, channels, height, width = pixel_values.shape
    grid_h, grid_w = height // patch_size, width // patch_size
    patches = pixel_values.reshape(batch, channels, grid_h, patch_size, grid_w, patch_size)
    patches = patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, grid_h * grid_w, -1)
    return {
        "pixel_values": patches,
        "pixel_attention_mask": torch.ones(batch, grid_h * grid_w, dtype=torch.long),
        "spatial_shapes": torch.tensor([[grid_h, grid_w]] * batch, dtype=torch.long),
    }


def siglip2_images(pixel_values: torch.Tensor, spatial_shapes: torch.Tensor, patch_size: int) -> list[torch.Tensor]:
    """The inverse of `patchify_for_siglip2` for a padded SigLIP2 batch (what its image processor returns for images of
    different shapes: `pixel_values` [B, max_patches, patch * patch * C], `spatial_shapes` [B, 2]): each image's valid
    patches put back as a [1, C, rows * patch, columns * patch] image, which the converted LastViT takes as is (one
    call per image, or per group of equal shapes; padded patches are dropped, as SigLIP2's attention mask does)."""
    images = []
    for patches, (rows, columns) in zip(pixel_values, spatial_shapes.tolist()):
        valid = patches[: rows * columns].reshape(rows, columns, patch_size, patch_size, -1)
        images.append(valid.permute(4, 0, 2, 1, 3).reshape(1, -1, rows * patch_size, columns * patch_size))
    return images


@torch.no_grad()
def recent_source_outputs(source, pixel_values: torch.Tensor):
    """The source's outputs (with hidden states) on whole images `pixel_values`: the vision tower for the full
    image-text models, SigLIP2 fed the same images cut into patches, other sizes interpolated where the source
    needs the flag."""
    architecture = type(source).__name__
    family = RECENT_ARCHITECTURES[architecture]
    tower = getattr(source, "vision_model", source)
    config = vision_config_of(source)
    kwargs: dict[str, Any] = {"output_hidden_states": True}
    if family == "siglip2":
        kwargs.update(patchify_for_siglip2(pixel_values, config.patch_size))
    else:
        kwargs["pixel_values"] = pixel_values
    if family in ("siglip", "ijepa"):
        kwargs["interpolate_pos_encoding"] = True
    outputs = tower(**kwargs)
    if architecture == "Aimv2Model":
        outputs.image_embeds = source.visual_projection(outputs.pooler_output)
    return outputs
