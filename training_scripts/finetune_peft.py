"""lastvit-finetune-peft: parameter-efficient fine-tuning (LoRA, LoHa, LoKr, IA3) of a LastViT
classifier, with the same data, loop, checkpoints, resume and Accelerate launch as lastvit-train.

PEFT has no default targets for ViTs; here they are the attention projections `q_proj` and
`v_proj` (LoRA, LoHa, LoKr) or `k_proj`, `v_proj` and `mlp.fc2` (IA3), and the new classifier
is trained in full (`modules_to_save`). The output folder holds the adapter; `--merge` also writes
the merged full model to `merged/`, an ordinary AutoModel-loadable checkpoint.

    lastvit-finetune-peft --model-name-or-path runs/tiny --dataset scenes --method lora --output-dir runs/tiny-lora --merge
"""

import sys

from .train import build_parser as build_train_parser
from .train import run

DEFAULT_TARGETS = {
    "lora": ["q_proj", "v_proj"],
    "loha": ["q_proj", "v_proj"],
    "lokr": ["q_proj", "v_proj"],
    "ia3": ["k_proj", "v_proj", "fc2"],
}


def build_parser():
    parser = build_train_parser()
    parser.prog = "lastvit-finetune-peft"
    parser.description = __doc__
    peft = parser.add_argument_group("PEFT")
    peft.add_argument("--method", choices=sorted(DEFAULT_TARGETS), default="lora", help="PEFT method (default: lora)")
    peft.add_argument("--target-modules", nargs="+",
                      help="module names to adapt (default: q_proj v_proj; IA3: k_proj v_proj fc2); 'all-linear' works")
    peft.add_argument("--rank", type=int, default=8, help="LoRA/LoHa/LoKr rank (default: 8)")
    peft.add_argument("--alpha", type=int, default=16, help="LoRA/LoHa/LoKr scaling alpha (default: 16)")
    peft.add_argument("--adapter-dropout", type=float, default=0.0, help="dropout on the adapter input (default: 0)")
    peft.add_argument("--merge", action="store_true", help="also write the merged full model to OUTPUT_DIR/merged")
    # Fine-tuning an adapter: milder decay than the from-scratch recipe's 0.3.
    parser.set_defaults(weight_decay=0.01, epochs=3)
    return parser


def peft_config(args):
    """The PEFT config for `args.method`, targeting this architecture's module names."""
    import peft

    targets = args.target_modules or DEFAULT_TARGETS[args.method]
    targets = targets[0] if targets == ["all-linear"] else targets
    common = dict(target_modules=targets, modules_to_save=["classifier"])
    if args.method == "lora":
        return peft.LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=args.adapter_dropout, **common)
    if args.method == "loha":
        return peft.LoHaConfig(r=args.rank, alpha=args.alpha, module_dropout=args.adapter_dropout, **common)
    if args.method == "lokr":
        return peft.LoKrConfig(r=args.rank, alpha=args.alpha, module_dropout=args.adapter_dropout, **common)
    feedforward = [t for t in (targets if isinstance(targets, list) else []) if t in ("fc1", "fc2")]
    return peft.IA3Config(feedforward_modules=feedforward, **common)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def adapt(model):
        import peft

        adapted = peft.get_peft_model(model, peft_config(args))
        trainable, total = adapted.get_nb_trainable_parameters()
        print(f"{args.method}: training {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%)")
        return adapted

    return run(args, adapt)


if __name__ == "__main__":
    sys.exit(main())
