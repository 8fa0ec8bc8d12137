"""lastvit-study: the main job. Does LazyStrike make a ViT look at the object?

On the built-in scenes benchmark (real photo cut-outs on real backgrounds, held-out objects and
backgrounds in the test split), train three models of the same size with the same recipe and
seeds: a plain ViT (CLS pooling), a ViT with 4 registers (CLS pooling) and a LaSt-ViT (LazyStrike
pooling). Evaluate accuracy, Point-in-Box next to its baselines (random patch, centre patch,
colour outlier, the same architecture untrained), the masking probe and patch-token norms, and
write one report (Markdown + JSON + PNGs) plus the trained LaSt-ViT as an AutoModel-loadable
folder with a model card. The report states what comes out, whichever way it goes.

    lastvit-study --output-dir outputs/study            # ~10 minutes on 2 CPU cores
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lastvit.data.loading import DataError
from lastvit.files import is_nonempty_dir, swap_in

from . import evaluate as E
from . import train as T

VARIANTS = {
    "vit_cls": dict(label="ViT (CLS)", pooling="cls", registers=0),
    "vit_registers": dict(label="ViT + 4 registers (CLS)", pooling="cls", registers=4),
    "lastvit": dict(label="LaSt-ViT (LazyStrike)", pooling="lazystrike", registers=0),
}
CHANCE = 1 / 7  # seven balanced classes
HEADLINE = [
    ("top1", "top-1"),
    ("point_in_box", "PiB"),
    ("untrained", "PiB untrained"),
    ("colour_outlier", "PiB colour outlier"),
    ("centre_patch", "PiB centre"),
    ("random_patch", "PiB random"),
    ("mask_high", "acc. top-50% masked"),
    ("mask_low", "acc. bottom-50% masked"),
    ("high_norm", "high-norm tokens / img"),
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lastvit-study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", type=Path, default=Path("outputs/study"), help="report, runs and final model")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    p.add_argument("--time-budget", type=float, default=12.0,
                   help="minutes; seeds that would not finish within it are left out (and the report says so)")
    p.add_argument("--num-train", type=int, default=4000, help="training scenes (default: 4000)")
    p.add_argument("--num-test", type=int, default=1000, help="test scenes, held-out objects/backgrounds (default: 1000)")
    p.add_argument("--clutter", type=int, default=0, help="clutter fragments per scene (default: 0)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated scenes (default: 0)")
    p.add_argument("--preset", choices=sorted(T.PRESETS), default="micro", help="model size (default: micro, 0.8M)")
    p.add_argument("--epochs", type=float, default=3, help="epochs per model (default: 3)")
    p.add_argument("--batch-size", type=int, default=32, help="default 32: more steps per image in a short run")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05,
                   help="default 0.05: the paper's 0.3 is for 100-epoch ImageNet runs, too strong for a few epochs")
    p.add_argument("--top-k-ratio", type=float, default=0.25, help="LaSt-ViT's K as a share of patches (default: N/4)")
    p.add_argument("--probe-images", type=int, default=500, help="test images in the masking probe (default: 500)")
    p.add_argument("--no-progress", action="store_true")
    return p


def train_variant(args, name: str, spec: dict, seed: int, data_path: Path, runs: Path) -> Path:
    out = runs / f"{name}-seed{seed}"
    argv = ["--dataset", str(data_path), "--preset", args.preset, "--pooling", spec["pooling"],
            "--registers", str(spec["registers"]), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
            "--learning-rate", str(args.learning_rate), "--weight-decay", str(args.weight_decay),
            "--crop-scale-min", "0.35", "--seed", str(seed), "--output-dir", str(out), "--overwrite",
            "--eval-every", "1000000"]  # evaluated once at the end, below, with every measurement
    if spec["pooling"] == "lazystrike":
        argv += ["--top-k-ratio", str(args.top_k_ratio)]
    if args.no_progress:
        argv.append("--no-progress")
    T.train(T.build_parser().parse_args(argv))
    _reset_accelerate()
    return out


def _reset_accelerate():
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(True)
    PartialState._reset_state()


def headline(metrics: dict) -> dict:
    """The numbers of one run that enter the summary table."""
    probe = metrics["masking_probe"]
    half = probe["k"].index(min(probe["k"], key=lambda k: abs(k - probe["num_patches"] / 2)))
    pib = metrics["point_in_box"]
    return {
        "top1": metrics["classification"]["top1"],
        **{k: pib[k] for k in ("point_in_box", "untrained", "colour_outlier", "centre_patch", "random_patch")},
        "vote_argmax": pib.get("vote_argmax"),
        "mask_high": probe["high"][half],
        "mask_random": probe["random"][half],
        "mask_low": probe["low"][half],
        "high_norm": metrics["token_norms"]["high_norm_tokens_per_image"],
        "max_norm": metrics["token_norms"]["max_norm"],
    }


def summarise(per_run: dict) -> dict:
    """Mean and sample std over seeds of every headline number, per variant."""
    summary = {}
    for name, runs in per_run.items():
        keys = [k for k in runs[0] if runs[0][k] is not None]
        summary[name] = {
            k: {"mean": float(np.mean([r[k] for r in runs])),
                "std": float(np.std([r[k] for r in runs], ddof=1)) if len(runs) > 1 else 0.0}
            for k in keys
        }
    return summary


def verdict(summary: dict, seeds: int) -> list[str]:
    """Plain sentences comparing LaSt-ViT with the CLS ViT, with the seeds' spread."""
    lines = []
    best_top1 = max(summary[name]["top1"]["mean"] for name in summary)
    if best_top1 < CHANCE + 0.1:
        lines.append(f"- Every model is within 0.1 of chance ({CHANCE:.3f}) on the held-out scenes (best mean top-1 "
                     f"{best_top1:.3f}): they have barely learned the task in this budget, so the localisation "
                     "numbers below mostly reflect the architecture and the initialisation, not learned behaviour.")
    for key, what in (("point_in_box", "Point-in-Box"), ("top1", "top-1 accuracy")):
        a, b = summary["lastvit"][key], summary["vit_cls"][key]
        gap = a["mean"] - b["mean"]
        spread = max(a["std"], b["std"])
        if seeds < 2:
            judgement = "one seed only, so no spread to judge the difference against"
        elif abs(gap) > 2 * spread:
            judgement = "larger than twice the seeds' spread"
        else:
            judgement = "within twice the seeds' spread: not a clear difference"
        direction = "higher" if gap > 0 else "lower"
        lines.append(f"- LaSt-ViT's {what} is {abs(gap):.3f} {direction} than the CLS ViT's "
                     f"({a['mean']:.3f} ± {a['std']:.3f} vs {b['mean']:.3f} ± {b['std']:.3f}; {judgement}).")
    pib = summary["lastvit"]["point_in_box"]["mean"]
    best_baseline = max(("untrained", "colour_outlier", "centre_patch", "random_patch"),
                        key=lambda k: summary["lastvit"][k]["mean"])
    base = summary["lastvit"][best_baseline]["mean"]
    lines.append(f"- Against its strongest baseline ({best_baseline.replace('_', ' ')}, {base:.3f}), LaSt-ViT's "
                 f"Point-in-Box is {'above' if pib > base else 'not above'} it ({pib:.3f}).")
    return lines


