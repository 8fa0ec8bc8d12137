"""One entry point for every source kind (`--from`): load what `--input` names, find the weights, and
run that format's converter."""

from __future__ import annotations

import torch

from .checkpoint_loading import load_checkpoint
from .dino import convert_dino_state_dict
from .hf import compare_with_hf_source, convert_hf_model, load_hf_model, load_hf_processor_settings
from .key_plan import ConversionResult, extract_state_dict
from .openclip import convert_openclip_state_dict
from .options import SOURCES, TEXT_TOWER_SOURCES, TIMM_EVA_FLAGS, ConversionError, ConversionOptions
from .timm_eva import convert_timm_eva_state_dict
from .timm_vit import convert_timm_state_dict
from .torchvision_vit import convert_torchvision_state_dict

STATE_DICT_CONVERTERS = {
    "torchvision": convert_torchvision_state_dict,
    "dino": convert_dino_state_dict,
    "openclip": convert_openclip_state_dict,
    "timm": convert_timm_state_dict,
    "timm-eva": convert_timm_eva_state_dict,
}


def convert_checkpoint(
    source: str,
    input_path: str,
    options: ConversionOptions,
    checkpoint_key: str | None = None,
    trust_pickle: bool = False,
    tokenizer: str | None = None,
) -> tuple[ConversionResult, dict[str, float] | None]:
    """Convert `input_path` from `source`; for transformers sources also return the parity check
    against the source's own forward on a random batch at the native resolution. With
    `options.text_tower` (openclip) the result is the whole CLIP model (`CLIPConversionResult`), its
    tokenizer read from `tokenizer` (see `clip_tokenizer.load_clip_tokenizer`)."""
    options.validate()
    if options.text_tower and source not in TEXT_TOWER_SOURCES:
        raise ConversionError(
            f"--with-text-tower converts {', '.join(TEXT_TOWER_SOURCES)} checkpoints (--from {source} has no text tower)."
        )
    if tokenizer is not None and not options.text_tower:
        raise ConversionError("--tokenizer only applies with --with-text-tower.")
    eva_flags = [name for name in TIMM_EVA_FLAGS if getattr(options, name) is not None]
    if eva_flags and source != "timm-eva":
        flags = ", ".join("--" + name.replace("_", "-") for name in eva_flags)
        raise ConversionError(f"{flags} only apply with --from timm-eva (got --from {source}).")
    if source == "hf" and options.text_tower:
        return convert_hf_text_tower(input_path, options, tokenizer)
    if source == "hf":
        source_model = load_hf_model(input_path)
        source_processor = load_hf_processor_settings(input_path)
        result = convert_hf_model(source_model, options, source_processor)
        height, width = result.model.config.image_size_hw
        pixel_values = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
        return result, compare_with_hf_source(source_model, result.model, pixel_values)
    if source not in SOURCES:
        raise ConversionError(f"unknown source {source!r}; use one of {SOURCES}.")
    checkpoint = load_checkpoint(input_path, trust_pickle=trust_pickle)
    if source == "dino" and checkpoint_key is None and isinstance(checkpoint, dict) and "teacher" in checkpoint:
        checkpoint_key = "teacher"
    state_dict = extract_state_dict(checkpoint, checkpoint_key)
    if options.text_tower:
        from .openclip_text import convert_openclip_clip_state_dict

        result = convert_openclip_clip_state_dict(state_dict, options, tokenizer)
    else:
        result = STATE_DICT_CONVERTERS[source](state_dict, options)
    if checkpoint_key:
        result.notes.append(f"Weights taken from the checkpoint's {checkpoint_key!r} entry.")
    return result, None


def convert_hf_text_tower(input_path: str, options: ConversionOptions, tokenizer: str | None):
    """A transformers `SiglipModel` folder as a whole `LastViTCLIPModel` (`siglip_text`), with the parity of image and
    text embeddings and logits against the source on random images and full-length random texts."""
    from transformers import AutoTokenizer

    from .siglip_text import compare_with_siglip_source, convert_siglip_model

    source_model = load_hf_model(input_path)
    where = tokenizer or input_path
    try:
        text_tokenizer = AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError, ImportError) as error:
        raise ConversionError(
            f"--with-text-tower needs the text tokenizer, and none loads from {where} ({error}); save the model's "
            "tokenizer there or pass --tokenizer FOLDER (SigLIP's SentencePiece tokenizer needs `sentencepiece`)."
        ) from error
    result = convert_siglip_model(source_model, options, load_hf_processor_settings(input_path), text_tokenizer)
    if result.model.config.vision_config.pooling != "map":  # another readout: the embeddings differ by design
        return result, None
    height, width = result.model.config.vision_config.image_size_hw
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, height, width, generator=generator)
    text = source_model.config.text_config
    input_ids = torch.randint(0, text.vocab_size, (3, text.max_position_embeddings), generator=generator)
    return result, compare_with_siglip_source(source_model, result.model, pixel_values, input_ids)
