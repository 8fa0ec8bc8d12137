"""lastvit-study: the main job. Does LazyStrike make a ViT look at the object?

Train the paper's comparison with one recipe and budget, for several seeds: a ViT (CLS), a ViT
with 4 registers (CLS), a ViT with mean pooling (GAP), and LaSt-ViT with LazyStrike K = 1 and
K = N/2 (--with-max adds max pooling). Evaluate each next to the same architecture untrained:
accuracy; Point-in-Box, CorLoc and coarse segmentation (against exact masks) of every map
(Patch Score with the pooled feature and with the final CLS output, LazyStrike votes, last-layer
CLS attention), next to random, centre and colour-outlier baselines; the masking probe on the
paper's N/7 grid; token norms. Differences are tested over seeds (paired t-test). Writes
report.md, report.json, figures and the trained LaSt-ViT (K = N/2) as a loadable folder.

    lastvit-study --overwrite                       # CPU scale: 3 seeds, about 15 minutes on 2 cores
    lastvit-study --scale gpu --overwrite           # GPU scale (picked by default on a CUDA machine)
    lastvit-study --check docs/study/report.json    # does seed 0 of a committed report reproduce here?
"""

import argparse
import sys
from pathlib import Path

VARIANT_NAMES = ("vit_cls", "vit_reg4", "vit_mean", "lastvit_k1", "lastvit_khalf")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lastvit-study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--output-dir", type=Path, default=Path("outputs/study"), help="where the report and model go")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    p.add_argument("--with-max", action="store_true", help="also train a max-pooling ViT")
    p.add_argument(
        "--scale",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="defaults for data, model and recipe (auto: gpu on a CUDA machine, else cpu)",
    )
    p.add_argument("--device", default="auto", help="evaluation device: auto (default), cpu, cuda, cuda:1, ...")
    scale = p.add_argument_group("overrides of the scale's defaults (see lastvit.study.config.SCALES)")
    scale.add_argument(
        "--data-variant",
        choices=("scenes", "fashion"),
        help="fashion: Fashion-MNIST items (train/test instances disjoint); scenes: Tux Paint photos",
    )
    scale.add_argument("--num-train", type=int, help="training images")
    scale.add_argument("--num-test", type=int, help="test images (held-out instances and backgrounds)")
    scale.add_argument("--image-size", type=int, help="image side in pixels")
    scale.add_argument("--patch-size", type=int, help="patch side in pixels")
    scale.add_argument("--preset", choices=("micro", "tiny", "small", "base"), help="model size")
    scale.add_argument("--epochs", type=float, help="epochs per model")
    scale.add_argument("--batch-size", type=int)
    scale.add_argument("--learning-rate", type=float)
    scale.add_argument("--weight-decay", type=float)
    scale.add_argument("--num-workers", type=int, help="DataLoader worker processes")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated images (default: 0)")
    p.add_argument("--probe-images", type=int, default=500, help="test images in the masking probe (default: 500)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    check = p.add_argument_group("reproduction check")
    check.add_argument(
        "--check",
        type=Path,
        metavar="REPORT.json",
        help="re-run one seed of this report with the config it records and say whether it matches, naming the "
        "first difference (data hash, package version, metric); exit code 1 when it does not (other options "
        "are ignored)",
    )
    check.add_argument("--check-seed", type=int, default=0, help="the seed --check re-runs (default: 0)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from lastvit.study import StudyConfig, StudyError, run_study

    if args.check is not None:
        from lastvit.study.check import check_report

        try:
            result = check_report(args.check, args.check_seed, progress=not args.no_progress)
        except (StudyError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(result.summary())
        return 0 if result.matches else 1

    overrides = {
        k: getattr(args, k)
        for k in (
            "data_variant",
            "num_train",
            "num_test",
            "image_size",
            "patch_size",
            "preset",
            "epochs",
            "batch_size",
            "learning_rate",
            "weight_decay",
            "num_workers",
        )
    }
    config = StudyConfig(
        output_dir=args.output_dir,
        overwrite=args.overwrite,
        seeds=tuple(args.seeds),
        variants=VARIANT_NAMES + (("vit_max",) if args.with_max else ()),
        scale=args.scale,
        device=args.device,
        data_seed=args.data_seed,
        probe_images=args.probe_images,
        progress=not args.no_progress,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    try:
        run_study(config)
    except (StudyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print((args.output_dir / "report.md").read_text())
    print(f"report: {args.output_dir / 'report.md'}; model: {args.output_dir / 'lastvit-model'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
