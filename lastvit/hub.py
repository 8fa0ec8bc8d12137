"""Publishing a checkpoint or adapter folder to the Hugging Face Hub, only once it is known to load.

The order is cheapest failure first: the Hub account (a token, the Hub reachable), then the folder
(files, card metadata), then a load and forward pass in a fresh Python process where this package is
NOT importable (only `trust_remote_code=True` remote code), then the upload. Resume checkpoints
(`checkpoints/`), `best/` and hidden staging folders stay local.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from lastvit.errors import LastViTUserError
from lastvit.files import ADAPTER_LABELS_FILE, check_model_path

LOCAL_ONLY = ["checkpoints/*", "best/*", ".*", ".*/*"]
REQUIRED_FILES = ["config.json", "model.safetensors", "configuration_lastvit.py", "modeling_lastvit.py", "README.md"]
ADAPTER_FILES = [
    "adapter_config.json",
    "adapter_model.safetensors",
    ADAPTER_LABELS_FILE,
    "preprocessor_config.json",
    "README.md",
]


class PublishError(LastViTUserError):
    """The folder is not ready to publish, or the Hub cannot take it; the message says what to do."""


class HubAccessError(PublishError):
    """No usable token, or the Hub cannot be reached."""


def check_repo_id(repo_id: str, flag: str = "--repo-id") -> str:
    """A Hub repository id as huggingface_hub itself accepts it (``name`` or ``org/name``), else one line."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PublishError(
            f"{flag} {repo_id!r} is not a Hub repository id ({_first_line(error)}); give org/name."
        ) from None
    return repo_id


def check_hub_access(api=None, token: str | None = None, for_flag: str | None = None) -> str:
    """Fail fast, in one line, when publishing cannot work: offline mode, no token, a refused token,
    or no connection. Returns the account name. `api` replaces `HfApi(token=token)` (tests).
    `for_flag` names the flag that publishes from another command (``--push-to-hub``): its messages
    then name only what that command has (no --token, no --dry-run)."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    offline = (
        f"HF_HUB_OFFLINE is set: unset it to use {for_flag} (or drop {for_flag})."
        if for_flag
        else "HF_HUB_OFFLINE is set: unset it to publish (--dry-run validates offline)."
    )
    if api is None:
        if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
            raise HubAccessError(offline)
        token = token or get_token()
        if not token:
            raise HubAccessError(
                f"no Hugging Face token for {for_flag}: run `hf auth login` or set HF_TOKEN (or drop {for_flag})."
                if for_flag
                else "no Hugging Face token: run `hf auth login`, set HF_TOKEN, or pass --token "
                "(--dry-run validates the folder without one)."
            )
        api = HfApi(token=token)
    try:
        account = api.whoami()
    except OfflineModeIsEnabled as error:
        raise HubAccessError(offline) from error
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status == 401:
            raise HubAccessError(
                "the Hugging Face token was refused (401 Unauthorized): run `hf auth login` again"
                + (" or set another HF_TOKEN." if for_flag else " or pass another --token.")
            ) from error
        raise HubAccessError(
            f"the Hub answered {status or 'an error'} to a token check: {_first_line(error)}"
        ) from None
    except _network_errors() as error:  # no connection, a timeout, a proxy: one line, not a traceback
        raise HubAccessError(
            f"cannot reach the Hugging Face Hub ({type(error).__name__}: {_first_line(error)}); check the network "
            "or proxy (HF_ENDPOINT) and retry." + ("" if for_flag else " --dry-run validates the folder offline.")
        ) from None
    return account.get("name", "?") if isinstance(account, dict) else str(account)


def _network_errors() -> tuple:
    """The HTTP client's errors (connection, timeout, HTTP status) whichever client huggingface_hub uses:
    its `HfHubHTTPError` derives from the client's base error and OSError."""
    from huggingface_hub.errors import HfHubHTTPError

    return (*HfHubHTTPError.__bases__, OSError)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]


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
    assert importlib.util.find_spec("lastvit") is None, "the package is still importable"
    import torch
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification
    folder = sys.argv[1]
    if os.path.exists(os.path.join(folder, "adapter_config.json")):  # a PEFT adapter on a LastViT base
        # as the adapter's card says: the base with the adapter's labels, then the adapter
        from peft import PeftConfig, PeftModel
        base = sys.argv[3] if len(sys.argv) > 3 else PeftConfig.from_pretrained(folder).base_model_name_or_path
        labels = json.load(open(os.path.join(folder, "labels.json")))
        id2label = {int(i): name for i, name in labels["id2label"].items()}
        config = AutoConfig.from_pretrained(base, trust_remote_code=True)
        model = AutoModelForImageClassification.from_pretrained(
            base, num_labels=len(id2label), id2label=id2label, label2id=labels["label2id"],
            ignore_mismatched_sizes=True, trust_remote_code=True)
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


