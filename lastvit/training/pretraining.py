"""Pieces the DINO and CLIP trainers share: the output folder rules, atomic resume checkpoints with
Accelerate, a cosine schedule by step, the scenes' evaluation tensors and the final-folder writer.

A checkpoint is `Accelerator.save_state` (model, optimiser, everything registered with
`register_for_checkpointing`, RNG states) plus ``trainer_state.json``, written to a staging folder
and swapped in for ``checkpoints/last``: a killed run never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from lastvit.files import swap_in

STATE_FILE = "trainer_state.json"


class PretrainingError(ValueError):
    """Bad options or data for a pre-training run; the message names the problem and the fix."""


def prepare_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: resuming needs a checkpoint, a fresh run needs an empty folder (or --overwrite)."""
    output_dir = Path(output_dir)
    has_files = output_dir.exists() and any(output_dir.iterdir())
    if resume:
        if not (output_dir / "checkpoints" / "last" / STATE_FILE).exists():
            raise PretrainingError(f"--resume: {output_dir} holds no resumable checkpoint; start without --resume.")
    elif has_files and not overwrite:
        raise PretrainingError(
            f"{output_dir} already holds files (another run?); pass --resume to continue it, --overwrite to replace "
            "it, or choose another --output-dir."
        )
    elif has_files:
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)


def cosine_schedule(
    start: float, end: float, step: int, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0
) -> float:
    """Linear warm-up from `warmup_start` to `start` over `warmup_steps`, then cosine from `start` to `end`
    (DINO's `cosine_scheduler`, as a function of the step so that a resumed run needs no stored array)."""
    if step < warmup_steps:
        return warmup_start + (start - warmup_start) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))


def save_checkpoint(accelerator, folder: Path, state: dict) -> None:
    """Every process writes its part into one staging folder; the main process swaps it in."""
    folder = Path(folder)
    staging = folder.with_name(f".{folder.name}.staging")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (staging / STATE_FILE).write_text(json.dumps(state))
        swap_in(staging, folder)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator, folder: Path) -> dict:
    accelerator.load_state(str(folder))
    return json.loads((Path(folder) / STATE_FILE).read_text())


def move_into(staging: Path, target: Path) -> None:
    """Move every entry of `staging` into `target` (each replaced whole), then remove `staging`."""
    for path in Path(staging).iterdir():
        destination = Path(target) / path.name
        if destination.is_dir():
            swap_in(path, destination)
        else:
            os.replace(path, destination)
    Path(staging).rmdir()


def eval_arrays(split, transform, image_column: str = "image", label_column: str = "label", mask_column: str = "mask"):
    """``(pixel_values [B, 3, S, S], labels or None, boxes or None, masks [B, S, S] or None)`` of a split
    at the evaluation transform. Images already at model size pass unchanged, with their boxes
    (``bbox`` [x, y, w, h] -> (x0, y0, x1, y1)) and masks; dense metrics need that, so other sizes get
    no boxes or masks."""
    import torch

    pixels, labels, boxes, masks = [], [], [], []
    size = transform.size
    has = set(split.column_names)
    for index, row in enumerate(split):
        image = row[image_column]
        pixels.append(transform(image, index, 0))
        native = image.size == (size, size)
        if label_column in has:
            labels.append(int(row[label_column]))
        if "bbox" in has and native:
            x, y, w, h = row["bbox"]
            boxes.append((x, y, x + w, y + h))
        if mask_column in has and native:
            masks.append(np.asarray(row[mask_column].convert("L")) > 127)
    count = len(pixels)
    return (
        torch.stack(pixels),
        labels if len(labels) == count else None,
        boxes if len(boxes) == count else None,
        np.stack(masks) if masks and len(masks) == count else None,
    )
