"""Writing a converted model as a complete LastViT folder, whole or not at all (`lastvit.files`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from lastvit.files import write_folder as write_whole_folder
from modeling_lastvit.modeling_lastvit import LastViTForImageClassification

from .key_plan import ConversionResult
from .options import ConversionError


def write_folder(
    result: ConversionResult,
    output_dir: Path,
    card_text: Callable[[float], str],
    overwrite: bool = False,
    dtype: torch.dtype = torch.float32,
) -> float:
    """Save weights (safetensors), config (with `auto_map`), image processor, remote code and the card
    into a staging folder, reload it to check the round trip, then move it into place atomically.
    Returns the round-trip max abs difference (0.0 when the saved folder reproduces the model)."""
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ConversionError(
            f"{output_dir} already holds files; pass --overwrite to replace them or pick another --output."
        )

    def write(staging: Path) -> float:
        model = result.model.to(dtype)
        model.save_pretrained(staging)
        result.image_processor.save_pretrained(staging)
        round_trip = _round_trip_diff(model, staging)
        (staging / "README.md").write_text(card_text(round_trip))
        return round_trip

    return write_whole_folder(output_dir, write)


def _round_trip_diff(model, folder: Path) -> float:
    reloaded = type(model).from_pretrained(folder).eval()
    height, width = model.config.image_size_hw
    pixel_values = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model(pixel_values), reloaded(pixel_values)
    key = "logits" if isinstance(model, LastViTForImageClassification) else "pooler_output"
    return (getattr(a, key).float() - getattr(b, key).float()).abs().max().item()


CHECK_PROMPTS = ("a photo of a dog.", "a diagram", "two cats on a red sofa, sleeping")


def write_clip_folder(
    result,
    output_dir: Path,
    card_text: Callable[[dict[str, float]], str],
    overwrite: bool = False,
    dtype: torch.dtype = torch.float32,
) -> dict[str, float]:
    """A converted `LastViTCLIPModel` (`openclip_text.CLIPConversionResult`) as a folder: exactly what
    `save_pretrained` of the model, its tokenizer and its image processor write, plus the card; model and
    tokenizer reloaded to check the round trip, moved into place atomically. Returns the round-trip max abs differences."""
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ConversionError(
            f"{output_dir} already holds files; pass --overwrite to replace them or pick another --output."
        )

    def write(staging: Path) -> dict[str, float]:
        model = result.model.to(dtype)
        model.save_pretrained(staging)
        result.tokenizer.save_pretrained(staging)
        result.image_processor.save_pretrained(staging)
        round_trip = _clip_round_trip_diffs(model, result.tokenizer, staging)
        (staging / "README.md").write_text(card_text(round_trip))
        return round_trip

    return write_whole_folder(output_dir, write)


def _clip_round_trip_diffs(model, tokenizer, folder: Path) -> dict[str, float]:
    reloaded = type(model).from_pretrained(folder).eval()
    height, width = model.config.vision_config.image_size_hw
    texts = dict(text=list(CHECK_PROMPTS), padding=True, truncation=True, return_tensors="pt")
    inputs, reloaded_inputs = tokenizer(**texts), type(tokenizer).from_pretrained(folder)(**texts)
    pixel_values = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model(**inputs, pixel_values=pixel_values), reloaded(**reloaded_inputs, pixel_values=pixel_values)
    return {
        name: (getattr(a, name).float() - getattr(b, name).float()).abs().max().item()
        for name in ("image_embeds", "text_embeds", "logits_per_image")
    }
