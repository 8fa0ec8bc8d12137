"""The `PRESETS` architectures as LastViT configs: one place that reads a preset's tuple."""

from __future__ import annotations

from .config import PRESETS


def preset_config(preset: str, image_size: int | None = None, patch_size: int | None = None, **fields):
    """The `LastViTConfig` of a named preset (`PRESETS`), at `image_size` / `patch_size` when given
    (else the preset's), with any other config `fields` (pooling, registers, labels...)."""
    from modeling_lastvit import LastViTConfig

    hidden, layers, heads, mlp, image, patch = PRESETS[preset]
    return LastViTConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=mlp,
        image_size=image_size or image,
        patch_size=patch_size or patch,
        **fields,
    )
