"""What the study compares and at which scale: variants, data, model and recipe in one dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from lastvit.arguments import option
from lastvit.training.config import PRESETS

# The paper's comparison (LaSt-ViT Tab. 8/9) at equal budget and recipe. K is a share of the
# patches: 1 / N is K = 1 (the released setting), 0.5 is K = N/2 (best in Tab. 8), 1 would be GAP.
VARIANTS = {
    "vit_cls": {"label": "ViT (CLS)", "pooling": "cls", "registers": 0},
    "vit_reg4": {"label": "ViT + 4 registers (CLS)", "pooling": "cls", "registers": 4},
    "vit_mean": {"label": "ViT (mean pooling, GAP)", "pooling": "mean", "registers": 0},
    "lastvit_k1": {"label": "LaSt-ViT (LazyStrike, K = 1)", "pooling": "lazystrike", "registers": 0, "top_k": 1},
    "lastvit_khalf": {
        "label": "LaSt-ViT (LazyStrike, K = N/2)",
        "pooling": "lazystrike",
        "registers": 0,
        "top_k_ratio": 0.5,
    },
}
OPTIONAL_VARIANTS = {"vit_max": {"label": "ViT (max pooling)", "pooling": "max", "registers": 0}}
REFERENCE = "vit_cls"


@dataclass
class StudyConfig:
    """One study. `scale` picks the defaults of every field left as None (see `SCALES`). Every field is
    also a flag of `lastvit-study` (``--field-name``)."""

    output_dir: Path = option(Path("outputs/study"), "where the report and model go")
    overwrite: bool = option(False, "replace an existing --output-dir")
    seeds: tuple[int, ...] = option((0, 1, 2), "training seeds (default: 0 1 2)")
    variants: tuple[str, ...] = option(
        tuple(VARIANTS),
        f"what to train, among {', '.join([*VARIANTS, *OPTIONAL_VARIANTS])} (default: all but vit_max)",
        choices=(*VARIANTS, *OPTIONAL_VARIANTS),
        metavar="VARIANT",
    )
    scale: str = option(
        "auto",
        "defaults for data, model and recipe (auto: gpu on a CUDA machine, else cpu)",
        choices=("auto", "cpu", "gpu"),
    )
    device: str = option("auto", "evaluation device: auto (default), cpu, cuda, cuda:1, ...")
    # data
    data_variant: str | None = option(
        None,
        "fashion: Fashion-MNIST items (train/test instances disjoint); scenes: Tux Paint photos",
        choices=("scenes", "fashion"),
    )
    num_train: int | None = option(None, "training images")
    num_test: int | None = option(None, "test images (held-out instances and backgrounds)")
    image_size: int | None = option(None, "image side in pixels")
    scale_range: tuple[float, float] | None = option(
        None, "the object's longer side as a share of the image side", metavar=("LOW", "HIGH")
    )
    opacity: float | None = option(None, "object opacity")
    clutter: int = option(0, "fragments of objects of other classes per image (default: 0)")
    data_seed: int = option(0, "seed of the generated images (default: 0)")
    # model (a `lastvit.training.PRESETS` size at the study's image and patch size)
    preset: str | None = option(None, "model size", choices=tuple(PRESETS))
    patch_size: int | None = option(None, "patch side in pixels")
    # recipe
    epochs: float | None = option(None, "epochs per model")
    batch_size: int | None = option(None, "batch size")
    learning_rate: float | None = option(None, "AdamW learning rate")
    weight_decay: float | None = option(None, "AdamW weight decay")
    warmup_ratio: float | None = option(None, "share of the steps spent warming up")
    crop_scale_min: float | None = option(None, "smallest RandomResizedCrop area (1: no crop)")
    max_grad_norm: float | None = option(None, "gradient clipping norm")
    num_workers: int | None = option(None, "DataLoader worker processes")
    mixed_precision: str | None = option(None, "no, fp16 or bf16", choices=("no", "fp16", "bf16"))
    # evaluation
    probe_images: int = option(500, "test images in the masking probe (default: 500)")
    figure_images: int = option(3, "example images in the map figure (default: 3)")
    progress: bool = option(True, "hide progress bars", flag="--no-progress")

    def resolved(self, cuda_available: bool) -> StudyConfig:
        """A copy with `scale` decided and every None filled from that scale's defaults."""
        scale = self.scale if self.scale != "auto" else ("gpu" if cuda_available else "cpu")
        if scale not in SCALES:
            raise ValueError(f"Unknown scale {self.scale!r}; use one of {sorted(SCALES)} or 'auto'.")
        unknown = [v for v in self.variants if v not in VARIANTS and v not in OPTIONAL_VARIANTS]
        if unknown:
            raise ValueError(f"Unknown variants {unknown}; choose from {sorted({**VARIANTS, **OPTIONAL_VARIANTS})}.")
        if REFERENCE not in self.variants:
            raise ValueError(f"The study compares every variant with {REFERENCE!r}; keep it in the variants.")
        filled = {k: v for k, v in SCALES[scale].items() if getattr(self, k) is None}
        return dataclasses.replace(self, scale=scale, **filled)


SCALE_FIELDS = ("data_variant", "num_train", "num_test", "image_size", "scale_range", "opacity", "preset", "patch_size",
    "epochs", "batch_size", "learning_rate", "weight_decay", "warmup_ratio", "crop_scale_min", "max_grad_norm",
    "num_workers", "mixed_precision")  # fmt: skip

# Defaults per scale. "cpu": the README's command 1 on 2 cores (see README for what was measured);
# "gpu": the paper's token count (112 px / patch 8 = 196 patches) for one H100 in about 10 minutes.
SCALES = {
    "cpu": {
        "data_variant": "fashion",
        "num_train": 16000,
        "num_test": 2000,
        "image_size": 32,
        "scale_range": (0.5, 0.8),
        "opacity": 1.0,
        "preset": "micro",
        "patch_size": 8,
        "epochs": 2.0,
        "batch_size": 64,
        "learning_rate": 1e-3,
        "weight_decay": 0.05,
        "warmup_ratio": 0.05,
        "crop_scale_min": 1.0,
        "max_grad_norm": 1.0,
        "num_workers": 0,
        "mixed_precision": "no",
    },
    "gpu": {
        "data_variant": "fashion",
        "num_train": 60000,
        "num_test": 5000,
        "image_size": 112,
        "scale_range": (0.3, 0.6),
        "opacity": 1.0,
        "preset": "small",
        "patch_size": 8,
        "epochs": 10.0,
        "batch_size": 256,
        "learning_rate": 1e-3,
        "weight_decay": 0.05,
        "warmup_ratio": 0.05,
        "crop_scale_min": 0.8,
        "max_grad_norm": 1.0,
        "num_workers": 8,
        "mixed_precision": "bf16",
    },
}


@dataclass(kw_only=True)
class CheckOptions:
    """The flags of ``lastvit-study --check``."""

    check: Path | None = option(
        None,
        "re-run one seed of this report with the config it records and say whether it matches, naming the first "
        "difference (data hash, package version, metric); exit code 1 when it does not (other options are ignored)",
        metavar="REPORT.json",
    )
    check_seed: int = option(0, "the seed --check re-runs (default: 0)")
