"""What the study compares and at which scale: variants, data, model and recipe in one dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

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
    """One study. `scale` picks the defaults of every field left as None (see `SCALES`)."""

    output_dir: Path = Path("outputs/study")
    overwrite: bool = False
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[str, ...] = tuple(VARIANTS)
    scale: str = "auto"  # "cpu", "gpu", or "auto" (gpu when CUDA is available)
    device: str = "auto"
    # data
    data_variant: str | None = None
    num_train: int | None = None
    num_test: int | None = None
    image_size: int | None = None
    scale_range: tuple[float, float] | None = None
    opacity: float | None = None
    clutter: int = 0
    data_seed: int = 0
    # model (a `lastvit.training.PRESETS` size at the study's image and patch size)
    preset: str | None = None
    patch_size: int | None = None
    # recipe
    epochs: float | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    weight_decay: float | None = None
    warmup_ratio: float | None = None
    crop_scale_min: float | None = None
    max_grad_norm: float | None = None
    num_workers: int | None = None
    mixed_precision: str | None = None
    # evaluation
    probe_images: int = 500
    figure_images: int = 3
    progress: bool = True

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
        "mixed_precision": "auto",  # bf16 where the GPU supports it, else fp16 (lastvit.training.precision)
    },
}
