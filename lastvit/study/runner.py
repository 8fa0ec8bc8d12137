"""Run the study: build the data once, train every variant for every seed with one recipe,
evaluate each trained model next to its untrained twin (maps and the background test), and write
the report folder whole. Also the learning curves (validation top-1 vs steps) that pick the budget."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from lastvit.data.fingerprint import scenes_fingerprint
from lastvit.errors import LastViTUserError
from lastvit.files import is_nonempty_dir, swap_in
from lastvit.provenance import environment
from lastvit.training.loop import reset_accelerate

from .config import CHOICES, OPTIONAL_VARIANTS, REFERENCE, SHIPPED, VARIANTS, StudyConfig
from .report import flatten_metrics, summarise, write_report

TEST_SPLIT_NOTES = {
    "fashion": "Fashion-MNIST items from its t10k file (10,000 real product photos never seen in training; "
    "training items come from its train file) on held-out backgrounds (a quarter of each background source), "
    "so the test measures recognising new instances in new surroundings, not memorising images. The "
    "validation split (every tuning decision) holds out a share of the training items and training "
    "backgrounds; it never touches the test split",
    "scenes": "held-out object instances (a quarter per class) on held-out backgrounds, so the test measures "
    "recognising new instances in new surroundings, not memorising images. The validation split (every "
    "tuning decision) holds out a share of the training instances and backgrounds",
}
ALL_VARIANTS = {**VARIANTS, **OPTIONAL_VARIANTS}
BACKGROUND_NOTE = (
    "Backgrounds are cut into {groups} groups by the rank of their mean luminance (per split, so held-out "
    "backgrounds of group g look like training ones of group g); class c is tied to group c mod {groups}. "
    "With probability rho = {rho} a scene's background is redrawn from its class's group, so "
    "P(background in the class's group) = {share:.2f} (chance {chance:.2f}) in training, validation and the "
    "original test set. The counterfactual test sets render the same object (instance, size, flip, position): "
    "only-FG on black; only-BG = the background layer as drawn, before the object is pasted (the object's "
    "region shows the background that was under it, so no object pixel remains); mixed-same = a background "
    "from the class's own group; mixed-rand = a background from a uniformly chosen other group."
)


class StudyError(LastViTUserError):
    """The study cannot run as asked; the message says what to change."""


def _log(start: float, message: str) -> None:
    print(f"[{(time.time() - start) / 60:5.1f} min] {message}", flush=True)


def build_data(config: StudyConfig):
    from lastvit.data.background_challenge import build_challenge

    return build_challenge(
        config.num_train,
        config.num_validation,
        config.num_test,
        variant=config.data_variant,
        image_size=config.image_size,
        seed=config.data_seed,
        clutter=config.clutter,
        scale_range=tuple(config.scale_range),
        opacity=config.opacity,
        correlation=config.background_correlation,
        num_groups=config.background_groups,
        validation_fraction=config.validation_fraction,
        progress=config.progress,
    )


def train_variant(
    config: StudyConfig, name: str, seed: int, data, out: Path, eval_every: int = 10**9, **overrides
) -> dict:
    """Train one variant with the study's recipe into `out` (a complete checkpoint folder); its
    evaluations use the validation split (never the test split). Returns the trainer's results."""
    import datasets

    from lastvit.training import TrainConfig, train

    spec = ALL_VARIANTS[name]
    splits = datasets.DatasetDict(
        train=data["train"].select_columns(["image", "label"]),
        validation=data["validation"].select_columns(["image", "label"]),
    )
    recipe = {
        key: getattr(config, key)
        for key in (
            "preset",
            "image_size",
            "patch_size",
            "epochs",
            "batch_size",
            "learning_rate",
            "weight_decay",
            "warmup_ratio",
            "crop_scale_min",
            "max_grad_norm",
            "num_workers",
        )
    }
    results = train(
        TrainConfig(
            dataset=splits,  # built once for every run, in memory
            output_dir=out,
            overwrite=True,
            seed=seed,
            pooling=spec["pooling"],
            registers=spec["registers"],
            top_k=spec.get("top_k"),
            top_k_ratio=spec.get("top_k_ratio"),
            mixed_precision=config.mixed_precision or "auto",
            eval_every=eval_every,  # default: one evaluation at the end; the study measures the rest itself
            progress=config.progress,
            **{**recipe, **overrides},
        )
    )
    reset_accelerate()
    return results


