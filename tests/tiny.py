"""Tiny configurations shared by the tests."""

from modeling_lastvit import LastViTConfig

TINY = dict(
    image_size=32,
    patch_size=8,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
)


def tiny_config(**overrides) -> LastViTConfig:
    """A 2-block, 32-wide LastViT on 32x32 inputs with 8x8 patches (16 patches)."""
    return LastViTConfig(**{**TINY, **overrides})
