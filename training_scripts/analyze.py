"""lastvit-analysis: the Lappe & Giese report for any LastViT checkpoint (including converted DINOv2).

Lappe & Giese (arXiv 2505.05892) ask whether a ViT's global (CLS) output is really built from its
patch tokens, as attention maps suggest. This measures it at the last layer of a LastViT folder
(trained with `lastvit-train`, or converted with `lastvit-convert`) on a set of images: CLS
attention shares, the masked contributions o_full / o_patch / o_reg / o_cls_self (before the
output projection, as the paper defines them, and after it) with their norms, linear CKA and Gram
decomposition, the skip path, register image-dependence at the penultimate layer, the layerwise
CLS cosine, token norms and the readout; with --one-shot, the one-shot decoding test (one training
and one test image per class of a labelled dataset).

It writes `analysis.json` (every number), `analysis.md` (tables with a line on each measurement,
and the figures) and PNG figures into --output-dir, atomically.

    lastvit-analysis --model runs/tiny --dataset scenes --num-images 256 --one-shot --output-dir runs/tiny/analysis
    lastvit-analysis --model converted/dinov2-small-reg --dataset imagefolder --data-dir imgs/ \\
        --eval-split train --output-dir reports/dinov2-s-reg
    lastvit-analysis --model runs/tiny --random-images 8 --output-dir /tmp/smoke     # no data needed

Images are preprocessed as the trainer evaluates: resize the short side, centre crop at the
checkpoint processor's crop size (the model's input size without one), its mean and std.
From Python: `lastvit.measure.decoupling.analyze` and `lastvit.measure.decoupling_report.write_report`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from lastvit.arguments import add_arguments, option
from lastvit.data.arguments import DataArguments, add_data_arguments

MARKDOWN_NAME = "analysis.md"


@dataclass(kw_only=True)
class AnalysisArguments:
    """The flags of lastvit-analysis besides the shared data flags (`DataArguments`)."""

    model: str = option(help="a LastViT checkpoint folder (LastViTModel or ...ForImageClassification)")
    trust_remote_code: bool = option(
        False,
        "run the Python code a non-LastViT model folder carries (LastViT folders load with this package's code)",
    )
    output_dir: Path = option(help="folder for analysis.json, analysis.md and the PNGs")
    overwrite: bool = option(False, "replace an --output-dir that already holds files")
    # images
    bbox_column: str = option("bbox", "column with one ground-truth box per image, used when present")
    bbox_format: str = option(
        "xywh",
        "box layout in original-image pixels: [x, y, w, h] (scenes, COCO) or [x0, y0, x1, y1]",
        choices=("xywh", "xyxy"),
    )
    num_images: int = option(256, "images to analyse, a seeded random subset of the split")
    random_images: int | None = option(
        None,
        "analyse N generated scenes (an ellipse on a textured background, box known) instead "
        "of a dataset: a quick smoke run with no data",
        metavar="N",
    )
    seed: int = option(0, "seed for the subset, the scenes and generated images")
    # one-shot decoding test
    one_shot: bool = option(
        False,
        "also run the one-shot test: one image per class from --train-split (fit) and one from the "
        "evaluation split (test), seeded; needs a labelled dataset",
    )
    # measurement and run
    batch_size: int = option(16, "images per forward pass (default: 16)")
    norm_threshold: float | None = option(
        None, "high-norm token threshold on the L2 norm (default: mean + --norm-std x std of the set)"
    )
    norm_std: float = option(3.0, "standard deviations above the mean for the default threshold")
    num_overlays: int = option(4, "images drawn with attention overlays (default: 4)")
    device: str | None = option(None, "torch device (default: cuda if available, else cpu)")
    progress: bool = option(True, "hide progress bars", flag="--no-progress")


OPTIONS = (AnalysisArguments, DataArguments)
# This command's own data defaults: no dataset means scenes (or --random-images); a small one-shot pool.
DEFAULTS = {"dataset": None, "scenes_train": 200}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lastvit-analysis", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(p, AnalysisArguments, include=("model", "trust_remote_code", "output_dir", "overwrite"))

    data = p.add_argument_group("images (the trainer's data flags, or --random-images)")
    add_data_arguments(
        data,
        include=("dataset", "data_dir", "eval_split", "image_column", "scenes_clutter"),
        defaults=DEFAULTS,
        help={
            "dataset": "'scenes' (built-in, offline), 'imagefolder' (with --data-dir), a save_to_disk folder, "
            "or a Hub dataset name (default: scenes, unless --random-images)",
            "eval_split": "split to analyse (default: validation, else test)",
        },
    )
    add_arguments(
        data, AnalysisArguments, include=("bbox_column", "bbox_format", "num_images", "random_images", "seed")
    )

    one_shot = p.add_argument_group("one-shot decoding test (Lappe & Giese §3)")
    add_arguments(one_shot, AnalysisArguments, include=("one_shot",))
    add_data_arguments(
        one_shot,
        include=("train_split", "label_column", "scenes_train"),
        defaults=DEFAULTS,
        help={
            "train_split": "split the one-shot readout is fitted on (default: train)",
            "scenes_train": "scenes: training scenes generated to draw one per class from (default: 200)",
        },
    )

    run = p.add_argument_group("measurement and run")
    add_arguments(
        run,
        AnalysisArguments,
        include=("batch_size", "norm_threshold", "norm_std", "num_overlays", "device", "progress"),
    )
    return p


def check_args(args) -> None:
    from lastvit.data.loading import DataError

    if args.random_images is not None and (args.dataset is not None or args.data_dir is not None):
        raise DataError("pass either --random-images or a dataset (--dataset/--data-dir), not both.")
    if args.random_images is not None and args.one_shot:
        raise DataError("--one-shot needs labelled images: pass a dataset (--dataset) instead of --random-images.")
    count = args.random_images if args.random_images is not None else args.num_images
    if count < 2:
        raise DataError(f"need at least 2 images (CKA compares images), got {count}.")
    if args.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {args.batch_size}.")
    if args.num_overlays < 0:
        raise DataError(f"--num-overlays must be >= 0, got {args.num_overlays}.")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise DataError(f"--output-dir {args.output_dir} is a file; choose a folder.")
    if args.output_dir.exists() and any(args.output_dir.iterdir()) and not args.overwrite:
        raise DataError(
            f"{args.output_dir} already holds files; pass --overwrite to replace them or choose another --output-dir."
        )


# --------------------------------------------------------------------------- images


def _read(split, column: str, name: str):
    """Decoded PIL images of `split`'s `column`; an unreadable one is named in the error."""
    import datasets
    from PIL import UnidentifiedImageError

    from lastvit.data.loading import DataError, _decode

    images = []
    for index, encoded in enumerate(split.cast_column(column, datasets.Image(decode=False))[column]):
        try:
            images.append(_decode(encoded))
        except (UnidentifiedImageError, OSError, ValueError) as error:
            where = encoded.get("path") or f"example {index} of the {name} selection"
            raise DataError(f"cannot read image {where}: {error}. Fix or remove it.") from error
    return images


