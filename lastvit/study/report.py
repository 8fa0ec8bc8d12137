"""The study's numbers and words: per-seed numbers, summaries with paired tests corrected for
multiple testing (Holm for the declared primary endpoints, Benjamini-Hochberg for everything
else), the Markdown report and its figures. The sentences are derived from the numbers, whichever
way they go."""

from __future__ import annotations

import math
from pathlib import Path

from lastvit.measure.maps import MAP_LABELS, SHORT_LABELS

from .config import PRIMARY_ENDPOINTS, REFERENCE, SHIPPED
from .statistics import ALPHA, benjamini_hochberg, holm, mean_std, paired_test

METRICS = {
    "auroc": "AUROC vs exact object coverage",
    "point_in_box": "Point-in-Box",
    "corloc": "CorLoc",
    "segmentation_iou": "coarse-segmentation IoU",
}
SECONDARY_MAP_METRICS = ("point_in_box", "corloc", "segmentation_iou")
BASELINES = {"random_patch": "random map", "centre_patch": "centre patch", "colour_outlier": "colour outlier"}
BACKGROUND_LABELS = {
    "original": "original",
    "only_fg": "only-FG",
    "only_bg": "only-BG",
    "mixed_same": "mixed-same",
    "mixed_rand": "mixed-rand",
    "bg_gap": "BG-gap",
    "flip_rate": "flip rate",
}
ENDPOINT_LABELS = {
    "background/mixed_rand": "mixed-rand top-1",
    "background/bg_gap": "BG-gap (mixed-same - mixed-rand)",
    "auroc/patch_score": "Patch-Score (pooled) map AUROC",
}
# What LaSt-ViT's claim predicts for LazyStrike vs CLS: +1 higher, -1 lower.
PREDICTED_SIGN = {
    "background/mixed_rand": 1,
    "background/bg_gap": -1,
    "auroc/patch_score": 1,
    "background/only_bg": -1,
}
NORM_KEYS = ("patch_max_over_median", "cls_to_patch", "register_to_patch", "high_norm_patches_per_image")
SCALE_NOTES = {
    "cpu": "the quick CPU scale (README command 1)",
    "long": "the long CPU scale (`--scale long`: more images and steps than command 1)",
    "gpu": "the GPU scale (`--scale gpu`: 196 patches, objects at most 25% of the image)",
}


def _scale_note(results: dict) -> str:
    """Which scale this report is, and the others, each of which writes its own report."""
    scale = results.get("config", {}).get("scale", "cpu")
    others = ", ".join(f"`--scale {name}`" for name in SCALE_NOTES if name != scale)
    return f"This report is {SCALE_NOTES.get(scale, scale)}; {others} run the same study at other sizes, each into its own report."


