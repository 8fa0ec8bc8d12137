"""The pre-training comparison (`lastvit-study-pretraining`): does LazyStrike help DINO and CLIP?

The paper's K per paradigm: DINO-CLS vs DINO-LazyStrike K = 1 (the released DINO checkpoint's) and
K = N/7; CLIP-CLS vs CLIP-LazyStrike K = 1 and K = N/2 (Tab. 8's best). Every variant trains on one
saved copy of the scenes with one recipe and step budget per family, for several seeds (each seed
trains every variant from the same initialisation seed on the same data), and is measured next to
its untrained twin (`lastvit.measure.pretrained_eval`).

The design is declared in the config before any run (`design`, written to report.json):

- DINO's primary test: does DINO-CLS learn? Its k-NN top-1 on the test split, trained vs its untrained
  twin, paired t-test over seeds. The runs also record DINO's collapse diagnostics and a k-NN learning
  curve on a validation split of the training scenes (never the test split).
- CLIP's primary test, the caption experiment: the share of captions that name the background (the
  shortcut past the object) is the factor, at `caption_rates`; every CLIP variant trains at every rate.
  The readout x rate interaction: per seed, the least-squares slope of (zero-shot top-1 of
  `primary_clip_variant` minus that of CLIP-CLS) over the rates; the slopes are tested against 0
  (one-sample t-test over seeds, two-sided). A positive slope means LazyStrike's advantage grows with
  the shortcut, as the paper's story predicts.
- Secondary tests (exploratory), on the tested metrics only (`TESTED`): each readout vs CLS, each
  model vs its untrained twin, and the other LazyStrike variant's slope; Holm-adjusted within each
  family, their count in the report. The paper's thresholded map scores (PiB, CorLoc, coarse
  segmentation) are shown as means next to the threshold-free AUROC against exact masks, untested.

report.md, report.json and figures are written whole (`write_folder`).

    from lastvit.study.pretraining import PretrainingStudyConfig, run_pretraining_study
    run_pretraining_study(PretrainingStudyConfig(output_dir="outputs/study_pretraining"))
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lastvit.arguments import option
from lastvit.data.fingerprint import scenes_fingerprint
from lastvit.errors import LastViTUserError
from lastvit.provenance import environment
from lastvit.training.config import PRESETS
from lastvit.training.loop import reset_accelerate

from .statistics import ALPHA, holm, mean_std, paired_test

VARIANTS = {
    "dino_cls": {"family": "dino", "label": "DINO-CLS", "pooling": "cls"},
    "dino_k1": {"family": "dino", "label": "DINO-LazyStrike K=1", "pooling": "lazystrike", "top_k": 1},
    "dino_kn7": {"family": "dino", "label": "DINO-LazyStrike K=N/7", "pooling": "lazystrike", "top_k_ratio": 1 / 7},
    "clip_cls": {"family": "clip", "label": "CLIP-CLS", "pooling": "cls"},
    "clip_k1": {"family": "clip", "label": "CLIP-LazyStrike K=1", "pooling": "lazystrike", "top_k": 1},
    "clip_khalf": {"family": "clip", "label": "CLIP-LazyStrike K=N/2", "pooling": "lazystrike", "top_k_ratio": 0.5},
}
BASELINE = {"dino": "dino_cls", "clip": "clip_cls"}
METRICS = {
    "dino": {
        "knn_top1": "k-NN top-1",
        "map_auroc": "Patch-Score AUROC",
        "point_in_box": "Patch-Score PiB",
        "corloc": "CorLoc",
        "segmentation_iou": "coarse seg. IoU",
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
        "zero_shot_top1_mixed_rand": "zero-shot top-1, mixed-rand BG",
        "zero_shot_top1_only_bg": "zero-shot top-1, only-BG",
    },
}
# the metrics the secondary tests cover (the rest are shown, not tested): the headline accuracy and
# the threshold-free map scores, whose chance level (0.5) and ceiling (1.0) are known
TESTED = {
    "dino": ("knn_top1", "map_auroc"),
    "clip": ("zero_shot_top1", "zero_shot_map_auroc", "patch_score_map_auroc"),
}
# the main study's counterfactual backgrounds (ImageNet-9 style) for the image towers
COUNTERFACTUALS = ("mixed_rand", "only_bg")
AUROC_NOTE = "AUROC against the exact per-patch object coverage: chance 0.5, ceiling 1.0, below 0.5 = background first"


@dataclass(kw_only=True)
class PilotOptions:
    """`lastvit-study-pretraining --pilot`: train one DINO variant for the first seed and write its curve."""

    pilot: str | None = option(
        None,
        "train only this DINO variant (e.g. dino_cls), first seed, and write its learning curve",
        metavar="VARIANT",
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
    # the main study's learnable benchmark (Fashion-MNIST items, 0.5-0.8 of the side, held-out backgrounds)
    data_variant: str = option("fashion", "scenes variant (default: fashion)", choices=("scenes", "fashion"))
    num_train: int = option(8000, "training scenes (default: 8000)")
    num_val: int = option(
        1000, "validation scenes (training backgrounds) for DINO's k-NN learning curve (default: 1000)"
    )
    num_test: int = option(1000, "test scenes (default: 1000)")
    image_size: int = option(32, "image side in pixels (default: 32)")
    scale_range: tuple[float, float] = option(
        (0.5, 0.8), "the object's longer side as a share of the image side (default: 0.5 0.8)", metavar=("LOW", "HIGH")
    )
    opacity: float = option(1.0, "object opacity (default: 1)")
    data_seed: int = option(0, "seed of the generated scenes (default: 0)")
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
            "Holm-adjusted within each family. The paper's thresholded map scores are shown, not tested."
        )
        return design


def _log(start: float, message: str) -> None:
    print(f"[{(time.time() - start) / 60:5.1f} min] {message}", flush=True)


def build_data(config: PretrainingStudyConfig):
    """The scenes: ``train``, ``validation`` (more scenes of the training distribution, for DINO's
    learning curve) and ``test`` (held-out backgrounds)."""
    import datasets

    from lastvit.data.scenes import build_scenes

    data = build_scenes(
        config.num_train + config.num_val,
        config.num_test,
        image_size=config.image_size,
        seed=config.data_seed,
        variant=config.data_variant,
        scale_range=config.scale_range,
        opacity=config.opacity,
        progress=config.progress,
    )
    train = data["train"]
    return datasets.DatasetDict(
        train=train.select(range(config.num_train)),
        validation=train.select(range(config.num_train, len(train))),
        test=data["test"],
    )


def with_captions(data, config: PretrainingStudyConfig, rate: float):
    """`data` with a caption column (`text`) whose `rate` share names the background. The draws do not
    depend on the rate, so a caption that names the background at one rate names it at every higher rate."""
    import datasets

    from lastvit.clip.captions import scene_captions

    names = data["train"].features["label"].names
    out = {}
    for offset, split in enumerate(("train", "test")):
        captions = scene_captions(
            data[split]["label"],
            data[split]["background_id"],
            names,
            seed=config.data_seed * 7 + offset,
            background_rate=rate,
        )
        out[split] = data[split].add_column("text", captions)
    return datasets.DatasetDict(out)


def counterfactual_sets(config: PretrainingStudyConfig, data) -> dict:
    """HOOK for the main study's counterfactual backgrounds (issue 25): ``{"mixed_rand": split,
    "only_bg": split}``, test scenes whose object sits on a random other background / whose object is
    removed, with the original labels. The scenes code (`lastvit.data.scenes`) does not render them
    yet, so this returns ``{}`` and the report says they were not measured; once it does, return its
    splits here and `measure_counterfactuals` adds the image towers' zero-shot top-1 on each."""
    return {}


