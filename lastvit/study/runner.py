"""Run the study: build the data once, train every variant for every seed with one recipe,
evaluate each trained model next to its untrained twin, and write the report folder whole."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from lastvit.data.fingerprint import scenes_fingerprint
from lastvit.files import is_nonempty_dir, swap_in
from lastvit.provenance import environment
from lastvit.training.loop import reset_accelerate

from .config import OPTIONAL_VARIANTS, VARIANTS, StudyConfig
from .report import flatten_metrics, summarise, write_report

TEST_SPLIT_NOTES = {
    "fashion": "Fashion-MNIST items from its t10k file (10,000 real product photos never seen in training; "
    "training items come from its train file) on held-out backgrounds (a quarter of each background source), "
    "so the test measures recognising new instances in new surroundings, not memorising images",
    "scenes": "held-out object instances (a quarter per class) on held-out backgrounds, so the test measures "
    "recognising new instances in new surroundings, not memorising images",
}


class StudyError(ValueError):
    """The study cannot run as asked; the message says what to change."""


def _log(start: float, message: str) -> None:
    print(f"[{(time.time() - start) / 60:5.1f} min] {message}", flush=True)


def build_data(config: StudyConfig):
    from lastvit.data.scenes import build_scenes

    return build_scenes(
        config.num_train,
        config.num_test,
        image_size=config.image_size,
        seed=config.data_seed,
        clutter=config.clutter,
        variant=config.data_variant,
        scale_range=tuple(config.scale_range),
        opacity=config.opacity,
        progress=config.progress,
    )


def train_variant(config: StudyConfig, name: str, seed: int, data, out: Path) -> Path:
    """Train one variant with the study's recipe into `out` (a complete checkpoint folder)."""
    from lastvit.training import TrainConfig, train

    spec = {**VARIANTS, **OPTIONAL_VARIANTS}[name]
    train(
        TrainConfig(
            dataset=data,  # the DatasetDict built once for every run, in memory
            output_dir=out,
            overwrite=True,
            seed=seed,
            preset=config.preset,
            image_size=config.image_size,
            patch_size=config.patch_size,
            pooling=spec["pooling"],
            registers=spec["registers"],
            top_k=spec.get("top_k"),
            top_k_ratio=spec.get("top_k_ratio"),
            epochs=config.epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            warmup_ratio=config.warmup_ratio,
            crop_scale_min=config.crop_scale_min,
            max_grad_norm=config.max_grad_norm,
            num_workers=config.num_workers,
            eval_every=10**9,  # one evaluation at the end; the study then measures everything itself
            progress=config.progress,
        )
    )
    reset_accelerate()
    return out


def run_study(config: StudyConfig) -> dict:
    """Run the whole study into ``config.output_dir`` (written whole at the end). Returns the
    results that ``report.json`` holds."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from lastvit.measure.evaluation import evaluate_model, prepare_evaluation_data, resolve_device

    start = time.time()
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
    if config.mixed_precision and config.mixed_precision != "no":
        os.environ["ACCELERATE_MIXED_PRECISION"] = config.mixed_precision
    timings = {"data": 0.0, "training": {}, "evaluation": {}}

    _log(
        start,
        f"building {config.num_train} + {config.num_test} {config.data_variant} scenes "
        f"({config.image_size} px, seed {config.data_seed}) ...",
    )
    tic = time.time()
    data = build_data(config)
    class_names = data["test"].features["label"].names
    data_fingerprint = scenes_fingerprint(data)
    timings["data"] = time.time() - tic

    per_run = {name: [] for name in config.variants}
    raw, first_arrays, evaluation_data, stats = {}, {}, None, None
    for seed in config.seeds:
        for name in config.variants:
            label = {**VARIANTS, **OPTIONAL_VARIANTS}[name]["label"]
            _log(start, f"training {label}, seed {seed}")
            tic = time.time()
            folder = train_variant(config, name, seed, data, work / "runs" / f"{name}-seed{seed}")
            timings["training"][f"{name}-seed{seed}"] = time.time() - tic
            model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)
            if evaluation_data is None:
                processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
                stats = (tuple(processor.image_mean), tuple(processor.image_std))
                evaluation_data = prepare_evaluation_data(data["test"], config.image_size, *stats)
            tic = time.time()
            metrics, arrays = evaluate_model(
                model,
                evaluation_data,
                device=device,
                seed=seed,
                probe_images=config.probe_images,
                progress=config.progress,
            )
            timings["evaluation"][f"{name}-seed{seed}"] = time.time() - tic
            raw[f"{name}-seed{seed}"] = metrics
            per_run[name].append(flatten_metrics(metrics))
            if seed == config.seeds[0]:
                first_arrays[name] = arrays
            pib = metrics["maps"]["patch_score"]["point_in_box"]
            _log(start, f"    top-1 {metrics['classification']['top1']:.3f}, Patch-Score PiB {pib:.3f}")
            del model

    minutes = (time.time() - start) / 60
    results = {
        "question": "Does LazyStrike make a ViT look at the object?",
        "test_split_note": TEST_SPLIT_NOTES[config.data_variant],
        "chance": 1 / len(class_names),
        "class_names": class_names,
        "seeds": list(config.seeds),
        "variants": {name: {**VARIANTS, **OPTIONAL_VARIANTS}[name] for name in config.variants},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(config).items()},
        "environment": environment(device),
        "data_fingerprint": data_fingerprint,
        "per_seed": per_run,
        "summary": summarise(per_run),
        "raw": raw,
        "timings_s": timings,
        "minutes": minutes,
    }
    report_files = write_report(work, results, evaluation_data, first_arrays, stats)
    results["report_files"] = report_files
    (work / "report.json").write_text(json.dumps(results, indent=2))

    best = "lastvit_khalf" if "lastvit_khalf" in config.variants else config.variants[-1]
    shutil.copytree(
        work / "runs" / f"{best}-seed{config.seeds[0]}",
        work / "lastvit-model",
        ignore=shutil.ignore_patterns("checkpoints", "best", ".*"),
    )
    swap_in(work, out)
    return results