def _boxes(split, args) -> list:
    import numpy as np

    if args.bbox_column not in split.column_names:
        return [None] * len(split)
    boxes = []
    for value in split[args.bbox_column]:
        if value is None:
            boxes.append(None)
            continue
        v = np.asarray(value, dtype=float).reshape(-1, 4)[0]  # the first box
        boxes.append(v.tolist() if args.bbox_format == "xyxy" else [v[0], v[1], v[0] + v[2], v[1] + v[3]])
    return boxes


def _one_per_class(split, label_column: str, seed: int) -> list[int]:
    """Row indices of one seeded-random example per class, ordered by class."""
    import numpy as np

    labels = np.asarray(split[label_column])
    order = np.random.default_rng(seed).permutation(len(labels))
    first = {}
    for index in order.tolist():
        first.setdefault(int(labels[index]), index)
    return [first[label] for label in sorted(first)]


def dataset_images(args):
    """The evaluation split's images ``[(PIL image, xyxy box or None)]`` (`args.num_images`, a seeded
    random subset when the split is larger), a description of the source, and with --one-shot the
    one-shot selection ``(train images, train labels, test images, test labels, source)``."""
    import numpy as np

    from lastvit.data.loading import DataError, label_names, load_splits

    scenes_kwargs = {
        "num_train": args.scenes_train if args.one_shot else 0,
        "num_test": args.num_images,
        "seed": args.seed,
        "clutter": args.scenes_clutter,
    }
    train_split = args.train_split if args.one_shot else (args.eval_split or "train")
    try:  # load_splits insists on a training split; without --one-shot only the evaluation split is read.
        train, split = load_splits(args.dataset, train_split, args.eval_split, args.data_dir, scenes_kwargs)
    except DataError as error:
        if args.eval_split is None and not args.one_shot and "no split 'train'" in str(error):
            raise DataError(
                f"{args.dataset} has no 'train' split to find the default evaluation split beside; "
                "pass --eval-split NAME."
            ) from error
        raise
    if args.image_column not in split.column_names:
        raise DataError(
            f"the split has no column {args.image_column!r}; its columns are {split.column_names} "
            "(set --image-column)."
        )
    if len(split) == 0:
        raise DataError(f"the evaluation split of {args.dataset} is empty.")
    where = f"{args.dataset} ({split.split or args.eval_split or 'evaluation split'})"
    one_shot = _one_shot_images(args, train, split, label_names) if args.one_shot else None
    if len(split) > args.num_images:
        rng = np.random.default_rng(args.seed)
        split = split.select(sorted(rng.choice(len(split), args.num_images, replace=False).tolist()))
    items = list(zip(_read(split, args.image_column, "analysis"), _boxes(split, args)))
    return items, where, one_shot


