"""lastvit-train-clip: image-text (CLIP) training of a LaSt-ViT image tower and a CLIP text tower.

Symmetric InfoNCE with a learned temperature; the image embedding is the LastViT pooled feature
(LazyStrike, or `--pooling cls` for the baseline) through a linear projection. The built-in scenes
get generated captions and a tokenizer trained on them (nothing is downloaded).

    lastvit-train-clip --output-dir runs/clip --scenes-train 4000 --epochs 5
    accelerate launch --config_file training_scripts/accelerate_configs/single_gpu_bf16.yaml \\
        -m training_scripts.train_clip --output-dir runs/clip --preset small
    accelerate launch --config_file training_scripts/accelerate_configs/multi_gpu.yaml \\
        -m training_scripts.train_clip --output-dir runs/clip --preset small
    # fine-tune a LastViT-CLIP folder (both towers, temperature, tokenizer) with another readout
    lastvit-train-clip --model-name-or-path runs/clip-cls --pooling lazystrike --top-k-ratio 0.5 --output-dir runs/ft

Several processes (DDP): each scores its pairs against the pairs of all processes (embeddings
gathered with their gradients), so N processes of --batch-size B train as one process of batch
N x B. FSDP is refused (fully_shard cannot shard the scalar logit_scale).

The output folder loads with `pipeline("zero-shot-image-classification", model=DIR,
trust_remote_code=True)` and `AutoModel`; `DIR/image_tower` is the image tower alone (a LastViT
folder). `--resume` continues a killed run from `DIR/checkpoints/last`.
"""

import argparse
import sys

from lastvit.clip.training import CLIPTrainingArguments

OPTIONS = (CLIPTrainingArguments,)


def build_parser() -> argparse.ArgumentParser:
    from lastvit.training.pretraining import pretraining_parser

    return pretraining_parser("lastvit-train-clip", __doc__, CLIPTrainingArguments)


def main(argv=None) -> int:
    from lastvit.clip.captions import CaptionError
    from lastvit.clip.training import train_clip
    from lastvit.training.pretraining import run_pretraining

    return run_pretraining(build_parser(), argv, CLIPTrainingArguments, train_clip, (CaptionError,))


if __name__ == "__main__":
    sys.exit(main())
