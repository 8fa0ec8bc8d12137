"""The study's numbers and words: per-seed headline numbers, summaries with paired tests, the
Markdown report and its figures. The sentences are derived from the numbers, whichever way they go."""

from __future__ import annotations

from pathlib import Path

from lastvit.measure.evaluation import MAP_LABELS, SHORT_LABELS

from .config import REFERENCE
from .statistics import ALPHA, mean_std, paired_test

METRICS = {"point_in_box": "Point-in-Box", "corloc": "CorLoc", "segmentation_iou": "coarse-segmentation IoU"}
BASELINES = {"random_patch": "random patch", "centre_patch": "centre patch", "colour_outlier": "colour outlier"}


def flatten_metrics(metrics: dict) -> dict:
    """The numbers of one run that the summary and the tests use, as ``{key: float or list}``.
    Keys: ``top1``, ``top5``, ``untrained_top1``, ``{metric}/{map}`` and ``{metric}/{map}/untrained``
    for every map, ``{metric}/baseline/{name}``, ``probe/{order}`` (lists over k), token norms."""
    flat = {
        "top1": metrics["classification"]["top1"],
        "top5": metrics["classification"].get("top5"),
        "untrained_top1": metrics["untrained_classification"]["top1"],
    }
    for map_name, values in metrics["maps"].items():
        for metric in METRICS:
            flat[f"{metric}/{map_name}"] = values[metric]
            flat[f"{metric}/{map_name}/untrained"] = values["untrained"][metric]
    for baseline, values in metrics["baselines"].items():
        for metric in METRICS:
            flat[f"{metric}/baseline/{baseline}"] = values[metric]
    probe = metrics["masking_probe"]
    for order in ("high", "random", "low"):
        flat[f"probe/{order}"] = probe[order]
    flat["probe/k"] = probe["k"]
    flat["probe/num_patches"] = probe["num_patches"]
    flat["high_norm_tokens_per_image"] = metrics["token_norms"]["high_norm_tokens_per_image"]
    flat["max_norm"] = metrics["token_norms"]["max_norm"]
    return flat


def summarise(per_run: dict) -> dict:
    """Per variant: mean ± std over seeds of every scalar, and paired tests (over seeds) of
    (a) the variant against the reference ViT (CLS) and (b) the trained model against its
    untrained twin, for accuracy and every map's localisation metric."""
    summary = {}
    reference = per_run.get(REFERENCE)
    for name, runs in per_run.items():
        scalars = [k for k, v in runs[0].items() if isinstance(v, float)]
        entry = {k: mean_std([r[k] for r in runs]) for k in scalars}
        entry["probe"] = {
            order: [mean_std([r[f"probe/{order}"][i] for r in runs])["mean"] for i in range(len(runs[0]["probe/k"]))]
            for order in ("high", "random", "low")
        }
        tests = {}
        for key in scalars:
            if key.endswith("/untrained") or "/baseline/" in key:
                continue
            if name != REFERENCE and reference is not None and key in reference[0]:
                tests[f"{key} vs {REFERENCE}"] = paired_test([r[key] for r in runs], [r[key] for r in reference])
            twin = f"{key}/untrained" if "/" in key else ("untrained_top1" if key == "top1" else None)
            if twin and twin in runs[0]:
                tests[f"{key} vs untrained"] = paired_test([r[key] for r in runs], [r[twin] for r in runs])
        entry["tests"] = tests
        summary[name] = entry
    return summary


VERDICT_METRICS = (
    ("top1", "top-1"),
    ("point_in_box/patch_score", "Patch-Score Point-in-Box (pooled feature)"),
    ("corloc/patch_score", "Patch-Score CorLoc"),
    ("segmentation_iou/patch_score", "Patch-Score coarse-segmentation IoU"),
)


