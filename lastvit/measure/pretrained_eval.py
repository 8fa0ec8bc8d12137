"""The paper's evaluations of self-supervised (DINO) and image-text (CLIP) LastViT models, each next
to the same architecture untrained (`lastvit-evaluate --mode dino|clip` and the pre-training study).

- DINO backbone (a LastViT folder): k-NN top-1 of the global feature (DINO's weighted 20-NN), and
  from Patch-Score maps (cosine of each patch with the global feature) Point-in-Box, CorLoc and
  coarse-segmentation IoU (`lastvit.measure.metrics.localisation`).
- CLIP model (a `LastViTCLIPModel` folder): zero-shot top-1; zero-shot segmentation mIoU against
  the exact masks (`lastvit.measure.zero_shot`); Point-in-Box of the zero-shot patch map (cosine of
  each projected patch with the text embedding of the image's true class); and the image tower's
  Patch-Score PiB / CorLoc / coarse segmentation, as for DINO.

Next to the paper's thresholded scores, every map also gets its mean per-image AUROC against the
exact per-patch object coverage (`metrics.localisation.auroc_against_coverage`, the main study's
rule: threshold-free, and a map that ranks the background above the object scores below 0.5
instead of hiding behind a sign or a threshold; its ceiling is 1.0, the coverage map itself).

The untrained twin is the same class and config freshly initialised from `seed`
(`baselines.untrained_copy`); for CLIP it keeps the trained tokenizer. Dense metrics need images
at the model's input size with ``bbox`` and ``mask`` columns (the built-in scenes have both). The
mIoU and CorLoc rules are those of the local evaluate modules ``mean_iou`` and ``corloc`` (same
functions). `figure_maps` gives the per-patch maps behind the numbers for a few images, which
`evaluation_report.write_pretrained_figures` draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lastvit.errors import LastViTUserError

from .baselines import untrained_copy
from .grid import patch_coverage
from .maps import patch_score_maps
from .metrics.localisation import auroc_against_coverage, map_metrics, point_in_box


def dino_metrics(
    backbone, train_split, eval_split, transform, knn_k: int = 20, image_column="image", label_column="label"
):
    """k-NN top-1 (when both splits are labelled) and Patch-Score PiB / CorLoc / coarse segmentation
    (when the evaluation split has boxes at model size) of one LastViT backbone."""
    from lastvit.training.pretraining import eval_arrays

    train = eval_arrays(train_split, transform, image_column, label_column)
    evaluation = eval_arrays(eval_split, transform, image_column, label_column)
    return dino_metrics_on_arrays(backbone, train, evaluation, knn_k)


def dino_metrics_on_arrays(backbone, train, evaluation, knn_k: int = 20) -> dict:
    """`dino_metrics` on splits already transformed: ``(pixels, labels, boxes, masks)`` each."""
    train_pixels, train_labels, _, _ = train
    eval_pixels, eval_labels, boxes, masks = evaluation
    measured = {}
    if train_labels is not None and eval_labels is not None:
        measured["knn_top1"] = knn_accuracy(backbone, train_pixels, train_labels, eval_pixels, eval_labels, knn_k)
    if boxes is not None:
        measured.update(dense_localisation(backbone, eval_pixels, boxes, masks))
    return measured


@torch.no_grad()
def global_features(backbone, pixel_values, batch_size: int = 128) -> torch.Tensor:
    """``[B, D]`` pooled global features (`pooler_output`, fp32, on CPU) of a LastViT backbone."""
    backbone.eval()
    device = next(backbone.parameters()).device
    return torch.cat(
        [
            backbone(pixel_values=pixel_values[start : start + batch_size].to(device)).pooler_output.float().cpu()
            for start in range(0, len(pixel_values), batch_size)
        ]
    )


def knn_accuracy(model, train_pixels, train_labels, eval_pixels, eval_labels, k: int = 20, temperature: float = 0.07):
    """DINO's weighted k-NN classifier on L2-normalised global features: each of the k nearest
    training images votes for its class with weight exp(cos / T); top-1 accuracy."""
    train = torch.nn.functional.normalize(global_features(model, train_pixels), dim=-1)
    test = torch.nn.functional.normalize(global_features(model, eval_pixels), dim=-1)
    return knn_top1(train, train_labels, test, eval_labels, k, temperature)


def knn_top1(
    train_features, train_labels, test_features, test_labels, k: int = 20, temperature: float = 0.07
) -> float:
    """Top-1 accuracy of `knn_votes` on unit features (one feature pass can serve several label sets)."""
    num_classes = int(max(max(train_labels), max(test_labels))) + 1
    votes = knn_votes(train_features, torch.as_tensor(train_labels), test_features, num_classes, k, temperature)
    return float((votes.argmax(dim=-1) == torch.as_tensor(test_labels)).float().mean())


def knn_votes(train_features, train_labels, test_features, num_classes: int, k: int = 20, temperature: float = 0.07):
    """``[B, C]`` class votes of DINO's weighted k-NN: each of the k training features nearest (by
    dot product; pass unit vectors for cosine) to a test feature votes for its class with weight
    exp(cos / T). The arg-max over classes is the prediction."""
    similarity, index = (test_features @ train_features.t()).topk(min(k, len(train_features)), dim=-1)
    votes = torch.zeros(len(test_features), num_classes, device=similarity.device, dtype=similarity.dtype)
    return votes.scatter_add_(1, train_labels.to(similarity.device)[index], (similarity / temperature).exp())


def dense_localisation(backbone, pixel_values, boxes, masks=None) -> dict:
    """Patch Score (`maps.patch_score_maps`) -> Point-in-Box, CorLoc and coarse-segmentation IoU, and
    with exact masks the map's AUROC against the object coverage (`metrics.localisation.map_metrics`)."""
    scores = patch_score_maps(backbone, pixel_values)
    grid = backbone.patch_grid(*pixel_values.shape[-2:])
    measured = map_metrics(scores, boxes, masks, backbone.config.patch_size_hw, grid)
    metrics = {key: measured[key] for key in ("point_in_box", "corloc", "segmentation_iou") if key in measured}
    if masks is not None:
        metrics["map_auroc"] = measured["auroc"]
    return metrics


