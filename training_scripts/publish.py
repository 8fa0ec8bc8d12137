"""lastvit-publish: validate a LastViT checkpoint folder, then upload it to the Hugging Face Hub.

Validation loads the folder back in a fresh Python process where this package is NOT importable
(only `trust_remote_code=True` remote code), runs a forward pass, and checks the model card's
metadata. Only a folder that passes is uploaded; resume checkpoints (`checkpoints/`), `best/`
and hidden staging folders stay local.

    lastvit-publish runs/tiny --repo-id you/lastvit-tiny-scenes [--private] [--dry-run]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

LOCAL_ONLY = ["checkpoints/*", "best/*", ".*", ".*/*"]
REQUIRED_FILES = ["config.json", "model.safetensors", "configuration_lastvit.py", "modeling_lastvit.py", "README.md"]
ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors", "preprocessor_config.json", "README.md"]
PAPER = "Shi, Yu and Yang, Vision Transformers Need More Than Registers, CVPR 2026 (arXiv:2602.22394)"


class PublishError(ValueError):
    """The folder is not ready to publish; the message says what is missing."""


def write_model_card(
    folder,
    config: dict,
    results: dict | None = None,
    dataset: str | None = None,
    training_args: dict | None = None,
    adapter: dict | None = None,
):
    """Render README.md for a trained LastViT folder (or PEFT adapter); `model-index` holds only
    the results measured by this run."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    folder = Path(folder)
    eval_results = []
    if results and dataset:
        for key in ("top1", "top5", "top3", "top2"):
            if key in results:
                eval_results.append(
                    EvalResult(task_type="image-classification", dataset_type=dataset, dataset_name=dataset,
                               metric_type="accuracy", metric_name=f"{key} accuracy", metric_value=float(results[key]))
                )
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        license="mit",
        tags=["lastvit", "lazystrike", "vision", "image-classification", "custom_code"] + (["peft"] if adapter else []),
        model_name=folder.name if folder.name and not folder.name.startswith(".") else "lastvit",
        eval_results=eval_results or None,
    )
    pooling = config.get("pooling")
    k = config.get("lazystrike_top_k_ratio") or config.get("lazystrike_top_k")
    args_text = json.dumps({k_: str(v) for k_, v in (training_args or {}).items()}, indent=2)
    results_text = json.dumps(results or {}, indent=2)
    if adapter:
        targets = adapter.get("target_modules")
        targets = sorted(targets) if isinstance(targets, (list, set, tuple)) else targets
        use = f"""```python
from peft import PeftModel
from transformers import AutoModelForImageClassification
base = AutoModelForImageClassification.from_pretrained("<base checkpoint>", trust_remote_code=True,
                                                       num_labels={config.get("num_labels")})
model = PeftModel.from_pretrained(base, "<this folder or repo>")
```"""
        kind = f"A {adapter.get('peft_type')} adapter (targets {targets}, classifier saved in full) for"
    else:
        use = """```python
from transformers import AutoModelForImageClassification, AutoImageProcessor
model = AutoModelForImageClassification.from_pretrained("<this folder or repo>", trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained("<this folder or repo>", trust_remote_code=True)
```"""
        kind = "A"
    content = f"""---
{data.to_yaml()}
---

# LastViT image classifier{" (PEFT adapter)" if adapter else ""}

{kind} ViT ({config.get("num_hidden_layers")} blocks, width {config.get("hidden_size")}, patch {config.get("patch_size")},
{config.get("num_register_tokens", 0)} register tokens) with **{pooling}** pooling{f" (K = {k})" if pooling == "lazystrike" else ""},
trained with `lastvit-train` on `{dataset}`. LazyStrike is the readout of LaSt-ViT ({PAPER}).

## Use

{use}

## Results measured by this run

```json
{results_text}
```

## Training arguments

```json
{args_text}
```

## Limitations

Numbers above are this run's evaluation on its own evaluation split, nothing more. A model trained
on the built-in scenes benchmark has seen only small synthetic composites of real photos.
"""
    card = ModelCard(content)
    card.save(folder / "README.md")
    return card