def flatten_metrics(metrics: dict) -> dict:
    """The numbers of one run that the summary and the tests use, as ``{key: float or list}``.
    Keys: ``top1``, ``top5``, ``untrained_top1``, ``validation_top1``; ``{metric}/{map}`` and
    ``{metric}/{map}/untrained`` for every map and metric of `METRICS`; ``{metric}/baseline/{name}``
    and ``{metric}/ceiling``; ``background/{set}`` (and ``/untrained``) for every set, ``bg_gap`` and
    ``flip_rate``; ``probe/{order}`` (lists over k); ``norms/{statistic}`` of the last layer before
    the final LayerNorm (and ``norms/max_patch_max_over_median`` over all layers)."""
    flat = {
        "top1": metrics["classification"]["top1"],
        "top5": metrics["classification"].get("top5"),
        "untrained_top1": metrics["untrained_classification"]["top1"],
    }
    if metrics.get("validation_top1") is not None:
        flat["validation_top1"] = metrics["validation_top1"]
    for map_name, values in metrics["maps"].items():
        for metric in METRICS:
            if metric in values:
                flat[f"{metric}/{map_name}"] = values[metric]
                flat[f"{metric}/{map_name}/untrained"] = values["untrained"][metric]
    for baseline, values in metrics["baselines"].items():
        for metric in METRICS:
            if metric in values:
                flat[f"{metric}/baseline/{baseline}"] = values[metric]
    for metric in METRICS:
        if metrics.get("ceiling") and metric in metrics["ceiling"]:
            flat[f"{metric}/ceiling"] = metrics["ceiling"][metric]
    if metrics.get("ceiling"):
        flat["single_class_images"] = metrics["ceiling"]["single_class_images"]
    background = metrics.get("background_test")
    if background:
        for key in BACKGROUND_LABELS:
            flat[f"background/{key}"] = background[key]
            if "untrained" in background:
                flat[f"background/{key}/untrained"] = background["untrained"][key]
    probe = metrics["masking_probe"]
    for order in ("high", "random", "low"):
        flat[f"probe/{order}"] = probe[order]
    flat["probe/k"] = probe["k"]
    flat["probe/num_patches"] = probe["num_patches"]
    layers = metrics["token_norms"]["before_final_layernorm"]["layers"]
    for key in NORM_KEYS:
        if layers[-1][key] is not None:
            flat[f"norms/{key}"] = layers[-1][key]
    flat["norms/max_patch_max_over_median"] = max(layer["patch_max_over_median"] for layer in layers)
    flat["norms/layers"] = layers
    flat["max_norm_after_final_layernorm"] = metrics["token_norms"]["after_final_layernorm"]["max_norm"]
    return flat


def _is_tested(key: str) -> bool:
    return not (key.endswith(("/untrained", "/ceiling")) or "/baseline/" in key) and key not in (
        "single_class_images",
        "max_norm_after_final_layernorm",
    )


def summarise(per_run: dict, primary_endpoints=PRIMARY_ENDPOINTS) -> tuple[dict, dict]:
    """Per variant: mean ± std over seeds of every scalar, and paired tests (over seeds) of
    (a) the variant against the reference ViT (CLS) and (b) the trained model against its
    untrained twin. The tests named by `primary_endpoints` ((variant, metric) vs the reference)
    form the primary family, Holm-corrected; every other test is secondary, Benjamini-Hochberg
    corrected. Each test gets ``family``, ``p_adjusted`` and ``real`` (``p_adjusted < ALPHA``).
    Returns ``(summary, testing)``; `testing` states the corrections and the count of tests."""
    summary = {}
    reference = per_run.get(REFERENCE)
    primary = {(variant, f"{metric} vs {REFERENCE}") for variant, metric in primary_endpoints}
    for name, runs in per_run.items():
        scalars = [k for k, v in runs[0].items() if isinstance(v, float) and all(k in r for r in runs)]
        entry = {k: mean_std([r[k] for r in runs]) for k in scalars}
        entry["probe"] = {
            order: [mean_std([r[f"probe/{order}"][i] for r in runs])["mean"] for i in range(len(runs[0]["probe/k"]))]
            for order in ("high", "random", "low")
        }
        if "norms/layers" in runs[0]:
            entry["norms/layers"] = [
                {
                    key: (
                        mean_std([r["norms/layers"][i][key] for r in runs])["mean"]
                        if runs[0]["norms/layers"][i][key] is not None
                        else None
                    )
                    for key in runs[0]["norms/layers"][i]
                }
                for i in range(len(runs[0]["norms/layers"]))
            ]
        tests = {}
        for key in scalars:
            if not _is_tested(key):
                continue
            if name != REFERENCE and reference is not None and key in reference[0]:
                tests[f"{key} vs {REFERENCE}"] = paired_test([r[key] for r in runs], [r[key] for r in reference])
            twin = f"{key}/untrained" if "/" in key else ("untrained_top1" if key == "top1" else None)
            if twin and twin in runs[0]:
                tests[f"{key} vs untrained"] = paired_test([r[key] for r in runs], [r[twin] for r in runs])
        for key, test in tests.items():
            test["family"] = "primary" if (name, key) in primary else "secondary"
        entry["tests"] = tests
        summary[name] = entry
    families = {"primary": [], "secondary": []}
    for name, entry in summary.items():
        for test in entry["tests"].values():
            families[test["family"]].append(test)
    corrections = {"primary": ("Holm", holm), "secondary": ("Benjamini-Hochberg", benjamini_hochberg)}
    testing = {}
    for family, tests in families.items():
        label, correct = corrections[family]
        adjusted = correct([t["p"] for t in tests])
        for test, value in zip(tests, adjusted):
            test["p_adjusted"] = value
            test["real"] = bool(not math.isnan(value) and value < ALPHA)
        testing[family] = {
            "correction": label,
            "tests": sum(1 for t in tests if t["p"] == t["p"]),
            "alpha": ALPHA,
            "significant_after_correction": sum(t["real"] for t in tests),
            "significant_before_correction": sum(1 for t in tests if t["p"] == t["p"] and t["p"] < ALPHA),
        }
    missing = [
        f"{v}: {m}"
        for v, m in primary_endpoints
        if v not in summary or f"{m} vs {REFERENCE}" not in summary[v]["tests"]
    ]
    testing["primary"]["missing"] = missing
    testing["degrees_of_freedom"] = len(next(iter(per_run.values()))) - 1
    return summary, testing