def _eval_transform(tower, size, transform_class, mean=None, std=None):
    from lastvit.data.loading import build_processor

    if mean is None:
        processor = build_processor(tower)
        mean, std = tuple(processor.image_mean), tuple(processor.image_std)
    return transform_class(size=size, mean=mean, std=std, train=False)


def zero_shot_map_pib(
    model, tokenizer, pixel_values, labels, boxes, class_names: Sequence[str], batch_size=64, masks=None
):
    """Point-in-Box of zero-shot patch maps: each image's map is the cosine of its projected patches
    with its true class's text embedding (`zero_shot.zero_shot_patch_maps`); a hit when the map's
    highest patch lies in the box. With exact `masks`: ``(PiB, AUROC against the object coverage)``."""
    from .zero_shot import zero_shot_patch_maps

    _, maps = zero_shot_patch_maps(model, tokenizer, pixel_values, labels, class_names, batch_size=batch_size)
    height, width = pixel_values.shape[-2:]
    patch_size = model.config.vision_config.patch_size_hw
    hits = point_in_box(maps, boxes, None, model_input=(width, height), patch_size=patch_size[::-1], resize=None)
    if masks is None:
        return float(hits.mean())
    return float(hits.mean()), auroc_against_coverage(maps, patch_coverage(masks, patch_size[::-1]))


def clip_metrics(model, tokenizer, split, class_names, transform, background_names=None) -> dict:
    """Zero-shot top-1 and segmentation mIoU, the zero-shot map's PiB and the image tower's
    Patch-Score PiB / CorLoc / coarse segmentation of one `LastViTCLIPModel`."""
    from lastvit.clip.training import evaluate_split
    from lastvit.training.pretraining import eval_arrays

    measured = evaluate_split(model, tokenizer, split, class_names, transform, background_names)
    pixels, labels, boxes, masks = eval_arrays(split, transform)
    if boxes is not None and labels is not None:
        if masks is not None:
            pib, auroc = zero_shot_map_pib(model, tokenizer, pixels, labels, boxes, class_names, masks=masks)
            measured["zero_shot_map_pib"], measured["zero_shot_map_auroc"] = pib, auroc
        else:
            measured["zero_shot_map_pib"] = zero_shot_map_pib(model, tokenizer, pixels, labels, boxes, class_names)
        measured["patch_score"] = dense_localisation(model.vision_model, pixels, boxes, masks)
    return measured


def evaluate_clip_model(model, tokenizer, split, class_names, seed: int = 0, mean=None, std=None) -> dict:
    """``{"trained": ..., "untrained": ...}``: `clip_metrics` of `model` and of its untrained twin."""
    from lastvit.data.loading import ImageTransform

    size = model.config.vision_config.image_size_hw[0]
    transform = _eval_transform(model.vision_model, size, ImageTransform, mean, std)
    return {
        "trained": clip_metrics(model, tokenizer, split, class_names, transform),
        "untrained": clip_metrics(untrained_copy(model, seed), tokenizer, split, class_names, transform),
    }


