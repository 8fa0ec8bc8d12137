"""lastvit-finetune-peft: parameter-efficient fine-tuning (LoRA, LoHa, LoKr, IA3) of a LastViT
classifier, with the same data, loop, checkpoints, resume and Accelerate launch as lastvit-train.

PEFT has no default targets for ViTs; here they are the attention projections `q_proj` and
`v_proj` (LoRA, LoHa, LoKr) or `k_proj`, `v_proj` and `mlp.fc2` (IA3), and the new classifier
is trained in full (`modules_to_save`). The output folder holds the adapter and its classes
(`labels.json`, which may differ from the base's); `--merge` also writes the merged full model to
`merged/`, an ordinary AutoModel-loadable checkpoint. Reload the adapter with
`lastvit.training.peft.load_adapter(folder)` or as its model card shows.

    lastvit-finetune-peft --model-name-or-path runs/tiny --dataset scenes --method lora --output-dir runs/tiny-lora --merge
"""

import argparse
import sys

from lastvit.arguments import add_arguments, from_args
from lastvit.training.cli import run_training
from lastvit.training.config import TrainConfig, add_train_arguments
from lastvit.training.peft import FINETUNE_DEFAULTS, PeftArguments

OPTIONS = (TrainConfig, PeftArguments)
DEFAULTS = FINETUNE_DEFAULTS  # fine-tuning's milder recipe


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lastvit-finetune-peft", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # the base is required here: an adapter on random weights has no use
    base_help = "the LastViT classifier to adapt: a folder written by lastvit-train / save_pretrained, or a Hub id"
    add_train_arguments(
        parser, defaults=FINETUNE_DEFAULTS, help={"model_name_or_path": base_help}, required=("model_name_or_path",)
    )
    add_arguments(parser.add_argument_group("PEFT"), PeftArguments)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_training(lambda: (from_args(TrainConfig, args), {"adapter": from_args(PeftArguments, args)}))


if __name__ == "__main__":
    sys.exit(main())