def measure_counterfactuals(model, tokenizer, splits: dict, class_names, seed: int) -> dict:
    """``{"trained": {...}, "untrained": {...}}`` zero-shot top-1 on each counterfactual split."""
    from lastvit.measure.pretrained_eval import evaluate_clip_model

    measured = {"trained": {}, "untrained": {}}
    for kind, split in splits.items():
        for side, values in evaluate_clip_model(model, tokenizer, split, class_names, seed=seed).items():
            measured[side][f"zero_shot_top1_{kind}"] = values["zero_shot_top1"]
    return measured


def _common_arguments(config: PretrainingStudyConfig, name: str, seed: int, data_path: Path, out: Path) -> dict:
    """The trainer flags every study run shares (DINO and CLIP)."""
    spec = VARIANTS[name]
    return {
        "output_dir": out,
        "dataset": str(data_path),
        "eval_split": "test",
        "image_size": config.image_size,
        "preset": config.preset,
        "batch_size": config.batch_size,
        "seed": seed,
        "overwrite": True,
        "progress": config.progress,
        "save_every": 10**9,  # only the final checkpoint: the study never resumes
        "pooling": spec["pooling"],
        "top_k": spec.get("top_k"),
        "top_k_ratio": spec.get("top_k_ratio"),
    }


def dino_arguments(config: PretrainingStudyConfig, name: str, seed: int, data_path: Path, out: Path):
    """The `DINOTrainingArguments` of one study run (the pilot uses the same)."""
    from lastvit.training.dino_trainer import DINOTrainingArguments

    return DINOTrainingArguments(
        curve_split="validation",
        epochs=config.dino_epochs,
        out_dim=config.dino_out_dim,
        num_local_crops=config.num_local_crops,
        momentum_teacher=config.momentum_teacher,
        learning_rate=config.dino_learning_rate,
        knn_every=config.dino_knn_every,
        diagnostics_every=config.dino_diagnostics_every,
        **_common_arguments(config, name, seed, data_path, out),
    )