def _cell(stats: dict | None) -> str:
    return "–" if stats is None else f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _mean(stats: dict | None) -> str:
    return "–" if stats is None else f"{stats['mean']:.3f}"


def _p(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3f}"


def _test_words(test: dict) -> str:
    if test["n"] < 2 or test["p"] != test["p"]:
        return "no test (one seed, or no spread in the differences)"
    verdict = "a real difference" if test["real"] else "not shown to be real"
    family = "Holm" if test.get("family") == "primary" else "Benjamini-Hochberg"
    return f"paired t-test over {test['n']} seeds p = {test['p']:.3f}, {family}-corrected p = {test['p_adjusted']:.3f}: {verdict}"


def endpoint_rows(results: dict) -> list[dict]:
    """One row per declared primary endpoint: means, difference, p, Holm p and the verdict."""
    summary, rows = results["summary"], []
    for endpoint in results["primary_endpoints"]:
        variant, metric = endpoint["variant"], endpoint["metric"]
        test = summary.get(variant, {}).get("tests", {}).get(f"{metric} vs {REFERENCE}")
        if test is None:
            continue
        sign = PREDICTED_SIGN.get(metric, 1)
        if not test["real"]:
            verdict = "not shown"
        elif test["mean_difference"] * sign > 0:
            verdict = "supports the claim"
        else:
            verdict = "contradicts the claim"
        rows.append(
            {
                "variant": variant,
                "metric": metric,
                "variant_mean": summary[variant][metric]["mean"],
                "reference_mean": summary[REFERENCE][metric]["mean"],
                "difference": test["mean_difference"],
                "p": test["p"],
                "p_holm": test["p_adjusted"],
                "predicted": "higher" if sign > 0 else "lower",
                "verdict": verdict,
            }
        )
    return rows


def _learning_sentence(results: dict) -> str:
    summary, chance, labels = results["summary"], results["chance"], results["variants"]
    best = max(summary, key=lambda n: summary[n]["top1"]["mean"])
    best_top1 = summary[best]["top1"]["mean"]
    learned = best_top1 >= chance + 0.15
    return (
        f"- Learning: the best mean top-1 on the original test set is {best_top1:.3f} ({labels[best]['label']}); "
        f"chance is {chance:.3f}. "
        + (
            "The models learned something, so the maps and the background test reflect training."
            if learned
            else "That is within 0.15 of chance: the maps below mostly reflect initialisation, not learning."
        )
    )