LOAD_CHECK = textwrap.dedent(
    """
    import importlib, importlib.util, json, os, sys
    repo_root = os.path.realpath(sys.argv[2])

    def editable(obj):  # setuptools' editable-install finders and path hooks (classes or instances)
        names = (getattr(obj, "__name__", ""), getattr(obj, "__module__", ""), type(obj).__name__, type(obj).__module__)
        return any("editable" in str(name).lower() for name in names)

    inside = lambda p: (os.path.realpath(os.path.abspath(p or os.curdir)) + os.sep).startswith(repo_root + os.sep)
    sys.path[:] = [p for p in sys.path if not inside(p)]
    sys.meta_path[:] = [f for f in sys.meta_path if not editable(f)]
    sys.path_hooks[:] = [h for h in sys.path_hooks if not editable(h)]
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()
    assert importlib.util.find_spec("modeling_lastvit") is None, "the package is still importable"
    import torch
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification
    folder = sys.argv[1]
    if os.path.exists(os.path.join(folder, "adapter_config.json")):  # a PEFT adapter on a LastViT base
        from peft import PeftConfig, PeftModel
        base = PeftConfig.from_pretrained(folder).base_model_name_or_path
        config = AutoConfig.from_pretrained(base, trust_remote_code=True)
        model = AutoModelForImageClassification.from_pretrained(base, trust_remote_code=True)
        model = PeftModel.from_pretrained(model, folder).eval()
    else:
        base = folder
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        classifier = any("ForImageClassification" in a for a in (config.architectures or []))
        model = (AutoModelForImageClassification if classifier else AutoModel).from_pretrained(
            folder, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(base, trust_remote_code=True)
    h, w = processor.crop_size["height"], processor.crop_size["width"]
    with torch.no_grad():
        out = model(pixel_values=torch.zeros(1, config.num_channels, h, w))
    first = out.logits if hasattr(out, "logits") else out.pooler_output
    assert torch.isfinite(first).all(), "non-finite output"
    print(json.dumps({"class": type(model).__name__, "base": base, "output_shape": list(first.shape)}))
    """
)


def validate_folder(folder) -> dict:
    """Check files and card metadata, then load the folder with the Auto classes in a fresh process
    without this package. Returns what loaded; raises `PublishError` naming what is wrong."""
    from huggingface_hub import ModelCard

    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"{folder} is not a folder.")
    required = ADAPTER_FILES if (folder / "adapter_config.json").exists() else REQUIRED_FILES
    missing = [name for name in required if not (folder / name).exists()]
    if missing:
        raise PublishError(
            f"{folder} lacks {missing}; save the model with save_pretrained (which copies the code) and write a "
            "card (lastvit-train does both)."
        )
    card = ModelCard.load(folder / "README.md")
    meta = card.data.to_dict()
    problems = []
    if meta.get("library_name") != "transformers":
        problems.append("library_name must be 'transformers'")
    if "custom_code" not in (meta.get("tags") or []):
        problems.append("tags must include 'custom_code' (the model loads with trust_remote_code)")
    if not meta.get("license"):
        problems.append("a license is required")
    if problems:
        raise PublishError(f"the model card metadata of {folder} is incomplete: " + "; ".join(problems) + ".")

    repo_root = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory() as neutral_cwd:  # not the folder: its modeling_lastvit.py would import
        result = subprocess.run(
            [sys.executable, "-I", "-c", LOAD_CHECK, str(folder.resolve()), repo_root],
            capture_output=True, text=True, cwd=neutral_cwd, env=_offline_env(),
        )
    if result.returncode != 0:
        raise PublishError(f"{folder} does not load with the Auto classes in a fresh process:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _offline_env() -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def publish(folder, repo_id: str, private: bool = False, api=None, token: str | None = None) -> str:
    """Validate `folder`, create `repo_id` if needed and upload; returns the commit URL."""
    from huggingface_hub import HfApi

    validate_folder(folder)
    api = api or HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), repo_type="model", ignore_patterns=LOCAL_ONLY,
        commit_message="Upload LastViT checkpoint (validated by lastvit-publish)",
    )
    return str(getattr(commit, "commit_url", commit))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lastvit-publish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="checkpoint folder (e.g. a lastvit-train --output-dir)")
    parser.add_argument("--repo-id", help="Hub repository, e.g. you/lastvit-tiny (not needed with --dry-run)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--dry-run", action="store_true", help="validate only; upload nothing")
    args = parser.parse_args(argv)
    try:
        if args.dry_run:
            print(json.dumps(validate_folder(args.folder)))
            print(f"{args.folder} is ready to publish")
            return 0
        if not args.repo_id:
            parser.error("--repo-id is required unless --dry-run")
        print(publish(args.folder, args.repo_id, private=args.private))
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
