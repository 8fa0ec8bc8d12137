"""lastvit-train-dino: DINO self-distillation of a LaSt-ViT backbone with Accelerate.

The DINO head reads the backbone's `pooler_output`: the LazyStrike token (default) or, with
`--pooling cls`, the CLS token (the plain DINO baseline); the code path is the same. The teacher is
an EMA of the student; centre, schedules and RNG states are in each checkpoint, so `--resume`
continues a killed run exactly.

    lastvit-train-dino --output-dir runs/dino --scenes-train 4000 --epochs 10
    lastvit-train-dino --output-dir runs/dino-cls --pooling cls
    accelerate launch --config_file training_scripts/accelerate_configs/multi_gpu.yaml \\
        -m training_scripts.train_dino --dataset imagefolder --data-dir data/ --preset small --output-dir runs/dino
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m training_scripts.train_dino --output-dir runs/dino-ddp

Several processes (DDP, or FSDP version 2 with accelerate_configs/fsdp.yaml on GPUs) each take every
N-th batch; the teacher stays whole on every process (never wrapped), the centre averages the teacher
outputs of all processes: N processes of --batch-size B train as one process of batch N x B.

The output folder is the teacher backbone (`AutoModel.from_pretrained(DIR, trust_remote_code=True)`),
its image processor and card, the DINO head (`dino_head.safetensors`) and `eval_results.json`
(k-NN top-1; Point-in-Box, CorLoc and coarse segmentation from Patch-Score maps; each next to the
untrained backbone).
"""

import argparse
import sys

from lastvit.training.dino_trainer import DINOTrainingArguments

OPTIONS = (DINOTrainingArguments,)


def build_parser() -> argparse.ArgumentParser:
    from lastvit.training.pretraining import pretraining_parser

    return pretraining_parser("lastvit-train-dino", __doc__, DINOTrainingArguments)


def main(argv=None) -> int:
    from lastvit.training.dino_trainer import train_dino
    from lastvit.training.pretraining import run_pretraining

    return run_pretraining(build_parser(), argv, DINOTrainingArguments, train_dino)


if __name__ == "__main__":
    sys.exit(main())