def train_and_measure(
    config: PretrainingStudyConfig, name: str, seed: int, data, data_path: Path, out: Path, extra=None
) -> dict:
    """Train one variant for one seed into `out` and measure it and its untrained twin (DINO: the
    trainer's own `evaluate_backbone`, with its curves; CLIP: the saved folder loaded back with the
    Auto classes, plus the counterfactual splits `extra` when given):
    ``{"trained": {...}, "untrained": {...}, "final_loss": ..., "steps": ...}``."""
    from transformers import AutoModel, AutoTokenizer

    from lastvit.measure.pretrained_eval import evaluate_clip_model, flat_clip

    spec = VARIANTS[name]
    if spec["family"] == "dino":
        from lastvit.training.dino_trainer import train_dino

        trained = train_dino(dino_arguments(config, name, seed, data_path, out))
        reset_accelerate()
        # the trainer measured the teacher and its exact untrained start (`evaluate_backbone`)
        measured = {"trained": trained["teacher"], "untrained": trained["untrained"], "curves": trained["curves"]}
    else:
        from lastvit.clip.captions import readable
        from lastvit.clip.training import CLIPTrainingArguments, train_clip

        trained = train_clip(
            CLIPTrainingArguments(epochs=config.clip_epochs, **_common_arguments(config, name, seed, data_path, out))
        )
        reset_accelerate()
        model = AutoModel.from_pretrained(out, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
        names = [readable(n) for n in data["test"].features["label"].names]
        measured = evaluate_clip_model(model, tokenizer, data["test"], names, seed=seed)
        measured = {side: flat_clip(values) for side, values in measured.items()}
        if extra:
            for side, values in measure_counterfactuals(model, tokenizer, extra, names, seed).items():
                measured[side].update(values)
    return {**measured, "seed": seed, "final_loss": trained.get("final_loss"), "steps": trained.get("step")}


# ------------------------------------------------------------------------------------------------
# Tests and summaries
# ------------------------------------------------------------------------------------------------


def slope(rates, values) -> float:
    """Least-squares slope of `values` over `rates`."""
    x, y = np.asarray(rates, dtype=np.float64), np.asarray(values, dtype=np.float64)
    return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())


def _runs(per_seed: dict, name: str, rate: float | None = None) -> list[dict]:
    """The runs of `name` (at caption `rate` for CLIP), in seed order."""
    runs = [r for r in per_seed[name] if rate is None or r.get("caption_rate") == rate]
    return sorted(runs, key=lambda r: r.get("seed", 0))


def _values(runs, side: str, metric: str) -> list[float] | None:
    if not runs or not all(metric in r[side] for r in runs):
        return None
    return [r[side][metric] for r in runs]


def _describe(runs, metric):
    trained, untrained = _values(runs, "trained", metric), _values(runs, "untrained", metric)
    if trained is None or untrained is None:
        return None
    return {"trained": mean_std(trained), "untrained": mean_std(untrained)}


def interaction_test(config: PretrainingStudyConfig, per_seed: dict, variant: str, metric="zero_shot_top1") -> dict:
    """The readout x rate interaction of `variant`: per seed, the slope over the rates of
    (variant minus CLIP-CLS) `metric`; a one-sample t-test of the slopes against 0."""
    seeds = [r["seed"] for r in _runs(per_seed, variant, config.caption_rates[0])]
    differences = {}
    for rate in config.caption_rates:
        runs, cls_runs = _runs(per_seed, variant, rate), _runs(per_seed, "clip_cls", rate)
        differences[rate] = [r["trained"][metric] - c["trained"][metric] for r, c in zip(runs, cls_runs)]
    slopes = [
        slope(config.caption_rates, [differences[rate][i] for rate in config.caption_rates]) for i in range(len(seeds))
    ]
    test = paired_test(slopes, [0.0] * len(slopes))
    return {
        **test,
        "slopes": slopes,
        "seeds": seeds,
        "difference_by_rate": {str(rate): mean_std(d) for rate, d in differences.items()},
    }


def _test_entry(family, kind, description, test) -> dict:
    return {"family": family, "kind": kind, "description": description, **test}


def study_tests(config: PretrainingStudyConfig, per_seed: dict) -> list[dict]:
    """Every test the design declares, primary first, each with its Holm-adjusted p (secondary tests:
    within their family) and ``real`` (the adjusted p, or the primary's own p, below alpha)."""
    tests = []
    for family in config.families:
        titles, baseline = METRICS[family], BASELINE[family]
        names = [n for n in config.variants if VARIANTS[n]["family"] == family]
        family_tests = []
        if family == "dino":
            primary = _test_entry(
                "dino",
                "primary",
                "DINO-CLS k-NN top-1: trained vs untrained twin",
                paired_test(
                    *(_values(_runs(per_seed, baseline), side, "knn_top1") for side in ("trained", "untrained"))
                ),
            )
            for name in names:
                runs, cls_runs = _runs(per_seed, name), _runs(per_seed, baseline)
                label = VARIANTS[name]["label"]
                for metric in TESTED[family]:
                    trained, untrained = _values(runs, "trained", metric), _values(runs, "untrained", metric)
                    if trained is None or untrained is None:
                        continue
                    if not (name == baseline and metric == "knn_top1"):
                        family_tests.append(
                            _test_entry(
                                family,
                                "secondary",
                                f"{label} {titles[metric]}: trained vs untrained twin",
                                paired_test(trained, untrained),
                            )
                        )
                    if name == baseline:
                        continue
                    cls_trained, cls_untrained = (
                        _values(cls_runs, "trained", metric),
                        _values(cls_runs, "untrained", metric),
                    )
                    family_tests.append(
                        _test_entry(
                            family,
                            "secondary",
                            f"{label} {titles[metric]}: trained vs trained CLS",
                            paired_test(trained, cls_trained),
                        )
                    )
                    family_tests.append(
                        _test_entry(
                            family,
                            "secondary",
                            f"{label} {titles[metric]}: gain from training vs CLS's gain",
                            paired_test(
                                [t - u for t, u in zip(trained, untrained)],
                                [t - u for t, u in zip(cls_trained, cls_untrained)],
                            ),
                        )
                    )
        else:
            primary = _test_entry(
                "clip",
                "primary",
                f"{VARIANTS[config.primary_clip_variant]['label']} minus CLIP-CLS zero-shot top-1: slope over the "
                "caption rates",
                interaction_test(config, per_seed, config.primary_clip_variant),
            )
            other = config.secondary_clip_variant
            family_tests.append(
                _test_entry(
                    "clip",
                    "secondary",
                    f"{VARIANTS[other]['label']} minus CLIP-CLS zero-shot top-1: slope over the caption rates",
                    interaction_test(config, per_seed, other),
                )
            )
            for rate in config.caption_rates:
                for name in names:
                    runs, cls_runs = _runs(per_seed, name, rate), _runs(per_seed, baseline, rate)
                    label = f"{VARIANTS[name]['label']} at rate {rate}"
                    trained = _values(runs, "trained", "zero_shot_top1")
                    family_tests.append(
                        _test_entry(
                            family,
                            "secondary",
                            f"{label} zero-shot top-1: trained vs untrained twin",
                            paired_test(trained, _values(runs, "untrained", "zero_shot_top1")),
                        )
                    )
                    if name == baseline:
                        continue
                    for metric in TESTED[family]:
                        values, cls_values = _values(runs, "trained", metric), _values(cls_runs, "trained", metric)
                        if values is None or cls_values is None:
                            continue
                        family_tests.append(
                            _test_entry(
                                family,
                                "secondary",
                                f"{label} {titles[metric]}: trained vs trained CLS",
                                paired_test(values, cls_values),
                            )
                        )
        primary["p_adjusted"] = primary["p"]
        primary["real"] = bool(primary["p"] < ALPHA)
        adjusted = holm([t["p"] for t in family_tests])
        for test, p in zip(family_tests, adjusted):
            test["p_adjusted"] = p
            test["real"] = bool(p < ALPHA)
        tests += [primary, *family_tests]
    return tests


