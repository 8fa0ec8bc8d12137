"""lastvit-train-dino: DINO self-distillation of a LaSt-ViT backbone with Accelerate.

The DINO head reads the backbone's `pooler_output`: the LazyStrike token (default) or, with
`--pooling cls`, the CLS token (the plain DINO baseline); the code path is the same. The teacher is
an EMA of the student; centre, schedules and RNG states are in each checkpoint, so `--resume`
continues a killed run exactly.

    lastvit-train-dino --output-dir runs/dino --scenes-train 4000 --epochs 10
    lastvit-train-dino --output-dir runs/dino-cls --pooling cls
    accelerate launch --config_file training_scripts/accelerate_configs/multi_gpu.yaml \\
        -m training_scripts.train_dino --dataset imagefolder --data-dir data/ --preset small --output-dir runs/dino

The output folder is the teacher backbone (`AutoModel.from_pretrained(DIR, trust_remote_code=True)`),
its image processor and card, the DINO head (`dino_head.safetensors`) and `eval_results.json`
(k-NN top-1; Point-in-Box, CorLoc and coarse segmentation from Patch-Score maps; each next to the
untrained backbone).
"""

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    from lastvit.arguments import add_arguments
    from lastvit.training.dino_trainer import DINOTrainingArguments

    parser = argparse.ArgumentParser(
        prog="lastvit-train-dino", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, DINOTrainingArguments)
    return parser


def main(argv=None) -> int:
    namespace = build_parser().parse_args(argv)  # before any heavy import: --help stays fast
    from lastvit.arguments import from_args
    from lastvit.data.loading import DataError
    from lastvit.training.dino_trainer import DINOTrainingArguments, train_dino
    from lastvit.training.pretraining import PretrainingError

    try:
        results = train_dino(from_args(DINOTrainingArguments, namespace))
    except (PretrainingError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
