"""`lastvit-convert`: the command line over `lastvit.conversion.run.run_conversion`.

Its flags are the fields of `ConversionJob` and `ConversionOptions` (`lastvit.conversion.options`, torch-free),
so `--help` starts fast; the converters, torch and transformers are imported when a conversion runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from lastvit.arguments import add_arguments, from_args
from lastvit.conversion.options import ConversionJob, ConversionOptions

OPTIONS = (ConversionJob, ConversionOptions)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lastvit-convert",
        description=(
            "Convert a ViT-family checkpoint into a LastViT folder (safetensors weights, config with auto_map, "
            "image-processor config matching the source's preprocessing, remote code and a model card). With "
            "--pooling source the converted model reproduces the source's outputs; --pooling lazystrike reads "
            "the same encoder out with LazyStrike (as the authors' released LaSt-ViT checkpoints are)."
        ),
        epilog=(
            "examples:\n"
            "  lastvit-convert --from hf --input google/vit-base-patch16-224 --output vit-b16-lastvit "
            "--pooling lazystrike\n"
            "  lastvit-convert --from torchvision --input ViT_190k.pth --output lastvit-vit-b16-supervised "
            "--pooling lazystrike --top-k 1\n"
            "  lastvit-convert --from openclip --input openai_b_16.pt --output lastvit-clip-b16 --with-text-tower "
            "--tokenizer bpe_simple_vocab_16e6.txt.gz --pooling lazystrike --top-k 1\n"
            "Loading never runs code from the file unless --trust-pickle is given."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser, ConversionJob)
    add_arguments(parser.add_argument_group("readout and architecture"), ConversionOptions)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    job, options = from_args(ConversionJob, args), from_args(ConversionOptions, args)
    if options.text_tower and job.released:
        parser.error("--released writes the card of an image-tower checkpoint; it does not go with --with-text-tower.")
    command = "lastvit-convert " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    from lastvit.conversion.checkpoint_loading import CheckpointLoadError
    from lastvit.conversion.options import ConversionError
    from lastvit.conversion.run import run_conversion

    try:
        options.validate()
        print(f"Converting {job.input} (--from {job.source}) ...")
        outcome = run_conversion(job, options, command)
    except (ConversionError, CheckpointLoadError) as error:
        parser.exit(2, f"lastvit-convert: error: {error}\n")
    print("\n".join(outcome.summary_lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