def evaluation_sets(split, size: int, mean, std):
    """The test (or validation) split as `EvaluationData` and its counterfactual pixel values."""
    from lastvit.data.background_challenge import COUNTERFACTUAL_SETS
    from lastvit.measure.evaluation import prepare_evaluation_data

    data = prepare_evaluation_data(split, size, mean, std)
    counterfactual = {
        name: prepare_evaluation_data(
            split.select_columns([f"image_{name}", "label"]), size, mean, std, f"image_{name}"
        )
        for name in COUNTERFACTUAL_SETS
    }
    return data, {name: value.pixel_values for name, value in counterfactual.items()}


def prepare_run(config: StudyConfig, resolve_device):
    """The device, the scale's resolved config, the output folder (refused when it holds files and
    --overwrite is not given) and an empty work folder beside it (with ``runs/``) that is swapped in
    whole at the end: ``(config, device, out, work)``."""
    device = resolve_device(config.device)
    config = config.resolved(cuda_available=device.type == "cuda")
    out = Path(config.output_dir)
    if is_nonempty_dir(out) and not config.overwrite:
        raise StudyError(
            f"{out} already holds files; pass --overwrite to replace them or choose another --output-dir."
        )
    work = out.with_name(f".{out.name}.work")
    shutil.rmtree(work, ignore_errors=True)
    (work / "runs").mkdir(parents=True)
    return config, device, out, work


@dataclass
class _Evaluated:
    """What the runs leave for the report: per-seed numbers, raw metrics, the first seed's maps, and
    the test set with its normalisation (built once, from the first trained model's processor)."""

    per_run: dict
    raw: dict = field(default_factory=dict)
    first_arrays: dict = field(default_factory=dict)
    data: object = None
    counterfactual: dict | None = None
    stats: tuple | None = None