def flat_clip(metrics: dict) -> dict:
    """The headline numbers of `clip_metrics` as one flat ``{name: value}``."""
    flat = {"zero_shot_top1": metrics["zero_shot_top1"]}
    if "segmentation_ignore_background" in metrics:
        flat["zero_shot_miou"] = metrics["segmentation_ignore_background"]["miou"]
    if "segmentation_with_background" in metrics:
        flat["zero_shot_miou_bg"] = metrics["segmentation_with_background"]["miou"]
    for key in ("zero_shot_map_pib", "zero_shot_map_auroc"):
        if key in metrics:
            flat[key] = metrics[key]
    for key, value in metrics.get("patch_score", {}).items():
        flat[f"patch_score_{key}"] = value
    return flat


MODES = ("clip", "dino")
TITLES = {
    "knn_top1": "k-NN top-1",
    "point_in_box": "Patch-Score Point-in-Box",
    "corloc": "CorLoc",
    "segmentation_iou": "coarse segmentation IoU",
    "zero_shot_top1": "zero-shot top-1",
    "zero_shot_miou": "zero-shot segmentation mIoU (objects only)",
    "zero_shot_miou_bg": "zero-shot segmentation mIoU (with background)",
    "zero_shot_map_pib": "zero-shot map Point-in-Box",
    "zero_shot_map_auroc": "zero-shot map AUROC vs object coverage",
    "map_auroc": "Patch-Score AUROC vs object coverage",
    "patch_score_map_auroc": "Patch-Score AUROC vs object coverage",
    "patch_score_point_in_box": "Patch-Score Point-in-Box",
    "patch_score_corloc": "CorLoc",
    "patch_score_segmentation_iou": "coarse segmentation IoU",
}


def load_pretrained(mode: str, path, trust_remote_code: bool = False):
    """``(model, tokenizer or None)`` from a saved folder: a `LastViTCLIPModel` folder for ``clip``
    (with its tokenizer), a LastViT backbone folder (e.g. a DINO teacher) for ``dino``. Both load with
    this package's code; a folder's own code runs only with `trust_remote_code`."""
    from transformers import AutoModel, AutoTokenizer

    from lastvit.files import load_pretrained as load_folder

    if mode not in MODES:
        raise LastViTUserError(f"mode must be one of {MODES}; got {mode!r}.")
    model = load_folder(AutoModel, path, trust_remote_code=trust_remote_code).eval()
    if mode == "clip":
        if not hasattr(model, "get_patch_features"):
            raise LastViTUserError(
                f"{path} holds a {type(model).__name__}, not a LastViT-CLIP model (a lastvit-train-clip output); "
                "use --mode dino for a backbone or --mode classifier for a classifier."
            )
        return model, load_folder(AutoTokenizer, path, trust_remote_code=trust_remote_code)
    if not hasattr(model, "split_tokens"):
        raise LastViTUserError(
            f"{path} holds a {type(model).__name__}, not a LastViT backbone (e.g. a lastvit-train-dino output); "
            "use --mode clip for a LastViT-CLIP folder."
        )
    return model, None


FIGURE_IMAGES = 4
COLUMN_NAMES = {"trained": "this model", "untrained": "untrained twin", "baseline": "baseline"}


