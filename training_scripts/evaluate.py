"""lastvit-evaluate: where does a LastViT classifier look? Accuracy, and for every map (Patch
Score with the pooled feature and with the final CLS output, LazyStrike votes, last-layer CLS
attention) Point-in-Box, CorLoc and coarse-segmentation IoU next to the same architecture
untrained and map-free baselines (random patch, centre patch, colour outlier); the masking probe
on the paper's N/7 grid; patch-token norms. JSON + Markdown + PNGs.

Localisation needs a `bbox` column ([x, y, w, h] in image pixels); segmentation IoU also a `mask`
column (exact object masks, as the built-in scenes have). Images already at the model's input size
are used as they are; others are resized and centre-cropped, boxes and masks with them. Runs on
the GPU when there is one (--device).

--mode clip (a lastvit-train-clip folder): zero-shot top-1, zero-shot segmentation mIoU against the
exact masks, Point-in-Box of the zero-shot patch maps and the image tower's Patch-Score PiB / CorLoc /
coarse segmentation. --mode dino (a LastViT backbone, e.g. a lastvit-train-dino teacher): k-NN top-1,
Patch-Score PiB, CorLoc and coarse segmentation. Both next to the untrained twin and, with
--baseline, another folder of the same kind (e.g. the CLS-readout run). Scenes are built at the
model's input size. Figures of the first 4 images, the models side by side: clip, each patch's
zero-shot class next to the exact mask and the true-class patch-text cosine map; dino, the Patch
Score, its mean + std foreground and CorLoc's box against the reference box. The mIoU and CorLoc
are the local evaluate modules `mean_iou` and `corloc` (lastvit.measure.load_metric).

    lastvit-evaluate --model runs/tiny --dataset scenes --output-dir runs/tiny/eval
    lastvit-evaluate --mode clip --model runs/clip --baseline runs/clip-cls --output-dir runs/clip/eval
    lastvit-evaluate --mode dino --model runs/dino --baseline runs/dino-cls --output-dir runs/dino/eval
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from lastvit.arguments import add_arguments, option
from lastvit.data.arguments import DataArguments, add_data_arguments


@dataclass(kw_only=True)
class EvaluateArguments:
    """The flags of lastvit-evaluate besides the shared data flags (`DataArguments`)."""

    mode: str = option(
        "classifier",
        "classifier (default): a LastViT classifier; clip: a LastViT-CLIP folder; dino: a LastViT backbone",
        choices=("classifier", "clip", "dino"),
    )
    model: str = option(help="the folder to evaluate (e.g. a lastvit-train output)")
    baseline: str | None = option(
        None, "clip/dino: a second folder of the same kind measured alike (e.g. CLS readout)"
    )
    num_images: int | None = option(None, "evaluate only the first N images")
    knn_k: int = option(20, "dino: neighbours of the k-NN classifier (default: 20)")
    seed: int = option(0, "scenes seed, random masking order, untrained baseline")
    batch_size: int = option(128, "images per forward pass (default: 128)")
    device: str = option("auto", "auto (default: CUDA when available), cpu, cuda, ...")
    probe_images: int | None = option(None, "images in the masking probe (default: all)")
    norm_threshold: float | None = option(None, "high-norm token threshold (default: mean + 3 std)")
    output_dir: Path = option(help="where report.json, report.md and PNGs go")
    overwrite: bool = option(False, "replace an existing --output-dir")
    progress: bool = option(True, "hide progress bars", flag="--no-progress")


OPTIONS = (EvaluateArguments, DataArguments)
DEFAULTS = {"scenes_train": 1000}  # dino's k-NN pool


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lastvit-evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(p, EvaluateArguments, include=("mode", "model", "baseline"))
    add_data_arguments(
        p,
        include=("dataset", "data_dir", "eval_split", "image_column", "label_column", "scenes_test", "scenes_train"),
        defaults=DEFAULTS,
        help={
            "eval_split": "split to evaluate (default: validation, else test)",
            "scenes_train": "dino: scenes training images for k-NN (default: 1000)",
        },
    )
    add_arguments(
        p,
        EvaluateArguments,
        include=(
            "num_images", "knn_k", "seed", "batch_size", "device", "probe_images", "norm_threshold", "output_dir",
            "overwrite", "progress",
        ),
    )  # fmt: skip
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from lastvit.data.loading import DataError
    from lastvit.files import ModelPathError, check_model_path, is_nonempty_dir

    try:
        check_model_path(args.model)
        if args.baseline:
            check_model_path(args.baseline, "--baseline")
        if is_nonempty_dir(args.output_dir) and not args.overwrite:
            raise DataError(f"{args.output_dir} already holds files; pass --overwrite or choose another --output-dir.")
        if args.mode == "classifier":
            if args.baseline:
                raise DataError(
                    "--baseline applies to --mode clip and dino; the classifier mode has its own baselines."
                )
            evaluate_classifier(args)
        else:
            evaluate_pretrained_model(args)
    except (DataError, ModelPathError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print((args.output_dir / "report.md").read_text())
    return 0


def evaluate_classifier(args) -> None:
    """The default mode: a LastViT classifier, its maps, baselines, masking probe and token norms."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from lastvit.data.loading import check_columns, load_splits
    from lastvit.files import write_folder
    from lastvit.measure.evaluation import evaluate_model, input_size, prepare_evaluation_data
    from lastvit.measure.evaluation_report import markdown_report, write_figures

    model = AutoModelForImageClassification.from_pretrained(args.model, trust_remote_code=True).eval()
    scenes = {"num_train": 8, "num_test": args.scenes_test, "seed": args.seed}
    _, split = load_splits(args.dataset, "train", args.eval_split, args.data_dir, scenes)
    check_columns(split, args.image_column, args.label_column, "evaluation")
    processor = AutoImageProcessor.from_pretrained(args.model, trust_remote_code=True)
    stats = (tuple(processor.image_mean), tuple(processor.image_std))
    data = prepare_evaluation_data(
        split,
        input_size(model),
        *stats,
        args.image_column,
        args.label_column,
        args.num_images,
        progress=args.progress,
    )
    metrics, arrays = evaluate_model(
        model,
        data,
        batch_size=args.batch_size,
        device=args.device,
        progress=args.progress,
        seed=args.seed,
        probe_images=args.probe_images,
        norm_threshold=args.norm_threshold,
    )

    def write(folder: Path):
        figures = write_figures(folder, data, arrays, metrics, *stats)
        (folder / "report.json").write_text(json.dumps(metrics, indent=2))
        (folder / "report.md").write_text(markdown_report(metrics, figures, f"Evaluation of {args.model}"))

    write_folder(args.output_dir, write)


