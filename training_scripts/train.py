"""lastvit-train: supervised image classification with Accelerate, from scratch or from a checkpoint.

The same script runs on one CPU, one GPU (bf16/fp16) or many GPUs/nodes (DDP, FSDP): device
placement, mixed precision and distribution come from `accelerate launch` configs
(`training_scripts/accelerate_configs/`), never from code branches. The default recipe is the
paper's: AdamW lr 1e-3, weight decay 0.3 (all parameters), betas (0.9, 0.95), 1% linear warm-up
from 0.1x, then cosine to 0.001x; RandomResizedCrop + flip for training, resize + centre crop
for evaluation.

    lastvit-train --dataset scenes --preset tiny --pooling lazystrike --top-k-ratio 0.25 --output-dir runs/tiny
    accelerate launch --config_file training_scripts/accelerate_configs/multi_gpu.yaml \\
        -m training_scripts.train --dataset imagefolder --data-dir data/ --preset base --output-dir runs/base

The output folder is a complete checkpoint: `AutoModelForImageClassification.from_pretrained(dir,
trust_remote_code=True)` loads it. `checkpoints/last/` (resume state) and `best/` sit inside it.
From Python: `lastvit.training.train(lastvit.training.TrainConfig(...))`.
"""

import argparse
import sys

from lastvit.arguments import from_args
from lastvit.training.cli import run_training
from lastvit.training.config import TrainConfig, add_train_arguments

OPTIONS = (TrainConfig,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lastvit-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_train_arguments(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_training(lambda: (from_args(TrainConfig, args), {}))


if __name__ == "__main__":
    sys.exit(main())
