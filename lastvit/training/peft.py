"""PEFT adapters (LoRA, LoHa, LoKr, IA3) on a LastViT classifier: their options, the PEFT config for
this architecture's module names, and reloading an adapter folder whose classifier may have another
number of classes than its base (the adapter folder carries its labels in `labels.json`).

PEFT has no default targets for ViTs; here they are the attention projections `q_proj` and `v_proj`
(LoRA, LoHa, LoKr) or `k_proj`, `v_proj` and `mlp.fc2` (IA3), and the new classifier is trained in
full (`modules_to_save`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lastvit.arguments import option
from lastvit.files import ADAPTER_LABELS_FILE as LABELS_FILE

DEFAULT_TARGETS = {
    "lora": ["q_proj", "v_proj"],
    "loha": ["q_proj", "v_proj"],
    "lokr": ["q_proj", "v_proj"],
    "ia3": ["k_proj", "v_proj", "fc2"],
}
# Fine-tuning an adapter: milder decay than the from-scratch recipe's 0.3, and fewer epochs.
FINETUNE_DEFAULTS = {"weight_decay": 0.01, "epochs": 3}


@dataclass(kw_only=True)
class PeftArguments:
    """Which adapter to train, and whether to also write the merged full model."""

    method: str = option("lora", "PEFT method (default: lora)", choices=sorted(DEFAULT_TARGETS))
    target_modules: list[str] | None = option(
        None, "module names to adapt (default: q_proj v_proj; IA3: k_proj v_proj fc2); 'all-linear' works", nargs="+"
    )
    rank: int = option(8, "LoRA/LoHa/LoKr rank (default: 8)")
    alpha: int = option(16, "LoRA/LoHa/LoKr scaling alpha (default: 16)")
    adapter_dropout: float = option(0.0, "dropout on the adapter input (default: 0)")
    merge: bool = option(False, "also write the merged full model to OUTPUT_DIR/merged")

    def __post_init__(self):
        if self.method not in DEFAULT_TARGETS:
            from .config import ConfigError

            raise ConfigError(f"unknown PEFT method {self.method!r}; choose one of {sorted(DEFAULT_TARGETS)}")


def peft_config(args: PeftArguments):
    """The PEFT config for `args.method`, targeting this architecture's module names."""
    import peft

    targets = args.target_modules or DEFAULT_TARGETS[args.method]
    targets = targets[0] if list(targets) == ["all-linear"] else list(targets)
    common = {"target_modules": targets, "modules_to_save": ["classifier"]}
    if args.method == "lora":
        return peft.LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=args.adapter_dropout, **common)
    if args.method == "loha":
        return peft.LoHaConfig(r=args.rank, alpha=args.alpha, module_dropout=args.adapter_dropout, **common)
    if args.method == "lokr":
        return peft.LoKrConfig(r=args.rank, alpha=args.alpha, module_dropout=args.adapter_dropout, **common)
    feedforward = [t for t in (targets if isinstance(targets, list) else []) if t in ("fc1", "fc2")]
    return peft.IA3Config(feedforward_modules=feedforward, **common)


def add_adapter(model, args: PeftArguments):
    """Wrap `model` with a fresh adapter and say how many parameters train."""
    import peft

    adapted = peft.get_peft_model(model, peft_config(args))
    trainable, total = adapted.get_nb_trainable_parameters()
    print(f"{args.method}: training {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%)")
    return adapted


def labels_of(config) -> dict:
    """The classes an adapter folder records (`labels.json`): its classifier's size and names."""
    id2label = {str(i): name for i, name in config.id2label.items()}
    return {"num_labels": len(id2label), "id2label": id2label, "label2id": {n: int(i) for i, n in id2label.items()}}


def save_labels(folder, config) -> None:
    (Path(folder) / LABELS_FILE).write_text(json.dumps(labels_of(config), indent=2))


def load_adapter(folder, base: str | None = None, trust_remote_code: bool = False, **kwargs):
    """Load an adapter folder on its base (the one recorded in adapter_config.json, or `base`), with
    the adapter's own classes: the base's classifier is replaced by the adapter's whatever its size.
    `kwargs` go to the base's `from_pretrained` (e.g. ``torch_dtype``); a non-LastViT base's own code
    runs only with `trust_remote_code`."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForImageClassification

    from lastvit.files import check_model_path, load_pretrained

    folder = check_model_path(folder, "the adapter folder")
    base = check_model_path(base or PeftConfig.from_pretrained(folder).base_model_name_or_path, "the adapter's base")
    labels_file = Path(folder) / LABELS_FILE
    if labels_file.exists():
        labels = json.loads(labels_file.read_text())
        id2label = {int(i): name for i, name in labels["id2label"].items()}
        kwargs = {
            "num_labels": len(id2label),
            "id2label": id2label,
            "label2id": labels["label2id"],
            "ignore_mismatched_sizes": True,
            **kwargs,
        }
    model = load_pretrained(AutoModelForImageClassification, base, trust_remote_code=trust_remote_code, **kwargs)
    return PeftModel.from_pretrained(model, folder).eval()