def summarise(config: PretrainingStudyConfig, per_seed: dict) -> dict:
    """Mean ± std per variant and metric, trained and untrained twin: DINO ``{name: {metric: ...}}``,
    CLIP ``{name: {rate: {metric: ...}}}``; and for DINO the mean k-NN curve over seeds and the
    last collapse diagnostics."""
    summary = {}
    for name in config.variants:
        family = VARIANTS[name]["family"]
        if family == "dino":
            runs = _runs(per_seed, name)
            entry = {"metrics": {m: d for m in METRICS[family] if (d := _describe(runs, m))}}
            curves = [r["curves"] for r in runs if r.get("curves")]
            if curves and all(c["knn_curve"] for c in curves):
                steps = [p["step"] for p in curves[0]["knn_curve"]]
                entry["knn_curve"] = {
                    "steps": steps,
                    "mean": [
                        float(np.mean([c["knn_curve"][i]["knn_top1"] for c in curves])) for i in range(len(steps))
                    ],
                    "per_seed": [[p["knn_top1"] for p in c["knn_curve"]] for c in curves],
                }
            if curves and all(c["diagnostics"] for c in curves):
                last = [c["diagnostics"][-1] for c in curves]
                entry["final_diagnostics"] = {
                    key: mean_std([d[key] for d in last])
                    for key in ("teacher_entropy", "teacher_batch_entropy", "kl", "center_norm")
                }
                entry["final_diagnostics"]["step"] = last[0]["step"]
        else:
            entry = {
                "by_rate": {
                    str(rate): {m: d for m in METRICS[family] if (d := _describe(_runs(per_seed, name, rate), m))}
                    for rate in config.caption_rates
                }
            }
        summary[name] = entry
    return summary


def _cell(stats: dict) -> str:
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _p(test: dict, key: str = "p") -> str:
    value = test.get(key, math.nan)
    return "no test" if math.isnan(value) else f"{value:.3f}"


def verdict(config: PretrainingStudyConfig, results: dict) -> list[str]:
    """Plain sentences, primary results first, each carried by a number in report.json."""
    tests, summary = results["tests"], results["summary"]
    lines = []
    for test in (t for t in tests if t["kind"] == "primary"):
        if test["family"] == "dino":
            stats = summary["dino_cls"]["metrics"]["knn_top1"]
            said = (
                f"DINO-CLS k-NN top-1 {_cell(stats['trained'])} vs its untrained twin {_cell(stats['untrained'])} "
                f"(difference {test['mean_difference']:+.3f}, p = {_p(test)}, {test['n']} seeds): "
            )
            if test["real"] and test["mean_difference"] > 0:
                said += "DINO-CLS learned above its untrained start by a margin the seeds support."
            elif test["real"]:
                said += "training lowered it below the untrained start by a margin the seeds support."
            else:
                said += (
                    "not shown to learn at this budget; the learning curves and collapse diagnostics below show "
                    "whether it collapsed or learns slowly."
                )
            lines.append("Primary (DINO): " + said)
        else:
            label = VARIANTS[config.primary_clip_variant]["label"]
            by_rate = ", ".join(
                f"{float(rate):.1f}: {stats['mean']:+.3f}" for rate, stats in test["difference_by_rate"].items()
            )
            said = (
                f"{label} minus CLIP-CLS zero-shot top-1 by caption rate ({by_rate}); mean slope "
                f"{test['mean_difference']:+.3f} per unit rate (p = {_p(test)}, {test['n']} seeds): "
            )
            if test["real"]:
                said += (
                    "LazyStrike's advantage "
                    + ("grows" if test["mean_difference"] > 0 else "shrinks")
                    + " with the share of background captions, by a margin the seeds support."
                )
            else:
                said += "no trend with the caption rate that the seeds support."
            lines.append("Primary (CLIP): " + said)
    for family in config.families:
        secondary = [t for t in tests if t["family"] == family and t["kind"] == "secondary"]
        real = [t for t in secondary if t["real"]]
        if real:
            found = "; ".join(
                f"{t['description']} ({t['mean_difference']:+.3f}, Holm p = {t['p_adjusted']:.3f})" for t in real
            )
            lines.append(
                f"Exploratory ({family.upper()}, {len(secondary)} tests, Holm): {len(real)} survive the correction: {found}."
            )
        else:
            lines.append(
                f"Exploratory ({family.upper()}, {len(secondary)} tests, Holm): none survives the correction."
            )
    return lines