def adapter_base(folder) -> str | None:
    """The base an adapter folder records (adapter_config.json), a local one as an absolute path
    (a relative one is read from the current folder, as the run that wrote it did); None for a
    folder that is no adapter."""
    config = Path(folder) / "adapter_config.json"
    if not config.exists():
        return None
    try:
        base = json.loads(config.read_text()).get("base_model_name_or_path")
    except ValueError:
        raise PublishError(f"{config} is not valid JSON; save the adapter again.") from None
    if not base:
        raise PublishError(f"{config} names no base_model_name_or_path.")
    local = Path(base).expanduser()
    return str(local.resolve()) if local.exists() or local.is_absolute() else base


def hub_base(folder, base_model_id: str | None) -> str | None:
    """The base an adapter will name on the Hub: its recorded Hub id, or `base_model_id` for a base
    that is a local folder (refused without it: no Hub user could load it). None for no adapter."""
    base = adapter_base(folder)
    if base is None:
        if base_model_id:
            raise PublishError(f"--base-model-id applies to adapter folders; {folder} holds a full model.")
        return None
    if base_model_id:
        return check_repo_id(base_model_id, "--base-model-id")
    if Path(base).exists() or Path(base).is_absolute():
        raise PublishError(
            f"the adapter's base is the local folder {base}, which no Hub user can load: publish the base first "
            "(lastvit-publish BASE --repo-id org/name) and pass --base-model-id org/name."
        )
    return base


def validate_folder(folder, base_model_id: str | None = None) -> dict:
    """Check files and card metadata, then load the folder with the Auto classes (an adapter on its
    base, with its own labels) in a fresh process without this package. Returns what loaded; raises
    `PublishError` (or `lastvit.files.ModelPathError`) naming what is wrong. An adapter whose base is
    a local folder loads on that folder; `base_model_id` (that base's Hub id) is checked as a repo id
    and reported as ``hub_base``."""
    from huggingface_hub import ModelCard

    folder = Path(check_model_path(folder, "the folder"))
    if not folder.is_dir():
        raise PublishError(f"{folder} is not a folder.")
    adapter = (folder / "adapter_config.json").exists()
    required = ADAPTER_FILES if adapter else REQUIRED_FILES
    missing = [name for name in required if not (folder / name).exists()]
    if missing:
        raise PublishError(
            f"{folder} lacks {missing}; save the model with save_pretrained (which copies the code) and write a "
            "card (lastvit-train and lastvit-finetune-peft do both)."
        )
    base = adapter_base(folder) if adapter else None
    if base is not None:
        check_model_path(base, "the adapter's base (base_model_name_or_path in adapter_config.json)")
        if base_model_id:
            check_repo_id(base_model_id, "--base-model-id")
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
            [sys.executable, "-I", "-c", LOAD_CHECK, str(folder.resolve()), repo_root, *([base] if base else [])],
            check=False,
            capture_output=True,
            text=True,
            cwd=neutral_cwd,
            env=_offline_env(),
        )
    if result.returncode != 0:
        raise PublishError(
            f"{folder} does not load with the Auto classes in a fresh process:\n{result.stderr[-3000:]}"
        )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if base_model_id:
        report["hub_base"] = base_model_id
    return report


def _offline_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def publish(
    folder,
    repo_id: str,
    private: bool = False,
    api=None,
    token: str | None = None,
    base_model_id: str | None = None,
    for_flag: str | None = None,
) -> str:
    """Check the repo id and the Hub account, validate `folder`, create `repo_id` if needed and upload;
    returns the commit URL. An adapter whose base is a local folder needs `base_model_id` (the base's
    Hub id), which the uploaded adapter_config.json and card then name instead of the local path."""
    from huggingface_hub import HfApi

    check_repo_id(repo_id, for_flag or "--repo-id")
    named_base = hub_base(folder, base_model_id)
    check_hub_access(api, token, for_flag=for_flag)
    validate_folder(folder, base_model_id)
    api = api or HfApi(token=token)
    with tempfile.TemporaryDirectory() as staging:
        upload = Path(folder)
        local_base = adapter_base(folder)
        if named_base is not None and named_base != local_base:
            upload = _with_hub_base(Path(folder), Path(staging) / "upload", local_base, named_base)
        try:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=str(upload),
                repo_type="model",
                ignore_patterns=LOCAL_ONLY,
                commit_message="Upload LastViT checkpoint (validated by lastvit-publish)",
            )
        except _network_errors() as error:  # permissions, a taken name, the network: one line
            raise PublishError(
                f"the upload to {repo_id} failed ({type(error).__name__}: {_first_line(error)})."
            ) from None
    return str(getattr(commit, "commit_url", commit))


def _with_hub_base(folder: Path, copy: Path, local_base: str, base_model_id: str) -> Path:
    """A copy of adapter `folder` (without local-only parts) whose adapter_config.json and card name
    the base by its Hub id; the folder itself is left as it is."""
    import shutil

    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("checkpoints", "best", ".*"))
    config = json.loads((copy / "adapter_config.json").read_text())
    recorded = config.get("base_model_name_or_path")
    config["base_model_name_or_path"] = base_model_id
    (copy / "adapter_config.json").write_text(json.dumps(config, indent=2))
    card = (copy / "README.md").read_text()
    for path in {recorded, local_base} - {None}:
        card = card.replace(f"`{path}`", f"`{base_model_id}`").replace(f'"{path}"', f'"{base_model_id}"')
    (copy / "README.md").write_text(card)
    return copy
