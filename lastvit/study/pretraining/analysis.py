"""The pre-declared tests and the summaries over seeds: the primary tests (DINO-CLS learns; the CLIP
readout x caption-rate interaction) and the exploratory secondary tests, Holm-adjusted within each
family (`lastvit.study.statistics`)."""

from __future__ import annotations

import numpy as np

from ..statistics import ALPHA, holm, mean_std, paired_test, slope
from .config import BASELINE, METRICS, TESTED, VARIANTS, PretrainingStudyConfig


def runs_of(per_seed: dict, name: str, rate: float | None = None) -> list[dict]:
    """The runs of `name` (at caption `rate` for CLIP), in seed order."""
    runs = [r for r in per_seed[name] if rate is None or r.get("caption_rate") == rate]
    return sorted(runs, key=lambda r: r.get("seed", 0))


def values_of(runs, side: str, metric: str) -> list[float] | None:
    if not runs or not all(metric in r[side] for r in runs):
        return None
    return [r[side][metric] for r in runs]


def _describe(runs, metric):
    trained, untrained = values_of(runs, "trained", metric), values_of(runs, "untrained", metric)
    if trained is None or untrained is None:
        return None
    return {"trained": mean_std(trained), "untrained": mean_std(untrained)}


def interaction_test(config: PretrainingStudyConfig, per_seed: dict, variant: str, metric="zero_shot_top1") -> dict:
    """The readout x rate interaction of `variant`: per seed, the slope over the rates of
    (variant minus CLIP-CLS) `metric`; a one-sample t-test of the slopes against 0."""
    seeds = [r["seed"] for r in runs_of(per_seed, variant, config.caption_rates[0])]
    differences = {}
    for rate in config.caption_rates:
        runs, cls_runs = runs_of(per_seed, variant, rate), runs_of(per_seed, "clip_cls", rate)
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


# what each test compares (report.json's ``comparison``): the model vs its untrained twin, a LazyStrike
# readout vs trained CLS, its gain from training vs CLS's gain, or the slope over the caption rates
COMPARISONS = ("untrained", "cls", "gain", "slope")


def _test_entry(family, kind, description, test, metric: str, comparison: str) -> dict:
    return {
        "family": family,
        "kind": kind,
        "description": description,
        "metric": metric,
        "comparison": comparison,
        **test,
    }


def _dino_primary(per_seed: dict) -> dict:
    """DINO-CLS learns: its trained vs untrained k-NN top-1."""
    runs = runs_of(per_seed, BASELINE["dino"])
    return _test_entry(
        "dino",
        "primary",
        "DINO-CLS k-NN top-1: trained vs untrained twin",
        paired_test(*(values_of(runs, side, "knn_top1") for side in ("trained", "untrained"))),
        "knn_top1",
        "untrained",
    )


def _dino_secondary(config: PretrainingStudyConfig, per_seed: dict) -> list[dict]:
    """Per DINO variant and tested metric: trained vs untrained twin (but CLS's k-NN top-1, the
    primary), and for a LazyStrike variant also trained vs trained CLS and its gain from training vs
    CLS's gain."""
    titles, baseline = METRICS["dino"], BASELINE["dino"]
    cls_runs = runs_of(per_seed, baseline)
    tests = []
    for name in (n for n in config.variants if VARIANTS[n]["family"] == "dino"):
        runs, label = runs_of(per_seed, name), VARIANTS[name]["label"]
        for metric in TESTED["dino"]:
            trained, untrained = values_of(runs, "trained", metric), values_of(runs, "untrained", metric)
            if trained is None or untrained is None:
                continue
            described = f"{label} {titles[metric]}"
            if not (name == baseline and metric == "knn_top1"):
                tests.append(
                    _secondary(
                        "dino", f"{described}: trained vs untrained twin", trained, untrained, metric, "untrained"
                    )
                )
            if name == baseline:
                continue
            cls_trained, cls_untrained = (
                values_of(cls_runs, "trained", metric),
                values_of(cls_runs, "untrained", metric),
            )
            tests.append(
                _secondary("dino", f"{described}: trained vs trained CLS", trained, cls_trained, metric, "cls")
            )
            tests.append(
                _secondary(
                    "dino",
                    f"{described}: gain from training vs CLS's gain",
                    [t - u for t, u in zip(trained, untrained)],
                    [t - u for t, u in zip(cls_trained, cls_untrained)],
                    metric,
                    "gain",
                )
            )
    return tests


def _clip_primary(config: PretrainingStudyConfig, per_seed: dict) -> dict:
    """The readout x caption-rate interaction of the primary LazyStrike variant."""
    return _test_entry(
        "clip",
        "primary",
        f"{VARIANTS[config.primary_clip_variant]['label']} minus CLIP-CLS zero-shot top-1: slope over the "
        "caption rates",
        interaction_test(config, per_seed, config.primary_clip_variant),
        "zero_shot_top1",
        "slope",
    )


