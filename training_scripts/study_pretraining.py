"""lastvit-study-pretraining: does LazyStrike help self-supervised (DINO) and image-text (CLIP) training?

The paper's K per paradigm: DINO-CLS vs DINO-LazyStrike K = 1 and K = N/7, CLIP-CLS vs
CLIP-LazyStrike K = 1 and K = N/2, on one copy of the scenes with one recipe and step budget per
family, for several seeds; CLIP at every caption rate (the share of captions that also name the
background: the caption experiment's factor). Each model is measured next to its untrained twin
(k-NN / zero-shot top-1, AUROC of the maps against the exact masks, the paper's PiB / CorLoc /
segmentation). The tests are declared before the run: DINO-CLS learns (trained vs untrained k-NN),
and the readout x caption-rate interaction (per-seed slope of LazyStrike minus CLS zero-shot top-1
over the rates, tested over seeds); the rest is exploratory, Holm-adjusted. DINO runs also log
collapse diagnostics and a k-NN learning curve on a validation split. Writes report.md, report.json
and figures. --pilot trains one DINO variant for the first seed and writes its learning curve.

    lastvit-study-pretraining --output-dir outputs/study_pretraining --overwrite
    lastvit-study-pretraining --families clip --caption-rates 0 0.9 --seeds 0 1 2 3 4
    lastvit-study-pretraining --pilot dino_cls --seeds 0 --output-dir outputs/dino_pilot
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
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds (default: 0-4)")
    p.add_argument("--families", nargs="+", choices=("dino", "clip"), default=["dino", "clip"], help="what to train")
    p.add_argument("--num-train", type=int, default=8000, help="training scenes (default: 8000)")
    p.add_argument("--num-val", type=int, default=1000, help="validation scenes for DINO's curve (default: 1000)")
    p.add_argument("--num-test", type=int, default=1000, help="test scenes (default: 1000)")
    p.add_argument("--image-size", type=int, default=32, help="image side in pixels (default: 32)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated scenes (default: 0)")
    p.add_argument(
        "--caption-rates",
        type=float,
        nargs="+",
        default=[0.0, 0.3, 0.6, 0.9],
        help="the caption experiment's levels: shares of CLIP captions that also name the background (default: 0 0.3 0.6 0.9)",
    )
    p.add_argument(
        "--primary-clip-variant",
        choices=("clip_k1", "clip_khalf"),
        default="clip_k1",
        help="the LazyStrike variant of the primary readout x rate test (default: clip_k1)",
    )
    p.add_argument("--preset", choices=("micro", "tiny", "small", "base"), default="micro", help="backbone size")
    p.add_argument("--batch-size", type=int, default=64, help="per-step batch of every run (default: 64)")
    p.add_argument("--dino-epochs", type=float, default=4, help="DINO epochs (default: 4)")
    p.add_argument("--clip-epochs", type=float, default=4, help="CLIP epochs (default: 4)")
    p.add_argument("--dino-learning-rate", type=float, default=4e-3, help="DINO lr at batch 256 (default: 4e-3)")
    p.add_argument("--dino-out-dim", type=int, default=1024, help="DINO prototypes (default: 1024)")
    p.add_argument(
        "--momentum-teacher",
        type=float,
        default=0.996,
        help="DINO initial teacher momentum, cosine to 1 (default: 0.996)",
    )
    p.add_argument(
        "--dino-knn-every", type=int, default=50, help="steps between DINO k-NN curve points (default: 50; 0: none)"
    )
    p.add_argument("--pilot", metavar="VARIANT", help="train only this DINO variant, first seed, and write its curve")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)  # before any heavy import: --help stays fast
    from lastvit.study.pretraining import (
        PretrainingStudyConfig,
        PretrainingStudyError,
        run_dino_pilot,
        run_pretraining_study,
    )

    try:
        config = PretrainingStudyConfig(
            output_dir=args.output_dir,
            overwrite=args.overwrite,
            seeds=tuple(args.seeds),
            families=("dino",) if args.pilot else tuple(args.families),
            num_train=args.num_train,
            num_val=args.num_val,
            num_test=args.num_test,
            image_size=args.image_size,
            data_seed=args.data_seed,
            caption_rates=tuple(args.caption_rates),
            primary_clip_variant=args.primary_clip_variant,
            preset=args.preset,
            batch_size=args.batch_size,
            dino_epochs=args.dino_epochs,
            clip_epochs=args.clip_epochs,
            dino_learning_rate=args.dino_learning_rate,
            dino_out_dim=args.dino_out_dim,
            momentum_teacher=args.momentum_teacher,
            dino_knn_every=args.dino_knn_every,
            progress=not args.no_progress,
        )
        if args.pilot:
            command = "lastvit-study-pretraining " + " ".join(argv if argv is not None else sys.argv[1:])
            run_dino_pilot(config, args.pilot, command)
            print((args.output_dir / "pilot.md").read_text())
            return 0
        run_pretraining_study(config)
    except (PretrainingStudyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print((args.output_dir / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