def _train_and_evaluate(config: StudyConfig, name: str, seed: int, data, work: Path, device, runs, timings, start):
    """Train one variant for one seed into ``work/runs``, then evaluate it on the test split next to
    its untrained twin (maps and the background test); the numbers go into `runs`."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from lastvit.measure.evaluation import evaluate_model

    run = f"{name}-seed{seed}"
    _log(start, f"training {ALL_VARIANTS[name]['label']}, seed {seed}")
    tic = time.time()
    folder = work / "runs" / run
    trained = train_variant(config, name, seed, data, folder)
    timings["training"][run] = time.time() - tic
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)
    if runs.data is None:
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        runs.stats = (tuple(processor.image_mean), tuple(processor.image_std))
        runs.data, runs.counterfactual = evaluation_sets(data["test"], config.image_size, *runs.stats)
    tic = time.time()
    metrics, arrays = evaluate_model(
        model,
        runs.data,
        device=device,
        seed=seed,
        probe_images=config.probe_images,
        progress=config.progress,
        counterfactual=runs.counterfactual,
    )
    metrics["validation_top1"] = trained.get("top1")
    timings["evaluation"][run] = time.time() - tic
    runs.raw[run] = metrics
    runs.per_run[name].append(flatten_metrics(metrics))
    if seed == config.seeds[0]:
        runs.first_arrays[name] = arrays
    background = metrics["background_test"]
    _log(
        start,
        f"    top-1 {metrics['classification']['top1']:.3f}, mixed-rand {background['mixed_rand']:.3f}, "
        f"BG-gap {background['bg_gap']:+.3f}, Patch-Score AUROC {metrics['maps']['patch_score']['auroc']:.3f}",
    )


def _study_results(config: StudyConfig, device, runs: _Evaluated, class_names, data_fingerprint, timings, minutes):
    """What ``report.json`` holds: the question, the declared endpoints and their corrections, the
    notes on the data, the configuration, the per-seed numbers, their summary and the raw metrics."""
    rho, groups = config.background_correlation, config.background_groups
    summary, testing = summarise(runs.per_run, config.primary_endpoints)
    return {
        "question": "Does LazyStrike make a ViT look at the object?",
        "primary_endpoints": [
            {"variant": v, "metric": m, "reference": REFERENCE, "test": "paired t-test over seeds, Holm-corrected"}
            for v, m in config.primary_endpoints
        ],
        "multiple_testing": testing,
        "test_split_note": TEST_SPLIT_NOTES[config.data_variant],
        "background_note": BACKGROUND_NOTE.format(
            groups=groups, rho=rho, share=rho + (1 - rho) / groups, chance=1 / groups
        ),
        "choices": CHOICES,
        "chance": 1 / len(class_names),
        "class_names": class_names,
        "seeds": list(config.seeds),
        "variants": {name: ALL_VARIANTS[name] for name in config.variants},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(config).items()},
        "environment": environment(device),
        "data_fingerprint": data_fingerprint,
        "per_seed": runs.per_run,
        "summary": summary,
        "raw": runs.raw,
        "timings_s": timings,
        "minutes": minutes,
    }


def run_study(config: StudyConfig) -> dict:
    """Run the whole study into ``config.output_dir`` (written whole at the end). Returns the
    results that ``report.json`` holds."""
    from lastvit.measure.forward import resolve_device

    start = time.time()
    config, device, out, work = prepare_run(config, resolve_device)
    timings = {"data": 0.0, "training": {}, "evaluation": {}}

    _log(
        start,
        f"building {config.num_train} + {config.num_validation} + {config.num_test} {config.data_variant} scenes "
        f"({config.image_size} px, seed {config.data_seed}, background correlation {config.background_correlation})"
        " ...",
    )
    tic = time.time()
    data = build_data(config)
    class_names = data["test"].features["label"].names
    data_fingerprint = scenes_fingerprint(data)
    timings["data"] = time.time() - tic

    runs = _Evaluated(per_run={name: [] for name in config.variants})
    for seed in config.seeds:
        for name in config.variants:
            _train_and_evaluate(config, name, seed, data, work, device, runs, timings, start)

    minutes = (time.time() - start) / 60
    results = _study_results(config, device, runs, class_names, data_fingerprint, timings, minutes)
    report_files = write_report(work, results, runs.data, runs.first_arrays, runs.stats)
    results["report_files"] = report_files
    (work / "report.json").write_text(json.dumps(results, indent=2))

    shipped = SHIPPED if SHIPPED in config.variants else config.variants[-1]
    shutil.copytree(
        work / "runs" / f"{shipped}-seed{config.seeds[0]}",
        work / "lastvit-model",
        ignore=shutil.ignore_patterns("checkpoints", "best", ".*"),
    )
    swap_in(work, out)
    return results


MERGED_KEYS = ("seeds", "output_dir", "overwrite", "progress")


def merge_studies(folders, output_dir, overwrite: bool = False) -> dict:
    """One report from studies that ran the same configuration on disjoint seeds (e.g. one process
    or machine per seed: ``lastvit-study --seeds 3 --output-dir part3``): per-seed numbers are pooled,
    the summary, the paired tests and their corrections are recomputed over all seeds, the maps
    figure and the shipped model come from the part with the first seed. Each seed's runs depend only
    on the seed and the data, so this is the study run at once, spread over processes."""
    folders = [Path(f) for f in folders]
    out = Path(output_dir)
    if is_nonempty_dir(out) and not overwrite:
        raise StudyError(
            f"{out} already holds files; pass --overwrite to replace them or choose another --output-dir."
        )
    missing = [str(f) for f in folders if not (f / "report.json").is_file()]
    if missing:
        raise StudyError(f"no report.json in {missing}; merge the output folders of finished lastvit-study runs.")
    parts = sorted(
        ((f, json.loads((f / "report.json").read_text())) for f in folders), key=lambda fp: min(fp[1]["seeds"])
    )
    first = parts[0][1]
    same = {k: v for k, v in first["config"].items() if k not in MERGED_KEYS}
    for folder, part in parts[1:]:
        differ = sorted(k for k, v in same.items() if part["config"].get(k) != v)
        if differ:
            raise StudyError(
                f"{folder} ran another configuration ({', '.join(differ)} differ); merge only equal studies."
            )
    seeds = [s for _, part in parts for s in part["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"the studies share seeds ({seeds}); merge studies of disjoint seeds.")
    per_run = {name: [run for _, part in parts for run in part["per_seed"][name]] for name in first["per_seed"]}
    endpoints = tuple(tuple(e) for e in first["config"]["primary_endpoints"])
    summary, testing = summarise(per_run, endpoints)
    timings = {
        "data": sum(part["timings_s"]["data"] for _, part in parts),
        "training": {k: v for _, part in parts for k, v in part["timings_s"]["training"].items()},
        "evaluation": {k: v for _, part in parts for k, v in part["timings_s"]["evaluation"].items()},
    }
    results = {
        **first,
        "seeds": seeds,
        "config": {**first["config"], "seeds": seeds, "output_dir": str(out)},
        "per_seed": per_run,
        "summary": summary,
        "multiple_testing": testing,
        "raw": {k: v for _, part in parts for k, v in part["raw"].items()},
        "timings_s": timings,
        "minutes": sum(part["minutes"] for _, part in parts),
        "merged_from": [
            {"folder": str(folder), "seeds": part["seeds"], "minutes": part["minutes"]} for folder, part in parts
        ],
    }
    work = out.with_name(f".{out.name}.work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy2(parts[0][0] / "maps.png", work / "maps.png")
    results["report_files"] = write_report(work, results, None, {}, None)
    (work / "report.json").write_text(json.dumps(results, indent=2))
    shutil.copytree(parts[0][0] / "lastvit-model", work / "lastvit-model")
    swap_in(work, out)
    return results
