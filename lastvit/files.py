"""Folders written whole or not at all: checkpoints, converted models, datasets and reports are
built in a hidden sibling folder and renamed into place, so an interrupted run never leaves a
half-written folder and never destroys the previous one before the new one is complete."""

import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

from lastvit.errors import LastViTUserError


def swap_in(staging: Path, target: Path) -> None:
    """Replace `target` (if any) by the complete folder `staging`, with renames only."""
    staging, target = Path(staging), Path(target)
    if target.exists():
        retired = target.with_name(f".{target.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired)
    else:
        os.replace(staging, target)


def write_folder(target, write: Callable[[Path], object]):
    """Run ``write(staging_folder)`` and swap the result in for `target`; returns what `write` returned."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would otherwise stick to the published folder
        result = write(staging)
        swap_in(staging, target)
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def is_nonempty_dir(path) -> bool:
    path = Path(path)
    return path.is_dir() and any(path.iterdir())


ADAPTER_LABELS_FILE = "labels.json"  # a PEFT adapter folder's classes (its base may have another number)


class ModelPathError(LastViTUserError):
    """A model path that cannot be loaded; the message names the folder or file and the fix."""


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def check_model_path(path, flag: str = "the model path") -> str:
    """Check a checkpoint folder (or Hub repo id) before transformers reads it, so a mistake reads as
    one line naming the folder or file and the fix, not as "Repo id must be in the form ..." or
    "incomplete metadata". A local folder must hold config.json (or a PEFT adapter_config.json), and
    every .safetensors file in it must be complete. A name that is no local path and has the form
    ``name`` or ``org/name`` (with no local folder ``org``) is left to the Hub. Returns `path` as a string."""
    text = str(path)
    folder = Path(text).expanduser()
    if folder.is_file():
        raise ModelPathError(
            f"{flag} {text} is a file; give the folder that holds it (written by save_pretrained / lastvit-train)."
        )
    if not folder.exists():
        looks_like_repo = _REPO_ID.match(text) and not (("/" in text) and Path(text.split("/")[0]).is_dir())
        if looks_like_repo:
            return text
        raise ModelPathError(
            f"{flag} {text} does not exist (give a folder written by save_pretrained / lastvit-train, "
            "or a Hub repo id such as org/name)."
        )
    if not any((folder / name).exists() for name in ("config.json", "adapter_config.json")):
        raise ModelPathError(
            f"{flag} {text} holds no config.json: it is not a saved model (give a folder written by "
            "save_pretrained / lastvit-train, or a Hub repo id)."
        )
    config_file = folder / "config.json"
    if config_file.exists():
        try:
            config = json.loads(config_file.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise ModelPathError(
                f"{config_file} is not valid JSON ({error}); fix it or save the model again."
            ) from None
        if not isinstance(config, dict):
            raise ModelPathError(f"{config_file} holds no JSON object; fix it or save the model again.")
    for weights in sorted(folder.glob("*.safetensors")):
        problem = _safetensors_problem(weights)
        if problem:
            raise ModelPathError(
                f"{weights} is {problem}: it was cut short while being written or copied; save or copy the "
                "folder again (an interrupted lastvit-train run resumes with --resume)."
            )
    return text


def _safetensors_problem(path: Path) -> str | None:
    """None when the file's header parses and its tensors end exactly at the end of the file."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"truncated ({size} bytes, not even a header)"
        header_size = struct.unpack("<Q", head)[0]
        if 8 + header_size > size:
            return f"truncated ({size} bytes, shorter than its {header_size}-byte header)"
        try:
            header = json.loads(handle.read(header_size))
        except ValueError:
            return "not a readable safetensors file (its header is not JSON)"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_size + end > size:
        return f"truncated ({size} of {8 + header_size + end} bytes)"
    return None


def model_source(path) -> str:
    """How a run records the model it started from: an existing local folder as an absolute path (a
    relative one means nothing elsewhere, e.g. to `lastvit-publish` or on the Hub), a Hub id as given."""
    local = Path(str(path)).expanduser()
    return str(local.resolve()) if local.exists() else str(path)


def load_pretrained(auto_class, path, trust_remote_code: bool = False, **kwargs):
    """``auto_class.from_pretrained(path, ...)`` with this package's installed classes for LastViT
    and LastViT-CLIP folders (registered first), so the Python files a folder carries never run; any
    other folder's own code runs only with `trust_remote_code` (the user's ``--trust-remote-code``).
    A folder that needs its own code, or a config.json transformers cannot read, is one line."""
    import pickle

    import modeling_lastvit  # noqa: F401 (registers LastViT and LastViT-CLIP with the Auto classes: their code wins)

    try:
        return auto_class.from_pretrained(str(path), trust_remote_code=trust_remote_code, **kwargs)
    except (pickle.UnpicklingError, EOFError):  # torch.load(weights_only=True) refused a pickle
        raise ModelPathError(
            f"the weights in {path} are a pickle that torch's weights-only loader refuses (nothing in it ran); use "
            "safetensors weights, or convert a file you trust with lastvit-convert --trust-pickle."
        ) from None
    except (ValueError, OSError) as error:  # transformers' answers to a folder it cannot read
        first = _first_line(error)
        if "trust_remote_code" in str(error):
            raise ModelPathError(
                f"{path} needs its own Python code to load (it is no LastViT folder this package knows); pass "
                "--trust-remote-code only if you trust that code."
            ) from None
        raise ModelPathError(
            f"cannot load {path} ({first}); check its config.json, or save the model again."
        ) from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
