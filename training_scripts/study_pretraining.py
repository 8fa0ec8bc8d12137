"""lastvit-study-pretraining: does LazyStrike help self-supervised (DINO) and image-text (CLIP) training?

Train DINO-CLS vs DINO-LazyStrike (K = 1 and K = N/2) and CLIP-CLS vs CLIP-LazyStrike (K = 1 and
K = N/2) on one copy of the scenes with one recipe and step budget per family, for several seeds.
Measure each next to its untrained twin: DINO k-NN top-1, Patch-Score Point-in-Box, CorLoc and
coarse segmentation; CLIP zero-shot top-1, zero-shot segmentation mIoU against the exact masks, PiB of
the zero-shot patch maps, and the image tower's Patch-Score PiB / CorLoc / coarse segmentation.
Differences from the CLS readout are tested over seeds (paired t-test). Writes report.md,
report.json and one figure per family.

    lastvit-study-pretraining --output-dir outputs/study_pretraining --overwrite
    lastvit-study-pretraining --families clip --seeds 0 1 2 3 4 --background-caption-rate 0
"""

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lastvit-study-pretraining", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--output-dir", type=Path, default=Path("outputs/study_pretraining"), help="where the report goes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    p.add_argument("--families", nargs="+", choices=("dino", "clip"), default=["dino", "clip"], help="what to train")
    p.add_argument("--num-train", type=int, default=8000, help="training scenes (default: 8000)")
    p.add_argument("--num-test", type=int, default=1000, help="test scenes (default: 1000)")
    p.add_argument("--image-size", type=int, default=32, help="image side in pixels (default: 32)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated scenes (default: 0)")
    p.add_argument(
        "--background-caption-rate",
        type=float,
        default=0.3,
        help="share of CLIP captions that also name the background, a shortcut past the object (default: 0.3)",
    )
    p.add_argument("--preset", choices=("micro", "tiny", "small", "base"), default="micro", help="backbone size")
    p.add_argument("--batch-size", type=int, default=64, help="per-step batch of every run (default: 64)")
    p.add_argument("--dino-epochs", type=float, default=4, help="DINO epochs (default: 4)")
    p.add_argument("--clip-epochs", type=float, default=4, help="CLIP epochs (default: 4)")
    p.add_argument("--dino-learning-rate", type=float, default=4e-3, help="DINO lr at batch 256 (default: 4e-3)")
    p.add_argument(
        "--momentum-teacher",
        type=float,
        default=0.9,
        help="DINO initial teacher momentum (default: 0.9 for short runs)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)  # before any heavy import: --help stays fast
    from lastvit.study.pretraining import PretrainingStudyConfig, PretrainingStudyError, run_pretraining_study

    try:
        config = PretrainingStudyConfig(
            output_dir=args.output_dir,
            overwrite=args.overwrite,
            seeds=tuple(args.seeds),
            families=tuple(args.families),
            num_train=args.num_train,
            num_test=args.num_test,
            image_size=args.image_size,
            data_seed=args.data_seed,
            background_caption_rate=args.background_caption_rate,
            preset=args.preset,
            batch_size=args.batch_size,
            dino_epochs=args.dino_epochs,
            clip_epochs=args.clip_epochs,
            dino_learning_rate=args.dino_learning_rate,
            momentum_teacher=args.momentum_teacher,
            progress=not args.no_progress,
        )
        run_pretraining_study(config)
    except (PretrainingStudyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print((args.output_dir / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
