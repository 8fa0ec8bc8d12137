"""The pre-training study's variants, metrics, options and pre-declared design (no torch: the CLI's
`--help` reads it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from lastvit.arguments import option
from lastvit.errors import LastViTUserError
from lastvit.training.config import PRESETS

from ..statistics import ALPHA

VARIANTS = {
    "dino_cls": {"family": "dino", "label": "DINO-CLS", "pooling": "cls"},
    "dino_k1": {"family": "dino", "label": "DINO-LazyStrike K=1", "pooling": "lazystrike", "top_k": 1},
    "dino_kn7": {"family": "dino", "label": "DINO-LazyStrike K=N/7", "pooling": "lazystrike", "top_k_ratio": 1 / 7},
    "clip_cls": {"family": "clip", "label": "CLIP-CLS", "pooling": "cls"},
    "clip_k1": {"family": "clip", "label": "CLIP-LazyStrike K=1", "pooling": "lazystrike", "top_k": 1},
    "clip_khalf": {"family": "clip", "label": "CLIP-LazyStrike K=N/2", "pooling": "lazystrike", "top_k_ratio": 0.5},
}
BASELINE = {"dino": "dino_cls", "clip": "clip_cls"}
# the main study's backgrounds challenge (ImageNet-9 style) on counterfactual renderings of the test
# scenes, through each image tower's own classifier (DINO: k-NN; CLIP: zero-shot): `lastvit.measure.counterfactual`
BACKGROUND_MEASURES = {
    "top1_only_fg": "top-1, only-FG",
    "top1_only_bg": "top-1, only-BG",
    "top1_mixed_same": "top-1, mixed-same BG",
    "top1_mixed_rand": "top-1, mixed-rand BG",
    "bg_gap": "BG-gap (mixed-same - mixed-rand)",
    "flip_rate": "flip rate (original -> mixed-rand)",
}
METRICS = {
    "dino": {
        "knn_top1": "k-NN top-1",
        "map_auroc": "Patch-Score AUROC",
        "point_in_box": "Patch-Score PiB",
        "corloc": "CorLoc",
        "segmentation_iou": "coarse seg. IoU",
        **{f"knn_{key}": f"k-NN {title}" for key, title in BACKGROUND_MEASURES.items()},
    },
    "clip": {
        "zero_shot_top1": "zero-shot top-1",
        "zero_shot_map_auroc": "zero-shot map AUROC",
        "patch_score_map_auroc": "Patch-Score AUROC",
        "zero_shot_miou": "zero-shot seg. mIoU",
        "zero_shot_map_pib": "zero-shot map PiB",
        "patch_score_point_in_box": "Patch-Score PiB",
        "patch_score_corloc": "CorLoc",
        "patch_score_segmentation_iou": "coarse seg. IoU",
        **{f"zero_shot_{key}": f"zero-shot {title}" for key, title in BACKGROUND_MEASURES.items()},
    },
}
# the metrics the secondary tests cover (the rest are shown, not tested): the headline accuracy, the
# threshold-free map scores, whose chance level (0.5) and ceiling (1.0) are known, and the accuracy
# on a random other background. Only-BG is not tested: these scenes draw backgrounds independently
# of the class, so it is at chance by construction (and BG-gap near 0)
TESTED = {
    "dino": ("knn_top1", "map_auroc", "knn_top1_mixed_rand"),
    "clip": ("zero_shot_top1", "zero_shot_map_auroc", "patch_score_map_auroc", "zero_shot_top1_mixed_rand"),
}
AUROC_NOTE = "AUROC against the exact per-patch object coverage: chance 0.5, ceiling 1.0, below 0.5 = background first"


@dataclass(kw_only=True)
class PilotOptions:
    """`lastvit-study-pretraining --pilot`: train one DINO variant for the first seed and write its curve."""

    pilot: str | None = option(
        None,
        "train only this DINO variant (e.g. dino_cls), first seed, and write its learning curve",
        metavar="VARIANT",
    )


@dataclass(kw_only=True)
class MergeOptions:
    """`lastvit-study-pretraining --merge`: one report from finished parts of a study."""

    merge: tuple[Path, ...] | None = option(
        None,
        "write one report to --output-dir from the report folders of finished parts of one study (e.g. "
        "--families dino and --families clip run side by side); trains nothing",
        metavar="DIR",
    )


class PretrainingStudyError(LastViTUserError):
    """The study cannot run as asked; the message says what to change."""


@dataclass(kw_only=True)
class PretrainingStudyConfig:
    """Data, models, the per-family budget and the pre-declared design; every variant of a family
    gets the same budget."""

    output_dir: Path = option(help="where the report goes (lastvit-study-pretraining: outputs/study_pretraining)")
    overwrite: bool = option(False, "replace an existing --output-dir")
    seeds: tuple[int, ...] = option((0, 1, 2, 3, 4), "training seeds (default: 0 1 2 3 4)")
    families: tuple[str, ...] = option(("dino", "clip"), "what to train", choices=("dino", "clip"))
    # the main study's learnable benchmark (Fashion-MNIST items, 0.65-0.9 of the side, held-out backgrounds;
    # the main study chose that size on its validation split)
    data_variant: str = option("fashion", "scenes variant (default: fashion)", choices=("scenes", "fashion"))
    num_train: int = option(8000, "training scenes (default: 8000)")
    num_val: int = option(
        1000, "validation scenes (training backgrounds) for DINO's k-NN learning curve (default: 1000)"
    )
    num_test: int = option(1000, "test scenes (default: 1000)")
    image_size: int = option(32, "image side in pixels (default: 32)")
    scale_range: tuple[float, float] = option(
        (0.65, 0.9),
        "the object's longer side as a share of the image side (default: 0.65 0.9)",
        metavar=("LOW", "HIGH"),
    )
    opacity: float = option(1.0, "object opacity (default: 1)")
    data_seed: int = option(0, "seed of the generated scenes (default: 0)")
    background_groups: int = option(
        5,
        "luminance groups of the counterfactual test backgrounds (the main study's): mixed-same draws a "
        "background from the object's class group, mixed-rand from another (default: 5)",
    )
    caption_rates: tuple[float, ...] = option(
        (0.0, 0.3, 0.6, 0.9),
        "the caption experiment's levels: shares of CLIP captions that also name the background, a shortcut "
        "past the object (default: 0 0.3 0.6 0.9)",
    )
    primary_clip_variant: str = option(
        "clip_k1",
        "the LazyStrike variant of the primary readout x caption-rate test (default: clip_k1)",
        choices=("clip_k1", "clip_khalf"),
    )
    preset: str = option("micro", "backbone size", choices=tuple(PRESETS))
    batch_size: int = option(64, "per-step batch of every run (default: 64)")
    dino_epochs: float = option(4, "DINO epochs (default: 4)")
    clip_epochs: float = option(4, "CLIP epochs (default: 4)")
    dino_out_dim: int = option(1024, "DINO prototypes (default: 1024)")
    # DINO's recipe: 0.996 -> 1 along a cosine (a teacher that copies the student does not converge)
    momentum_teacher: float = option(0.996, "DINO initial teacher momentum, cosine to 1 (default: 0.996)")
    # lr at batch 256 (DINO's linear rule): 4e-3 gives 1e-3 at batch 64
    dino_learning_rate: float = option(4e-3, "DINO lr at batch 256 (default: 4e-3)")
    num_local_crops: int = option(2, "DINO local crops per image (default: 2)")
    dino_knn_every: int = option(50, "steps between DINO k-NN curve points on the validation split (default: 50)")
    dino_diagnostics_every: int = option(10, "steps between DINO collapse diagnostics (default: 10)")
    progress: bool = option(False, "hide progress bars", flag="--no-progress")
    variants: tuple[str, ...] = field(init=False, metadata={"cli": False})

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        self.seeds = tuple(self.seeds)
        self.scale_range = tuple(self.scale_range)
        self.caption_rates = tuple(float(r) for r in self.caption_rates)
        unknown = set(self.families) - set(BASELINE)
        if unknown or not self.families:
            raise PretrainingStudyError(f"families must be among {sorted(BASELINE)}; got {list(self.families)}.")
        if not self.seeds:
            raise PretrainingStudyError("give at least one seed (five or more for the declared tests).")
        if len(set(self.caption_rates)) < 2 or not all(0.0 <= r <= 1.0 for r in self.caption_rates):
            raise PretrainingStudyError(
                f"caption_rates are the caption experiment's levels: at least two distinct shares in [0, 1]; got "
                f"{list(self.caption_rates)}."
            )
        if self.primary_clip_variant not in ("clip_k1", "clip_khalf"):
            raise PretrainingStudyError(
                f"primary_clip_variant is the LazyStrike variant of the primary test: clip_k1 or clip_khalf; got "
                f"{self.primary_clip_variant!r}."
            )
        if self.num_val < 1 and "dino" in self.families:
            raise PretrainingStudyError("num_val must be >= 1: DINO's learning curve reads a validation split.")
        self.variants = tuple(name for name, spec in VARIANTS.items() if spec["family"] in self.families)

    def record(self) -> dict:
        """The settings as report.json records them (paths as text)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_record(cls, record: dict, **overrides) -> PretrainingStudyConfig:
        """The config a report.json recorded (`record`), with `overrides`."""
        fields = {k: v for k, v in record.items() if k != "variants"} | overrides
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    @property
    def secondary_clip_variant(self) -> str:
        return "clip_khalf" if self.primary_clip_variant == "clip_k1" else "clip_k1"

    def design(self) -> dict:
        """The pre-declared tests, as report.json records them."""
        design = {"alpha": ALPHA, "correction": "holm (within each family's secondary tests)", "primary": {}}
        if "dino" in self.families:
            design["primary"]["dino"] = (
                "DINO-CLS learns: k-NN top-1 (test split) of the trained teacher minus its untrained twin, paired "
                f"t-test over {len(self.seeds)} seeds, two-sided, alpha {ALPHA}."
            )
        if "clip" in self.families:
            label = VARIANTS[self.primary_clip_variant]["label"]
            design["primary"]["clip"] = (
                f"readout x caption-rate interaction: per seed, the least-squares slope over the rates "
                f"{list(self.caption_rates)} of ({label} minus CLIP-CLS) zero-shot top-1; one-sample t-test of the "
                f"{len(self.seeds)} slopes against 0, two-sided, alpha {ALPHA}. Positive: LazyStrike's advantage grows "
                "with the share of captions that name the background."
            )
        design["secondary"] = (
            "exploratory: on the metrics "
            + "; ".join(f"{f.upper()}: {', '.join(TESTED[f])}" for f in self.families)
            + ", each LazyStrike readout vs CLS (trained), each model vs its untrained twin (CLIP: zero-shot top-1 "
            "only), its gain from training vs CLS's (DINO) and, for CLIP, the other LazyStrike variant's slope; "
            "Holm-adjusted within each family. The paper's thresholded map scores and the other measures of the "
            "backgrounds challenge (only-FG, only-BG, mixed-same top-1, BG-gap, flip rate) are shown, not tested."
        )
        return design


__all__ = [
    "AUROC_NOTE",
    "BACKGROUND_MEASURES",
    "BASELINE",
    "METRICS",
    "TESTED",
    "VARIANTS",
    "MergeOptions",
    "PilotOptions",
    "PretrainingStudyConfig",
    "PretrainingStudyError",
]