def _shortcut_sentence(results: dict) -> str | None:
    """Does the reference (CLS) use the background at all? Without a shortcut the BG-gap says little."""
    summary, chance = results["summary"], results["chance"]
    if REFERENCE not in summary or "background/bg_gap" not in summary[REFERENCE]:
        return None
    ref = summary[REFERENCE]
    test = ref["tests"].get("background/bg_gap vs untrained")
    gap = ref["background/bg_gap"]["mean"]
    return (
        f"- Does the CLS ViT use the background at all? Its BG-gap is {gap:+.3f} "
        f"(untrained {ref['background/bg_gap/untrained']['mean']:+.3f}; {_test_words(test)}) and its only-BG "
        f"top-1 {ref['background/only_bg']['mean']:.3f} (chance {chance:.3f}). "
        + (
            "The shortcut is there to be used, so a smaller BG-gap for LazyStrike would mean something."
            if test and test["real"] and gap > 0
            else "Without a measurable shortcut in the reference, the BG-gap endpoints cannot say much."
        )
    )


def _map_sentences(results: dict) -> list[str]:
    """Maps whose AUROC is below 0.5, and the strongest map-free baseline with the maps above it."""
    summary, labels = results["summary"], results["variants"]
    lines = []
    below = []
    for name in summary:
        for map_name in MAP_LABELS:
            key = f"auroc/{map_name}"
            if key in summary[name] and summary[name][key]["mean"] < 0.5:
                below.append(f"{labels[name]['label']} {SHORT_LABELS[map_name]} ({summary[name][key]['mean']:.3f})")
    if below:
        lines.append(
            "- AUROC below 0.5 means the map ranks background patches above object patches: "
            + "; ".join(below)
            + ". These maps point away from the object, whatever their Point-in-Box."
        )
    ref = summary[REFERENCE]
    if "auroc/baseline/colour_outlier" in ref:
        strongest = max(BASELINES, key=lambda b: ref[f"auroc/baseline/{b}"]["mean"])
        value = ref[f"auroc/baseline/{strongest}"]["mean"]
        above = [
            f"{labels[n]['label']} {SHORT_LABELS[m]}"
            for n in summary
            for m in MAP_LABELS
            if f"auroc/{m}" in summary[n] and summary[n][f"auroc/{m}"]["mean"] > value
        ]
        lines.append(
            f"- The strongest map-free baseline by AUROC is the {BASELINES[strongest]} at {value:.3f} (ceiling "
            f"{ref['auroc/ceiling']['mean']:.3f}); "
            + (f"maps above it: {', '.join(above)}." if above else "no model's map beats it.")
        )
    return lines


def _norm_sentence(results: dict) -> str | None:
    summary = results["summary"]
    ref = summary[REFERENCE]
    if "vit_reg4" not in summary or "norms/patch_max_over_median" not in ref:
        return None
    reg = summary["vit_reg4"]
    test = reg["tests"].get("norms/max_patch_max_over_median vs vit_cls")
    return (
        "- Token norms before the final LayerNorm (where high-norm tokens would show): the largest patch norm "
        f"over the median patch norm, at any layer, is {ref['norms/max_patch_max_over_median']['mean']:.2f} for "
        f"the CLS ViT and {reg['norms/max_patch_max_over_median']['mean']:.2f} with 4 registers ({_test_words(test)}); "
        f"the registers' norm is {reg['norms/register_to_patch']['mean']:.2f} x the patches' at the last layer. "
        "At this scale this tests for high-norm patches; it cannot show the large-model effect registers remove."
    )