def markdown(summary: dict, per_run: dict, seeds: list[int], skipped: list[int], args, figures: dict,
             minutes: float) -> str:
    def cell(stats):
        return f"{stats['mean']:.3f} ± {stats['std']:.3f}"

    lines = ["# Where does the model look? CLS vs registers vs LazyStrike on the scenes benchmark", ""]
    lines += [f"{len(seeds)} seeds ({', '.join(map(str, seeds))}), {args.num_train} training / {args.num_test} test "
              f"scenes (64 px, 7 classes, chance 0.143; test objects and backgrounds held out), preset "
              f"`{args.preset}`, {args.epochs} epochs, AdamW lr {args.learning_rate}, wd {args.weight_decay}, "
              f"LazyStrike K = {args.top_k_ratio} N. Mean ± std over seeds; {minutes:.1f} minutes in all.", ""]
    if skipped:
        lines += [f"Seeds {skipped} were left out: they would not have finished within --time-budget "
                  f"{args.time_budget} min.", ""]
    lines += ["| model | " + " | ".join(label for _, label in HEADLINE) + " |",
              "|---|" + "---|" * len(HEADLINE)]
    for name, spec in VARIANTS.items():
        lines.append(f"| {spec['label']} | " + " | ".join(cell(summary[name][k]) for k, _ in HEADLINE) + " |")
    if "vote_argmax" in summary["lastvit"]:
        lines += ["", f"LaSt-ViT's arg-max vote (the patch most channels selected) lands in the box "
                      f"{cell(summary['lastvit']['vote_argmax'])} of the time."]
    lines += ["", "## What it says", ""] + verdict(summary, len(seeds))
    lines += ["", "Point-in-Box: is the patch with the highest Patch Score (cosine of the final patch token with "
                  "the pooled global feature) inside the object's box? Baselines: the same architecture untrained, "
                  "the patch whose colour is farthest from the image median, the centre patch, a random patch. "
                  "Masking probe: top-1 after blanking the 50% highest- or lowest-scored patches of each image. "
                  "High-norm tokens: final patch tokens with norm above mean + 3 std of that model's norms.", ""]
    lines += ["## Per seed", "", "| model | seed | " + " | ".join(label for _, label in HEADLINE) + " |",
              "|---|---|" + "---|" * len(HEADLINE)]
    for name, runs in per_run.items():
        for seed, run in zip(seeds, runs):
            lines.append(f"| {VARIANTS[name]['label']} | {seed} | " + " | ".join(f"{run[k]:.3f}" for k, _ in HEADLINE)
                         + " |")
    lines += ["", "## Figures (seed " + str(seeds[0]) + ")", ""]
    for name, names in figures.items():
        lines += [f"### {VARIANTS[name]['label']}", ""] + [f"![{n}]({n})" for n in names] + [""]
    lines += ["The trained LaSt-ViT (seed " + str(seeds[0]) + ") is in `lastvit-model/`: "
              "`AutoModelForImageClassification.from_pretrained('lastvit-model', trust_remote_code=True)`."]
    return "\n".join(lines) + "\n"


