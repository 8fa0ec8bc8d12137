"""lastvit-study-pretraining: does LazyStrike help self-supervised (DINO) and image-text (CLIP) training?

The paper's K per paradigm: DINO-CLS vs DINO-LazyStrike K = 1 and K = N/7, CLIP-CLS vs
CLIP-LazyStrike K = 1 and K = N/2, on one copy of the scenes with one recipe and step budget per
family, for several seeds; CLIP at every caption rate (the share of captions that also name the
background: the caption experiment's factor). Each model is measured next to its untrained twin
(k-NN / zero-shot top-1, AUROC of the maps against the exact masks, the paper's PiB / CorLoc /
segmentation). The tests are declared before the run: DINO-CLS learns (trained vs untrained k-NN),
and the readout x caption-rate interaction (per-seed slope of LazyStrike minus CLS zero-shot top-1
over the rates, tested over seeds); the rest is exploratory, Holm-adjusted. DINO runs also log
collapse diagnostics and a k-NN learning curve on a validation split. Every image tower also takes
the main study's backgrounds challenge (only-FG, only-BG, mixed-same, mixed-rand renderings of the
test scenes; BG-gap, flip rate), next to its untrained twin. Writes report.md, report.json and
figures. --pilot trains one DINO variant for the first seed and writes its learning curve; --merge
writes one report from parts of a study run side by side (their settings and scenes must agree).

    lastvit-study-pretraining --output-dir outputs/study_pretraining --overwrite
    lastvit-study-pretraining --families clip --caption-rates 0 0.9 --seeds 0 1 2 3 4
    lastvit-study-pretraining --pilot dino_cls --seeds 0 --output-dir outputs/dino_pilot
    lastvit-study-pretraining --merge outputs/part_dino outputs/part_clip --output-dir outputs/study_pretraining
"""

import argparse
import sys
from pathlib import Path

from lastvit.arguments import add_arguments, from_args
from lastvit.study.pretraining import MergeOptions, PilotOptions, PretrainingStudyConfig

OPTIONS = (PretrainingStudyConfig, PilotOptions, MergeOptions)
# This command's own defaults: a folder to write to, and progress bars on a terminal.
DEFAULTS = {"output_dir": Path("outputs/study_pretraining"), "progress": True}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lastvit-study-pretraining", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, PretrainingStudyConfig, defaults=DEFAULTS)
    add_arguments(parser, PilotOptions)
    add_arguments(parser, MergeOptions)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)  # before any heavy import: --help stays fast
    from lastvit.study.pretraining import PretrainingStudyError, merge_reports, run_dino_pilot, run_pretraining_study

    try:
        merge = from_args(MergeOptions, args).merge
        if merge:
            merge_reports(merge, args.output_dir, overwrite=args.overwrite)
            print((Path(args.output_dir) / "report.md").read_text())
            return 0
        pilot = from_args(PilotOptions, args).pilot
        config = from_args(PretrainingStudyConfig, args, **({"families": ("dino",)} if pilot else {}))
        if pilot:
            command = "lastvit-study-pretraining " + " ".join(argv if argv is not None else sys.argv[1:])
            run_dino_pilot(config, pilot, command)
            print((config.output_dir / "pilot.md").read_text())
            return 0
        run_pretraining_study(config)
    except (PretrainingStudyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print((config.output_dir / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
