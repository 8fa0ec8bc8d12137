"""Run the pre-training study: build the scenes once, train every variant for every seed (CLIP at
every caption rate), measure each next to its untrained twin, and write the report folder whole;
and the DINO pilot (one variant, one seed, its learning curve)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from lastvit.data.fingerprint import scenes_fingerprint
from lastvit.provenance import environment
from lastvit.training.loop import reset_accelerate

from .config import VARIANTS, PretrainingStudyConfig, PretrainingStudyError
from .figures import pilot_figure
from .report import pilot_markdown, write_report


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


def with_counterfactuals(config: PretrainingStudyConfig, data):
    """`data` whose test split also holds the main study's counterfactual renderings of each test scene
    (`lastvit.data.background_challenge`: columns ``image_only_fg``, ``image_only_bg``,
    ``image_mixed_same``, ``image_mixed_rand``; the same object instance, size, flip and position,
    backgrounds in `background_groups` luminance groups). The test scenes are drawn again from their
    own random stream with no background correlation, which reproduces them exactly; a mismatch is
    refused."""
    import datasets

    from lastvit.data.background_challenge import COUNTERFACTUAL_SETS, render_split
    from lastvit.data.scene_sources import scene_splits

    sources = scene_splits(config.data_variant, config.data_seed)["test"]
    sources.opacity = config.opacity
    rendered = render_split(
        sources,
        config.num_test,
        "test",
        seed=config.data_seed,
        image_size=config.image_size,
        scale_range=config.scale_range,
        num_groups=config.background_groups,
        counterfactual=True,
    )
    test = data["test"]
    if _png_bytes(rendered) != _png_bytes(test):
        raise PretrainingStudyError(
            "the counterfactual renderings do not reproduce the test scenes (lastvit.data.scenes and "
            "lastvit.data.background_challenge draw them differently); align the two generators."
        )
    columns = rendered.select_columns([f"image_{name}" for name in COUNTERFACTUAL_SETS])
    return datasets.DatasetDict({**data, "test": datasets.concatenate_datasets([test, columns], axis=1)})


def _png_bytes(split) -> list[bytes]:
    import datasets

    return [image["bytes"] for image in split.cast_column("image", datasets.Image(decode=False))["image"]]


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


def train_and_measure(config: PretrainingStudyConfig, name: str, seed: int, data, data_path: Path, out: Path) -> dict:
    """Train one variant for one seed into `out` and measure it and its untrained twin (DINO: the
    trainer's own `evaluate_backbone`, with its curves; CLIP: the saved folder loaded back with the
    Auto classes; both with the backgrounds challenge when the test split holds the counterfactual
    renderings, `with_counterfactuals`):
    ``{"trained": {...}, "untrained": {...}, "final_loss": ..., "steps": ...}``."""
    from transformers import AutoModel, AutoTokenizer

    from lastvit.measure.counterfactual import has_counterfactuals, zero_shot_background_test
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
        if has_counterfactuals(data["test"]):
            for side, values in zero_shot_background_test(model, tokenizer, data["test"], names, seed).items():
                measured[side].update(values)
    return {**measured, "seed": seed, "final_loss": trained.get("final_loss"), "steps": trained.get("step")}


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


@contextmanager
def _work_folder(config: PretrainingStudyConfig):
    """``(out, work)``: the output folder (refused when it holds files and --overwrite is not given)
    and a fresh work folder beside it, removed on the way out."""
    from lastvit.files import is_nonempty_dir

    out = Path(config.output_dir)
    if is_nonempty_dir(out) and not config.overwrite:
        raise PretrainingStudyError(
            f"{out} already holds files; pass --overwrite to replace them or choose another --output-dir."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.work.", dir=out.parent))
    try:
        yield out, work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _jobs(config: PretrainingStudyConfig) -> list[tuple]:
    """``(seed, variant, caption rate or None)`` of every run, seed by seed."""
    return [
        (seed, name, rate)
        for seed in config.seeds
        for name in config.variants
        for rate in ((None,) if VARIANTS[name]["family"] == "dino" else config.caption_rates)
    ]


def _train_every_run(config: PretrainingStudyConfig, data, paths: dict, work: Path, start: float):
    """``{variant: [run, ...]}``: every job of `_jobs` trained and measured (its folder removed after)."""
    per_seed = {name: [] for name in config.variants}
    jobs = _jobs(config)
    for index, (seed, name, rate) in enumerate(jobs):
        where = "" if rate is None else f", caption rate {rate}"
        _log(start, f"[{index + 1}/{len(jobs)}] training {VARIANTS[name]['label']}, seed {seed}{where}")
        run_dir = work / "runs" / f"{name}-seed{seed}-{rate}"
        run = train_and_measure(config, name, seed, data, paths["dino" if rate is None else rate], run_dir)
        if rate is not None:
            run["caption_rate"] = rate
        per_seed[name].append(run)
        _log(start, "    " + ", ".join(f"{k} {v:.3f}" for k, v in run["trained"].items()))
        shutil.rmtree(run_dir)
    return per_seed


def run_pretraining_study(config: PretrainingStudyConfig) -> dict:
    """Train and measure every variant for every seed (CLIP: at every caption rate), then write the
    report folder whole. Returns what ``report.json`` holds."""
    start = time.time()
    with _work_folder(config) as (out, work):
        _log(start, "the declared design: " + json.dumps(config.design(), indent=2))  # before any run
        _log(start, f"building {config.num_train} + {config.num_val} + {config.num_test} scenes ...")
        data = build_data(config)
        data_fingerprint = scenes_fingerprint(data)
        data = with_counterfactuals(config, data)  # after the fingerprint: the scenes as trained on
        paths = _save_data(config, data, work)
        per_seed = _train_every_run(config, data, paths, work, start)
        results = {
            "question": (
                "Does LazyStrike (DINO: K = 1, N/7; CLIP: K = 1, N/2) change what DINO and CLIP models learn, vs "
                "the CLS readout, and does its CLIP advantage grow with the background-caption shortcut?"
            ),
            "chance": 1 / len(data["test"].features["label"].names),
            "class_names": data["test"].features["label"].names,
            "config": config.record(),
            "variants": {name: VARIANTS[name] for name in config.variants},
            "environment": environment("cpu"),
            "data_fingerprint": data_fingerprint,
            "per_seed": per_seed,
            "minutes": (time.time() - start) / 60,
        }
        return write_report(out, config, results)


def run_dino_pilot(config: PretrainingStudyConfig, name: str = "dino_cls", command: str | None = None) -> dict:
    """Train one DINO variant for the first seed at the study's settings and write its k-NN learning
    curve (validation split; step 0 = the untrained start), collapse diagnostics and the final test
    k-NN next to the untrained twin to ``pilot.json``, ``pilot.png`` and ``pilot.md`` in
    `config.output_dir` (written whole). Used to pick the study's DINO budget."""
    from lastvit.files import write_folder

    if VARIANTS.get(name, {}).get("family") != "dino":
        raise PretrainingStudyError(
            f"--pilot takes a DINO variant ({', '.join(n for n in VARIANTS if n.startswith('dino'))}); got {name!r}."
        )
    start = time.time()
    with _work_folder(config) as (out, work):
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
            "config": config.record(),
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
            pilot_figure(pilot, folder / "pilot.png")
            (folder / "pilot.md").write_text(pilot_markdown(pilot))

        write_folder(out, write)
        return pilot


__all__ = [
    "build_data",
    "run_dino_pilot",
    "run_pretraining_study",
    "train_and_measure",
    "with_captions",
    "with_counterfactuals",
]
