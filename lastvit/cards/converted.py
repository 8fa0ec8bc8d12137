"""The card `lastvit-convert` writes beside a converted checkpoint."""

from __future__ import annotations

from huggingface_hub import ModelCard

from .released import released_model_card
from .template import PAPER, common_tail, describe_config, render_model_card


def converted_model_card(
    result,
    command: str,
    model_name: str,
    parity: dict[str, float] | None,
    round_trip: float,
    released: str | None = None,
) -> ModelCard:
    """The card `lastvit-convert` writes: the same template, filled from the conversion."""
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
    source_text = f"Converted from a {result.description} with `lastvit-convert --from {result.source}`. " + (
        "The readout is the source's own, so the outputs match the source (see the conversion check)."
        if result.model.config.pooling == "cls" and "pooling lazystrike" not in command
        else "The encoder weights are the source's; the readout was changed, so the global feature differs from "
        "the source's and the weights were not trained for it unless the source was a LaSt-ViT checkpoint."
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
    )
