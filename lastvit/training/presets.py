"""The `PRESETS` architectures as LastViT configs."""

from __future__ import annotations

from .config import PRESETS


def preset_config(preset: str, image_size: int | None = None, patch_size: int | None = None, **fields):
    """The `LastViTConfig` of a named preset (`PRESETS`), at `image_size` / `patch_size` when given
    (else the preset's), with any other config `fields` (pooling, registers, labels...)."""
    from modeling_lastvit import LastViTConfig

    sizes = PRESETS[preset]
    return LastViTConfig(
        **sizes._replace(
            image_size=image_size or sizes.image_size, patch_size=patch_size or sizes.patch_size
        )._asdict(),
        **fields,
    )
