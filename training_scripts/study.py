"""lastvit-study: the main job. Does LazyStrike make a ViT look at the object?

Train the paper's comparison with one recipe and budget, for several seeds: a ViT (CLS), a ViT
with 4 registers (CLS), a ViT with mean pooling (GAP), and LaSt-ViT with LazyStrike K = 1 and
K = N/2 (--variants ... vit_max adds max pooling). Evaluate each next to the same architecture untrained:
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
from dataclasses import fields

from lastvit.arguments import add_arguments, from_args
from lastvit.study.config import SCALE_FIELDS, CheckOptions, StudyConfig

OPTIONS = (StudyConfig, CheckOptions)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lastvit-study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, StudyConfig, include=[f.name for f in fields(StudyConfig) if f.name not in SCALE_FIELDS])
    scale = parser.add_argument_group("overrides of the scale's defaults (see lastvit.study.config.SCALES)")
    add_arguments(scale, StudyConfig, include=SCALE_FIELDS)
    add_arguments(parser.add_argument_group("reproduction check"), CheckOptions)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = from_args(StudyConfig, args)
    from lastvit.study import StudyError, run_study

    check = from_args(CheckOptions, args)
    if check.check is not None:
        from lastvit.study.check import check_report

        try:
            result = check_report(check.check, check.check_seed, progress=config.progress)
        except (StudyError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(result.summary())
        return 0 if result.matches else 1

    try:
        run_study(config)
    except (StudyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print((config.output_dir / "report.md").read_text())
    print(f"report: {config.output_dir / 'report.md'}; model: {config.output_dir / 'lastvit-model'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
