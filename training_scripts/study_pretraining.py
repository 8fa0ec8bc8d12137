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

from lastvit.arguments import add_arguments, from_args
from lastvit.study.pretraining import PretrainingStudyConfig

OPTIONS = (PretrainingStudyConfig,)
# This command's own defaults: a folder to write to, and progress bars on a terminal.
DEFAULTS = {"output_dir": Path("outputs/study_pretraining"), "progress": True}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lastvit-study-pretraining", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, PretrainingStudyConfig, defaults=DEFAULTS)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)  # before any heavy import: --help stays fast
    from lastvit.study.pretraining import PretrainingStudyError, run_pretraining_study

    try:
        config = from_args(PretrainingStudyConfig, args)
        run_pretraining_study(config)
    except (PretrainingStudyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print((config.output_dir / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
