"""The pre-training study's report: the verdict sentences (primary first, each carried by a number in
report.json), report.md, report.json and figures written whole; `rewrite_report` regenerates them from
a finished study's report.json; and the DINO pilot's Markdown."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

from ..statistics import ALPHA
from .analysis import CURVE_KEYS, shared_curve_keys, study_tests, summarise
from .config import AUROC_NOTE, BASELINE, METRICS, VARIANTS, PretrainingStudyConfig, PretrainingStudyError
from .figures import write_figures

BACKGROUND_NOTE = (
    "Backgrounds challenge (the main study's counterfactual test sets, read out through each model's own "
    "classifier: k-NN for DINO, zero-shot for CLIP): every test scene rendered again with the same object on "
    "black (only-FG), without the object (only-BG: the background as drawn), on a background of its class's "
    "luminance group (mixed-same) or of another group (mixed-rand); BG-gap = mixed-same - mixed-rand; flip "
    "rate = the share of predictions that change from original to mixed-rand. These scenes tie no background "
    "to a class, so only-BG is at chance and BG-gap near 0 by construction; of these measures only mixed-rand "
    "top-1 is tested."
)


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
            lines.append("Primary (DINO): " + said + _curve_sentence(summary["dino_cls"]))
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
                    + " with the share of background captions, by a margin the seeds support (a linear trend"
                    + _monotone_clause(test["difference_by_rate"])
                    + ")."
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


def _monotone_clause(by_rate: dict) -> str:
    """Whether the mean differences rise (or fall) at every step of the rates, or where they peak."""
    values = [stats["mean"] for stats in by_rate.values()]
    steps = [b - a for a, b in itertools.pairwise(values)]
    if all(d > 0 for d in steps) or all(d < 0 for d in steps):
        return ", monotone over the rates"
    peak = max(by_rate, key=lambda rate: abs(by_rate[rate]["mean"]))
    return f"; the differences are not monotone in the rate: the largest is at {float(peak):.1f}"


def _curve_sentence(entry: dict) -> str:
    """Where DINO-CLS's validation curves start and end (mean over seeds), or nothing without curves."""
    curve = entry.get("knn_curve")
    if not curve:
        return ""
    ends = [
        f"{CURVE_KEYS[key]} {curve[key]['mean'][0]:.3f} -> {curve[key]['mean'][-1]:.3f}"
        for key in CURVE_KEYS
        if key in curve
    ]
    return f" On the validation split, from step 0 to step {curve['steps'][-1]}: " + "; ".join(ends) + "."


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
            f"Run time {results['minutes']:.1f} min ({results['environment']['device']}"
            + (
                f"; the sum of {len(results['parts'])} parts run side by side and merged, the longest "
                f"{max(part['minutes'] for part in results['parts']):.1f} min)."
                if results.get("parts")
                else ")."
            )
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
        *_background_note(all("knn_top1_mixed_rand" in summary[n]["metrics"] for n in names)),
    ]
    if all("knn_curve" in summary[n] for n in names):
        lines += _curve_tables(summary, names, labels)
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