def markdown(config: PretrainingStudyConfig, results: dict, figures: list[str]) -> str:
    summary, tests = results["summary"], results["tests"]
    rates = ", ".join(f"{r:.1f}" for r in config.caption_rates)
    lines = [
        "# LazyStrike in self-supervised (DINO) and image-text (CLIP) training",
        "",
        (
            f"Scenes ({config.data_variant}, objects {config.scale_range[0]}-{config.scale_range[1]} of the side): "
            f"{config.num_train} training, {config.num_val} validation (training backgrounds; DINO's learning curve) "
            f"and {config.num_test} test images (held-out backgrounds) at {config.image_size} px (data seed "
            f"{config.data_seed}). `{config.preset}` backbones, batch {config.batch_size}. DINO {config.dino_epochs} "
            f"epochs (lr {config.dino_learning_rate} at batch 256, teacher momentum {config.momentum_teacher} -> 1, "
            f"{config.dino_out_dim} prototypes, {config.num_local_crops} local crops); CLIP {config.clip_epochs} "
            f"epochs at each caption rate ({rates}: the share of captions that also name the background). Seeds "
            f"{list(config.seeds)}; every variant of a family gets the same steps. Chance = {results['chance']:.3f}. "
            f"Run time {results['minutes']:.1f} min ({results['environment']['device']})."
        ),
        "",
        "## Design (declared in the config before the run)",
        "",
        *[f"- Primary, {family.upper()}: {text}" for family, text in results["design"]["primary"].items()],
        f"- Secondary: {results['design']['secondary']}",
        "",
        "## Results",
        "",
        *[f"- {line}" for line in results["verdict"]],
        "",
    ]
    if "dino" in config.families:
        names = [n for n in config.variants if VARIANTS[n]["family"] == "dino"]
        lines += _dino_sections(config, summary, names)
    if "clip" in config.families:
        names = [n for n in config.variants if VARIANTS[n]["family"] == "clip"]
        lines += _clip_sections(config, results, names)
    secondary = [t for t in tests if t["kind"] == "secondary"]
    lines += [
        f"## Secondary tests (exploratory, {len(secondary)} in all)",
        "",
        "Paired t-tests over seeds; p-values Holm-adjusted within each family. Mean difference (p, Holm p).",
        "",
        "| family | test | mean difference | p | Holm p |",
        "|---|---|---|---|---|",
        *[
            f"| {t['family'].upper()} | {t['description']} | {t['mean_difference']:+.3f} | {_p(t)} | "
            f"{_p(t, 'p_adjusted')}{' (real)' if t['real'] else ''} |"
            for t in secondary
        ],
        "",
        *[f"![{name}]({name})" for name in figures],
        "",
        (
            f"With {len(config.seeds)} seeds only large, consistent differences reach p < {ALPHA}; 'not shown' and "
            "'none survives' are not evidence of no effect. Patch-Score maps compare each patch with the global "
            "feature, so the readout changes them even untrained: compare each model with its untrained twin."
        ),
        "",
    ]
    return "\n".join(lines)


