"""What `lastvit-convert` can be asked: the job (source, input, output, ...) and the readout options,
each a dataclass whose fields are also the command line's flags (`lastvit.arguments`), and their checks.

This module imports neither torch nor transformers, so the command line can build its parser (and
answer `--help`) without them. The pooling names and score rules are the model config's own
(`lastvit.model_choices`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from lastvit.arguments import option
from lastvit.errors import LastViTUserError
from lastvit.model_choices import POOLING_TYPES, SCORE_RULES

SOURCES = ("hf", "torchvision", "dino", "openclip", "timm", "timm-eva")
SOURCE_NAMES = {
    "hf": "transformers model",
    "torchvision": "torchvision VisionTransformer",
    "dino": "facebookresearch/dino ViT",
    "openclip": "OpenAI CLIP / open_clip model",
    "timm": "timm VisionTransformer",
    "timm-eva": "timm Eva (EVA, EVA02, timm's DINOv3)",
}
TIMM_GLOBAL_POOLS = ("token", "avg", "avgmax", "max", "map")  # timm's `global_pool`, not stored in its state dicts
TIMM_EVA_ROPES = ("eva", "dinov3", "none")  # timm Eva's rotary embedding, not stored in its state dicts either
TIMM_EVA_FLAGS = ("rope", "rope_reference_grid", "layer_norm_eps")  # options only `--from timm-eva` reads
TEXT_TOWER_SOURCES = ("openclip", "hf")  # sources whose checkpoints hold a text tower `--with-text-tower` converts
POOLING_CHOICES = ("source", *POOLING_TYPES)
CLIP_ACTIVATIONS = ("quick_gelu", "gelu")
DTYPES = ("bfloat16", "float16", "float32")

# Heads per width of the standard ViT family members (torchvision, DINO, OpenAI CLIP / open_clip); the
# state dicts do not record it. Anything else needs --num-heads.
STANDARD_NUM_HEADS = {192: 3, 384: 6, 512: 8, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}


class ConversionError(LastViTUserError):
    """The source does not have the layout the chosen converter expects, or the options do not fit it."""


def released_checkpoint(name: str) -> str:
    """`--released NAME`, checked when given (the names live with the model cards, which import torch)."""
    from lastvit.cards.released import RELEASED_CHECKPOINTS

    if name not in RELEASED_CHECKPOINTS:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {name!r} (choose from {', '.join(sorted(RELEASED_CHECKPOINTS))})"
        )
    return name


@dataclass(kw_only=True)
class ConversionJob:
    """What to convert and where to write it (everything but the readout)."""

    source: str = option(
        help="source kind: hf (a transformers model, incl. DINOv3, SigLIP/SigLIP2, AIMv2, I-JEPA), torchvision "
        "(VisionTransformer state dict), dino (facebookresearch/dino ViT checkpoint), openclip (OpenAI CLIP / "
        "open_clip checkpoint or TorchScript archive), timm (timm VisionTransformer state dict), timm-eva (timm Eva "
        "state dict: EVA, EVA02, timm's DINOv3)",
        flag="--from",
        choices=SOURCES,
    )
    input: str = option(
        help="a checkpoint file (.pth/.pt/.bin/.safetensors) or, for --from hf, a local folder or Hub id"
    )
    output: Path = option(help="folder to write the converted checkpoint into")
    checkpoint_key: str | None = option(
        None,
        "entry of the checkpoint dict that holds the weights (dino: 'teacher' by default; "
        "otherwise 'state_dict' / 'model' / 'module' are tried)",
    )
    tokenizer: str | None = option(
        None,
        "with --with-text-tower: OpenAI's / open_clip's bpe_simple_vocab_16e6.txt.gz, or a transformers "
        "tokenizer folder (e.g. a saved CLIPTokenizer); default: open_clip's bundled BPE when open_clip is installed "
        "(--from openclip), the tokenizer saved in the --input folder (--from hf)",
        metavar="PATH",
    )
    dtype: str = option("float32", "dtype of the saved weights", choices=DTYPES)
    released: str | None = option(
        None,
        "the file is one of the authors' released LaSt-ViT checkpoints (a folder name under "
        "model_cards/, e.g. lastvit-vit-b16-supervised): write that model card",
        type=released_checkpoint,
        metavar="NAME",
    )
    model_name: str | None = option(None, "title of the model card (default: the output folder's name)")
    license: str | None = option(
        None,
        "the source weights' licence for the card (a Hub licence id, e.g. apache-2.0; default: the one a local "
        "source folder's README.md declares; lastvit-publish needs one)",
    )
    trust_pickle: bool = option(
        False,
        "allow full unpickling / torch.jit.load for files a weights-only load refuses. "
        "UNSAFE: a malicious file can run arbitrary code; only for files you trust",
    )
    overwrite: bool = option(False, "replace an existing, non-empty --output folder")

    def __post_init__(self):
        self.output = Path(self.output)


@dataclass(kw_only=True)
class ConversionOptions:
    """How to read out the converted model. `pooling="source"` keeps the source's own readout."""

    pooling: str = option(
        "source",
        "global readout: 'source' keeps the source's own (CLS) readout for exact parity; "
        "'lazystrike' is LaSt-ViT's; 'mean' / 'max' / 'cls' for ablations (default: source)",
        choices=POOLING_CHOICES,
    )
    top_k: int | None = option(None, "LazyStrike K, patches averaged per channel (default 1)")
    top_k_ratio: float | None = option(None, "LazyStrike K as a fraction of the patch count, e.g. 0.5")
    sigma: float | None = option(None, "LazyStrike Gaussian window width (default sqrt(hidden size))")
    score: str | None = option(
        None, "LazyStrike stability score: 'repo' (released code, default) or 'paper' (Eq. 5)", choices=SCORE_RULES
    )
    num_labels: int | None = option(
        None,
        "classifier: omit to keep the source's head (if any), 0 to drop it, N for an N-way head "
        "(kept if the source's has N classes, else newly initialised)",
    )
    num_heads: int | None = option(
        None,
        "attention heads, for torchvision / dino / openclip files of a non-standard width "
        f"(standard widths: {sorted(STANDARD_NUM_HEADS)})",
    )
    clip_activation: str = option(
        "quick_gelu",
        "openclip MLP activation: quick_gelu for OpenAI CLIP weights (default), gelu for "
        "open_clip models trained with nn.GELU",
        choices=CLIP_ACTIVATIONS,
    )
    text_tower: bool = option(
        False,
        "openclip, and hf for a SiglipModel: convert the whole model (image tower, text tower, logit_scale, SigLIP's "
        "logit_bias) into a LastViTCLIPModel folder with its tokenizer, for the zero-shot-image-classification "
        "pipeline and as a start for "
        "fine-tuning. A flag rather than another --from, because the source file and the image tower's "
        "conversion (and every readout option) are the same; only what is kept grows",
        flag="--with-text-tower",
    )
    text_num_heads: int | None = option(
        None,
        "with --with-text-tower: text-tower attention heads (default: width // 64, OpenAI's and open_clip's rule)",
    )
    global_pool: str | None = option(
        None,
        "timm / timm-eva: the model's global_pool, which its state dict does not record (default: map with an "
        "attn_pool; timm: avg with fc_norm or without a CLS token, else token; timm-eva: avg, Eva's default)",
        choices=TIMM_GLOBAL_POOLS,
    )
    rope: str | None = option(
        None,
        "timm-eva: the model's rotary embedding, which its state dict does not record: eva (EVA02's, and timm's "
        "vit_*_rope_* models), dinov3 (timm's DINOv3) or none (EVA-01) (default: eva with absolute positions and a "
        "SwiGLU MLP, none with positions and a plain MLP, dinov3 without positions)",
        choices=TIMM_EVA_ROPES,
    )
    rope_reference_grid: int | None = option(
        None,
        "timm-eva with --rope eva: the grid EVA's RoPE coordinates are scaled to (timm's ref_feat_shape; default "
        "16, which every EVA02 model uses)",
    )
    layer_norm_eps: float | None = option(
        None, "timm-eva: the LayerNorm epsilon (default 1e-5 for --rope dinov3, as timm's DINOv3 models, else 1e-6)"
    )

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
        if self.rope is not None and self.rope not in TIMM_EVA_ROPES:
            raise ConversionError(f"unknown --rope {self.rope!r}; use one of {TIMM_EVA_ROPES}.")
        if self.rope_reference_grid is not None and (self.rope_reference_grid < 1 or self.rope in ("dinov3", "none")):
            raise ConversionError("--rope-reference-grid must be >= 1 and only applies with EVA's RoPE (--rope eva).")
        if self.layer_norm_eps is not None and self.layer_norm_eps <= 0:
            raise ConversionError(f"--layer-norm-eps must be > 0, got {self.layer_norm_eps}.")
        if self.text_num_heads is not None and not self.text_tower:
            raise ConversionError("--text-num-heads only applies with --with-text-tower.")
        if self.text_num_heads is not None and self.text_num_heads < 1:
            raise ConversionError(f"--text-num-heads must be >= 1, got {self.text_num_heads}.")
        if self.text_tower and self.num_labels:
            raise ConversionError(
                "--with-text-tower writes a CLIP model, which classifies zero-shot from text prompts and has no "
                "classifier head: drop --num-labels."
            )
