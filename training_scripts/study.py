"""lastvit-study: the main job. Does LazyStrike make a ViT look at the object?

Train the paper's supervised comparison with one recipe and budget, for 5 seeds: a ViT (CLS), a
ViT with 4 registers (CLS), a ViT with mean pooling (GAP = K = N), and LaSt-ViT with LazyStrike
K = 1 (released) and K = N/7 (Tab. 9's best); --with-khalf and --with-max add K = N/2 and max
pooling as labelled extras. Each is evaluated next to the same architecture untrained on:
the background test (the same held-out objects as original / only-FG / only-BG / mixed-same /
mixed-rand; BG-gap, flip rate); every map's per-image AUROC against exact object coverage, with
its ceiling and map-free baselines; Point-in-Box, CorLoc and coarse segmentation (secondary);
the masking probe; token norms before the final LayerNorm. The primary endpoints are declared in
StudyConfig and Holm-corrected; every other test is Benjamini-Hochberg-corrected. Writes
report.md, report.json, figures and the trained LaSt-ViT (K = 1) as a loadable folder.

    lastvit-study --overwrite                       # CPU scale: 5 seeds, under 20 minutes on 2 cores
    lastvit-study --scale long --overwrite --output-dir outputs/study_long   # CPU, about 2 hours
    lastvit-study --scale gpu --overwrite           # GPU scale (picked by default on a CUDA machine)
    lastvit-study --learning-curves --overwrite --output-dir outputs/study_curves   # pick the budget
    lastvit-study --seeds 3 --output-dir part3 ...; lastvit-study --merge part0 ... part4 --overwrite
                                                    # one process (or machine) per seed, pooled
"""

import argparse
import sys
from pathlib import Path

VARIANT_NAMES = ("vit_cls", "vit_reg4", "vit_mean", "lastvit_k1", "lastvit_k7")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lastvit-study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--output-dir", type=Path, default=Path("outputs/study"), help="where the report and model go")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds (default: 0-4)")
    p.add_argument("--with-khalf", action="store_true", help="also train LazyStrike K = N/2 (an extra)")
    p.add_argument("--with-max", action="store_true", help="also train a max-pooling ViT (an extra)")
    p.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="instead of running: pool finished studies of the same configuration on disjoint seeds into one report",
    )
    p.add_argument(
        "--learning-curves",
        action="store_true",
        help="instead of the study: validation top-1 vs steps for a few settings (1 seed), to choose the budget",
    )
    p.add_argument(
        "--scale",
        choices=("auto", "cpu", "long", "gpu"),
        default="auto",
        help="defaults for data, model and recipe (auto: gpu on a CUDA machine, else cpu; long: CPU, ~2 h)",
    )
    p.add_argument("--device", default="auto", help="evaluation device: auto (default), cpu, cuda, cuda:1, ...")
    scale = p.add_argument_group("overrides of the scale's defaults (see lastvit.study.config.SCALES)")
    scale.add_argument(
        "--data-variant",
        choices=("scenes", "fashion"),
        help="fashion: Fashion-MNIST items (train/test instances disjoint); scenes: Tux Paint photos",
    )
    scale.add_argument("--num-train", type=int, help="training images")
    scale.add_argument("--num-validation", type=int, help="validation images (carved from the training sources)")
    scale.add_argument("--num-test", type=int, help="test images (held-out instances and backgrounds)")
    scale.add_argument(
        "--background-correlation",
        type=float,
        help="rho in [0, 1]: how often a training (and test) background comes from the class's group; 0 = no tie",
    )
    scale.add_argument("--image-size", type=int, help="image side in pixels")
    scale.add_argument("--patch-size", type=int, help="patch side in pixels")
    scale.add_argument("--preset", choices=("micro", "tiny", "small", "base"), help="model size")
    scale.add_argument("--epochs", type=float, help="epochs per model")
    scale.add_argument("--batch-size", type=int)
    scale.add_argument("--learning-rate", type=float)
    scale.add_argument("--weight-decay", type=float)
    scale.add_argument("--num-workers", type=int, help="DataLoader worker processes")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated images (default: 0)")
    p.add_argument("--probe-images", type=int, default=300, help="test images in the masking probe (default: 300)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from lastvit.study import StudyConfig, StudyError, run_study

    overrides = {
        k: getattr(args, k)
        for k in (
            "data_variant",
            "num_train",
            "num_validation",
            "num_test",
            "background_correlation",
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
        variants=VARIANT_NAMES
        + (("lastvit_khalf",) if args.with_khalf else ())
        + (("vit_max",) if args.with_max else ()),
        scale=args.scale,
        device=args.device,
        data_seed=args.data_seed,
        probe_images=args.probe_images,
        progress=not args.no_progress,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    try:
        if args.merge:
            from lastvit.study.runner import merge_studies

            merge_studies(args.merge, args.output_dir, args.overwrite)
            print((args.output_dir / "report.md").read_text())
            return 0
        if args.learning_curves:
            from lastvit.study.curves import run_learning_curves

            run_learning_curves(config)
            print(f"learning curves: {args.output_dir / 'learning_curves.json'}")
            return 0
        run_study(config)
    except (StudyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print((args.output_dir / "report.md").read_text())
    print(f"report: {args.output_dir / 'report.md'}; model: {args.output_dir / 'lastvit-model'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