def _dino_sections(config, summary, names) -> list[str]:
    labels = [VARIANTS[n]["label"] for n in names]
    header = ["| metric | " + " | ".join(labels) + " |", "|" + "---|" * (len(names) + 1)]
    lines = ["## DINO", "", "Test split; mean ± std over seeds, each untrained twin below.", "", *header]
    for metric, title in METRICS["dino"].items():
        if all(metric in summary[n]["metrics"] for n in names):
            lines.append(
                f"| {title} | " + " | ".join(_cell(summary[n]["metrics"][metric]["trained"]) for n in names) + " |"
            )
            lines.append(
                f"| {title}, untrained | "
                + " | ".join(_cell(summary[n]["metrics"][metric]["untrained"]) for n in names)
                + " |"
            )
    lines += [
        "",
        f"{AUROC_NOTE}. PiB, CorLoc and coarse segmentation are the paper's thresholded scores, untested.",
        "",
    ]
    if all("knn_curve" in summary[n] for n in names):
        steps = summary[names[0]]["knn_curve"]["steps"]
        lines += [
            "### Learning curves: k-NN top-1 on the validation split (mean over seeds; step 0 = untrained)",
            "",
            "| step | " + " | ".join(labels) + " |",
            "|" + "---|" * (len(names) + 1),
        ]
        for i, step in enumerate(steps):
            lines.append(
                f"| {step} | " + " | ".join(f"{summary[n]['knn_curve']['mean'][i]:.3f}" for n in names) + " |"
            )
        lines.append("")
    if all("final_diagnostics" in summary[n] for n in names):
        log_k = math.log(config.dino_out_dim)
        lines += [
            f"### Collapse diagnostics at the last logged step (nats; log({config.dino_out_dim}) = {log_k:.2f})",
            "",
            "| diagnostic | " + " | ".join(labels) + " |",
            "|" + "---|" * (len(names) + 1),
        ]
        for key, title in (
            ("teacher_entropy", "teacher entropy per image"),
            ("teacher_batch_entropy", "entropy of the batch's mean teacher"),
            ("kl", "KL(teacher ‖ student)"),
            ("center_norm", "centre norm"),
        ):
            lines.append(
                f"| {title} | " + " | ".join(_cell(summary[n]["final_diagnostics"][key]) for n in names) + " |"
            )
        lines += [
            "",
            (
                "A teacher entropy near log(K) with a KL near 0 is collapse to the uniform distribution; both "
                "entropies near 0 is collapse onto one prototype; a falling per-image entropy with a high batch "
                "entropy and a KL above 0 is a run that is learning."
            ),
            "",
        ]
    return lines


def _clip_sections(config, results, names) -> list[str]:
    summary = results["summary"]
    labels = [VARIANTS[n]["label"] for n in names]
    lines = ["## CLIP", "", "Test split; mean ± std over seeds (untrained twin in brackets), per caption rate.", ""]
    metrics = [
        m
        for m in METRICS["clip"]
        if all(m in summary[n]["by_rate"][str(r)] for n in names for r in config.caption_rates)
    ]
    for metric in metrics:
        lines += [
            f"**{METRICS['clip'][metric]}**",
            "",
            "| caption rate | " + " | ".join(labels) + " |",
            "|" + "---|" * (len(names) + 1),
        ]
        for rate in config.caption_rates:
            cells = []
            for n in names:
                stats = summary[n]["by_rate"][str(rate)][metric]
                cells.append(f"{_cell(stats['trained'])} ({stats['untrained']['mean']:.3f})")
            lines.append(f"| {rate:.1f} | " + " | ".join(cells) + " |")
        lines.append("")
    missing = [k for k in COUNTERFACTUALS if f"zero_shot_top1_{k}" not in metrics]
    lines += [
        f"{AUROC_NOTE}. PiB, CorLoc, coarse segmentation and mIoU are the paper's thresholded scores, untested.",
        "",
    ]
    if missing:
        lines += [
            (
                "Counterfactual backgrounds (" + ", ".join(missing) + "): not measured; the scenes code renders no "
                "counterfactual test sets yet (`lastvit.study.pretraining.counterfactual_sets` is the hook)."
            ),
            "",
        ]
    return lines


def _label_axis(axis, xlabel: str, ylabel: str) -> None:
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)


def write_figures(folder: Path, config: PretrainingStudyConfig, results: dict) -> list[str]:
    from lastvit.measure.plots import _figure, _save, plot_seed_points

    per_seed, summary, names = results["per_seed"], results["summary"], []
    if "dino" in config.families:
        dino = [n for n in config.variants if VARIANTS[n]["family"] == "dino"]
        values = {}
        for metric in TESTED["dino"]:
            models = {}
            for n in dino:
                runs = _runs(per_seed, n)
                short = VARIANTS[n]["label"].replace("LazyStrike ", "LS ")
                if _values(runs, "trained", metric) is not None:
                    models[short] = _values(runs, "trained", metric)
                    models[short + " untr."] = _values(runs, "untrained", metric)
            if models:
                values[METRICS["dino"][metric]] = models
        plot_seed_points(values, folder / "dino.png")
        names.append("dino.png")
        if all("knn_curve" in summary[n] for n in dino):
            figure = _figure(5, 3.4)
            axis = figure.subplots()
            for n in dino:
                curve = summary[n]["knn_curve"]
                axis.plot(curve["steps"], curve["mean"], marker="o", markersize=3, label=VARIANTS[n]["label"])
            axis.axhline(results["chance"], color="black", linestyle="--", linewidth=1, label="chance")
            _label_axis(axis, "step", "k-NN top-1 (validation)")
            _save(figure, folder / "dino_curves.png")
            names.append("dino_curves.png")
    if "clip" in config.families:
        figure = _figure(5, 3.4)
        axis = figure.subplots()
        for test in results["tests"]:
            if test["family"] == "clip" and "slopes" in test:
                rates = [float(r) for r in test["difference_by_rate"]]
                means = [v["mean"] for v in test["difference_by_rate"].values()]
                axis.plot(rates, means, marker="o", label=test["description"].split(" minus")[0] + " − CLS")
        axis.axhline(0.0, color="black", linewidth=1)
        _label_axis(axis, "share of captions naming the background", "zero-shot top-1 difference (mean over seeds)")
        _save(figure, folder / "clip_rates.png")
        names.append("clip_rates.png")
    return names