def _one_shot_images(args, train, test, label_names):
    from lastvit.data.loading import DataError

    for split, name in ((train, args.train_split), (test, "evaluation")):
        if args.label_column not in split.column_names:
            raise DataError(
                f"--one-shot needs labels: the {name} split has no column {args.label_column!r}; its columns are "
                f"{split.column_names} (set --label-column)."
            )
    train = train.select(_one_per_class(train, args.label_column, args.seed))
    test = test.select(_one_per_class(test, args.label_column, args.seed + 1))
    shared = sorted(set(train[args.label_column]) & set(test[args.label_column]))
    if len(shared) < 2:
        raise DataError(
            f"--one-shot needs at least 2 classes present in both the {args.train_split!r} and the evaluation split; "
            f"found {len(shared)}."
        )
    keep = set(shared)
    train = train.filter(lambda row: row[args.label_column] in keep)
    test = test.filter(lambda row: row[args.label_column] in keep)
    names = label_names(train, args.label_column)
    source = f"{args.dataset}: one seeded image per class from {args.train_split!r} (fit) and the evaluation split"
    return (
        _read(train, args.image_column, "one-shot training"),
        train[args.label_column],
        _read(test, args.image_column, "one-shot test"),
        test[args.label_column],
        [names[c] if c < len(names) else str(c) for c in shared],
        source,
    )


def eval_transform(processor, config):
    """The trainer's evaluation transform with the processor's crop size (the model's input size
    when it does not crop), short-side resize (256/224 of the crop when it has none), mean and std."""
    from lastvit.data.loading import ImageTransform

    size = int(config.image_size_hw[0])
    if getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None) is not None:
        size = int(processor.crop_size.get("height") or size)
    shortest = (getattr(processor, "size", None) or {}).get("shortest_edge")
    return ImageTransform(
        size=size,
        mean=tuple(processor.image_mean),
        std=tuple(processor.image_std),
        train=False,
        resize_ratio=shortest / size if shortest else 256 / 224,
    )


# --------------------------------------------------------------------------- command line


def run(args) -> dict:
    """Load, measure, write; returns the numbers."""
    import torch

    from lastvit.data.loading import SCENES, build_processor, transform_with_boxes
    from lastvit.data.scenes import ellipse_scene
    from lastvit.measure.decoupling import OneShotImages, analyze, load_model
    from lastvit.measure.decoupling_report import write_report
    from lastvit.measure.forward import resolve_device

    check_args(args)
    progress = args.progress
    model = load_model(args.model, resolve_device(args.device), args.trust_remote_code)
    transform = eval_transform(build_processor(model, args.model, args.trust_remote_code), model.config)
    size, mean, std = transform.size, transform.mean, transform.std
    one_shot = None
    if args.random_images is not None:
        side = round(size * transform.resize_ratio)
        items = [ellipse_scene(side, seed=args.seed * 1_000_003 + i) for i in range(args.random_images)]
        source = f"{args.random_images} generated scenes (seed {args.seed})"
    else:
        args.dataset = args.dataset or SCENES
        items, source, selection = dataset_images(args)
        if selection is not None:
            train_images, train_labels, test_images, test_labels, names, where = selection
            one_shot = OneShotImages(
                transform_with_boxes([(image, None) for image in train_images], transform)[0],
                torch.as_tensor(train_labels),
                transform_with_boxes([(image, None) for image in test_images], transform)[0],
                torch.as_tensor(test_labels),
                class_names=names,
                source=where,
            )
    pixel_values, boxes = transform_with_boxes(items, transform, progress)
    metadata = {
        "source": source,
        "model_path": str(args.model),
        "preprocessing": (
            f"resize short side to {round(size * transform.resize_ratio)}, centre crop {size}, mean {list(mean)}, "
            f"std {list(std)} (the trainer's evaluation transform, bilinear)"
        ),
    }
    results = analyze(
        model,
        pixel_values,
        boxes=boxes,
        one_shot=one_shot,
        batch_size=args.batch_size,
        norm_threshold=args.norm_threshold,
        norm_threshold_std=args.norm_std,
        num_overlays=args.num_overlays,
        image_mean=mean,
        image_std=std,
        progress=progress,
        metadata=metadata,
    )
    title = f"Lappe & Giese analysis of {Path(args.model).name}"
    write_report(results, args.output_dir, overwrite=args.overwrite, progress=progress, title=title)
    return results.numbers


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from lastvit.errors import report_user_errors
    from lastvit.measure.decoupling import json_ready

    numbers = {}
    code = report_user_errors(lambda: numbers.update(run(args)))
    if code:
        return code
    sections = ("attention_share", "cka", "cka_after_projection", "one_shot", "token_norms", "readout")
    print(json.dumps(json_ready({key: numbers[key] for key in sections if key in numbers}), indent=2))
    print(f"report: {args.output_dir / MARKDOWN_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
