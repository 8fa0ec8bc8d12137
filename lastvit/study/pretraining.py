"""The pre-training comparison (`lastvit-study-pretraining`): does LazyStrike help DINO and CLIP?

DINO-CLS vs DINO-LazyStrike (K = 1 and K = N/2) and CLIP-CLS vs CLIP-LazyStrike (K = 1 and N/2) are
trained on one saved copy of the scenes with one recipe and step budget per family, for several
seeds (each seed trains every variant from the same initialisation seed on the same data). Each
trained model is measured next to its untrained twin (`lastvit.measure.pretrained_eval`):

- DINO: k-NN top-1, Patch-Score Point-in-Box, CorLoc and coarse-segmentation IoU;
- CLIP: zero-shot top-1, zero-shot segmentation mIoU (objects only, VOC20-style), PiB of the
  zero-shot patch map, and the image tower's Patch-Score PiB / CorLoc / coarse segmentation.

Differences from the CLS readout of the same family are tested over seeds (paired t-test,
`statistics.paired_test`). report.md, report.json and figures are written whole (`write_folder`).

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

from lastvit.arguments import option
from lastvit.data.fingerprint import scenes_fingerprint
from lastvit.provenance import environment
from lastvit.training.config import PRESETS
from lastvit.training.loop import reset_accelerate

from .statistics import ALPHA, mean_std, paired_test

VARIANTS = {
    "dino_cls": {"family": "dino", "label": "DINO-CLS", "pooling": "cls"},
    "dino_k1": {"family": "dino", "label": "DINO-LazyStrike K=1", "pooling": "lazystrike", "top_k": 1},
    "dino_khalf": {"family": "dino", "label": "DINO-LazyStrike K=N/2", "pooling": "lazystrike", "top_k_ratio": 0.5},
    "clip_cls": {"family": "clip", "label": "CLIP-CLS", "pooling": "cls"},
    "clip_k1": {"family": "clip", "label": "CLIP-LazyStrike K=1", "pooling": "lazystrike", "top_k": 1},
    "clip_khalf": {"family": "clip", "label": "CLIP-LazyStrike K=N/2", "pooling": "lazystrike", "top_k_ratio": 0.5},
}
BASELINE = {"dino": "dino_cls", "clip": "clip_cls"}
METRICS = {
    "dino": {
        "knn_top1": "k-NN top-1",
        "point_in_box": "Patch-Score PiB",
        "corloc": "CorLoc",
        "segmentation_iou": "coarse seg. IoU",
    },
    "clip": {
        "zero_shot_top1": "zero-shot top-1",
        "zero_shot_miou": "zero-shot seg. mIoU",
        "zero_shot_map_pib": "zero-shot map PiB",
        "patch_score_point_in_box": "Patch-Score PiB",
        "patch_score_corloc": "CorLoc",
        "patch_score_segmentation_iou": "coarse seg. IoU",
    },
}


class PretrainingStudyError(ValueError):
    """The study cannot run as asked; the message says what to change."""


@dataclass(kw_only=True)
class PretrainingStudyConfig:
    """Data, models and the per-family budget; every variant of a family gets the same budget."""

    output_dir: Path = option(help="where the report goes (lastvit-study-pretraining: outputs/study_pretraining)")
    overwrite: bool = option(False, "replace an existing --output-dir")
    seeds: tuple[int, ...] = option((0, 1, 2), "training seeds (default: 0 1 2)")
    families: tuple[str, ...] = option(("dino", "clip"), "what to train", choices=("dino", "clip"))
    # the main study's learnable benchmark (Fashion-MNIST items, 0.5-0.8 of the side, held-out backgrounds)
    data_variant: str = option("fashion", "scenes variant (default: fashion)", choices=("scenes", "fashion"))
    num_train: int = option(8000, "training scenes (default: 8000)")
    num_test: int = option(1000, "test scenes (default: 1000)")
    image_size: int = option(32, "image side in pixels (default: 32)")
    scale_range: tuple[float, float] = option(
        (0.5, 0.8), "the object's longer side as a share of the image side (default: 0.5 0.8)", metavar=("LOW", "HIGH")
    )
    opacity: float = option(1.0, "object opacity (default: 1)")
    data_seed: int = option(0, "seed of the generated scenes (default: 0)")
    background_caption_rate: float = option(
        0.3, "share of CLIP captions that also name the background, a shortcut past the object (default: 0.3)"
    )
    preset: str = option("micro", "backbone size", choices=tuple(PRESETS))
    batch_size: int = option(64, "per-step batch of every run (default: 64)")
    dino_epochs: float = option(4, "DINO epochs (default: 4)")
    clip_epochs: float = option(4, "CLIP epochs (default: 4)")
    dino_out_dim: int = option(256, "DINO head output dimension (default: 256)")
    # DINO's 0.996 suits 100k+ steps; over the hundreds of steps of a CPU run it leaves the teacher at its init
    momentum_teacher: float = option(0.9, "DINO initial teacher momentum (default: 0.9 for short runs)")
    # lr at batch 256 (DINO's linear rule): 4e-3 gives 1e-3 at batch 64
    dino_learning_rate: float = option(4e-3, "DINO lr at batch 256 (default: 4e-3)")
    num_local_crops: int = option(2, "DINO local crops per image (default: 2)")
    progress: bool = option(False, "hide progress bars", flag="--no-progress")
    variants: tuple[str, ...] = field(init=False, metadata={"cli": False})

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        self.seeds = tuple(self.seeds)
        self.scale_range = tuple(self.scale_range)
        unknown = set(self.families) - set(BASELINE)
        if unknown or not self.families:
            raise PretrainingStudyError(f"families must be among {sorted(BASELINE)}; got {list(self.families)}.")
        if not self.seeds:
            raise PretrainingStudyError("give at least one seed (three or more for a paired test).")
        self.variants = tuple(name for name, spec in VARIANTS.items() if spec["family"] in self.families)


def _log(start: float, message: str) -> None:
    print(f"[{(time.time() - start) / 60:5.1f} min] {message}", flush=True)


def build_data(config: PretrainingStudyConfig):
    """The scenes with a caption column (`text`) for CLIP; DINO ignores it."""
    from lastvit.clip.captions import scene_captions
    from lastvit.data.scenes import build_scenes

    data = build_scenes(
        config.num_train,
        config.num_test,
        image_size=config.image_size,
        seed=config.data_seed,
        variant=config.data_variant,
        scale_range=config.scale_range,
        opacity=config.opacity,
        progress=config.progress,
    )
    names = data["train"].features["label"].names
    for offset, split in enumerate(("train", "test")):
        captions = scene_captions(
            data[split]["label"],
            data[split]["background_id"],
            names,
            seed=config.data_seed * 7 + offset,
            background_rate=config.background_caption_rate,
        )
        data[split] = data[split].add_column("text", captions)
    return data


def _pooling(spec: dict) -> dict:
    return {"pooling": spec["pooling"], "top_k": spec.get("top_k"), "top_k_ratio": spec.get("top_k_ratio")}


def train_and_measure(config: PretrainingStudyConfig, name: str, seed: int, data, data_path: Path, out: Path) -> dict:
    """Train one variant for one seed into `out` and measure it and its untrained twin (DINO: the
    trainer's own `evaluate_backbone`; CLIP: the saved folder loaded back with the Auto classes):
    ``{"trained": {...}, "untrained": {...}, "final_loss": ..., "steps": ...}``."""
    from transformers import AutoModel, AutoTokenizer

    from lastvit.measure.pretrained_eval import evaluate_clip_model, flat_clip

    spec = VARIANTS[name]
    common = {
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
        **_pooling(spec),
    }
    if spec["family"] == "dino":
        from lastvit.training.dino_trainer import DINOTrainingArguments, train_dino

        trained = train_dino(
            DINOTrainingArguments(
                epochs=config.dino_epochs,
                out_dim=config.dino_out_dim,
                head_hidden_dim=config.dino_out_dim,
                bottleneck_dim=64,
                num_local_crops=config.num_local_crops,
                momentum_teacher=config.momentum_teacher,
                learning_rate=config.dino_learning_rate,
                **common,
            )
        )
        reset_accelerate()
        # the trainer measured the teacher and its exact untrained start (`evaluate_backbone`)
        measured = {"trained": trained["teacher"], "untrained": trained["untrained"]}
    else:
        from lastvit.clip.captions import readable
        from lastvit.clip.training import CLIPTrainingArguments, train_clip

        trained = train_clip(CLIPTrainingArguments(epochs=config.clip_epochs, **common))
        reset_accelerate()
        model = AutoModel.from_pretrained(out, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
        names = [readable(n) for n in data["test"].features["label"].names]
        measured = evaluate_clip_model(model, tokenizer, data["test"], names, seed=seed)
        measured = {side: flat_clip(values) for side, values in measured.items()}
    return {**measured, "final_loss": trained.get("final_loss"), "steps": trained.get("step")}


def summarise(config: PretrainingStudyConfig, per_seed: dict) -> dict:
    """Mean ± std per variant and metric (trained and untrained twin) and paired tests over seeds:
    ``vs_untrained`` (did training move the metric?), and for LazyStrike variants ``vs_cls`` (trained
    vs trained CLS), ``init_vs_cls`` (untrained twin vs CLS's untrained twin: the readout's effect
    before training) and ``gain_vs_cls`` (trained − untrained, vs the same for CLS: what training
    added beyond the CLS readout)."""
    summary = {}
    for name in config.variants:
        family = VARIANTS[name]["family"]
        baseline = BASELINE[family]
        runs, cls_runs = per_seed[name], per_seed[baseline]
        entry = {key: {} for key in ("trained", "untrained", "vs_untrained", "vs_cls", "init_vs_cls", "gain_vs_cls")}
        for metric in METRICS[family]:
            if not all(metric in run["trained"] and metric in run["untrained"] for run in runs + cls_runs):
                continue
            trained = [run["trained"][metric] for run in runs]
            untrained = [run["untrained"][metric] for run in runs]
            entry["trained"][metric] = mean_std(trained)
            entry["untrained"][metric] = mean_std(untrained)
            entry["vs_untrained"][metric] = paired_test(trained, untrained)
            if name != baseline:
                cls_trained = [run["trained"][metric] for run in cls_runs]
                cls_untrained = [run["untrained"][metric] for run in cls_runs]
                entry["vs_cls"][metric] = paired_test(trained, cls_trained)
                entry["init_vs_cls"][metric] = paired_test(untrained, cls_untrained)
                entry["gain_vs_cls"][metric] = paired_test(
                    [t - u for t, u in zip(trained, untrained)], [t - u for t, u in zip(cls_trained, cls_untrained)]
                )
        summary[name] = entry
    return summary


def _cell(stats: dict) -> str:
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _test(test: dict) -> str:
    if test["n"] < 2 or test["p"] != test["p"]:  # NaN: no spread or one seed
        return f"{test['mean_difference']:+.3f} (no test)"
    return f"{test['mean_difference']:+.3f} (p = {test['p']:.3f}{', real' if test['real'] else ''})"


def _split(tests: dict, titles: dict) -> tuple[list[str], list[str]]:
    """Metric titles whose paired test is real, as (higher, lower) with their mean differences."""
    higher, lower = [], []
    for metric, test in tests.items():
        if test["real"]:
            (higher if test["mean_difference"] > 0 else lower).append(
                f"{titles[metric]} ({test['mean_difference']:+.3f})"
            )
    return higher, lower


def verdict(config: PretrainingStudyConfig, summary: dict, chance: float | None = None) -> list[str]:
    """Plain sentences on what the seeds support (paired t-test, p < 0.05): for each LazyStrike variant,
    where its trained model differs from the CLS readout's, whether its untrained twin already
    differs that way, and whether training added more or less than it added to CLS; per family,
    which metrics training moved off the untrained twins."""
    lines = []
    for family in config.families:
        titles, baseline = METRICS[family], BASELINE[family]
        cls_label = VARIANTS[baseline]["label"]
        top1 = "knn_top1" if family == "dino" else "zero_shot_top1"
        scored = [
            (summary[n]["trained"][top1]["mean"], n)
            for n in config.variants
            if VARIANTS[n]["family"] == family and top1 in summary[n]["trained"]
        ]
        if chance is not None and scored:
            best, name = max(scored)
            lines.append(
                f"{family.upper()}: the best trained {titles[top1]} is {best:.3f} ({VARIANTS[name]['label']}), "
                f"against chance {chance:.3f}: read the rest with that in mind."
            )
        for name in (n for n in config.variants if VARIANTS[n]["family"] == family and n != baseline):
            entry = summary[name]
            higher, lower = _split(entry["vs_cls"], titles)
            parts = []
            if higher or lower:
                said = (["higher on " + ", ".join(higher)] if higher else []) + (
                    ["lower on " + ", ".join(lower)] if lower else []
                )
                parts.append(f"trained, it is {' and '.join(said)} than {cls_label}")
                init = [
                    titles[m]
                    for m, test in entry["vs_cls"].items()
                    if test["real"]
                    and entry["init_vs_cls"][m]["real"]
                    and (entry["init_vs_cls"][m]["mean_difference"] > 0) == (test["mean_difference"] > 0)
                ]
                if init:
                    parts.append(
                        "the untrained twins already differ the same way on " + ", ".join(init) + " (a property of "
                        "the readout before any training, not something training produced)"
                    )
            else:
                parts.append(f"no trained metric differs from {cls_label} by a margin the seeds support")
            more, less = _split(entry["gain_vs_cls"], titles)
            if more or less:
                gains = (["larger on " + ", ".join(more)] if more else []) + (
                    ["smaller on " + ", ".join(less)] if less else []
                )
                parts.append(f"its gain from training (trained − untrained) is {' and '.join(gains)} than CLS's")
            else:
                parts.append("its gain from training does not differ from CLS's on any metric")
            lines.append(f"{VARIANTS[name]['label']}: " + "; ".join(parts) + ".")
        moved = [
            f"{VARIANTS[n]['label']} {titles[m]} ({summary[n]['vs_untrained'][m]['mean_difference']:+.3f})"
            for n in config.variants
            if VARIANTS[n]["family"] == family
            for m in titles
            if summary[n]["vs_untrained"].get(m, {}).get("real")
        ]
        if moved:
            lines.append(
                f"{family.upper()}: training moved these off the untrained twin (p < {ALPHA}): "
                + ", ".join(moved)
                + "."
            )
        else:
            lines.append(
                f"{family.upper()}: no metric of any variant differs from its untrained twin by a margin the seeds "
                "support: at this budget training has not measurably changed these measurements."
            )
    return lines


def markdown(config: PretrainingStudyConfig, results: dict, figures: list[str]) -> str:
    summary = results["summary"]
    lines = [
        "# LazyStrike in self-supervised (DINO) and image-text (CLIP) training",
        "",
        (
            f"Scenes ({config.data_variant}, objects {config.scale_range[0]}-{config.scale_range[1]} of the side, "
            f"held-out backgrounds): {config.num_train} training / {config.num_test} test images at "
            f"{config.image_size} px (data seed {config.data_seed}); CLIP captions always name the object and, in "
            f"{config.background_caption_rate:.0%} of them, the background. `{config.preset}` backbones, batch "
            f"{config.batch_size}; "
            f"DINO {config.dino_epochs} epochs (lr {config.dino_learning_rate} at batch 256, teacher momentum "
            f"{config.momentum_teacher} -> 1), CLIP {config.clip_epochs} epochs; seeds {list(config.seeds)}. "
            f"Every variant of a family gets the same steps. Chance = {results['chance']:.3f}. "
            f"Run time {results['minutes']:.1f} min ({results['environment']['device']})."
        ),
        "",
        "## What the numbers support",
        "",
        *[f"- {line}" for line in results["verdict"]],
        "",
    ]
    rows = (
        ("vs_cls", "trained vs trained CLS"),
        ("init_vs_cls", "untrained vs untrained CLS"),
        ("gain_vs_cls", "gain vs CLS's gain"),
        ("vs_untrained", "trained vs own untrained"),
    )
    for family in config.families:
        names = [n for n in config.variants if VARIANTS[n]["family"] == family]
        metrics = [m for m in METRICS[family] if m in summary[names[0]]["trained"]]
        header = [
            "| metric | " + " | ".join(VARIANTS[n]["label"] for n in names) + " |",
            "|" + "---|" * (len(names) + 1),
        ]
        lines += [f"## {family.upper()}", "", "Mean ± std over seeds; each untrained twin below.", "", *header]
        for metric in metrics:
            title = METRICS[family][metric]
            lines.append(f"| {title} | " + " | ".join(_cell(summary[n]["trained"][metric]) for n in names) + " |")
            lines.append(
                f"| {title}, untrained | " + " | ".join(_cell(summary[n]["untrained"][metric]) for n in names) + " |"
            )
        per_seed = results.get("per_seed", {})
        losses = [[r["final_loss"] for r in per_seed.get(n, ()) if r.get("final_loss") is not None] for n in names]
        if all(losses):
            lines.append("| final training loss | " + " | ".join(_cell(mean_std(v)) for v in losses) + " |")
            if family == "dino":
                lines += [
                    "",
                    (
                        f"A DINO loss near ln({config.dino_out_dim}) = {math.log(config.dino_out_dim):.2f} means the "
                        "student still spreads its prediction over every prototype: that run has not started to learn."
                    ),
                ]
        lines += ["", "Paired t-tests over seeds: mean difference (p; 'real' when p < 0.05).", "", *header]
        for metric in metrics:
            for key, what in rows:
                cells = [_test(summary[n][key][metric]) if metric in summary[n][key] else "—" for n in names]
                lines.append(f"| {METRICS[family][metric]}: {what} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"![{name}]({name})" for name in figures]
    tests = sum(
        1
        for entry in summary.values()
        for key in ("vs_untrained", "vs_cls", "init_vs_cls", "gain_vs_cls")
        for test in entry[key].values()
        if test["n"] >= 2 and test["p"] == test["p"]
    )
    lines += [
        "",
        (
            f"This report runs {tests} paired tests: if no readout and no training made any difference, about "
            f"{tests * ALPHA:.0f} of them would still read 'real' at p < {ALPHA}, so weigh a single 'real' "
            "lightly and look for differences that agree across metrics. "
            f"With {len(config.seeds)} seeds only large, consistent differences reach p < 0.05, and 'no difference the seeds "
            "support' is not evidence of no effect. Patch-Score maps compare each patch with the global "
            "feature, so the readout (CLS vs LazyStrike) changes them even in an untrained model; the "
            "'untrained vs untrained CLS' and 'gain' rows separate that from what training did."
        ),
        "",
    ]
    return "\n".join(lines)


def write_figures(folder: Path, config: PretrainingStudyConfig, per_seed: dict) -> list[str]:
    from lastvit.measure.plots import plot_seed_points

    names = []
    for family in config.families:
        values = {}
        for metric, title in METRICS[family].items():
            models = {}
            for n in config.variants:
                if VARIANTS[n]["family"] != family or metric not in per_seed[n][0]["trained"]:
                    continue
                short = VARIANTS[n]["label"].replace("LazyStrike ", "LS ")
                models[short] = [run["trained"][metric] for run in per_seed[n]]
                models[short + " untr."] = [run["untrained"][metric] for run in per_seed[n]]
            if models:
                values[title] = models
        name = f"{family}.png"
        plot_seed_points(values, folder / name)
        names.append(name)
    return names


def write_report(out: Path, config: PretrainingStudyConfig, results: dict) -> dict:
    """Summary, sentences, report.md, report.json and figures from ``results["per_seed"]``, written whole."""
    from lastvit.files import write_folder

    results = {**results, "summary": summarise(config, results["per_seed"])}
    results["verdict"] = verdict(config, results["summary"], results.get("chance"))

    def write(folder: Path):
        figures = write_figures(folder, config, results["per_seed"])
        (folder / "report.json").write_text(json.dumps(results, indent=2))
        (folder / "report.md").write_text(markdown(config, results, figures))

    write_folder(out, write)
    return results


def rewrite_report(folder) -> dict:
    """Regenerate a finished study's report from its report.json (after a change to the report code),
    without training again."""
    results = json.loads((Path(folder) / "report.json").read_text())
    fields = {k: v for k, v in results["config"].items() if k != "variants"}
    config = PretrainingStudyConfig(
        **{**fields, "seeds": tuple(fields["seeds"]), "families": tuple(fields["families"])}
    )
    return write_report(Path(folder), config, results)


def run_pretraining_study(config: PretrainingStudyConfig) -> dict:
    """Train and measure every variant for every seed, then write the report folder whole. Returns
    what ``report.json`` holds."""
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
        _log(start, f"building {config.num_train} + {config.num_test} scenes at {config.image_size} px ...")
        data = build_data(config)
        data_fingerprint = scenes_fingerprint(data)
        data_path = work / "data"
        data.save_to_disk(str(data_path))
        per_seed = {name: [] for name in config.variants}
        for seed in config.seeds:
            for name in config.variants:
                _log(start, f"training {VARIANTS[name]['label']}, seed {seed}")
                run = train_and_measure(config, name, seed, data, data_path, work / "runs" / f"{name}-seed{seed}")
                per_seed[name].append(run)
                _log(start, "    " + ", ".join(f"{k} {v:.3f}" for k, v in run["trained"].items()))
                shutil.rmtree(work / "runs" / f"{name}-seed{seed}")
        results = {
            "question": "Does LazyStrike (K = 1, K = N/2) change what DINO and CLIP models learn, vs the CLS readout?",
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


__all__ = [
    "BASELINE",
    "METRICS",
    "VARIANTS",
    "PretrainingStudyConfig",
    "PretrainingStudyError",
    "rewrite_report",
    "run_pretraining_study",
    "write_report",
]
