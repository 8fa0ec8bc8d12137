"""What `lastvit-convert` can be asked: the source kinds, the readout options and their checks.

This module imports neither torch nor transformers, so the command line can build its parser (and
answer `--help`) without them. `POOLING_TYPES` and `SCORE_RULES` mirror
`configuration_lastvit` (a test keeps them equal).
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCES = ("hf", "torchvision", "dino", "openclip", "timm")
SOURCE_NAMES = {
    "hf": "transformers model",
    "torchvision": "torchvision VisionTransformer",
    "dino": "facebookresearch/dino ViT",
    "openclip": "OpenAI CLIP / open_clip model",
    "timm": "timm VisionTransformer",
}
TIMM_GLOBAL_POOLS = ("token", "avg", "avgmax", "max", "map")  # timm's `global_pool`, not stored in its state dicts
TEXT_TOWER_SOURCES = ("openclip",)  # sources whose checkpoints hold a text tower `--with-text-tower` converts
POOLING_TYPES = ("cls", "mean", "max", "lazystrike", "map", "avgmax")  # = configuration_lastvit.POOLING_TYPES
SCORE_RULES = ("repo", "paper")  # = configuration_lastvit.SCORE_RULES
POOLING_CHOICES = ("source",) + POOLING_TYPES
CLIP_ACTIVATIONS = ("quick_gelu", "gelu")

# Heads per width of the standard ViT family members (torchvision, DINO, OpenAI CLIP / open_clip); the
# state dicts do not record it. Anything else needs --num-heads.
STANDARD_NUM_HEADS = {192: 3, 384: 6, 512: 8, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}


class ConversionError(ValueError):
    """The source does not have the layout the chosen converter expects, or the options do not fit it."""


@dataclass
class ConversionOptions:
    """How to read out the converted model. `pooling="source"` keeps the source's own readout."""

    pooling: str = "source"
    top_k: int | None = None
    top_k_ratio: float | None = None
    sigma: float | None = None
    score: str | None = None
    num_labels: int | None = None  # None: keep the source's head (if any); 0: drop it; N: keep or replace
    num_heads: int | None = None  # state-dict sources only (their files do not record it)
    clip_activation: str = "quick_gelu"  # openclip only: OpenAI CLIP uses QuickGELU, most open_clip models GELU
    text_tower: bool = False  # openclip only: also convert the text tower and logit_scale (a LastViTCLIPModel)
    text_num_heads: int | None = None  # text tower heads (None: width // 64, OpenAI's and open_clip's rule)
    global_pool: str | None = None  # timm only: the model's global_pool (None: read from the state dict's keys)

    def validate(self) -> None:
        if self.pooling not in POOLING_CHOICES:
            raise ConversionError(f"unknown pooling {self.pooling!r}; use one of {POOLING_CHOICES}.")
        lazystrike_flags = [
            name for name in ("top_k", "top_k_ratio", "sigma", "score") if getattr(self, name) is not None
        ]
        if lazystrike_flags and self.pooling != "lazystrike":
            flags = ", ".join("--" + name.replace("_", "-") for name in lazystrike_flags)
            raise ConversionError(f"{flags} only apply with --pooling lazystrike (got --pooling {self.pooling}).")
        if self.top_k is not None and self.top_k_ratio is not None:
            raise ConversionError("give either --top-k (a count) or --top-k-ratio (a fraction), not both.")
        if self.score is not None and self.score not in SCORE_RULES:
            raise ConversionError(f"unknown LazyStrike score {self.score!r}; use one of {SCORE_RULES}.")
        if self.num_labels is not None and self.num_labels < 0:
            raise ConversionError(f"--num-labels must be >= 0, got {self.num_labels}.")
        if self.num_heads is not None and self.num_heads < 1:
            raise ConversionError(f"--num-heads must be >= 1, got {self.num_heads}.")
        if self.clip_activation not in CLIP_ACTIVATIONS:
            raise ConversionError(f"--clip-activation must be 'quick_gelu' or 'gelu', got {self.clip_activation!r}.")
        if self.global_pool is not None and self.global_pool not in TIMM_GLOBAL_POOLS:
            raise ConversionError(f"unknown --global-pool {self.global_pool!r}; use one of {TIMM_GLOBAL_POOLS}.")
        if self.text_num_heads is not None and not self.text_tower:
            raise ConversionError("--text-num-heads only applies with --with-text-tower.")
        if self.text_num_heads is not None and self.text_num_heads < 1:
            raise ConversionError(f"--text-num-heads must be >= 1, got {self.text_num_heads}.")
        if self.text_tower and self.num_labels:
            raise ConversionError(
                "--with-text-tower writes a CLIP model, which classifies zero-shot from text prompts and has no "
                "classifier head: drop --num-labels."
            )
