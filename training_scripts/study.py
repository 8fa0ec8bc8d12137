"""lastvit-study: the main job. Does LazyStrike make a ViT look at the object?

Train the paper's supervised comparison with one recipe and budget, for 5 seeds: a ViT (CLS), a
ViT with 4 registers (CLS), a ViT with mean pooling (GAP = K = N), and LaSt-ViT with LazyStrike
K = 1 (released) and K = N/7 (Tab. 9's best); `--variants ... lastvit_khalf vit_max` adds K = N/2
and max pooling as labelled extras. Each is evaluated next to the same architecture untrained on:
the background test (the same held-out objects as original / only-FG / only-BG / mixed-same /
mixed-rand; BG-gap, flip rate); every map's per-image AUROC against exact object coverage, with
its ceiling and map-free baselines; Point-in-Box, CorLoc and coarse segmentation (secondary);
the masking probe; token norms before the final LayerNorm. The primary endpoints are declared in
StudyConfig and Holm-corrected; every other test is Benjamini-Hochberg-corrected. Writes
report.md, report.json, figures and the trained LaSt-ViT (K = 1) as a loadable folder.

    lastvit-study --overwrite                       # CPU scale: 5 seeds, under 20 minutes on 2 idle cores
    lastvit-study --scale long --overwrite --output-dir outputs/study_long   # CPU, about 2 hours
    lastvit-study --scale gpu --overwrite           # GPU scale (picked by default on a CUDA machine)
    lastvit-study --learning-curves --overwrite --output-dir outputs/study_curves   # choose the budget
    lastvit-study --seeds 3 --output-dir part3; lastvit-study --merge part0 ... part4 --overwrite
                                                    # one process (or machine) per seed, pooled
    lastvit-study --check docs/study/report.json    # does seed 0 of a committed report reproduce here?
"""

import argparse
import sys
from dataclasses import fields

from lastvit.arguments import add_arguments, from_args
from lastvit.study.config import SCALE_FIELDS, CheckOptions, ModeOptions, StudyConfig

OPTIONS = (StudyConfig, CheckOptions, ModeOptions)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lastvit-study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, StudyConfig, include=[f.name for f in fields(StudyConfig) if f.name not in SCALE_FIELDS])
    scale = parser.add_argument_group("overrides of the scale's defaults (see lastvit.study.config.SCALES)")
    add_arguments(scale, StudyConfig, include=SCALE_FIELDS)
    add_arguments(parser.add_argument_group("reproduction check"), CheckOptions)
    add_arguments(parser.add_argument_group("other modes"), ModeOptions)
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

    mode = from_args(ModeOptions, args)
    try:
        if mode.merge:
            from lastvit.study.runner import merge_studies

            merge_studies(mode.merge, config.output_dir, config.overwrite)
            print((config.output_dir / "report.md").read_text())
            return 0
        if mode.learning_curves:
            from lastvit.study.curves import run_learning_curves

            run_learning_curves(config)
            print(f"learning curves: {config.output_dir / 'learning_curves.json'}")
            return 0
        run_study(config)
    except (StudyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print((config.output_dir / "report.md").read_text())
    print(f"report: {config.output_dir / 'report.md'}; model: {config.output_dir / 'lastvit-model'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
