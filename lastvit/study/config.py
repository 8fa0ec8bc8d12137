"""What the study compares and at which scale: variants, data, model and recipe in one dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

# The paper's comparison for a label-supervised ViT (LaSt-ViT Tab. 9) at equal budget and recipe. K is
# a share of the patches: K = 1 is the released setting, K = N/7 Tab. 9's best (7 of 49 patches),
# mean pooling is K = N (GAP). K = N/2 is Tab. 8's best, a CLIP table: only an extra here.
VARIANTS = {
    "vit_cls": {"label": "ViT (CLS)", "pooling": "cls", "registers": 0},
    "vit_reg4": {"label": "ViT + 4 registers (CLS)", "pooling": "cls", "registers": 4},
    "vit_mean": {"label": "ViT (mean pooling, GAP = K = N)", "pooling": "mean", "registers": 0},
    "lastvit_k1": {"label": "LaSt-ViT (LazyStrike, K = 1)", "pooling": "lazystrike", "registers": 0, "top_k": 1},
    "lastvit_k7": {
        "label": "LaSt-ViT (LazyStrike, K = N/7)",
        "pooling": "lazystrike",
        "registers": 0,
        "top_k_ratio": 1 / 7,
    },
}
OPTIONAL_VARIANTS = {
    "vit_max": {"label": "ViT (max pooling; extra)", "pooling": "max", "registers": 0},
    "lastvit_khalf": {
        "label": "LaSt-ViT (LazyStrike, K = N/2; extra: Tab. 8's CLIP setting)",
        "pooling": "lazystrike",
        "registers": 0,
        "top_k_ratio": 0.5,
    },
}
REFERENCE = "vit_cls"
SHIPPED = "lastvit_k1"  # the trained model the report folder ships (the released setting)

# Declared before the study runs: each is (variant, metric) compared with the reference over seeds
# (paired t-test), Holm-corrected as one family. Everything else the report tests is secondary.
PRIMARY_ENDPOINTS = (
    ("lastvit_k1", "background/mixed_rand"),
    ("lastvit_k1", "background/bg_gap"),
    ("lastvit_k1", "auroc/patch_score"),
    ("lastvit_k7", "background/mixed_rand"),
    ("lastvit_k7", "background/bg_gap"),
    ("lastvit_k7", "auroc/patch_score"),
)


@dataclass
class StudyConfig:
    """One study. `scale` picks the defaults of every field left as None (see `SCALES`)."""

    output_dir: Path = Path("outputs/study")
    overwrite: bool = False
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    variants: tuple[str, ...] = tuple(VARIANTS)
    scale: str = "auto"  # "cpu", "long" (CPU, ~2 h), "gpu", or "auto" (gpu when CUDA is available)
    device: str = "auto"
    # data
    data_variant: str | None = None
    num_train: int | None = None
    num_validation: int | None = None
    num_test: int | None = None
    image_size: int | None = None
    scale_range: tuple[float, float] | None = None
    opacity: float | None = None
    clutter: int = 0
    data_seed: int = 0
    # backgrounds: P(background in the class's group) = rho + (1 - rho) / groups; 0 = no tie
    background_correlation: float | None = None
    background_groups: int = 5
    validation_fraction: float = 0.25  # of the training instances and backgrounds, carved out for tuning
    primary_endpoints: tuple[tuple[str, str], ...] = PRIMARY_ENDPOINTS
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
    probe_images: int = 300
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
        dropped = sorted({v for v, _ in self.primary_endpoints} - set(self.variants))
        if dropped:
            raise ValueError(
                f"The primary endpoints name variants {dropped} that this study does not train; keep them in "
                "the variants or declare other primary endpoints."
            )
        filled = {k: v for k, v in SCALES[scale].items() if getattr(self, k) is None}
        return dataclasses.replace(self, scale=scale, **filled)


# Defaults per scale. "cpu": the README's command 1 on 2 cores (within 20 minutes with installs);
# "long": the same study with more data and steps for about 2 hours of CPU; "gpu": the paper's token
# count (112 px / patch 8 = 196 patches). How each CPU default was chosen is in `CHOICES`.
_CPU = {
    "data_variant": "fashion",
    "num_train": 12800,
    "num_validation": 1000,
    "num_test": 1000,
    "image_size": 32,
    "scale_range": (0.5, 0.8),
    "opacity": 1.0,
    "background_correlation": 0.6,
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
}
SCALES = {
    "cpu": _CPU,
    "long": {**_CPU, "num_train": 32000, "num_test": 2000, "num_validation": 2000, "epochs": 4.0},
    "gpu": {
        **_CPU,
        "num_train": 60000,
        "num_validation": 5000,
        "num_test": 5000,
        "image_size": 112,
        "scale_range": (0.3, 0.5),
        "preset": "small",
        "epochs": 10.0,
        "batch_size": 256,
        "crop_scale_min": 0.8,
        "num_workers": 8,
        "mixed_precision": "bf16",
    },
}

CHOICES = {
    "background_correlation": (
        "rho = 0.6 (5 luminance groups) was checked on the validation split, never the test split: after 600 "
        "steps (seed 0) a CLS ViT's validation BG-gap (mixed-same - mixed-rand) was +0.217 at rho = 0.6 and "
        "-0.039 at rho = 0, so at 0.6 the reference measurably exploits the background; no other rho was tried "
        "(docs/study/learning_curves.json)"
    ),
    "steps": (
        "400 steps of 64 (2 epochs of 12,800 images): the CPU budget for 5 seeds x 5 variants in ~14 minutes "
        "of study time on 2 idle cores. The learning curves (validation top-1 vs steps, 600-step runs, "
        "docs/study/learning_curves.png) end at 0.226-0.243 in all three settings and gain at most 0.02 "
        "after step 400, so the quick run's budget costs little at this model and data scale"
    ),
    "data_and_recipe": (
        "object size 0.5-0.8 of the side, full opacity, micro ViT, AdamW 1e-3, no crop: carried over from "
        "earlier CPU pilots that were scored on the test split (the validation split did not exist then); kept, "
        "not re-tuned"
    ),
}
