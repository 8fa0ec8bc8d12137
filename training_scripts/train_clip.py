"""lastvit-train-clip: image-text (CLIP) training of a LaSt-ViT image tower and a CLIP text tower.

Symmetric InfoNCE with a learned temperature; the image embedding is the LastViT pooled feature
(LazyStrike, or `--pooling cls` for the baseline) through a linear projection. The built-in scenes
get generated captions and a tokenizer trained on them (nothing is downloaded).

    lastvit-train-clip --output-dir runs/clip --scenes-train 4000 --epochs 5
    accelerate launch --config_file training_scripts/accelerate_configs/single_gpu_bf16.yaml \\
        -m training_scripts.train_clip --output-dir runs/clip --preset small

The output folder loads with `pipeline("zero-shot-image-classification", model=DIR,
trust_remote_code=True)` and `AutoModel`; `DIR/image_tower` is the image tower alone (a LastViT
folder). `--resume` continues a killed run from `DIR/checkpoints/last`.
"""

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    from lastvit.arguments import add_arguments
    from lastvit.clip.training import CLIPTrainingArguments

    parser = argparse.ArgumentParser(
        prog="lastvit-train-clip", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, CLIPTrainingArguments)
    return parser


def main(argv=None) -> int:
    namespace = build_parser().parse_args(argv)  # before any heavy import: --help stays fast
    from lastvit.arguments import from_args
    from lastvit.clip.captions import CaptionError
    from lastvit.clip.training import CLIPTrainingArguments, train_clip
    from lastvit.data.loading import DataError
    from lastvit.training.pretraining import PretrainingError

    try:
        results = train_clip(from_args(CLIPTrainingArguments, namespace))
    except (PretrainingError, CaptionError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