def write_report(out: Path, config: PretrainingStudyConfig, results: dict) -> dict:
    """Tests, summary, sentences, report.md, report.json and figures from ``results["per_seed"]``,
    written whole."""
    from lastvit.files import write_folder

    results = {**results, "design": config.design()}
    results["tests"] = study_tests(config, results["per_seed"])
    results["summary"] = summarise(config, results["per_seed"])
    results["verdict"] = verdict(config, results)

    def write(folder: Path):
        figures = write_figures(folder, config, results)
        (folder / "report.json").write_text(json.dumps(results, indent=2))
        (folder / "report.md").write_text(markdown(config, results, figures))

    write_folder(out, write)
    return results


def rewrite_report(folder) -> dict:
    """Regenerate a finished study's report from its report.json (after a change to the report code),
    without training again."""
    results = json.loads((Path(folder) / "report.json").read_text())
    if "design" not in results:
        raise PretrainingStudyError(
            f"{folder}/report.json predates the pre-declared design (no caption rates, no curves); run the study again."
        )
    fields = {k: v for k, v in results["config"].items() if k != "variants"}
    config = PretrainingStudyConfig(
        **{
            **fields,
            "seeds": tuple(fields["seeds"]),
            "families": tuple(fields["families"]),
            "caption_rates": tuple(fields["caption_rates"]),
        }
    )
    return write_report(Path(folder), config, results)


def _save_data(config, data, work: Path) -> dict:
    """Save the scenes once per CLIP caption rate (and once for DINO); ``{key: path}``."""
    paths = {}
    if "dino" in config.families:
        paths["dino"] = work / "data-dino"
        data.save_to_disk(str(paths["dino"]))
    if "clip" in config.families:
        for rate in config.caption_rates:
            paths[rate] = work / f"data-clip-{rate}"
            with_captions(data, config, rate).save_to_disk(str(paths[rate]))
    return paths


