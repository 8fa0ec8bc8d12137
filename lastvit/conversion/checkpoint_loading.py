"""Reading checkpoint files without running code from them (for `lastvit-convert`).

- `.safetensors`: read directly.
- TorchScript archives (OpenAI's CLIP `.pt` files are): a restricted unpickler rebuilds the tensors of
  `data.pkl` and stands in a plain object for every TorchScript class, so no TorchScript code is
  compiled or run. `torch.load(weights_only=True)` refuses these archives outright.
- Other `.pth` / `.pt` / `.bin` files: `torch.load(weights_only=True)`, which also accepts
  `argparse.Namespace` (DINO training checkpoints keep their arguments in one).

Anything else needs `trust_pickle=True` (`--trust-pickle`), which falls back to full unpickling or
`torch.jit.load`: both can run arbitrary code stored in the file.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


class CheckpointLoadError(ValueError):
    """The checkpoint file cannot be read safely (or at all)."""


_UNSAFE_LOAD_ADVICE = (
    "Loading it fully means unpickling, which can execute arbitrary code stored in the file. If (and only "
    "if) you trust where the file comes from, rerun with --trust-pickle (or `trust_pickle=True`)."
)


def load_checkpoint(path: str | os.PathLike, trust_pickle: bool = False) -> Any:
    """Read a checkpoint file without running code from it.

    `.safetensors` files are read directly; TorchScript archives (e.g. OpenAI's CLIP `.pt` files) by a
    restricted unpickler that only rebuilds tensors; other `.pth` / `.pt` / `.bin` files with
    `torch.load(weights_only=True)`, which also accepts `argparse.Namespace` (DINO checkpoints store
    their arguments in one). `trust_pickle=True` falls back to full unpickling / `torch.jit.load`.
    A missing, empty, truncated or corrupt file is a one-line `CheckpointLoadError` naming the file.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointLoadError(
            f"{str(path)!r} is a folder: give the checkpoint file itself (.pth / .pt / .bin / .safetensors); "
            "a folder saved by transformers converts with --from hf."
        )
    if not path.is_file():
        raise CheckpointLoadError(f"no checkpoint file at {str(path)!r}: check the path given as --input.")
    if path.stat().st_size == 0:
        raise CheckpointLoadError(f"{path} is empty (0 bytes): " + _FETCH_AGAIN)
    if path.suffix == ".safetensors":
        check_safetensors_file(path)
        from safetensors.torch import load_file

        return load_file(str(path))
    _check_torch_file(path)
    if zipfile.is_zipfile(path) and _is_torchscript_archive(path):
        try:
            return read_torchscript_tensors(path)
        except (pickle.UnpicklingError, KeyError, ValueError, RuntimeError) as error:
            if not trust_pickle:
                raise CheckpointLoadError(
                    f"{path} is a TorchScript archive that the safe reader cannot read ({error}). "
                    + _UNSAFE_LOAD_ADVICE
                ) from error
            return torch.jit.load(str(path), map_location="cpu").state_dict()
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not trust_pickle:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise CheckpointLoadError(
                f"{path} holds Python objects that a weights-only load refuses ({reason}). " + _UNSAFE_LOAD_ADVICE
            ) from error
    except _CORRUPT_FILE_ERRORS as error:
        raise CheckpointLoadError(f"{path} cannot be read ({first_line(error)}): " + _FETCH_AGAIN) from error
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, *_CORRUPT_FILE_ERRORS) as error:
        raise CheckpointLoadError(f"{path} cannot be read ({first_line(error)}): " + _FETCH_AGAIN) from error


_FETCH_AGAIN = "the file is truncated or corrupt; download or copy it again."
_CORRUPT_FILE_ERRORS = (
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    IndexError,
    KeyError,
    struct.error,
    zipfile.BadZipFile,
)
_ZIP_MAGIC, _PICKLE_PROTOCOL_OPCODE = b"PK\x03\x04", 0x80  # torch.save's zip format; legacy pickle format


def check_safetensors_file(path: str | os.PathLike) -> None:
    """Fail with one line naming `path` if it is not a complete safetensors file (an interrupted
    download gives "incomplete metadata" without the file's name otherwise)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except SafetensorError as error:
        raise CheckpointLoadError(
            f"{path} is not a complete safetensors file ({first_line(error)}): " + _FETCH_AGAIN
        ) from error


def _check_torch_file(path: Path) -> None:
    """A `torch.save` file is a zip archive (or, before PyTorch 1.6, a pickle): say so when it is neither,
    or when the zip archive was cut short, before torch reports it as an unpickling problem."""
    with path.open("rb") as file:
        head = file.read(4)
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise CheckpointLoadError(f"{path} is a zip archive without its end (central directory): " + _FETCH_AGAIN)
    elif head[:1] != bytes([_PICKLE_PROTOCOL_OPCODE]):
        raise CheckpointLoadError(
            f"{path} is not a PyTorch checkpoint (neither a zip archive nor a pickle): check --input, or "
            "download the file again."
        )


def first_line(error: BaseException) -> str:
    """The first line of an error's message (library errors can run to many lines)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _is_torchscript_archive(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Stands in for any TorchScript class (`__torch__.*`): keeps its attribute dict, runs nothing."""

    def __setstate__(self, state):
        self.state = state


@dataclass
class _Storage:
    data: torch.Tensor  # flat uint8 bytes
    dtype: torch.dtype


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, requires_grad=False, hooks=None, metadata=None):
    flat = storage.data.view(storage.dtype) if storage.data.numel() else torch.empty(0, dtype=storage.dtype)
    return torch.as_strided(flat, tuple(size), tuple(stride), offset).clone()


class _TorchScriptUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript archive's `data.pkl`, allowing only tensors, storages and plain containers."""

    def __init__(self, file, read_record: Callable[[str], bytes]):
        super().__init__(file)
        self._read_record = read_record
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptObject
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name} from a TorchScript archive")

    def persistent_load(self, pid):
        kind, dtype, key = pid[0], pid[1], str(pid[2])
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        if key not in self._storages:
            raw = bytearray(self._read_record(f"data/{key}"))
            data = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
            self._storages[key] = _Storage(data, dtype)
        return self._storages[key]


def read_torchscript_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors (parameters and buffers) of a TorchScript archive, by dotted attribute path, without
    compiling or running any of its code (what `torch.jit.load(path).state_dict()` would give)."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        roots = [name[: -len("data.pkl")] for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
        if not roots:
            raise ValueError("no data.pkl record")
        root = roots[0]
        byteorder = root + "byteorder"
        if byteorder in names and archive.read(byteorder).strip() not in (b"little", b""):
            raise ValueError("big-endian archives are not supported")
        unpickler = _TorchScriptUnpickler(
            io.BytesIO(archive.read(root + "data.pkl")), lambda r: archive.read(root + r)
        )
        module = unpickler.load()
    tensors: dict[str, torch.Tensor] = {}
    _collect_tensors(module, "", tensors)
    if not tensors:
        raise ValueError("the archive holds no tensors")
    return tensors


def _collect_tensors(obj, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = getattr(obj, "state", None) if isinstance(obj, _ScriptObject) else obj
    if not isinstance(state, dict):
        return
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + str(name)] = value
        elif isinstance(value, _ScriptObject):
            _collect_tensors(value, f"{prefix}{name}.", out)


__all__ = ["CheckpointLoadError", "check_safetensors_file", "load_checkpoint", "read_torchscript_tensors"]
