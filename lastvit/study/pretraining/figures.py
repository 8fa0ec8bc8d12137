"""The pre-training study's figures: per-seed points of the tested DINO metrics, DINO's k-NN
learning curves, the CLIP readout difference over the caption rates, and the DINO pilot's curve and
collapse diagnostics."""

from __future__ import annotations

import math
from pathlib import Path

from .analysis import CURVE_KEYS, runs_of, shared_curve_keys, values_of
from .config import METRICS, TESTED, VARIANTS, PretrainingStudyConfig


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
                runs = runs_of(per_seed, n)
                short = VARIANTS[n]["label"].replace("LazyStrike ", "LS ")
                if values_of(runs, "trained", metric) is not None:
                    models[short] = values_of(runs, "trained", metric)
                    models[short + " untr."] = values_of(runs, "untrained", metric)
            if models:
                values[METRICS["dino"][metric]] = models
        plot_seed_points(values, folder / "dino.png")
        names.append("dino.png")
        if all("knn_curve" in summary[n] for n in dino):
            curves = {VARIANTS[n]["label"]: summary[n]["knn_curve"] for n in dino}
            keys = shared_curve_keys(curves.values())
            figure = _figure(5 * len(keys), 3.4)
            for axis, key in zip(figure.subplots(1, len(keys), squeeze=False)[0], keys, strict=True):
                for label, curve in curves.items():
                    axis.plot(curve["steps"], curve[key]["mean"], marker="o", markersize=3, label=label)
                if key == "knn_top1":
                    axis.axhline(results["chance"], color="black", linestyle="--", linewidth=1, label="chance")
                _label_axis(axis, "step", CURVE_KEYS[key] + " (validation)")
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


def pilot_figure(pilot: dict, path: Path) -> None:
    from lastvit.measure.plots import _figure, _save

    curve = pilot["curves"]["knn_curve"]
    keys = shared_curve_keys(curve)
    figure = _figure(4.5 * (len(keys) + 1), 3.2)
    *lefts, right = figure.subplots(1, len(keys) + 1)
    steps = [p["step"] for p in curve]
    for axis, key in zip(lefts, keys, strict=True):
        axis.plot(steps, [p[key] for p in curve], marker="o", markersize=3, label=pilot["label"])
        axis.axhline(curve[0][key], color="tab:gray", linestyle=":", label="untrained (step 0)")
        if key == "knn_top1":
            axis.axhline(pilot["chance"], color="black", linestyle="--", linewidth=1, label="chance")
        _label_axis(axis, "step", CURVE_KEYS[key] + " (validation)")
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


__all__ = ["pilot_figure", "write_figures"]
