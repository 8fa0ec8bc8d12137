"""The card `lastvit-convert` writes beside a converted checkpoint."""

from __future__ import annotations

from huggingface_hub import ModelCard

from lastvit.cards.released import released_model_card
from lastvit.cards.template import PAPER, clip_usage_text, common_tail, describe_config, render_model_card


def converted_model_card(
    result,
    command: str,
    model_name: str,
    parity: dict[str, float] | None,
    round_trip: float,
    released: str | None = None,
    license: str | None = None,
) -> ModelCard:
    """The card `lastvit-convert` writes: the same template, filled from the conversion. `license`
    is the source weights' (`source_license` or the user's ``--license``); None writes none."""
    lines = [f"| round trip (saved folder reloaded vs the converted model) | {round_trip:.2e} |"]
    if parity:
        lines = [f"| {name} vs the transformers source | {value:.2e} |" for name, value in parity.items()] + lines
    parity_lines = [
        (
            "Max abs differences measured by `lastvit-convert` while writing this folder (fp32, random inputs at "
            "the native resolution):"
        ),
        "",
        "| Output | Max abs diff |",
        "|---|---|",
        *lines,
    ]
    if released is not None:
        return released_model_card(released, parity_lines)

    classifier = type(result.model).__name__ == "LastViTForImageClassification"
    notes = "".join(f"- {note}\n" for note in result.notes)
    dropped = "".join(f"- Dropped {count} source tensors: {reason}.\n" for reason, count in result.dropped.items())
    same_readout = result.model.config.pooling == result.source_pooling and "pooling lazystrike" not in command
    source_text = f"Converted from a {result.description} with `lastvit-convert --from {result.source}`. " + (
        "The readout is the source's own, so the outputs match the source (see the conversion check)."
        if same_readout
        else "The encoder weights are the source's; the readout was changed, so the global feature differs from "
        "the source's and the weights were not trained for it unless the source was a LaSt-ViT checkpoint."
    )
    if result.source_readout:
        source_text += (
            f" The source's global feature was {result.source_readout}; this folder's `pooler_output` is "
            f"`pooling={result.model.config.pooling!r}`"
            + (" (the same readout)." if same_readout else " (see Model details).")
        )
    sections = [
        ("Source", source_text + ("\n\n" + notes + dropped if notes or dropped else "")),
        ("Conversion check", "\n".join(parity_lines)),
    ]
    sections += common_tail(
        model_name,
        classifier,
        "- The weights, their training data and their biases are the source's; this card does not describe them.\n"
        "- This package has not evaluated this checkpoint on any benchmark.",
        "The licence of the source weights applies; check it before redistributing.",
    )
    return render_model_card(
        title=model_name,
        summary=f"A `LastViT` checkpoint (LaSt-ViT model package for Transformers, after {PAPER}).",
        details=describe_config(result.model.config),
        command=command,
        sections=sections,
        pipeline_tag="image-classification" if classifier else "image-feature-extraction",
        license=license,
    )


def source_license(source) -> str | None:
    """The licence a local source folder's model card declares (its README.md metadata), else None."""
    from pathlib import Path

    card = Path(str(source)) / "README.md"
    if not card.is_file():
        return None
    try:
        return ModelCard.load(card).data.license or None
    except ValueError:  # a README without (valid) YAML metadata
        return None