def _clip_secondary(config: PretrainingStudyConfig, per_seed: dict) -> list[dict]:
    """The other LazyStrike variant's slope; per caption rate and CLIP variant, zero-shot top-1
    trained vs untrained twin, and for a LazyStrike variant each tested metric vs trained CLS."""
    titles, baseline = METRICS["clip"], BASELINE["clip"]
    other = config.secondary_clip_variant
    tests = [
        _test_entry(
            "clip",
            "secondary",
            f"{VARIANTS[other]['label']} minus CLIP-CLS zero-shot top-1: slope over the caption rates",
            interaction_test(config, per_seed, other),
            "zero_shot_top1",
            "slope",
        )
    ]
    for rate in config.caption_rates:
        cls_runs = runs_of(per_seed, baseline, rate)
        for name in (n for n in config.variants if VARIANTS[n]["family"] == "clip"):
            runs = runs_of(per_seed, name, rate)
            label = f"{VARIANTS[name]['label']} at rate {rate}"
            tests.append(
                _secondary(
                    "clip",
                    f"{label} zero-shot top-1: trained vs untrained twin",
                    values_of(runs, "trained", "zero_shot_top1"),
                    values_of(runs, "untrained", "zero_shot_top1"),
                    "zero_shot_top1",
                    "untrained",
                )
            )
            if name == baseline:
                continue
            for metric in TESTED["clip"]:
                values, cls_values = values_of(runs, "trained", metric), values_of(cls_runs, "trained", metric)
                if values is not None and cls_values is not None:
                    tests.append(
                        _secondary(
                            "clip",
                            f"{label} {titles[metric]}: trained vs trained CLS",
                            values,
                            cls_values,
                            metric,
                            "cls",
                        )
                    )
    return tests


def _secondary(family: str, description: str, a, b, metric: str, comparison: str) -> dict:
    return _test_entry(family, "secondary", description, paired_test(a, b), metric, comparison)


def _decide(primary: dict, secondary: list[dict]) -> None:
    """``real``: the primary's own p, the secondary tests' Holm-adjusted p (within the family), below alpha."""
    primary["p_adjusted"] = primary["p"]
    primary["real"] = bool(primary["p"] < ALPHA)
    for test, p in zip(secondary, holm([t["p"] for t in secondary])):
        test["p_adjusted"] = p
        test["real"] = bool(p < ALPHA)


def study_tests(config: PretrainingStudyConfig, per_seed: dict) -> list[dict]:
    """Every test the design declares, family by family, primary first, each with its Holm-adjusted
    p (secondary tests: within their family) and ``real`` (the adjusted p, or the primary's own p,
    below alpha)."""
    tests = []
    for family in config.families:
        if family == "dino":
            primary, secondary = _dino_primary(per_seed), _dino_secondary(config, per_seed)
        else:
            primary, secondary = _clip_primary(config, per_seed), _clip_secondary(config, per_seed)
        _decide(primary, secondary)
        tests += [primary, *secondary]
    return tests


CURVE_KEYS = {"knn_top1": "k-NN top-1 of the class", "knn_background_top1": "k-NN top-1 of the background"}


def shared_curve_keys(records) -> list[str]:
    """The `CURVE_KEYS` every record has (curve points, or summaries of curves); the background's is
    absent where the data names no backgrounds."""
    records = list(records)
    return [key for key in CURVE_KEYS if all(key in record for record in records)]


def _mean_curve(curves: list[list[dict]]) -> dict:
    """``{"steps": [...], key: {"mean": [...], "per_seed": [[...], ...]}}`` for each `CURVE_KEYS` entry
    every point of every seed has (the background's only where the data names backgrounds)."""
    keys = shared_curve_keys(point for curve in curves for point in curve)
    summary = {"steps": [point["step"] for point in curves[0]]}
    for key in keys:
        per_seed = [[point[key] for point in curve] for curve in curves]
        summary[key] = {
            "mean": [float(np.mean(values)) for values in zip(*per_seed, strict=True)],
            "per_seed": per_seed,
        }
    return summary


def summarise(config: PretrainingStudyConfig, per_seed: dict) -> dict:
    """Mean ± std per variant and metric, trained and untrained twin: DINO ``{name: {metric: ...}}``,
    CLIP ``{name: {rate: {metric: ...}}}``; and for DINO the mean k-NN curve over seeds and the
    last collapse diagnostics."""
    summary = {}
    for name in config.variants:
        family = VARIANTS[name]["family"]
        if family == "dino":
            runs = runs_of(per_seed, name)
            entry = {"metrics": {m: d for m in METRICS[family] if (d := _describe(runs, m))}}
            curves = [r["curves"] for r in runs if r.get("curves")]
            if curves and all(c["knn_curve"] for c in curves):
                entry["knn_curve"] = _mean_curve([c["knn_curve"] for c in curves])
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
                    str(rate): {m: d for m in METRICS[family] if (d := _describe(runs_of(per_seed, name, rate), m))}
                    for rate in config.caption_rates
                }
            }
        summary[name] = entry
    return summary


__all__ = [
    "COMPARISONS",
    "CURVE_KEYS",
    "interaction_test",
    "runs_of",
    "shared_curve_keys",
    "study_tests",
    "summarise",
    "values_of",
]
