"""Folders written whole or not at all: checkpoints, converted models, datasets and reports are
built in a hidden sibling folder and renamed into place, so an interrupted run never leaves a
half-written folder and never destroys the previous one before the new one is complete."""

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


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