def _cell(stats: dict | None) -> str:
    return "–" if stats is None else f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _test_words(test: dict) -> str:
    if test["n"] < 2 or test["p"] != test["p"]:
        return "no test (one seed, or no difference)"
    verdict = "a real difference" if test["real"] else "not shown to be real"
    return f"paired t-test over {test['n']} seeds p = {test['p']:.3f}: {verdict}"


def verdict(results: dict) -> list[str]:
    """Plain sentences on what the numbers support, from the summary and its paired tests."""
    summary, chance, labels = results["summary"], results["chance"], results["variants"]
    lines = []
    best = max(summary, key=lambda n: summary[n]["top1"]["mean"])
    best_top1 = summary[best]["top1"]["mean"]
    learned = best_top1 >= chance + 0.15
    lines.append(
        f"- Learning: the best mean top-1 is {best_top1:.3f} ({labels[best]['label']}); chance is {chance:.3f}. "
        + (
            "The models learned the task, so the maps below reflect training."
            if learned
            else "That is within 0.15 of chance: the maps below mostly reflect initialisation, not learning."
        )
    )
    for name in summary:
        if name == REFERENCE:
            continue
        tests = summary[name]["tests"]
        label = labels[name]["label"]
        for key, what in VERDICT_METRICS:
            test = tests.get(f"{key} vs {REFERENCE}")
            if test is None:
                continue
            diff = test["mean_difference"]
            lines.append(
                f"- {label} vs ViT (CLS), {what}: {summary[name][key]['mean']:.3f} vs "
                f"{summary[REFERENCE][key]['mean']:.3f} (difference {diff:+.3f}; {_test_words(test)})."
            )
    for name in summary:
        for map_name in ("patch_score", "votes"):
            test = summary[name]["tests"].get(f"point_in_box/{map_name} vs untrained")
            if test is None:
                continue
            trained = summary[name][f"point_in_box/{map_name}"]["mean"]
            untrained = summary[name][f"point_in_box/{map_name}/untrained"]["mean"]
            if trained == untrained:
                change = f"left the {MAP_LABELS[map_name]} Point-in-Box at {trained:.3f}, as untrained"
            else:
                direction = "raised" if trained > untrained else "lowered"
                change = (
                    f"{direction} the {MAP_LABELS[map_name]} Point-in-Box from {untrained:.3f} (untrained) "
                    f"to {trained:.3f}"
                )
            lines.append(f"- {labels[name]['label']}: training {change} ({_test_words(test)}).")
    ref = summary[REFERENCE]
    strongest = max(BASELINES, key=lambda b: ref[f"point_in_box/baseline/{b}"]["mean"])
    value = ref[f"point_in_box/baseline/{strongest}"]["mean"]
    above = [
        labels[n]["label"]
        for n in summary
        if max(
            summary[n][k]["mean"]
            for k in summary[n]
            if k.startswith("point_in_box/") and "/baseline/" not in k and not k.endswith("/untrained")
        )
        > value
    ]
    lines.append(
        f"- The strongest map-free baseline is the {BASELINES[strongest]} at Point-in-Box {value:.3f}; "
        + (f"models with a map above it: {', '.join(above)}." if above else "no model's map beats it.")
    )
    for metric in ("corloc", "segmentation_iou"):
        best_map = max(
            ((n, k) for n in summary for k in summary[n] if k.startswith(f"{metric}/") and k.count("/") == 1),
            key=lambda nk: summary[nk[0]][nk[1]]["mean"],
        )
        strongest_b = max(BASELINES, key=lambda b: ref[f"{metric}/baseline/{b}"]["mean"])
        lines.append(
            f"- Best {METRICS[metric]} of any trained map: {summary[best_map[0]][best_map[1]]['mean']:.3f} "
            f"({labels[best_map[0]]['label']}, {MAP_LABELS[best_map[1].split('/')[1]]}); the {BASELINES[strongest_b]} "
            f"baseline reaches {ref[f'{metric}/baseline/{strongest_b}']['mean']:.3f}."
        )
    lines.append(
        f"- A difference is called real only when a paired t-test over seeds gives p < {ALPHA}; with 3 "
        "seeds that needs consistent, large differences, so 'not shown' is not 'equal'."
    )
    return lines


