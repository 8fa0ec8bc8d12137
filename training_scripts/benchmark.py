"""lastvit-benchmark: one of the paper's benchmarks on the dataset's own files, in one command.

    lastvit-benchmark NAME --data-dir DIR --model MODEL [--output-dir OUT] [--batch-size 64]
                      [--num-workers 4] [--device auto] [--trust-remote-code] [--limit N]

Images stream through a DataLoader (its workers decode and resize), the model runs on the GPU when
there is one, and only running counts are kept. Writes OUT/report.md and OUT/report.json (default
OUT: outputs/benchmarks/NAME) with the metric, the protocol's exact settings, the paper's numbers
and the loader's and the model's images/s. docs/reproduction.md lists, for every table of the paper,
the data to get, the command and the number to expect.

Benchmarks (NAME) and the layout of --data-dir:
"""

import argparse
import json
import sys

from lastvit.arguments import add_arguments, from_args, to_argv
from lastvit.data.benchmarks.options import BenchmarkOptions, benchmark_help

OPTIONS = (BenchmarkOptions,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lastvit-benchmark",
        description=__doc__ + benchmark_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser, BenchmarkOptions)
    return parser


def main(argv=None) -> int:
    options = from_args(BenchmarkOptions, build_parser().parse_args(argv))
    from lastvit.data.loading import DataError
    from lastvit.files import ModelPathError, check_model_path, is_nonempty_dir, write_folder
    from lastvit.measure.benchmark_report import write_report
    from lastvit.measure.benchmarks import run_benchmark

    output_dir = options.resolved_output_dir()
    try:
        check_model_path(options.model, "--model")
        if is_nonempty_dir(output_dir) and not options.overwrite:
            raise DataError(f"{output_dir} already holds files; pass --overwrite or choose another --output-dir.")
        if options.limit is not None and options.limit < 1:
            raise DataError(f"--limit must be at least 1, got {options.limit}.")
        if options.batch_size < 1 or options.num_workers < 0:
            raise DataError("--batch-size must be at least 1 and --num-workers at least 0.")
        report = {
            "command": to_argv(options, f"lastvit-benchmark {options.benchmark}", skip=("benchmark",)),
            **run_benchmark(options),
        }
    except (DataError, ModelPathError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    write_folder(output_dir, lambda folder: write_report(folder, report))
    print(json.dumps({"output_dir": str(output_dir), "metrics": report["metrics"]}, indent=2, default=str)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
