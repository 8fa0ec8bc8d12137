"""One model's evaluation as Markdown and figures (what `lastvit-evaluate` writes); for
``--mode clip|dino``, the figures of `lastvit.measure.pretrained_eval.figure_maps`."""

from __future__ import annotations

from pathlib import Path

from .evaluation import EvaluationData
from .maps import MAP_LABELS, SHORT_LABELS

METRIC_LABELS = {
    "auroc": "AUROC vs object coverage",
    "point_in_box": "Point-in-Box",
    "corloc": "CorLoc",
    "segmentation_iou": "coarse-seg. IoU",
}


def write_figures(
    folder: Path, data: EvaluationData, arrays: dict, metrics: dict, mean, std, num_examples: int = 4
) -> list[str]:
    """Every map over the first images (box and exact mask drawn when known), the masking-probe
    curves and the norm histogram. Returns the file names."""
    from . import plots as P

    count = min(num_examples, len(data.pixel_values))
    maps = {SHORT_LABELS[name]: values[:count] for name, values in arrays["maps"].items()}
    P.plot_map_grid(
        data.pixel_values[:count],
        {"this model": maps},
        folder / "maps.png",
        arrays["grid"],
        boxes=None if data.boxes is None else data.boxes[:count],
        masks=None if data.masks is None else data.masks[:count],
        mean=mean,
        std=std,
    )
    probe = metrics["masking_probe"]
    P.plot_masking_probe(
        probe["k"],
        {o: probe[o] for o in ("high", "random", "low")},
        folder / "masking_probe.png",
        num_patches=probe["num_patches"],
    )
    P.plot_norm_histogram(
        arrays["norms"], folder / "norms.png", threshold=metrics["token_norms"]["after_final_layernorm"]["threshold"]
    )
    return ["maps.png", "masking_probe.png", "norms.png"]


def write_pretrained_figures(folder: Path, maps: dict) -> dict[str, str]:
    """The `figure_maps` of ``--mode clip`` or ``dino`` as PNGs in `folder`, each model (this model,
    untrained twin, baseline) side by side. Returns ``{file name: caption}``."""
    from . import plots as P
    from .pretrained_eval import COLUMN_NAMES

    if not maps:
        return {}
    models = {COLUMN_NAMES[name]: values for name, values in maps["models"].items()}
    shown = {"mean": maps["mean"], "std": maps["std"]}
    pixels, grid, boxes, masks = maps["pixels"], maps["grid"], maps["boxes"], maps["masks"]
    if maps["mode"] == "dino":
        P.plot_foreground_grid(pixels, models, folder / "patch_score_foreground.png", grid, boxes, masks, **shown)
        return {
            "patch_score_foreground.png": "Patch Score (cosine of each patch with the global feature), its "
            "foreground (patches above mean + std, cyan) and CorLoc's box (the largest connected component's, "
            "red, with its IoU) against the reference box (lime) and exact mask (white)"
        }
    from .metrics.segmentation import IGNORE, scene_targets

    names = maps["class_names"]
    targets = None if masks is None else scene_targets(masks, maps["labels"], None)
    P.plot_label_grid(
        pixels,
        {name: values["labels"] for name, values in models.items()},
        folder / "zero_shot_segmentation.png",
        grid,
        len(names),
        targets,
        names,
        IGNORE,
        **shown,
    )
    P.plot_map_grid(
        pixels,
        {"true-class cosine": {name: values["similarity"] for name, values in models.items()}},
        folder / "zero_shot_similarity.png",
        grid,
        boxes,
        masks,
        **shown,
    )
    return {
        "zero_shot_segmentation.png": "zero-shot segmentation: each patch's class of highest cosine (the map "
        "the objects-only mIoU scores) next to the exact mask with its true class",
        "zero_shot_similarity.png": "zero-shot class-patch map: cosine of each projected patch with the text "
        "embedding of the image's true class (the map Point-in-Box scores; arg-max framed)",
    }