def markdown(results: dict, figures: dict) -> str:
    summary, labels, config = results["summary"], results["variants"], results["config"]
    env = results["environment"]
    names = list(summary)
    maps = [m for m in MAP_LABELS if any(f"point_in_box/{m}" in summary[n] for n in names)]
    lines = ["# Does LazyStrike make a ViT look at the object?", ""]
    lines += [
        (
            f"{len(results['seeds'])} seeds ({', '.join(map(str, results['seeds']))}); {config['data_variant']} images, "
            f"{config['num_train']} training / {config['num_test']} test images at {config['image_size']} px "
            f"(objects {config['scale_range'][0]}–{config['scale_range'][1]} of the side; {len(results['class_names'])} "
            f"classes, chance {results['chance']:.3f}); a ViT of preset `{config['preset']}` "
            f"with patch {config['patch_size']}; {config['epochs']} epochs at batch {config['batch_size']}, AdamW lr "
            f"{config['learning_rate']}, wd {config['weight_decay']}. Scale `{config['scale']}` on {env['device']}"
            f"{' (' + env['gpu'] + ')' if 'gpu' in env else ''}, torch {env['torch']}, transformers "
            f"{env['transformers']}; {results['minutes']:.1f} minutes in all "
            f"(data {results['timings_s']['data']:.0f} s, training {sum(results['timings_s']['training'].values()):.0f} s, "
            f"evaluation {sum(results['timings_s']['evaluation'].values()):.0f} s). Mean ± std over seeds."
        ),
        "",
        "## Accuracy",
        "",
        "| model | top-1 | top-5 | top-1 untrained |",
        "|---|---|---|---|",
    ]
    for n in names:
        lines.append(
            f"| {labels[n]['label']} | {_cell(summary[n]['top1'])} | {_cell(summary[n].get('top5'))} | "
            f"{_cell(summary[n]['untrained_top1'])} |"
        )
    for metric, metric_label in METRICS.items():
        lines += [
            "",
            f"## {metric_label}: trained / untrained, per map",
            "",
            "| model | " + " | ".join(MAP_LABELS[m] for m in maps) + " |",
            "|---|" + "---|" * len(maps),
        ]
        for n in names:
            cells = []
            for m in maps:
                key = f"{metric}/{m}"
                cells.append(
                    f"{_cell(summary[n][key])} / {_cell(summary[n][key + '/untrained'])}" if key in summary[n] else "–"
                )
            lines.append(f"| {labels[n]['label']} | " + " | ".join(cells) + " |")
        ref = summary[REFERENCE]
        lines += [
            "",
            "Map-free baselines: "
            + ", ".join(f"{label} {ref[f'{metric}/baseline/{b}']['mean']:.3f}" for b, label in BASELINES.items())
            + ".",
        ]
    probe_ks = results["per_seed"][REFERENCE][0]["probe/k"]
    n_patches = results["per_seed"][REFERENCE][0]["probe/num_patches"]
    lines += [
        "",
        f"## Masking probe (top-1 after masking k of {n_patches} patches, ranked by Patch Score)",
        "",
        "| model | order | " + " | ".join(f"k={k}" for k in probe_ks) + " |",
        "|---|---|" + "---|" * len(probe_ks),
    ]
    for n in names:
        for order in ("high", "random", "low"):
            lines.append(
                f"| {labels[n]['label']} | {order} first | "
                + " | ".join(f"{v:.3f}" for v in summary[n]["probe"][order])
                + " |"
            )
    lines += ["", "## Token norms", "", "| model | high-norm tokens / image | max patch norm |", "|---|---|---|"]
    for n in names:
        lines.append(
            f"| {labels[n]['label']} | {_cell(summary[n]['high_norm_tokens_per_image'])} | "
            f"{_cell(summary[n]['max_norm'])} |"
        )
    lines += ["", "## What the numbers support", ""] + verdict(results)
    lines += [
        "",
        "## Paired tests (per-seed differences)",
        "",
        "| model | comparison | differences | p | real? |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        for key, test in summary[n]["tests"].items():
            if not (
                key.startswith(
                    (
                        "top1",
                        "point_in_box/patch_score ",
                        "point_in_box/votes",
                        "point_in_box/patch_score_cls",
                        "corloc/patch_score ",
                        "segmentation_iou/patch_score ",
                    )
                )
            ):
                continue
            diffs = ", ".join(f"{d:+.3f}" for d in test["differences"])
            p = f"{test['p']:.3f}" if test["p"] == test["p"] else "–"
            lines.append(f"| {labels[n]['label']} | {key} | {diffs} | {p} | {'yes' if test['real'] else 'no'} |")
    lines += [
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
            "- Point-in-Box: the arg-max patch of a map lies in the object's box. CorLoc: the box of the largest "
            "connected region of score > mean + std has IoU ≥ 0.5 with the object's box. Coarse segmentation: IoU "
            "of that region (whole patches) with the exact object mask."
        ),
        (
            "- Untrained: the same architecture freshly initialised with the run's seed, measured on the same "
            "images. Masking probe: blank (to the mean colour) the k highest-, random- or lowest-scored patches."
        ),
        "- Test split: " + results.get("test_split_note", "held-out backgrounds and object instances") + ".",
    ]
    lines += ["", "## Figures", ""] + [f"![{caption}]({name})" for name, caption in figures.items()]
    lines += [
        "",
        "The trained LaSt-ViT (K = N/2, seed " + str(results["seeds"][0]) + ") is in `lastvit-model/`: "
        "`AutoModelForImageClassification.from_pretrained('lastvit-model', trust_remote_code=True)`.",
    ]
    return "\n".join(lines) + "\n"


