"""Checkpoint conversion, one room: ViT-family checkpoints into LastViT checkpoints, with exact parity
(`lastvit-convert` is a thin command line over it).

Every source becomes one `LastViTModel` (or `LastViTForImageClassification` when it has a head) by
options and a key map, never by a subclass. With the source's own pooling (`--pooling source`, the
default) the converted model reproduces the source's forward; with `--pooling lazystrike` it is the
same encoder read out by LazyStrike (how the authors' released LaSt-ViT checkpoints are read).

One module per source format (`--from`), over the shared `key_plan`:

- `hf`: transformers ViT, DeiT, DINOv2 (+ registers) and CLIP vision models (`convert_hf_model`).
- `torchvision_vit`: torchvision `VisionTransformer` state dicts (`convert_torchvision_state_dict`).
- `dino`: facebookresearch/dino ViT checkpoints (`convert_dino_state_dict`).
- `timm_vit`: timm `VisionTransformer` state dicts with registers, every `global_pool`, `fc_norm`,
  `no_embed_class` (`convert_timm_state_dict`); `timm_eva`: timm `Eva` state dicts, EVA-01, EVA02 (RoPE, SwiGLU
  with sub-LN) and timm's DINOv3 (`convert_timm_eva_state_dict`); `hf_recent` (under `hf`): DINOv3,
  SigLIP/SigLIP2, AIMv2, I-JEPA.
- `openclip`: OpenAI CLIP / open_clip visual towers (`convert_openclip_state_dict`); with
  `openclip_text` the whole model, text tower and `logit_scale` included, as a `LastViTCLIPModel`
  (`convert_openclip_clip_state_dict`, `--with-text-tower`), its tokenizer built by `clip_tokenizer`
  from CLIP's BPE file (`load_clip_tokenizer`).

`options` holds what a conversion can be asked (`ConversionOptions`, torch-free); `sources.convert_checkpoint`
loads what `--input` names and picks the converter; `writer.write_folder` (`write_clip_folder` for a CLIP
model) writes the folder atomically; `cards` renders its model card; `run.run_conversion` does all of it for
one `ConversionJob` (what `lastvit-convert` calls). Loading is safe by default
(`checkpoint_loading`): `torch.load(..., weights_only=True)` (with `argparse.Namespace` allowed, which
DINO checkpoints hold), and TorchScript archives are read by a restricted unpickler that only rebuilds
tensors. `--trust-pickle` opts in to full unpickling / `torch.jit.load`, which can run arbitrary code
from the file: use it only for files you trust.

The names below are imported on first use, so importing this package (or `options`) does not import torch.
"""

import importlib

_EXPORTS = {
    "ConversionError": "options",
    "ConversionOptions": "options",
    "ConversionJob": "options",
    "run_conversion": "run",
    "SOURCES": "options",
    "ConversionResult": "key_plan",
    "extract_state_dict": "key_plan",
    "CheckpointLoadError": "checkpoint_loading",
    "load_checkpoint": "checkpoint_loading",
    "read_torchscript_tensors": "checkpoint_loading",
    "HF_ARCHITECTURES": "hf",
    "compare_with_hf_source": "hf",
    "convert_hf_model": "hf",
    "load_hf_model": "hf",
    "convert_torchvision_state_dict": "torchvision_vit",
    "convert_dino_state_dict": "dino",
    "convert_timm_state_dict": "timm_vit",
    "convert_timm_eva_state_dict": "timm_eva",
    "convert_openclip_state_dict": "openclip",
    "CLIPConversionResult": "openclip_text",
    "convert_openclip_clip_state_dict": "openclip_text",
    "clip_tokenizer_from_bpe": "clip_tokenizer",
    "load_clip_tokenizer": "clip_tokenizer",
    "write_clip_folder": "writer",
    "convert_checkpoint": "sources",
    "write_folder": "writer",
}

__all__ = [
    "HF_ARCHITECTURES",
    "SOURCES",
    "CLIPConversionResult",
    "CheckpointLoadError",
    "ConversionError",
    "ConversionJob",
    "ConversionOptions",
    "ConversionResult",
    "clip_tokenizer_from_bpe",
    "compare_with_hf_source",
    "convert_checkpoint",
    "convert_dino_state_dict",
    "convert_hf_model",
    "convert_openclip_clip_state_dict",
    "convert_openclip_state_dict",
    "convert_timm_eva_state_dict",
    "convert_timm_state_dict",
    "convert_torchvision_state_dict",
    "extract_state_dict",
    "load_checkpoint",
    "load_clip_tokenizer",
    "load_hf_model",
    "read_torchscript_tensors",
    "run_conversion",
    "write_clip_folder",
    "write_folder",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