def run_study(args) -> dict:
    from lastvit.data.scenes import build_scenes

    start = time.time()
    out = args.output_dir
    if is_nonempty_dir(out) and not args.overwrite:
        raise DataError(f"{out} already holds files; pass --overwrite to replace them or choose another --output-dir.")
    work = out.with_name(f".{out.name}.work")
    shutil.rmtree(work, ignore_errors=True)
    (work / "runs").mkdir(parents=True)

    print(f"building {args.num_train} + {args.num_test} scenes (seed {args.data_seed}) ...", flush=True)
    data = build_scenes(args.num_train, args.num_test, seed=args.data_seed, clutter=args.clutter)
    data_path = work / "data"
    data.save_to_disk(str(data_path))

    per_run = {name: [] for name in VARIANTS}
    raw, done, skipped, arrays0, round_minutes = {}, [], [], {}, None
    test_inputs = None
    for seed in args.seeds:
        elapsed = (time.time() - start) / 60
        if done and round_minutes and elapsed + round_minutes > args.time_budget:
            skipped.append(seed)
            continue
        round_start = time.time()
        for name, spec in VARIANTS.items():
            print(f"[{(time.time() - start) / 60:5.1f} min] training {spec['label']}, seed {seed}", flush=True)
            folder = train_variant(args, name, spec, seed, data_path, work / "runs")
            model = E.load_classifier(folder)
            if test_inputs is None:
                from transformers import AutoImageProcessor

                processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
                stats = (tuple(processor.image_mean), tuple(processor.image_std))
                pixels, boxes = E.prepare_images(data["test"], model, "image", stats)
                test_inputs = (pixels, torch.tensor(data["test"]["label"]), boxes, stats)
            pixels, labels, boxes, stats = test_inputs
            metrics, arrays = E.evaluate_model(model, pixels, labels, boxes, seed=seed,
                                               mask_fractions=(0.0, 0.25, 0.5, 0.75), probe_images=args.probe_images)
            raw[f"{name}-seed{seed}"] = metrics
            per_run[name].append(headline(metrics))
            if not done:
                arrays0[name] = (metrics, arrays)
            print(f"    top-1 {metrics['classification']['top1']:.3f}, "
                  f"Point-in-Box {metrics['point_in_box']['point_in_box']:.3f}", flush=True)
        done.append(seed)
        round_minutes = (time.time() - round_start) / 60

    summary = summarise(per_run)
    report = work / "report"
    report.mkdir()
    figures = {}
    pixels, labels, boxes, (mean, std) = test_inputs
    for name, (metrics, arrays) in arrays0.items():
        figures[name] = E.write_figures(report, pixels, boxes, arrays, metrics, mean, std, num_examples=3,
                                        prefix=f"{name}_")
    minutes = (time.time() - start) / 60
    results = {"seeds": done, "skipped_seeds": skipped, "summary": summary, "per_run": per_run, "raw": raw,
               "minutes": minutes, "args": {k: str(v) for k, v in vars(args).items()}}
    (report / "report.json").write_text(json.dumps(results, indent=2))
    (report / "report.md").write_text(markdown(summary, per_run, done, skipped, args, figures, minutes))

    # The deliverables: report files and the trained LaSt-ViT; runs and data stay in runs/ for inspection.
    model_dir = work / "lastvit-model"
    shutil.copytree(work / "runs" / f"lastvit-seed{done[0]}", model_dir,
                    ignore=shutil.ignore_patterns("checkpoints", "best", ".*"))
    for path in report.iterdir():
        path.rename(work / path.name)
    report.rmdir()
    shutil.rmtree(data_path)  # regenerated from the seed in seconds; not worth keeping
    swap_in(work, out)
    return results


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results = run_study(args)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print((args.output_dir / "report.md").read_text())
    print(f"report: {args.output_dir / 'report.md'}; model: {args.output_dir / 'lastvit-model'}")
    return 0 if results["seeds"] else 1


if __name__ == "__main__":
    sys.exit(main())
