"""Learning curves that choose the study's budget and its background correlation, on the
validation split only (`lastvit-study --learning-curves`).

Each setting trains one model (seed 0) for `CURVE_STEPS_FACTOR` times the study's steps, scoring
validation top-1 every `eval_every` steps, and ends with the background test on the validation
split's counterfactual sets (its BG-gap shows whether the CLS ViT exploits the background at that
rho). Writes ``learning_curves.json`` and ``learning_curves.png``.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

from lastvit.files import swap_in
from lastvit.provenance import environment

# (name, variant, data overrides of the study config, recipe overrides): the study's default for
# the CLS and K = 1 readouts, then one change at a time that the defaults were chosen against.
SETTINGS = (
    ("CLS, default", "vit_cls", {}, {}),
    ("LazyStrike K = 1, default", "lastvit_k1", {}, {}),
    ("CLS, rho = 0", "vit_cls", {"background_correlation": 0.0}, {}),
    ("CLS, objects 0.5-0.8 of the side", "vit_cls", {"scale_range": (0.5, 0.8)}, {}),
    ("CLS, learning rate 2e-3", "vit_cls", {}, {"learning_rate": 2e-3}),
)
CURVE_STEPS_FACTOR = 2.0


def run_learning_curves(config, settings=SETTINGS, eval_every: int = 100, seed: int = 0) -> dict:
    """Train each of `settings` once and write the curves into ``config.output_dir``."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from lastvit.measure.evaluation import background_test
    from lastvit.measure.forward import resolve_device

    from .runner import _log, build_data, evaluation_sets, prepare_run, train_variant

    start = time.time()
    config, device, out, work = prepare_run(config, resolve_device)
    epochs = config.epochs * CURVE_STEPS_FACTOR
    study_steps = int(config.epochs * (config.num_train // config.batch_size))
    data_by_setting, curves = {}, []
    for name, variant, data_overrides, overrides in settings:
        key = json.dumps(data_overrides, sort_keys=True)
        if key not in data_by_setting:
            _log(start, f"building the data with {data_overrides or 'the defaults'} (validation only; no test images)")
            data_by_setting[key] = build_data(dataclasses.replace(config, num_test=0, **data_overrides))
        data = data_by_setting[key]
        _log(start, f"training {name} for {epochs} epochs")
        folder = work / "runs" / name.replace(" ", "_").replace(",", "").replace("=", "")
        tic = time.time()
        trained = train_variant(
            config, variant, seed, data, folder, eval_every=eval_every, **{"epochs": epochs, **overrides}
        )
        seconds = time.time() - tic
        model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        validation, counterfactual = evaluation_sets(
            data["validation"], config.image_size, processor.image_mean, processor.image_std
        )
        background = background_test(
            model, {"original": validation.pixel_values, **counterfactual}, validation.labels, device=device
        )
        curves.append(
            {
                "name": name,
                "variant": variant,
                "data_overrides": data_overrides,
                "overrides": overrides,
                "steps": [h["step"] for h in trained["history"]],
                "validation_top1": [h["top1"] for h in trained["history"]],
                "validation_background_test": background,
                "train_seconds": seconds,
            }
        )
        _log(
            start, f"    validation top-1 {curves[-1]['validation_top1'][-1]:.3f}, BG-gap {background['bg_gap']:+.3f}"
        )
        shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(work / "runs", ignore_errors=True)
    results = {
        "what": "validation top-1 vs optimiser steps (seed 0), and the validation background test at the end",
        "study_steps": study_steps,
        "eval_every": eval_every,
        "seed": seed,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(config).items()},
        "command": shlex.join(["lastvit-study", *sys.argv[1:]]),
        "environment": environment(device),
        "curves": curves,
        "minutes": (time.time() - start) / 60,
    }
    (work / "learning_curves.json").write_text(json.dumps(results, indent=2))
    plot_curves(results, work / "learning_curves.png")
    swap_in(work, out)
    return results


def plot_curves(results: dict, path: Path) -> Path:
    """Validation top-1 vs steps, one line per setting; the study's budget as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for curve in results["curves"]:
        gap = curve["validation_background_test"]["bg_gap"]
        axis.plot(
            curve["steps"], curve["validation_top1"], marker="o", ms=3, label=f"{curve['name']} (BG-gap {gap:+.2f})"
        )
    axis.axvline(results["study_steps"], color="grey", linestyle=":", label="the CPU study's steps")
    axis.set_xlabel("optimiser steps (batch 64)")
    axis.set_ylabel("validation top-1")
    axis.set_title("Learning curves on the validation split (seed 0)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


__all__ = ["SETTINGS", "plot_curves", "run_learning_curves"]