def write_figures(folder: Path, results: dict, data, arrays: dict, stats) -> dict:
    """Maps of the first seed's models on a few test images, masking-probe curves, per-seed points."""
    from lastvit.measure import plots as P

    labels = results["variants"]
    count = results["config"]["figure_images"]
    grid = next(iter(arrays.values()))["grid"]
    figures = {}
    rows = {labels[n]["label"]: {SHORT_LABELS[m]: v[:count] for m, v in arrays[n]["maps"].items()} for n in arrays}
    name = "maps.png"
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
    figures[name] = "maps of every model (seed 0, test images): box in green, exact mask outlined"
    summary = results["summary"]
    first = results["per_seed"][next(iter(summary))][0]
    curves = {labels[n]["label"]: summary[n]["probe"] for n in summary}
    P.plot_probe_comparison(
        first["probe/k"], curves, folder / "masking_probe.png", first["probe/num_patches"], chance=results["chance"]
    )
    figures["masking_probe.png"] = "masking probe, mean over seeds"
    points = {
        metric: {labels[n]["label"]: [r[key] for r in results["per_seed"][n]] for n in summary}
        for metric, key in (
            ("top-1", "top1"),
            ("Patch-Score PiB", "point_in_box/patch_score"),
            ("Patch-Score PiB untrained", "point_in_box/patch_score/untrained"),
        )
    }
    P.plot_seed_points(points, folder / "per_seed.png", reference={"top-1": results["chance"]})
    figures["per_seed.png"] = "per-seed points (dashed: chance)"
    return figures


def write_report(folder: Path, results: dict, data, arrays: dict, stats) -> list[str]:
    figures = write_figures(folder, results, data, arrays, stats)
    (folder / "report.md").write_text(markdown(results, figures))
    return ["report.md", "report.json", *figures]