def verdict(results: dict) -> list[str]:
    """Plain sentences on what the numbers support, from the summary and its corrected tests."""
    labels = results["variants"]
    lines = [_learning_sentence(results)]
    for row in endpoint_rows(results):
        label = labels[row["variant"]]["label"]
        lines.append(
            f"- Primary: {label} vs ViT (CLS), {ENDPOINT_LABELS.get(row['metric'], row['metric'])}: "
            f"{row['variant_mean']:.3f} vs {row['reference_mean']:.3f} (difference {row['difference']:+.3f}, "
            f"Holm-corrected p = {_p(row['p_holm'])}); the claim predicts {row['predicted']}: {row['verdict']}."
        )
    lines += [line for line in [_shortcut_sentence(results)] if line is not None]
    lines += _map_sentences(results)
    lines += [line for line in [_norm_sentence(results)] if line is not None]
    testing = results["multiple_testing"]
    lines.append(
        f"- Tests: {testing['primary']['tests']} primary (Holm) and {testing['secondary']['tests']} secondary "
        f"(Benjamini-Hochberg) paired t-tests over {len(results['seeds'])} seeds "
        f"({testing['degrees_of_freedom']} degrees of freedom); {testing['secondary']['significant_before_correction']} "
        f"secondary tests had p < {ALPHA} before correction, {testing['secondary']['significant_after_correction']} "
        "after. 'Not shown' is not 'equal'."
    )
    return lines


def _setup_paragraph(results: dict) -> str:
    config, env = results["config"], results["environment"]
    timings = results["timings_s"]
    return (
        f"{len(results['seeds'])} seeds ({', '.join(map(str, results['seeds']))}); {config['data_variant']} images, "
        f"{config['num_train']} training / {config['num_validation']} validation / {config['num_test']} test images "
        f"at {config['image_size']} px (objects {config['scale_range'][0]}–{config['scale_range'][1]} of the side; "
        f"{len(results['class_names'])} classes, chance {results['chance']:.3f}); background correlation rho = "
        f"{config['background_correlation']} over {config['background_groups']} groups; a ViT of preset "
        f"`{config['preset']}` with patch {config['patch_size']}; {config['epochs']} epochs at batch "
        f"{config['batch_size']}, AdamW lr {config['learning_rate']}, wd {config['weight_decay']}. Scale "
        f"`{config['scale']}` on {env['device']}{' (' + env['gpu'] + ')' if 'gpu' in env else ''}, torch "
        f"{env['torch']}, transformers {env['transformers']}; {results['minutes']:.1f} minutes in all (data "
        f"{timings['data']:.0f} s, training {sum(timings['training'].values()):.0f} s, evaluation "
        f"{sum(timings['evaluation'].values()):.0f} s). Mean ± std over seeds."
    )