def converted_clip_model_card(
    result,
    command: str,
    model_name: str,
    round_trip: dict[str, float],
    license: str | None = None,
    parity: dict[str, float] | None = None,
) -> ModelCard:
    """The card of a whole CLIP model converted with `lastvit-convert --with-text-tower` (`--from openclip`, or
    `--from hf` for a SigLIP model, whose `parity` against the source's own forward is measured)."""
    if is_siglip(result):
        return _siglip_card(result, command, model_name, round_trip, license, parity)
    usage = clip_usage_text(
        ("dog", "cat"),
        "`model.vision_model` is the image tower (a `LastViTModel`, `save_image_tower` writes it alone).\n"
        "The folder is exactly what `save_pretrained` of the model, the tokenizer and the image processor write,\n"
        "so fine-tuning starts from it as from any saved `LastViTCLIPModel`.",
    )
    sections = [
        ("Source", _clip_source_text(result, command) + _notes_and_dropped(result)),
        ("Conversion check", _clip_check_text(round_trip)),
        ("How to use", usage),
        (
            "Limitations",
            (
                "- The weights, their training data and their biases are the source's; this card does not describe "
                "them.\n"
                "- This package has not evaluated this checkpoint on any benchmark.\n"
                "- Text cleaning: OpenAI's / open_clip's tokenizer also runs `ftfy` and unescapes HTML; this one "
                "applies NFC, collapses whitespace and lower-cases, so texts that need those fixes can tokenize "
                "differently."
            ),
        ),
        ("Licence", "The licence of the source weights applies; check it before redistributing."),
    ]
    return render_model_card(
        title=model_name,
        summary=f"A LastViT-CLIP model (LaSt-ViT model package for Transformers, after {PAPER}): image and text "
        "towers of a converted CLIP checkpoint in one joint space.",
        details=_clip_details(result),
        command=command,
        sections=sections,
        pipeline_tag="zero-shot-image-classification",
        tags=["clip", "zero-shot-image-classification"],
        license=license,
    )


def _notes_and_dropped(result) -> str:
    """The conversion's notes and dropped source tensors as a Markdown list after a blank line, or ''."""
    notes = "".join(f"- {note}\n" for note in result.notes)
    dropped = "".join(f"- Dropped {count} source tensors: {reason}.\n" for reason, count in result.dropped.items())
    return "\n\n" + notes + dropped if notes or dropped else ""


def _clip_source_text(result, command: str) -> str:
    """Where a converted CLIP model comes from, and whether its image readout is the source's."""
    vision = result.model.config.vision_config
    same_readout = vision.pooling == "cls" and "pooling lazystrike" not in command
    return (
        f"Converted from an OpenAI CLIP / open_clip checkpoint ({result.description}) with `lastvit-convert "
        "--from openclip --with-text-tower`: the image tower (a LastViT with `visual_projection`), the text tower "
        "(transformers' `CLIPTextModelWithProjection`), `logit_scale` and the tokenizer. "
        + (
            "The image readout is the source's (final CLS token), so the embeddings and logits are the source's."
            if same_readout
            else "The image readout was changed, so the image embeddings and logits differ from the source's, "
            "whose weights were not trained for it unless the source was a LaSt-ViT CLIP."
        )
    )


def _clip_check_text(round_trip: dict[str, float]) -> str:
    """The round-trip table of a converted CLIP folder and what its key map is tested against."""
    return "\n".join(
        [
            (
                "Max abs differences measured by `lastvit-convert` while writing this folder: the saved folder (model "
                "and tokenizer) reloaded against the converted model, fp32, random images and three prompts:"
            ),
            "",
            "| Output | Max abs diff |",
            "|---|---|",
            *(f"| {name} | {value:.2e} |" for name, value in round_trip.items()),
            "",
            (
                "This folder's weights were not run against their source's own forward here. The key map is tested "
                "against plain-torch re-implementations of OpenAI CLIP's and open_clip's forward on tiny random models "
                "with these key layouts (`tests/test_conversion_openclip_text.py`: text embeddings, image embeddings "
                "and logits per image agree within 1e-5 in fp32, logits compared as cosines), and the tokenizer "
                "against a re-implementation of open_clip's `SimpleTokenizer` on a small BPE file."
            ),
        ]
    )


def _clip_details(result) -> list[str]:
    """Model details: the image tower's config, the text tower, the joint space and the tokenizer."""
    model = result.model
    vision, text = model.config.vision_config, model.config.text_config
    return describe_config(vision) + [
        (
            f"Text tower: transformers' CLIP text transformer, width {text.hidden_size}, {text.num_hidden_layers} "
            f"blocks, {text.num_attention_heads} heads, {text.hidden_act}, causal, vocabulary {text.vocab_size}, "
            f"context {text.max_position_embeddings} tokens, pooled at the end-of-text token (id {text.eos_token_id})."
        ),
        (
            f"Joint space: {model.config.projection_dim} dimensions; logit scale {model.logit_scale.item():.4f} "
            f"(logits = {model.logit_scale.exp().item():.2f} x cosine)."
        ),
        f"Tokenizer: {type(result.tokenizer).__name__}, {len(result.tokenizer)} tokens.",
    ]


