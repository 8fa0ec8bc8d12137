"""The card `lastvit-train` and `lastvit-finetune-peft` write at the top of their output folder: what
was trained from what (a preset from scratch, or the checkpoint it was fine-tuned from), the exact
command, and only the numbers this run measured."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard

from lastvit.files import ADAPTER_LABELS_FILE as LABELS_FILE
from modeling_lastvit import LastViTConfig

from .template import PAPER, common_tail, describe_config, render_model_card


def adapter_usage_text(base: str, num_labels: int) -> str:
    """Loading an adapter whose classifier may have another size than its base's: the base is
    loaded with the adapter's labels (a fresh classifier of the right size), then the adapter,
    which carries the trained classifier, replaces it."""
    return f"""```python
import json

from peft import PeftModel
from transformers import AutoModelForImageClassification
from transformers.utils import cached_file

adapter = "<this folder or repo>"
labels = json.load(open(cached_file(adapter, "{LABELS_FILE}")))  # {num_labels} classes
id2label = {{int(i): name for i, name in labels["id2label"].items()}}
base = AutoModelForImageClassification.from_pretrained(
    "{base}",  # the base checkpoint this adapter was trained on
    num_labels=len(id2label), id2label=id2label, label2id=labels["label2id"],
    ignore_mismatched_sizes=True,  # the base's classifier is replaced by the adapter's
    trust_remote_code=True,
)
model = PeftModel.from_pretrained(base, adapter).eval()
```

With this package installed, `lastvit.training.peft.load_adapter("<this folder>")` does the same.
The base is named as the run named it; if it is a local folder, publish it and put its repo id here."""


PEFT_NAMES = {"LORA": "LoRA", "LOHA": "LoHa", "LOKR": "LoKr", "IA3": "IA3"}


def _method_name(peft_type) -> str:
    """``PeftType.LORA`` (or "LORA") as people write it: "LoRA"."""
    name = str(getattr(peft_type, "value", peft_type))
    return PEFT_NAMES.get(name.upper(), name)


def _eval_results(results: dict | None, dataset: str) -> list[EvalResult] | None:
    found = [
        EvalResult(
            task_type="image-classification",
            dataset_type=dataset,
            dataset_name=dataset,
            metric_type="accuracy",
            metric_name=f"{key} accuracy",
            metric_value=float(results[key]),
        )
        for key in ("top1", "top5", "top3", "top2")
        if results and key in results
    ]
    return found or None


def trained_model_card(
    folder,
    config: LastViTConfig,
    *,
    command: str,
    dataset: str,
    results: dict | None = None,
    base: str | None = None,
    adapter: dict | None = None,
    merged: bool = False,
) -> ModelCard:
    """The card of a training run's folder. `base` is the checkpoint it started from (None: from
    scratch); `adapter` the PEFT config of an adapter folder; `merged` marks an adapter merged into
    its base's weights."""
    from lastvit import __version__

    folder = Path(folder)
    config = copy.deepcopy(config)
    config.architectures = config.architectures or ["LastViTForImageClassification"]
    method = _method_name(adapter.get("peft_type")) if adapter else None
    if adapter:
        targets = adapter.get("target_modules")
        targets = sorted(targets) if isinstance(targets, (list, set, tuple)) else targets
        what = (
            f"A {method} adapter (targets {targets}, classifier saved in full) fine-tuned from `{base}` "
            f"with `lastvit-finetune-peft` on `{dataset}`."
        )
        title = f"{folder.name} ({method} adapter for a LastViT classifier)"
    elif base and merged:
        what = f"A LastViT image classifier fine-tuned from `{base}` on `{dataset}` with a PEFT adapter merged in."
        title = f"{folder.name} (LastViT image classifier)"
    elif base:
        what = f"A LastViT image classifier fine-tuned from `{base}` with `lastvit-train` on `{dataset}`."
        title = f"{folder.name} (LastViT image classifier)"
    else:
        what = f"A LastViT image classifier trained from scratch with `lastvit-train` on `{dataset}`."
        title = f"{folder.name} (LastViT image classifier)"
    results_text = json.dumps(results or {}, indent=2)
    sections = [
        ("Results measured by this run", f"On the run's own evaluation split:\n\n```json\n{results_text}\n```"),
        *common_tail(
            "<this folder or repo>",
            True,
            "- The numbers above are this run's evaluation on its own evaluation split, nothing more.\n"
            "- A model trained on the built-in scenes benchmark has seen only small synthetic composites of real "
            "photos.",
            "MIT (this package's licence). A model fine-tuned from another checkpoint also carries that "
            "checkpoint's licence; check it before redistributing.",
        ),
    ]
    if adapter:
        sections[1] = ("How to use", adapter_usage_text(base, config.num_labels))
    return render_model_card(
        title=title,
        summary=f"{what} Written by lastvit {__version__}. LazyStrike is the readout of LaSt-ViT ({PAPER}).",
        details=describe_config(config) + ([f"Base checkpoint: `{base}`."] if base else []),
        command=command,
        sections=sections,
        pipeline_tag="image-classification",
        license="mit",
        datasets=None,
        eval_results=_eval_results(results, dataset),
        model_name=folder.name if folder.name and not folder.name.startswith(".") else "lastvit",
        tags=["lazystrike", "image-classification"] + (["peft"] if adapter else []),
    )