def _classification_lines(metrics: dict) -> list[str]:
    lines = ["## Classification", "", "| metric | trained | untrained |", "|---|---|---|"]
    untrained = metrics.get("untrained_classification", {})
    for key, value in metrics["classification"].items():
        if key == "num_images":
            continue
        lines.append(
            f"| {key} | {value:.4f} | {untrained[key]:.4f} |" if key in untrained else f"| {key} | {value:.4f} | – |"
        )
    return lines + ["", f"{metrics['classification']['num_images']} images."]


def _map_lines(metrics: dict) -> list[str]:
    """Each map's metrics (trained / untrained), then the baselines and the ceiling."""
    lines = [
        "## Where it looks: each map (trained / same architecture untrained)",
        "",
        "| map | " + " | ".join(METRIC_LABELS.values()) + " |",
        "|---|" + "---|" * len(METRIC_LABELS),
    ]
    for name, values in metrics["maps"].items():
        cells = []
        for metric in METRIC_LABELS:
            if metric not in values:
                cells.append("–")
                continue
            fresh = values.get("untrained", {}).get(metric)
            cells.append(f"{values[metric]:.3f}" + (f" / {fresh:.3f}" if fresh is not None else ""))
        lines.append(f"| {MAP_LABELS[name]} | " + " | ".join(cells) + " |")
    rows = list(metrics["baselines"].items())
    if metrics.get("ceiling"):
        rows.append(("ceiling (exact coverage map)", metrics["ceiling"]))
    for name, values in rows:
        lines.append(
            f"| baseline: {name.replace('_', ' ')} | "
            + " | ".join(f"{values[m]:.3f}" if m in values else "–" for m in METRIC_LABELS)
            + " |"
        )
    return lines + [
        "",
        (
            f"Mean box area: {metrics['box_area_fraction']:.1%} of the image. A map counts only where it "
            "beats the baselines and its untrained twin: pasted objects are salient."
        ),
    ]


def _probe_lines(probe: dict) -> list[str]:
    lines = [
        f"## Masking probe (top-1 after masking k of {probe['num_patches']} patches ranked by Patch Score)",
        "",
        "| order | " + " | ".join(f"k={k}" for k in probe["k"]) + " |",
        "|---|" + "---|" * len(probe["k"]),
    ]
    for order in ("high", "random", "low"):
        lines.append(f"| {order} first | " + " | ".join(f"{a:.3f}" for a in probe[order]) + " |")
    return lines


def _norm_lines(norms: dict) -> list[str]:
    """Patch-token norms after the final LayerNorm, then per layer before it."""
    after = norms["after_final_layernorm"]
    lines = ["## Patch-token norms after the final LayerNorm", "", "| statistic | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in after.items() if isinstance(v, (int, float))]
    lines += [
        "",
        "## Token norms before the final LayerNorm, per layer",
        "",
        "| layer | patch mean | patch max / median | CLS / patch | registers / patch | high-norm patches / image |",
        "|---|---|---|---|---|---|",
    ]
    for layer in norms["before_final_layernorm"]["layers"]:
        ratios = [layer["cls_to_patch"], layer["register_to_patch"]]
        lines.append(
            f"| {layer['layer']} | {layer['patch_mean']:.3g} | {layer['patch_max_over_median']:.3g} | "
            + " | ".join("–" if r is None else f"{r:.3g}" for r in ratios)
            + f" | {layer['high_norm_patches_per_image']:.3g} |"
        )
    return lines


def markdown_report(metrics: dict, figures: list[str], title: str) -> str:
    """The evaluation as Markdown: classification, every map next to its baselines (with boxes),
    the masking probe, token norms and the figures."""
    lines = [f"# {title}", "", f"Device: {metrics.get('device', 'cpu')}.", ""]
    lines += _classification_lines(metrics)
    if "maps" in metrics:
        lines += ["", *_map_lines(metrics)]
    lines += ["", *_probe_lines(metrics["masking_probe"])]
    lines += ["", *_norm_lines(metrics["token_norms"])]
    lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"