def _primary_lines(results: dict) -> list[str]:
    """The declared primary endpoints: one row each, with the Holm-corrected verdict."""
    summary, labels, testing = results["summary"], results["variants"], results["multiple_testing"]
    ref = summary[REFERENCE]
    lines = [
        "## Primary endpoints (declared in `StudyConfig.primary_endpoints` before the run)",
        "",
        (
            f"Each is a paired t-test over seeds against the ViT (CLS); the {testing['primary']['tests']} tests form one "
            f"family, Holm-corrected (alpha {ALPHA}). LaSt-ViT's claim predicts higher mixed-rand top-1, a smaller "
            "BG-gap and a higher map AUROC than CLS; a significant difference the other way contradicts it."
        ),
        "",
        "| model | endpoint | model | ViT (CLS) | difference | p | Holm p | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in endpoint_rows(results):
        lines.append(
            f"| {labels[row['variant']]['label']} | {ENDPOINT_LABELS.get(row['metric'], row['metric'])} | "
            f"{_cell(summary[row['variant']][row['metric']])} | {_cell(ref[row['metric']])} | "
            f"{row['difference']:+.3f} | {_p(row['p'])} | {_p(row['p_holm'])} | {row['verdict']} |"
        )
    if testing["primary"].get("missing"):
        lines += [
            "",
            "Primary endpoints without a test in this run: " + ", ".join(testing["primary"]["missing"]) + ".",
        ]
    return lines


def _background_lines(results: dict) -> list[str]:
    summary, labels, testing = results["summary"], results["variants"], results["multiple_testing"]
    lines = [
        (
            f"Everything below is **secondary**: its {testing['secondary']['tests']} paired tests are "
            "Benjamini-Hochberg-corrected as one family (`report.json`: `summary.<model>.tests`, with `p` and "
            "`p_adjusted`)."
        ),
        "",
        "## Background test (trained / untrained)",
        "",
        results.get("background_note", ""),
        "",
        "| model | " + " | ".join(BACKGROUND_LABELS.values()) + " |",
        "|---|" + "---|" * len(BACKGROUND_LABELS),
    ]
    for n in summary:
        cells = [
            f"{_mean(summary[n].get(f'background/{k}'))} / {_mean(summary[n].get(f'background/{k}/untrained'))}"
            for k in BACKGROUND_LABELS
        ]
        lines.append(f"| {labels[n]['label']} | " + " | ".join(cells) + " |")
    return lines + [
        "",
        (
            "Top-1 on each set (only-BG scored against the object's label: what the background alone gives away); "
            "BG-gap = mixed-same − mixed-rand; flip rate = share of images whose prediction changes between original "
            "and mixed-rand."
        ),
    ]


def _accuracy_lines(results: dict) -> list[str]:
    summary, labels = results["summary"], results["variants"]
    lines = [
        "## Accuracy",
        "",
        "| model | top-1 (test) | top-5 | top-1 untrained | top-1 (validation) |",
        "|---|---|---|---|---|",
    ]
    for n in summary:
        lines.append(
            f"| {labels[n]['label']} | {_cell(summary[n]['top1'])} | {_cell(summary[n].get('top5'))} | "
            f"{_cell(summary[n]['untrained_top1'])} | {_cell(summary[n].get('validation_top1'))} |"
        )
    return lines


def _map_metric_lines(results: dict) -> list[str]:
    """One table per map metric (trained / untrained, per map), with the ceiling and the baselines."""
    summary, labels = results["summary"], results["variants"]
    names, ref = list(summary), summary[REFERENCE]
    maps = [m for m in MAP_LABELS if any(f"auroc/{m}" in summary[n] for n in names)]
    lines = []
    for metric, metric_label in METRICS.items():
        if not any(f"{metric}/{m}" in summary[n] for n in names for m in maps):
            continue
        role = "" if metric == "auroc" else " (secondary, the paper's measure)"
        lines += [
            "",
            f"## {metric_label}{role}: trained / untrained, per map",
            "",
            "| model | " + " | ".join(MAP_LABELS[m] for m in maps) + " |",
            "|---|" + "---|" * len(maps),
        ]
        for n in names:
            cells = []
            for m in maps:
                key = f"{metric}/{m}"
                cells.append(
                    f"{_cell(summary[n][key])} / {_mean(summary[n][key + '/untrained'])}" if key in summary[n] else "–"
                )
            lines.append(f"| {labels[n]['label']} | " + " | ".join(cells) + " |")
        extras = [f"ceiling (exact coverage map) {_mean(ref.get(f'{metric}/ceiling'))}"]
        extras += [f"{label} {_mean(ref.get(f'{metric}/baseline/{b}'))}" for b, label in BASELINES.items()]
        lines += ["", "Ceiling and map-free baselines: " + ", ".join(extras) + "."]
        if metric == "auroc":
            skipped = results["per_seed"][REFERENCE][0].get("single_class_images", 0)
            lines += [
                "",
                (
                    "Per-image AUROC of the map against exact per-patch object coverage (object patch = at least 50% "
                    "covered), averaged over images: 0.5 is chance, 1 puts every object patch above every background "
                    "patch, and **below 0.5 the map ranks background above the object**. It needs no threshold and "
                    f"cannot be fooled by the map's sign. {skipped:.0f} test images whose patches are all one class "
                    "have no AUROC and are skipped."
                ),
            ]
    return lines


def _probe_and_norm_lines(results: dict) -> list[str]:
    summary, labels = results["summary"], results["variants"]
    probe_ks = results["per_seed"][REFERENCE][0]["probe/k"]
    n_patches = results["per_seed"][REFERENCE][0]["probe/num_patches"]
    lines = [
        f"## Masking probe (secondary; top-1 after masking k of {n_patches} patches, ranked by Patch Score)",
        "",
        "| model | order | " + " | ".join(f"k={k}" for k in probe_ks) + " |",
        "|---|---|" + "---|" * len(probe_ks),
    ]
    for n in summary:
        for order in ("high", "random", "low"):
            lines.append(
                f"| {labels[n]['label']} | {order} first | "
                + " | ".join(f"{v:.3f}" for v in summary[n]["probe"][order])
                + " |"
            )
    lines += [
        "",
        "## Token norms before the final LayerNorm (secondary)",
        "",
        (
            "Measured on each block's output (where high-norm tokens live; after the final LayerNorm every token has "
            "norm ≈ √D by construction). Last layer, mean over seeds; max/median = the largest patch norm over the "
            "image's median patch norm; the largest over all layers in the last column."
        ),
        "",
        (
            "| model | patch max / median | CLS / patch | registers / patch | high-norm patches / image | "
            "max / median, any layer |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for n in summary:
        cells = [_mean(summary[n].get(f"norms/{k}")) for k in NORM_KEYS]
        lines.append(
            f"| {labels[n]['label']} | "
            + " | ".join(cells)
            + f" | {_mean(summary[n].get('norms/max_patch_max_over_median'))} |"
        )
    return lines


def _secondary_test_lines(results: dict) -> list[str]:
    summary, labels = results["summary"], results["variants"]
    lines = [
        "## Secondary tests against the ViT (CLS) (Benjamini-Hochberg-corrected)",
        "",
        "| model | comparison | differences per seed | p | BH p | real? |",
        "|---|---|---|---|---|---|",
    ]
    shown = ("top1 ", "background/", "auroc/", "segmentation_iou/patch_score ", "corloc/patch_score ", "norms/")
    for n in summary:
        for key, test in summary[n]["tests"].items():
            if test["family"] != "secondary" or not key.endswith(f"vs {REFERENCE}") or not key.startswith(shown):
                continue
            diffs = ", ".join(f"{d:+.3f}" for d in test["differences"])
            lines.append(
                f"| {labels[n]['label']} | {key} | {diffs} | {_p(test['p'])} | {_p(test['p_adjusted'])} | "
                f"{'yes' if test['real'] else 'no'} |"
            )
    return lines


def _method_lines(results: dict) -> list[str]:
    """How the defaults were chosen, and what each measure means."""
    return [
        "## How the defaults were chosen",
        "",
        *[f"- {key.replace('_', ' ')}: {text}." for key, text in results.get("choices", {}).items()],
        f"- {_scale_note(results)}",
        "",
        "## Definitions",
        "",
        (
            "- Patch Score (pooled): cosine of each final patch token with the model's pooled feature (LaSt-ViT "
            "Eq. 3). Patch Score (CLS): cosine with the final CLS output, which the authors' released Point-in-Box "
            "script uses even for LazyStrike models. Votes: how many channels selected each patch (LazyStrike). "
            "CLS attention: last-layer attention of the CLS token to the patches, head-averaged."
        ),
        (
            "- Point-in-Box: the arg-max patch of a map lies in the object's box (right/bottom box edges exclusive). "
            "CorLoc: the box of the largest connected region of score > mean + std has IoU ≥ 0.5 with the object's "
            "box. Coarse segmentation: IoU of that region (whole patches) with the exact object mask. Ceiling: the "
            "same metric of the exact coverage map."
        ),
        (
            "- Untrained: the same architecture freshly initialised with the run's seed, measured on the same "
            "images. Masking probe: blank (to the mean colour) the k highest-, random- or lowest-scored patches."
        ),
        "- Test split: " + results.get("test_split_note", "held-out backgrounds and object instances") + ".",
    ]


def markdown(results: dict, figures: dict) -> str:
    """The study's report: setup, primary endpoints, then every secondary table, the verdict,
    the secondary tests, the method and the figures."""
    labels = results["variants"]
    lines = ["# Does LazyStrike make a ViT look at the object?", "", _setup_paragraph(results), ""]
    lines += _primary_lines(results)
    lines += ["", *_background_lines(results)]
    lines += ["", *_accuracy_lines(results)]
    lines += _map_metric_lines(results)
    lines += ["", *_probe_and_norm_lines(results)]
    lines += ["", "## What the numbers support", ""] + verdict(results)
    lines += ["", *_secondary_test_lines(results)]
    lines += ["", *_method_lines(results)]
    lines += ["", "## Figures", ""] + [f"![{caption}]({name})" for name, caption in figures.items()]
    shipped = SHIPPED if SHIPPED in labels else list(results["summary"])[-1]
    lines += [
        "",
        (
            f"The trained {labels[shipped]['label']} (seed {results['seeds'][0]}) is in `lastvit-model/`: "
            "`AutoModelForImageClassification.from_pretrained('lastvit-model', trust_remote_code=True)`."
        ),
    ]
    return "\n".join(lines) + "\n"


def write_figures(folder: Path, results: dict, data, arrays: dict, stats) -> dict:
    """Maps of the first seed's models on a few test images, masking-probe curves, per-seed points."""
    from lastvit.measure import plots as P

    labels = results["variants"]
    count = results["config"]["figure_images"]
    figures = {}
    name = "maps.png"
    if data is not None:  # else (a merged study) maps.png is copied from the part with the first seed
        grid = next(iter(arrays.values()))["grid"]
        rows = {labels[n]["label"]: {SHORT_LABELS[m]: v[:count] for m, v in arrays[n]["maps"].items()} for n in arrays}
        P.plot_map_grid(
            data.pixel_values[:count],
            rows,
            folder / name,
            grid,
            boxes=data.boxes[:count],
            masks=None if data.masks is None else data.masks[:count],
            mean=stats[0],
            std=stats[1],
        )
    figures[name] = "maps of every model (first seed, test images): box in green, exact mask outlined"
    summary = results["summary"]
    first = results["per_seed"][next(iter(summary))][0]
    curves = {labels[n]["label"]: summary[n]["probe"] for n in summary}
    P.plot_probe_comparison(
        first["probe/k"], curves, folder / "masking_probe.png", first["probe/num_patches"], chance=results["chance"]
    )
    figures["masking_probe.png"] = "masking probe, mean over seeds"
    points = {
        metric: {labels[n]["label"]: [r[key] for r in results["per_seed"][n] if key in r] for n in summary}
        for metric, key in (
            ("top-1 (original)", "top1"),
            ("top-1 (mixed-rand)", "background/mixed_rand"),
            ("BG-gap", "background/bg_gap"),
            ("Patch-Score AUROC", "auroc/patch_score"),
        )
    }
    P.plot_seed_points(points, folder / "per_seed.png", reference={"top-1 (original)": results["chance"]})
    figures["per_seed.png"] = "per-seed points of the primary measures (dashed: chance)"
    return figures


def write_report(folder: Path, results: dict, data, arrays: dict, stats) -> list[str]:
    figures = write_figures(folder, results, data, arrays, stats)
    (folder / "report.md").write_text(markdown(results, figures))
    return ["report.md", "report.json", *figures]


__all__ = ["endpoint_rows", "flatten_metrics", "markdown", "summarise", "verdict", "write_report"]
