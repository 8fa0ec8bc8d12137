"""One conversion from start to finish, as `lastvit-convert` runs it: load and convert the source,
write the folder (weights, configs, remote code, model card) atomically, and say what was done."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from modeling_lastvit import LastViTForImageClassification

from .cards import converted_clip_model_card, converted_model_card, source_license
from .options import ConversionJob, ConversionOptions
from .sources import convert_checkpoint
from .writer import write_clip_folder, write_folder


@dataclass
class ConversionOutcome:
    """What `run_conversion` did: the conversion result, the parity against a transformers source (if
    any) and the round trip of the written folder (one number, or one per output for a CLIP model)."""

    job: ConversionJob
    result: object
    parity: dict[str, float] | None
    round_trip: float | dict[str, float]
    clip: bool = field(default=False)

    def summary_lines(self) -> list[str]:
        result, config = self.result, self.result.model.config
        if self.clip:
            model = (
                f"LastViTCLIPModel, image readout {config.vision_config.pooling}, joint space "
                f"{config.projection_dim}, tokenizer {type(result.tokenizer).__name__} ({len(result.tokenizer)} tokens)"
            )
        else:
            model = f"{type(result.model).__name__}, pooling={config.pooling}" + (
                f", {config.num_labels} labels" if isinstance(result.model, LastViTForImageClassification) else ""
            )
        lines = [f"  source     : {result.description}", f"  model      : {model}"]
        lines += [f"  dropped    : {count} tensors ({reason})" for reason, count in result.dropped.items()]
        lines += [f"  note       : {note}" for note in result.notes]
        lines += [f"  parity     : max |diff| {name} = {value:.2e}" for name, value in (self.parity or {}).items()]
        if self.clip:
            lines += [
                f"  round trip : max |diff| {name} after reloading the folder = {value:.2e}"
                for name, value in self.round_trip.items()
            ]
        else:
            lines.append(f"  round trip : max |diff| after reloading the folder = {self.round_trip:.2e}")
        return [*lines, f"Wrote {self.job.output}"]


def run_conversion(job: ConversionJob, options: ConversionOptions, command: str) -> ConversionOutcome:
    """Convert `job.input` with `options` and write `job.output`; `command` goes into the model card.
    Raises `ConversionError` / `CheckpointLoadError` with a one-line message for bad inputs."""
    options.validate()
    result, parity = convert_checkpoint(
        job.source, job.input, options, job.checkpoint_key, job.trust_pickle, tokenizer=job.tokenizer
    )
    name = job.model_name or job.output.name
    dtype = getattr(torch, job.dtype)
    licence = job.license or source_license(job.input)
    if licence is None and not job.released:
        result.notes.append(
            "no licence known for this source, so the card names none and lastvit-publish will refuse it; pass "
            "--license ID (the source weights' licence, e.g. apache-2.0)."
        )
    if options.text_tower:
        round_trip = write_clip_folder(
            result,
            job.output,
            lambda diffs: (
                converted_clip_model_card(result, command, name, diffs, license=licence, parity=parity).content
            ),
            overwrite=job.overwrite,
            dtype=dtype,
        )
        return ConversionOutcome(job, result, parity, round_trip, clip=True)
    config = result.model.config
    if job.released and (config.hidden_size, config.num_hidden_layers, config.patch_size_hw) != (768, 12, (16, 16)):
        result.notes.append(
            f"--released {job.released} describes a ViT-B/16, but this file is width {config.hidden_size}, "
            f"{config.num_hidden_layers} blocks, patch {config.patch_size_hw[0]}: the card's details do not fit it."
        )

    def card(round_trip: float) -> str:
        return converted_model_card(
            result,
            command=command,
            model_name=name,
            parity=parity,
            round_trip=round_trip,
            released=job.released,
            license=licence,
        ).content

    round_trip = write_folder(result, job.output, card, overwrite=job.overwrite, dtype=dtype)
    return ConversionOutcome(job, result, parity, round_trip)
