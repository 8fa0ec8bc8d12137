"""A whole transformers `SiglipModel` into a `LastViTCLIPModel` (`--from hf --with-text-tower`).

The image tower is `hf.convert_hf_model`'s (SigLIP's vision tower as a LastViT: no CLS, learned positions, final
LayerNorm, the attention-pool head as `pooling="map"`). SigLIP's image embedding is that head's output with no
projection after it, so the LastViT-CLIP model is built with `image_projection=False`. The text tower stays
transformers' own `SiglipTextModel` (`text_tower="siglip"`: no causal mask, pooled at the last position, then its
`head`), with its weights copied tensor for tensor, and `logit_scale` / `logit_bias` are SigLIP's. The tokenizer is
the one saved beside the source (or `--tokenizer FOLDER`).

| SiglipModel                         | LastViTCLIPModel                                            |
|-------------------------------------|-------------------------------------------------------------|
| `vision_model.*`                    | `vision_model.*` (LastViT, see `hf_recent.plan_siglip`)     |
| `text_model.*`                      | `text_model.*` (the same `SiglipTextModel`)                 |
| `logit_scale` [1], `logit_bias` [1] | `logit_scale` [], `logit_bias` []                            |

SigLIP is trained on texts padded to full length without an attention mask; the LastViT-CLIP model pads shorter
texts the same way (`LastViTCLIPModel.pad_for_siglip`), so texts the SigLIP processor prepares give the same
embeddings and other tokenizations give what SigLIP's training would.
"""

from __future__ import annotations

import torch

from .hf import convert_hf_model
from .key_plan import KeyPlan, dropped_counts
from .openclip_text import CLIPConversionResult
from .options import ConversionError, ConversionOptions

TEXT_TOWER_ARCHITECTURES = ("SiglipModel",)


def convert_siglip_model(source, options: ConversionOptions, source_processor, tokenizer) -> CLIPConversionResult:
    """Image tower, text tower, `logit_scale` and `logit_bias` of a transformers `SiglipModel` as one
    `LastViTCLIPModel`, with `tokenizer` (a transformers tokenizer) saved beside it."""
    from modeling_lastvit import LastViTCLIPConfig, LastViTCLIPModel

    architecture = type(source).__name__
    if architecture not in TEXT_TOWER_ARCHITECTURES:
        raise ConversionError(
            f"--from hf --with-text-tower converts {', '.join(TEXT_TOWER_ARCHITECTURES)}; this is a {architecture}."
        )
    image = convert_hf_model(source, options, source_processor)
    text_config = source.config.text_config
    width = image.model.config.pooled_feature_size
    if text_config.projection_size != width:
        raise ConversionError(
            f"the text head maps to {text_config.projection_size} dimensions but the image embedding is {width} "
            "wide: not one joint space."
        )
    if len(tokenizer) > text_config.vocab_size:
        raise ConversionError(
            f"the tokenizer has {len(tokenizer)} tokens but the text tower embeds {text_config.vocab_size}: it is "
            "not this model's tokenizer (--tokenizer)."
        )
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != text_config.pad_token_id:
        raise ConversionError(
            f"the tokenizer pads with id {tokenizer.pad_token_id} but the text tower's config with "
            f"{text_config.pad_token_id}; SigLIP pools the last padded position, so they must agree."
        )

    sd = source.state_dict()
    plan = KeyPlan("hf", sd)
    for key in source.text_model.state_dict():
        plan.copy(f"text_model.{key}", f"text_model.{key}")
    for name in ("logit_scale", "logit_bias"):
        plan.map(name, [name], lambda t: t.reshape(()))
    plan.drop("image tower, converted above", lambda k: k.startswith("vision_model."))
    state = plan.execute()

    config = LastViTCLIPConfig(
        vision_config=image.model.config.to_dict(),
        text_config=text_config.to_dict(),
        text_tower="siglip",
        image_projection=False,
        projection_dim=width,
        logit_scale_init_value=float(state["logit_scale"]),
        logit_bias_init_value=float(state["logit_bias"]),
    )
    model = LastViTCLIPModel(config).eval()
    model.vision_model.load_state_dict(image.model.state_dict())
    model.text_model.load_state_dict({k[len("text_model.") :]: v for k, v in state.items() if "logit_" not in k})
    with torch.no_grad():
        model.logit_scale.copy_(state["logit_scale"])
        model.logit_bias.copy_(state["logit_bias"])

    notes = list(image.notes)
    notes.append(
        f"Text tower: SigLIP's, width {text_config.hidden_size}, {text_config.num_hidden_layers} blocks, "
        f"vocabulary {text_config.vocab_size}, {text_config.max_position_embeddings} positions; texts are padded to "
        f"that length with id {text_config.pad_token_id} and pooled at the last position, as SigLIP trains."
    )
    notes.append(
        f"logit_scale {float(state['logit_scale']):.4f}, logit_bias {float(state['logit_bias']):.4f}: fine-tune with "
        "`lastvit-train-clip --loss sigmoid` (SigLIP's pairwise sigmoid loss)."
    )
    return CLIPConversionResult(
        model=model,
        image_processor=image.image_processor,
        tokenizer=tokenizer,
        source="hf",
        description=(
            f"transformers SiglipModel: image tower ({image.model.config.num_hidden_layers} blocks, width {width}, "
            f"readout {image.model.config.pooling}) + text tower (width {text_config.hidden_size}, "
            f"{text_config.num_hidden_layers} blocks), joint space {width}"
        ),
        notes=notes,
        dropped=dropped_counts(plan) | {k: v for k, v in image.dropped.items() if k != "text tower"},
    )


@torch.no_grad()
def compare_with_siglip_source(source, converted, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> dict:
    """Max abs differences of image and text embeddings and logits between a `SiglipModel` and its conversion;
    `input_ids` at the text tower's full length (how SigLIP's processor pads)."""
    expected = source(input_ids=input_ids, pixel_values=pixel_values, interpolate_pos_encoding=True)
    actual = converted(input_ids=input_ids, pixel_values=pixel_values)
    return {
        name: (getattr(actual, name) - getattr(expected, name)).abs().max().item()
        for name in ("image_embeds", "text_embeds", "logits_per_image")
    }