def evaluate_pretrained_model(args) -> None:
    """--mode clip / dino (`lastvit.measure.pretrained_eval`)."""
    from transformers import AutoConfig

    from lastvit.data.loading import load_splits
    from lastvit.files import write_folder
    from lastvit.measure.evaluation_report import write_pretrained_figures
    from lastvit.measure.pretrained_eval import evaluate_pretrained, markdown_report

    config = AutoConfig.from_pretrained(args.model, trust_remote_code=True)
    size = getattr(config, "vision_config", config).image_size_hw[0]
    scenes = {"num_train": args.scenes_train, "num_test": args.scenes_test, "seed": args.seed, "image_size": size}
    train, split = load_splits(args.dataset, "train", args.eval_split, args.data_dir, scenes)
    if args.num_images:
        split = split.select(range(min(args.num_images, len(split))))
    results, maps = evaluate_pretrained(
        args.mode,
        args.model,
        train,
        split,
        args.baseline,
        seed=args.seed,
        knn_k=args.knn_k,
        image_column=args.image_column,
        label_column=args.label_column,
    )

    def write(folder: Path):
        figures = write_pretrained_figures(folder, maps)
        (folder / "report.json").write_text(json.dumps(results, indent=2))
        title = f"Evaluation ({args.mode}) of {args.model}"
        (folder / "report.md").write_text(markdown_report(results, title, figures))

    write_folder(args.output_dir, write)


if __name__ == "__main__":
    sys.exit(main())
