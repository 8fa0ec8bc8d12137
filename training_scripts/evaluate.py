"""lastvit-evaluate: where does a LastViT classifier look? Accuracy, Point-in-Box with its
baselines, the masking probe and token-norm statistics on any dataset, as JSON + Markdown + PNGs.

- classification: top-1 / top-5 on any dataset (Hub name, imagefolder, save_to_disk folder, scenes);
- localization (datasets with a `bbox` column, [x, y, w, h] in image pixels): Point-in-Box of the
  arg-max Patch Score (cosine of each final patch token with the pooled global feature), next to a
  random patch, the centre patch, a colour-outlier heuristic and the same architecture untrained;
  for LazyStrike/max pooling also of the arg-max vote. Images already at the model's input size
  are used as they are (plain box mapping); others go through Resize(size*256/224) +
  CenterCrop(size), mapped with the authors' rule;
- masking probe: accuracy after masking the k highest / lowest / random Patch-Score patches;
- norms: patch-token L2 norms, their max, and tokens above a high-norm threshold.

    lastvit-evaluate --model runs/tiny --dataset scenes --output-dir runs/tiny/eval
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from lastvit.data.loading import SCENES, DataError, ImageTransform, check_columns, load_splits, transform_with_boxes

BOX_COLUMN = "bbox"
MASK_FRACTIONS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75)


def load_classifier(path):
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(path, trust_remote_code=True).eval()


def input_size(model) -> int:
    height, width = model.config.image_size_hw
    if height != width:
        raise DataError(f"evaluation crops square inputs; this model's image_size is {height}x{width}.")
    return height


def prepare_images(split, model, image_column: str, processor_stats, limit: int | None = None):
    """Evaluation tensors for `split` at the model's input size, with its `bbox` column ([x, y, w, h])
    mapped to model-input (x0, y0, x1, y1) boxes when there is one (else None)."""
    mean, std = processor_stats
    transform = ImageTransform(size=input_size(model), mean=mean, std=std, train=False)
    rows = split if limit is None else split.select(range(min(limit, len(split))))
    has_boxes = BOX_COLUMN in rows.column_names

    def pairs():
        for row in rows:
            box = None
            if has_boxes:
                x, y, w, h = row[BOX_COLUMN]
                box = (x, y, x + w, y + h)
            yield row[image_column], box

    return transform_with_boxes(pairs(), transform)


@torch.no_grad()
def encode(model, pixel_values: torch.Tensor, batch_size: int = 128, progress: bool = False) -> dict:
    """Run the classifier once; keep logits, pooled feature, final patch tokens and votes."""
    from tqdm.auto import tqdm

    out = {"logits": [], "pooled": [], "patches": [], "votes": []}
    for start in tqdm(range(0, len(pixel_values), batch_size), desc="encoding", disable=not progress):
        base = model.base_model(pixel_values=pixel_values[start : start + batch_size])
        out["logits"].append(model.classifier(base.pooler_output))
        out["pooled"].append(base.pooler_output)
        out["patches"].append(model.split_tokens(base.last_hidden_state).patches)
        if base.patch_votes is not None:
            out["votes"].append(base.patch_votes)
    return {k: torch.cat(v) if v else None for k, v in out.items()}


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hits = top == labels[:, None]
    return {"top1": hits[:, 0].float().mean().item(), f"top{k}": hits.any(1).float().mean().item(),
            "num_images": len(labels)}


def evaluate_model(model, pixel_values, labels, boxes=None, batch_size: int = 128, progress: bool = False,
                   norm_threshold: float | None = None, seed: int = 0, mask_fractions=MASK_FRACTIONS,
                   probe_images: int | None = None) -> tuple[dict, dict]:
    """All measurements of one classifier on prepared tensors. Returns ``(metrics, arrays)``;
    `arrays` holds the per-image maps the figures need. The masking probe re-runs the model once
    per (k, order): `probe_images` limits it to the first images."""
    from lastvit import measure as A

    encoded = encode(model, pixel_values, batch_size, progress)
    metrics = {"classification": classification_metrics(encoded["logits"], labels)}
    scores = A.patch_scores(encoded["patches"], encoded["pooled"])
    size, patch = input_size(model), model.config.patch_size_hw[0]
    grid = model.patch_grid(size, size)
    num_patches = grid[0] * grid[1]

    if boxes is not None:
        untrained = A.untrained_copy(model, seed=seed)
        fresh = encode(untrained, pixel_values, batch_size)
        extra = {"vote_argmax": encoded["votes"].float()} if encoded["votes"] is not None else None
        metrics["point_in_box"] = A.point_in_box_with_baselines(
            scores, boxes, None, size, patch, resize=None, pixel_values=pixel_values,
            untrained_scores=A.patch_scores(fresh["patches"], fresh["pooled"]), extra_scores=extra,
        )

    ks = sorted({round(f * num_patches) for f in mask_fractions})
    model_fn = lambda x: model(pixel_values=x).logits  # noqa: E731
    n = len(pixel_values) if probe_images is None else min(probe_images, len(pixel_values))
    probe = {order: A.masking_probe(model_fn, pixel_values[:n], labels[:n], scores[:n], ks, order, patch,
                                    batch_size=batch_size, seed=seed).tolist()
             for order in ("high", "random", "low")}
    metrics["masking_probe"] = {"k": ks, "num_patches": num_patches, "num_images": n, **probe}

    norms = A.token_norms(encoded["patches"])
    threshold = norm_threshold if norm_threshold is not None else float(norms.norms.mean() + 3 * norms.norms.std())
    high = (norms.norms > threshold).sum(dim=1).float()
    metrics["token_norms"] = {
        "mean_norm": norms.norms.mean().item(), "max_norm": norms.max_norm.max().item(),
        "mean_max_abs_value": norms.max_abs_value.mean().item(), "threshold": threshold,
        "high_norm_tokens_per_image": high.mean().item(),
        "images_with_high_norm_tokens": (high > 0).float().mean().item(),
    }
    arrays = {"scores": scores, "votes": encoded["votes"], "norms": norms.norms, "grid": grid}
    return metrics, arrays


def write_figures(folder: Path, pixel_values, boxes, arrays: dict, metrics: dict, mean, std, num_examples: int = 4,
                  prefix: str = "") -> list[str]:
    """Overlays (patch scores, votes) for the first images, masking-probe curves, norm histogram."""
    from lastvit.measure import plots as P

    names = []
    grid = arrays["grid"]
    for i in range(min(num_examples, len(pixel_values))):
        box = boxes[i] if boxes is not None else None
        names.append(P.plot_patch_map(pixel_values[i], arrays["scores"][i], folder / f"{prefix}patch_score_{i}.png",
                                      box=box, grid=grid, title="Patch Score", mean=mean, std=std).name)
        if arrays["votes"] is not None:
            names.append(P.plot_patch_map(pixel_values[i], arrays["votes"][i].float(), folder / f"{prefix}votes_{i}.png",
                                          box=box, grid=grid, title="LazyStrike votes", mean=mean, std=std).name)
    probe = metrics["masking_probe"]
    names.append(P.plot_masking_probe(probe["k"], {o: probe[o] for o in ("high", "random", "low")},
                                      folder / f"{prefix}masking_probe.png", num_patches=probe["num_patches"]).name)
    names.append(P.plot_norm_histogram(arrays["norms"], folder / f"{prefix}norms.png",
                                       threshold=metrics["token_norms"]["threshold"]).name)
    return names


def markdown_report(metrics: dict, figures: list[str], title: str) -> str:
    lines = [f"# {title}", ""]
    cls = metrics["classification"]
    lines += ["## Classification", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in cls.items()]
    if "point_in_box" in metrics:
        lines += ["", "## Point-in-Box (arg-max Patch Score inside the box) and its baselines", "",
                  "| scorer | Point-in-Box |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in metrics["point_in_box"].items() if k != "num_images"]
        lines += ["", f"{metrics['point_in_box']['num_images']} images. A PiB above the baselines is what counts: "
                      "pasted objects are salient, so a colour outlier or an untrained model already scores."]
    probe = metrics["masking_probe"]
    lines += ["", "## Masking probe (top-1 after masking k patches ranked by Patch Score)", "",
              "| k | " + " | ".join(str(k) for k in probe["k"]) + " |", "|---|" + "---|" * len(probe["k"])]
    for order in ("high", "random", "low"):
        lines.append(f"| {order} | " + " | ".join(f"{a:.3f}" for a in probe[order]) + " |")
    norms = metrics["token_norms"]
    lines += ["", "## Patch-token norms", "", "| statistic | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in norms.items()]
    lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def write_report_dir(output_dir: Path, overwrite: bool, write) -> None:
    """Write the report folder whole (see `lastvit.files`); refuse to replace one unless asked."""
    from lastvit.files import is_nonempty_dir, write_folder

    if is_nonempty_dir(output_dir) and not overwrite:
        raise DataError(f"{output_dir} already holds files; pass --overwrite or choose another --output-dir.")
    write_folder(output_dir, write)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lastvit-evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a LastViT classifier folder (e.g. a lastvit-train output)")
    p.add_argument("--dataset", default=SCENES, help="scenes (default), imagefolder, a save_to_disk folder or a Hub name")
    p.add_argument("--data-dir", help="folder for --dataset imagefolder")
    p.add_argument("--eval-split", help="split to evaluate (default: validation, else test)")
    p.add_argument("--image-column", default="image")
    p.add_argument("--label-column", default="label")
    p.add_argument("--num-images", type=int, help="evaluate only the first N images")
    p.add_argument("--scenes-test", type=int, default=1000, help="scenes: test images (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="scenes seed, random masking order, untrained baseline")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--norm-threshold", type=float, help="high-norm token threshold (default: mean + 3 std)")
    p.add_argument("--output-dir", type=Path, required=True, help="where report.json, report.md and PNGs go")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model = load_classifier(args.model)
        scenes = dict(num_train=8, num_test=args.scenes_test, seed=args.seed)
        _, split = load_splits(args.dataset, "train", args.eval_split, args.data_dir, scenes)
        check_columns(split, args.image_column, args.label_column, "evaluation")
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(args.model, trust_remote_code=True)
        stats = (tuple(processor.image_mean), tuple(processor.image_std))
        pixel_values, boxes = prepare_images(split, model, args.image_column, stats, args.num_images)
        labels = torch.tensor(split[args.label_column][: len(pixel_values)])
        metrics, arrays = evaluate_model(model, pixel_values, labels, boxes, args.batch_size,
                                         not args.no_progress, args.norm_threshold, args.seed)

        def write(folder: Path):
            figures = write_figures(folder, pixel_values, boxes, arrays, metrics, *stats)
            (folder / "report.json").write_text(json.dumps(metrics, indent=2))
            (folder / "report.md").write_text(markdown_report(metrics, figures, f"Evaluation of {args.model}"))

        write_report_dir(args.output_dir, args.overwrite, write)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