def is_siglip(result) -> bool:
    return getattr(result.model.config, "text_tower", "clip") == "siglip"


def _siglip_card(result, command, model_name, round_trip, license, parity) -> ModelCard:
    """The card of a transformers `SiglipModel` converted whole (`lastvit-convert --from hf --with-text-tower`)."""
    model = result.model
    vision, text = model.config.vision_config, model.config.text_config
    same_readout = vision.pooling == "map"
    source_text = (
        f"Converted from a {result.description} with `lastvit-convert --from hf --with-text-tower`: the image tower "
        "(a LastViT), SigLIP's text tower (transformers' `SiglipTextModel`, unchanged), `logit_scale`, `logit_bias` "
        "and the tokenizer. The source's image embedding was its multi-head attention-pooling (MAP) head over the "
        f"final tokens; this folder's is `pooling={vision.pooling!r}`"
        + (
            " (the same readout), so the embeddings and logits are the source's."
            if same_readout
            else ", so the image embeddings and logits differ from the source's: fine-tune it with "
            "`lastvit-train-clip --model-name-or-path FOLDER --loss sigmoid` (SigLIP's pairwise sigmoid loss)."
        )
    )
    notes = "".join(f"- {note}\n" for note in result.notes)
    dropped = "".join(f"- Dropped {count} source tensors: {reason}.\n" for reason, count in result.dropped.items())
    rows = [f"| {name} vs the transformers source | {value:.2e} |" for name, value in (parity or {}).items()]
    rows += [f"| {name}, saved folder reloaded | {value:.2e} |" for name, value in round_trip.items()]
    check = "\n".join(
        [
            (
                "Max abs differences measured by `lastvit-convert` while writing this folder (fp32, random images at the "
                "native resolution and random full-length texts):"
            ),
            "",
            "| Output | Max abs diff |",
            "|---|---|",
            *rows,
        ]
    )
    details = describe_config(vision) + [
        (
            f"Text tower: SigLIP's, width {text.hidden_size}, {text.num_hidden_layers} blocks, no causal mask, "
            f"vocabulary {text.vocab_size}; texts padded to {text.max_position_embeddings} tokens, pooled at the last "
            "position, then its head."
        ),
        (
            f"Joint space: {model.config.projection_dim} dimensions (the image embedding is the pooled feature, no "
            f"projection); logit scale {model.logit_scale.item():.4f}, logit bias {model.logit_bias.item():.4f} "
            "(sigmoid probabilities per image-text pair)."
        ),
        f"Tokenizer: {type(result.tokenizer).__name__}, {len(result.tokenizer)} tokens.",
    ]
    usage = clip_usage_text(
        ("dog", "cat"),
        "`model.vision_model` is the image tower (a `LastViTModel`, `save_image_tower` writes it alone).\n"
        "SigLIP's logits are per pair: `torch.sigmoid(outputs.logits_per_image)` are its probabilities.",
    )
    sections = [
        ("Source", source_text + ("\n\n" + notes + dropped if notes or dropped else "")),
        ("Conversion check", check),
        ("How to use", usage),
        (
            "Limitations",
            (
                "- The weights, their training data and their biases are the source's; this card does not describe "
                "them.\n- This package has not evaluated this checkpoint on any benchmark."
            ),
        ),
        ("Licence", "The licence of the source weights applies; check it before redistributing."),
    ]
    return render_model_card(
        title=model_name,
        summary=f"A LastViT-CLIP model (LaSt-ViT model package for Transformers, after {PAPER}): the image and text "
        "towers of a converted SigLIP model in one joint space.",
        details=details,
        command=command,
        sections=sections,
        pipeline_tag="zero-shot-image-classification",
        tags=["clip", "siglip", "zero-shot-image-classification"],
        license=license,
    )
