"""lastvit-export: a saved LastViT model (folder or Hub id) to a deployable folder: model.onnx (or an ExportedProgram
model.pt2) with a dynamic batch, its preprocessor_config.json, a README.md card and export_report.json.

The export is run on held-out images (the built-in scenes' test split, or --dataset imagefolder --data-dir DIR)
and compared with the eager model BEFORE anything is written; the folder is written whole or not at all, and an
existing one is replaced only with --overwrite, once the new export passed. --quantize int8 adds model.int8.onnx
(onnxruntime dynamic quantisation) and measures its top-1 change on the held-out split.

    lastvit-export --model runs/tiny --output-dir exports/tiny
    lastvit-export --model runs/tiny --output-dir exports/tiny-int8 --quantize int8 --eval-images 500
    lastvit-export --model runs/tiny --output-dir exports/tiny-pt2 --format pt2 --dynamic-size
"""

import argparse
import json
import sys

from lastvit.arguments import add_arguments, from_args
from lastvit.data.arguments import DataArguments, add_data_arguments
from lastvit.export_options import DATA_FLAGS, ExportOptions

OPTIONS = (ExportOptions, DataArguments)
DEFAULTS = {"scenes_test": 200}  # held-out images are all the export needs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lastvit-export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, ExportOptions)
    add_data_arguments(
        parser.add_argument_group("held-out images (check and int8 accuracy)"),
        include=DATA_FLAGS,
        defaults=DEFAULTS,
        help={"scenes_test": "scenes: held-out images to build (default: 200)"},
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from lastvit.data.loading import DataError
    from lastvit.export import ExportError, run_export
    from lastvit.files import ModelPathError

    options = from_args(ExportOptions, args, data=DataArguments.from_args(args))
    try:
        report = run_export(options)
    except (ExportError, ModelPathError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    worst = max(report["max_abs_difference"].values())
    print(
        f"wrote {options.output_dir}/{report['file']}: max |export - eager| = {worst:.3g} on {report['check_images']} images"
    )
    if "int8" in report and "top1_change_int8" in report["int8"]:
        q = report["int8"]
        print(
            f"int8: top-1 {q['top1_onnx_int8']:.4f} vs fp32 {q['top1_onnx_fp32']:.4f} ({q['top1_change_int8']:+.4f}) "
            f"on {q['images']} held-out images; agrees with fp32 on {q['int8_agrees_with_fp32']:.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