def figure_maps(
    mode: str, models: dict, split, class_names=None, num_images: int = FIGURE_IMAGES, image_column: str = "image"
) -> dict:
    """The maps the figures show, on the first `num_images` images of `split` (at model size, with
    ``bbox`` / ``mask`` when it has them), for each ``{name: (model, tokenizer, transform)}``:
    ``clip``: each patch's zero-shot arg-max class and its cosine with the true class's text;
    ``dino``: the Patch Score, its foreground (mean + std), CorLoc's predicted box and that box's
    IoU with the reference. Images, boxes and masks come from the first model's transform."""
    from lastvit.training.pretraining import eval_arrays

    from .grid import box_iou
    from .maps import coarse_segmentation, foreground_boxes
    from .zero_shot import zero_shot_patch_maps

    split = split.select(range(min(num_images, len(split))))
    shown = None
    per_model = {}
    for name, (model, tokenizer, transform) in models.items():
        pixels, labels, boxes, masks = eval_arrays(split, transform, image_column)
        tower = model.vision_model if mode == "clip" else model
        patch_size = tuple(tower.config.patch_size_hw)
        grid = (pixels.shape[-2] // patch_size[0], pixels.shape[-1] // patch_size[1])
        if shown is None:
            shown = {"pixels": pixels, "mean": transform.mean, "std": transform.std, "labels": labels}
            shown.update(boxes=boxes, masks=masks, grid=grid, patch_size=patch_size)
        if mode == "clip":
            patch_labels, similarity = zero_shot_patch_maps(model, tokenizer, pixels, labels, class_names)
            per_model[name] = {"labels": patch_labels, "similarity": similarity}
        else:
            scores = patch_score_maps(model, pixels)
            foreground = coarse_segmentation(scores, grid)
            predicted = foreground_boxes(foreground, patch_size)
            entry = {"scores": scores, "foreground": foreground, "boxes": predicted}
            if boxes is not None:
                entry["box_iou"] = [box_iou(p, b) for p, b in zip(predicted, boxes)]
            per_model[name] = entry
    return {**shown, "mode": mode, "class_names": class_names, "models": per_model}


def evaluate_pretrained(
    mode: str,
    model_path,
    train_split,
    eval_split,
    baseline_path=None,
    seed: int = 0,
    knn_k: int = 20,
    figure_images: int = FIGURE_IMAGES,
    trust_remote_code: bool = False,
    **columns,
) -> tuple[dict, dict]:
    """Every measurement of `mode` for the model at `model_path`, its untrained twin and, when given,
    a baseline folder (e.g. the same recipe with the CLS readout): ``(results, maps)``, results
    ``{"models": {"trained", "untrained", "baseline"?: {metric: value}}, ...}`` and the `figure_maps`
    of the first `figure_images` evaluation images (``{}`` for 0)."""
    from lastvit.clip.captions import readable
    from lastvit.data.loading import ImageTransform, label_names

    def with_transform(model, tokenizer):
        tower = model.vision_model if mode == "clip" else model
        return model, tokenizer, _eval_transform(tower, tower.config.image_size_hw[0], ImageTransform)

    model, tokenizer = load_pretrained(mode, model_path, trust_remote_code)
    models = {"trained": with_transform(model, tokenizer)}
    models["untrained"] = (untrained_copy(model, seed), *models["trained"][1:])
    if baseline_path is not None:
        models["baseline"] = with_transform(*load_pretrained(mode, baseline_path, trust_remote_code))
    label_column = columns.get("label_column", "label")
    image_column = columns.get("image_column", "image")
    results = {"mode": mode, "model": str(model_path), "num_images": len(eval_split)}
    names = None
    if mode == "dino":
        measured = {
            name: dino_metrics(model, train_split, eval_split, transform, knn_k, **columns)
            for name, (model, _, transform) in models.items()
        }
    else:
        if label_column not in eval_split.column_names:
            raise LastViTUserError(
                f"zero-shot evaluation needs class labels; the split has no column {label_column!r} "
                f"(its columns: {eval_split.column_names}); set --label-column."
            )
        names = [readable(name) for name in label_names(eval_split, label_column)]
        if label_column != "label":
            eval_split = eval_split.rename_column(label_column, "label")
        if image_column != "image":  # the CLIP evaluation reads the "image" column
            eval_split = eval_split.rename_column(image_column, "image")
            image_column = "image"
        measured = {
            name: flat_clip(clip_metrics(model, tokenizer, eval_split, names, transform))
            for name, (model, tokenizer, transform) in models.items()
        }
        results["class_names"] = names
    if baseline_path is not None:
        results["baseline"] = str(baseline_path)
    results["models"] = measured
    maps = figure_maps(mode, models, eval_split, names, figure_images, image_column) if figure_images > 0 else {}
    return results, maps


def markdown_report(results: dict, title: str, figures: dict[str, str] | None = None) -> str:
    """One table: a row per metric, a column per measured model (trained, untrained twin, baseline);
    then the `figures` (``{file name beside the report: caption}``), linked and shown."""
    columns = [c for c in ("trained", "untrained", "baseline") if c in results["models"]]
    metrics = list(results["models"]["trained"])
    lines = [
        f"# {title}",
        "",
        f"Mode `{results['mode']}`, {results['num_images']} evaluation images; the untrained twin is the same "
        "architecture freshly initialised"
        + (f"; baseline: `{results['baseline']}`." if "baseline" in results else "."),
        "",
        "| metric | " + " | ".join(COLUMN_NAMES[c] for c in columns) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for metric in metrics:
        cells = []
        for column in columns:
            value = results["models"][column].get(metric)
            cells.append("—" if value is None else f"{value:.3f}")
        lines.append(f"| {TITLES.get(metric, metric)} | " + " | ".join(cells) + " |")
    if figures:
        lines += ["", "## Figures", ""]
        for name, caption in figures.items():
            lines += [f"[{name}]({name}): {caption}", "", f"![{name}]({name})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


__all__ = [
    "FIGURE_IMAGES",
    "MODES",
    "clip_metrics",
    "dino_metrics",
    "evaluate_clip_model",
    "evaluate_pretrained",
    "figure_maps",
    "flat_clip",
    "knn_top1",
    "knn_votes",
    "load_pretrained",
    "markdown_report",
    "zero_shot_map_pib",
]
