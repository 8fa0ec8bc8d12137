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


def tiny_clip_config(tokenizer, pooling: str = "lazystrike"):
    """A LastViT-CLIP config: the tiny LastViT image tower and a 2-block, 32-wide CLIP text tower
    sized to `tokenizer`, in a 16-dimensional joint space."""
    from transformers import CLIPTextConfig

    from modeling_lastvit import LastViTCLIPConfig

    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=32,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LastViTCLIPConfig(vision_config=tiny_config(pooling=pooling), text_config=text, projection_dim=16)