def _curve_tables(summary, names, labels) -> list[str]:
    """The learning curves on the validation split, one table per `CURVE_KEYS` entry all variants have."""
    curves = [summary[n]["knn_curve"] for n in names]
    lines = []
    for key in shared_curve_keys(curves):
        lines += [
            f"### Learning curves: {CURVE_KEYS[key]} on the validation split (mean over seeds; step 0 = untrained)",
            "",
            "| step | " + " | ".join(labels) + " |",
            "|" + "---|" * (len(names) + 1),
            *[
                f"| {step} | " + " | ".join(f"{curve[key]['mean'][i]:.3f}" for curve in curves) + " |"
                for i, step in enumerate(curves[0]["steps"])
            ],
            "",
        ]
    if "knn_background_top1" in curves[0]:
        lines += [
            (
                "The background's k-NN reads which of the training backgrounds (the validation scenes reuse them) "
                "each image shows: a teacher whose background accuracy rises while the class accuracy does not has "
                "learned to tell the backgrounds apart, not the objects."
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
    lines += [
        f"{AUROC_NOTE}. PiB, CorLoc, coarse segmentation and mIoU are the paper's thresholded scores, untested.",
        "",
        *_background_note("zero_shot_top1_mixed_rand" in metrics),
    ]
    return lines


def _background_note(measured: bool) -> list[str]:
    if not measured:
        return ["Backgrounds challenge: not measured (a report from before the counterfactual test sets).", ""]
    return [BACKGROUND_NOTE, ""]


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
    return write_report(Path(folder), PretrainingStudyConfig.from_record(results["config"]), results)


# config fields that may differ between the parts of one study (`merge_reports`): which runs a part
# made and where it wrote them; everything else must agree
_PART_FIELDS = ("output_dir", "overwrite", "progress", "families", "seeds", "variants")


def merge_reports(parts, out: Path, overwrite: bool = False) -> dict:
    """One study's report from finished parts of it (e.g. ``--families dino`` and ``--families clip``
    run on two cores, or seeds split over machines): their runs pooled and tested together. Refused
    unless the parts share every setting, the scenes (data fingerprint) and the package versions, and
    together hold each variant of their families for every seed exactly once. The parts' run times
    add up to ``minutes``; ``parts`` records each part's folder, families, seeds and minutes."""
    from lastvit.files import is_nonempty_dir

    if len(parts) < 2:
        raise PretrainingStudyError("--merge takes the report folders of two or more parts of one study.")
    if is_nonempty_dir(out) and not overwrite:
        raise PretrainingStudyError(
            f"{out} already holds files; pass --overwrite to replace them or choose another --output-dir."
        )
    reports = [_finished_report(Path(folder)) for folder in parts]
    first = reports[0]
    for folder, report in zip(parts[1:], reports[1:], strict=True):
        for key, what in (("data_fingerprint", "scenes"), ("class_names", "class names")):
            if report.get(key) != first.get(key):
                raise PretrainingStudyError(
                    f"{folder} was run on other {what} than {parts[0]}; merge parts of one study only."
                )
        if report["environment"]["packages"] != first["environment"]["packages"]:
            raise PretrainingStudyError(
                f"{folder} ran with other package versions than {parts[0]}; rerun it in one environment."
            )
        differing = sorted(
            k
            for k in set(first["config"]) | set(report["config"])
            if k not in _PART_FIELDS and report["config"].get(k) != first["config"].get(k)
        )
        if differing:
            raise PretrainingStudyError(
                f"{folder} differs from {parts[0]} in {', '.join(differing)}; merge parts of one study only."
            )
    per_seed: dict[str, list] = {}
    for report in reports:
        for name, runs in report["per_seed"].items():
            per_seed.setdefault(name, []).extend(runs)
    families = tuple(f for f in BASELINE if any(VARIANTS[n]["family"] == f for n in per_seed))
    seeds = tuple(sorted({run["seed"] for runs in per_seed.values() for run in runs}))
    config = PretrainingStudyConfig.from_record(
        first["config"], output_dir=out, overwrite=overwrite, seeds=seeds, families=families
    )
    for name in config.variants:
        rates = (None,) if VARIANTS[name]["family"] == "dino" else config.caption_rates
        made = sorted((run["seed"], run.get("caption_rate")) for run in per_seed.get(name, []))
        wanted = sorted((seed, rate) for seed in seeds for rate in rates)
        if made != wanted:
            raise PretrainingStudyError(
                f"the parts hold {VARIANTS[name]['label']} for (seed, caption rate) {made}, not once for each of "
                f"{wanted}; merge parts that together ran every seed of the variants they share."
            )
    results = {
        **{k: first[k] for k in ("question", "chance", "class_names", "environment", "data_fingerprint")},
        "config": config.record(),
        "variants": {name: VARIANTS[name] for name in config.variants},
        "per_seed": {name: per_seed[name] for name in config.variants},
        "minutes": sum(report["minutes"] for report in reports),
        "parts": [
            {
                "folder": str(folder),
                "families": r["config"]["families"],
                "seeds": r["config"]["seeds"],
                "minutes": r["minutes"],
            }
            for folder, r in zip(parts, reports, strict=True)
        ],
    }
    return write_report(Path(out), config, results)


def _finished_report(folder: Path) -> dict:
    path = folder / "report.json"
    if not path.is_file():
        raise PretrainingStudyError(
            f"{folder} holds no report.json; give the --output-dir of a finished lastvit-study-pretraining run."
        )
    report = json.loads(path.read_text())
    if "design" not in report or "data_fingerprint" not in report:
        raise PretrainingStudyError(f"{path} predates the pre-declared design; run that part again.")
    return report


def _thinned(rows: list, count: int = 12) -> list:
    """About `count` evenly spaced rows, always the last one, none twice."""
    picked = rows[:: max(1, len(rows) // count)]
    return picked + rows[-1:] if rows and picked[-1] is not rows[-1] else picked


def _pilot_curve_table(curve: list[dict]) -> list[str]:
    keys = shared_curve_keys(curve)
    return [
        "| step | " + " | ".join(f"{CURVE_KEYS[key]} (validation)" for key in keys) + " |",
        "|---|" + "---|" * len(keys),
        *[f"| {p['step']} | " + " | ".join(f"{p[key]:.3f}" for key in keys) + " |" for p in curve],
    ]


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
        *_pilot_curve_table(curve),
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


__all__ = ["markdown", "merge_reports", "pilot_markdown", "rewrite_report", "verdict", "write_report"]