def run_pretraining_study(config: PretrainingStudyConfig) -> dict:
    """Train and measure every variant for every seed (CLIP: at every caption rate), then write the
    report folder whole. Returns what ``report.json`` holds."""
    from lastvit.files import is_nonempty_dir

    start = time.time()
    out = Path(config.output_dir)
    if is_nonempty_dir(out) and not config.overwrite:
        raise PretrainingStudyError(
            f"{out} already holds files; pass --overwrite to replace them or choose another --output-dir."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.work.", dir=out.parent))
    try:
        _log(start, "the declared design: " + json.dumps(config.design(), indent=2))  # before any run
        _log(start, f"building {config.num_train} + {config.num_val} + {config.num_test} scenes ...")
        data = build_data(config)
        data_fingerprint = scenes_fingerprint(data)
        paths = _save_data(config, data, work)
        extra = counterfactual_sets(config, data) if "clip" in config.families else {}
        per_seed = {name: [] for name in config.variants}
        jobs = [
            (seed, name, rate)
            for seed in config.seeds
            for name in config.variants
            for rate in ((None,) if VARIANTS[name]["family"] == "dino" else config.caption_rates)
        ]
        for index, (seed, name, rate) in enumerate(jobs):
            where = "" if rate is None else f", caption rate {rate}"
            _log(start, f"[{index + 1}/{len(jobs)}] training {VARIANTS[name]['label']}, seed {seed}{where}")
            run_dir = work / "runs" / f"{name}-seed{seed}-{rate}"
            run = train_and_measure(config, name, seed, data, paths["dino" if rate is None else rate], run_dir, extra)
            if rate is not None:
                run["caption_rate"] = rate
            per_seed[name].append(run)
            _log(start, "    " + ", ".join(f"{k} {v:.3f}" for k, v in run["trained"].items()))
            shutil.rmtree(run_dir)
        results = {
            "question": (
                "Does LazyStrike (DINO: K = 1, N/7; CLIP: K = 1, N/2) change what DINO and CLIP models learn, vs "
                "the CLS readout, and does its CLIP advantage grow with the background-caption shortcut?"
            ),
            "chance": 1 / len(data["test"].features["label"].names),
            "class_names": data["test"].features["label"].names,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
            "variants": {name: VARIANTS[name] for name in config.variants},
            "environment": environment("cpu"),
            "data_fingerprint": data_fingerprint,
            "per_seed": per_seed,
            "minutes": (time.time() - start) / 60,
        }
        return write_report(out, config, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# The DINO pilot: one variant, one seed, its learning curve
# ------------------------------------------------------------------------------------------------


def run_dino_pilot(config: PretrainingStudyConfig, name: str = "dino_cls", command: str | None = None) -> dict:
    """Train one DINO variant for the first seed at the study's settings and write its k-NN learning
    curve (validation split; step 0 = the untrained start), collapse diagnostics and the final test
    k-NN next to the untrained twin to ``pilot.json``, ``pilot.png`` and ``pilot.md`` in
    `config.output_dir` (written whole). Used to pick the study's DINO budget."""
    from lastvit.files import is_nonempty_dir, write_folder

    if VARIANTS.get(name, {}).get("family") != "dino":
        raise PretrainingStudyError(
            f"--pilot takes a DINO variant ({', '.join(n for n in VARIANTS if n.startswith('dino'))}); got {name!r}."
        )
    start = time.time()
    out = Path(config.output_dir)
    if is_nonempty_dir(out) and not config.overwrite:
        raise PretrainingStudyError(f"{out} already holds files; pass --overwrite or choose another --output-dir.")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.work.", dir=out.parent))
    try:
        data = build_data(config)
        data_fingerprint = scenes_fingerprint(data)
        data.save_to_disk(str(work / "data"))
        seed = config.seeds[0]
        _log(start, f"pilot: {VARIANTS[name]['label']}, seed {seed}, {config.dino_epochs} epochs")
        run = train_and_measure(config, name, seed, data, work / "data", work / "run")
        reset_accelerate()
        pilot = {
            "variant": name,
            "label": VARIANTS[name]["label"],
            "seed": seed,
            "command": command,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
            "chance": 1 / len(data["test"].features["label"].names),
            "test": {"trained": run["trained"], "untrained": run["untrained"]},
            "steps": run["steps"],
            "final_loss": run["final_loss"],
            "curves": run["curves"],
            "environment": environment("cpu"),
            "data_fingerprint": data_fingerprint,
            "minutes": (time.time() - start) / 60,
        }

        def write(folder: Path):
            (folder / "pilot.json").write_text(json.dumps(pilot, indent=2))
            _pilot_figure(pilot, folder / "pilot.png")
            (folder / "pilot.md").write_text(pilot_markdown(pilot))

        write_folder(out, write)
        return pilot
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pilot_figure(pilot: dict, path: Path) -> None:
    from lastvit.measure.plots import _figure, _save

    figure = _figure(9, 3.2)
    left, right = figure.subplots(1, 2)
    curve = pilot["curves"]["knn_curve"]
    left.plot(
        [p["step"] for p in curve], [p["knn_top1"] for p in curve], marker="o", markersize=3, label=pilot["label"]
    )
    left.axhline(curve[0]["knn_top1"], color="tab:gray", linestyle=":", label="untrained (step 0)")
    left.axhline(pilot["chance"], color="black", linestyle="--", linewidth=1, label="chance")
    _label_axis(left, "step", "k-NN top-1 (validation)")
    diagnostics = pilot["curves"]["diagnostics"]
    steps = [d["step"] for d in diagnostics]
    for key, label in (
        ("teacher_entropy", "teacher entropy"),
        ("teacher_batch_entropy", "batch-mean entropy"),
        ("kl", "KL(t‖s)"),
    ):
        right.plot(steps, [d[key] for d in diagnostics], label=label)
    right.axhline(math.log(pilot["config"]["dino_out_dim"]), color="black", linestyle="--", linewidth=1, label="log K")
    _label_axis(right, "step", "nats")
    _save(figure, path)


def _thinned(rows: list, count: int = 12) -> list:
    """About `count` evenly spaced rows, always the last one, none twice."""
    picked = rows[:: max(1, len(rows) // count)]
    return picked + rows[-1:] if rows and picked[-1] is not rows[-1] else picked


def pilot_markdown(pilot: dict) -> str:
    curve = pilot["curves"]["knn_curve"]
    diagnostics = pilot["curves"]["diagnostics"]
    config = pilot["config"]
    best = max(curve, key=lambda p: p["knn_top1"])
    lines = [
        f"# DINO pilot: {pilot['label']}, seed {pilot['seed']}",
        "",
        f"Command: `{pilot['command']}`" if pilot["command"] else "",
        "",
        (
            f"{config['num_train']} training / {config['num_val']} validation / {config['num_test']} test scenes at "
            f"{config['image_size']} px, `{config['preset']}`, batch {config['batch_size']}, {pilot['steps']} steps "
            f"({config['dino_epochs']} epochs), teacher momentum {config['momentum_teacher']} -> 1, "
            f"{config['dino_out_dim']} prototypes. Run time {pilot['minutes']:.1f} min "
            f"({pilot['environment']['cpu_threads']} CPU threads, shared machine). One seed: no test."
        ),
        "",
        "| step | k-NN top-1 (validation) |",
        "|---|---|",
        *[f"| {p['step']} | {p['knn_top1']:.3f} |" for p in curve],
        "",
        (
            f"Test split: trained k-NN top-1 {pilot['test']['trained']['knn_top1']:.3f}, untrained twin "
            f"{pilot['test']['untrained']['knn_top1']:.3f}; chance {pilot['chance']:.3f}. Validation curve: step 0 "
            f"{curve[0]['knn_top1']:.3f}, best {best['knn_top1']:.3f} at step {best['step']}, last "
            f"{curve[-1]['knn_top1']:.3f}."
        ),
        "",
        "| step | loss | teacher entropy | batch-mean entropy | KL(t‖s) | centre norm |",
        "|---|---|---|---|---|---|",
        *[
            f"| {d['step']} | {d['loss']:.3f} | {d['teacher_entropy']:.3f} | {d['teacher_batch_entropy']:.3f} | "
            f"{d['kl']:.3f} | {d['center_norm']:.3f} |"
            for d in _thinned(diagnostics)
        ],
        "",
        f"log({config['dino_out_dim']}) = {math.log(config['dino_out_dim']):.2f} nats.",
        "",
        "![pilot.png](pilot.png)",
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "BASELINE",
    "METRICS",
    "TESTED",
    "VARIANTS",
    "PilotOptions",
    "PretrainingStudyConfig",
    "PretrainingStudyError",
    "holm",
    "rewrite_report",
    "run_dino_pilot",
    "run_pretraining_study",
    "slope",
    "write_report",
]
