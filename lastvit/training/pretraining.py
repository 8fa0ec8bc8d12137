"""Pieces the DINO and CLIP trainers share: their error, the start of a run (Accelerator, output
folder, seed, the distributed modes each supports), their step loop (`lastvit.training.loop.StepLoop`
with every step's loss, averaged over the processes), a cosine schedule by step, the scenes'
evaluation tensors, the final-folder writer and their CLIs' parser and runner.

Multi-process runs (DDP) shard the data by batches: each process takes every `num_processes`-th
batch, so an epoch has `num_processes` times fewer steps, and each process's RNG state goes into
every checkpoint. Only the main process writes the output folder and prints the results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lastvit.errors import LastViTUserError
from lastvit.files import swap_in

from . import loop
from .loop import STATE_FILE, StepLoop, load_checkpoint, save_checkpoint  # noqa: F401 (their names here before `loop`)


class PretrainingError(LastViTUserError):
    """Bad options or data for a pre-training run; the message names the problem and the fix."""


def prepare_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: resuming needs a checkpoint, a fresh run needs an empty folder (or --overwrite)."""
    loop.prepare_output_dir(output_dir, resume, overwrite, PretrainingError)


def output_folder(args) -> loop.OutputFolder:
    """The run's output folder, checked but not yet touched (`loop.OutputFolder`): ``with`` it around the
    run, and `claim` it once the inputs are read."""
    return loop.OutputFolder(args.output_dir, args.resume, args.overwrite, PretrainingError)


def claim(accelerator, output: loop.OutputFolder, args) -> bool:
    """Claim the output folder (main process) once every input was read; returns whether the run resumes
    (False for a folder killed before its first checkpoint, which starts again in place)."""
    if accelerator.is_main_process:
        output.take()
    accelerator.wait_for_everyone()
    if args.resume and output.fresh_in_place:
        accelerator.print(f"{args.output_dir} holds no complete checkpoint: starting the run again from step 0")
    return args.resume and not output.fresh_in_place


def start_run(args, fsdp: str | None = None):
    """The Accelerator of a DINO or CLIP run (`args`: its arguments), with the seed set; the output
    folder is not touched (see `claim`). `fsdp`: why this trainer cannot run under FSDP, or None
    when it can (FSDP version 2 only)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, set_seed

    from .precision import resolve_mixed_precision

    report_to = getattr(args, "report_to", "none")  # DINO's --report-to; CLIP logs to its JSON only
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(args.mixed_precision),
        log_with=None if report_to == "none" else report_to,
        project_dir=str(args.output_dir),
    )
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        if accelerator.distributed_type != DistributedType.FSDP:
            raise PretrainingError(
                "the accelerate config asks for FSDP, but accelerate shards only on GPUs and would run "
                f"{accelerator.distributed_type.value} here without sharding. On CPUs launch plain DDP (e.g. "
                "ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N -m training_scripts...), or use a GPU machine."
            )
        if fsdp is not None:
            raise PretrainingError(f"{fsdp} Launch with the DDP config (accelerate_configs/multi_gpu.yaml) instead.")
        if not accelerator.is_fsdp2:
            raise PretrainingError(
                "this trainer supports FSDP version 2 only (fully_shard); set fsdp_version: 2 in the accelerate config."
            )
    set_seed(args.seed)
    return accelerator


def mean_over_processes(accelerator, loss) -> float:
    """The loss averaged over the processes (each saw its own shard of the batch): the loss of the
    whole batch when the per-process losses are batch means of equal-sized shards."""
    return accelerator.reduce(loss.detach().float(), "mean").item()


class PretrainingLoop(StepLoop):
    """The step loop of a DINO or CLIP run, set from its flags (`args`); its state also keeps every
    step's loss (``losses``), so a resumed run reports the uninterrupted run's."""

    def __init__(self, accelerator, args, total_steps: int, desc: str, resume: bool | None = None):
        settings = loop.run_settings(args, loop.HARMLESS_SETTINGS)
        super().__init__(
            accelerator,
            Path(args.output_dir) / "checkpoints" / "last",
            {"step": 0, "epoch": 0, "batch_in_epoch": 0, "losses": [], "settings": settings},
            total_steps,
            resume=args.resume if resume is None else resume,
            save_every=args.save_every,
            stop_after=args.stop_after,
            progress=args.progress,
            desc=desc,
        )

    def train(self, loader, train_step, epoch_aware=()) -> dict:
        """Run to the end and write the final checkpoint: ``{"step", "final_loss"}``; or, when --stop-after
        stopped the run, ``{"stopped_at_step"}`` (its last checkpoint is the last periodic one)."""
        state = self.state
        if self.run(
            loader,
            train_step,
            epoch_aware=epoch_aware,
            after_step=lambda loss: state["losses"].append(round(loss, 6)),
        ):
            return {"stopped_at_step": state["step"]}
        self.save()
        return {"step": state["step"], "final_loss": state["losses"][-1] if state["losses"] else None}


def pretraining_parser(prog: str, description: str, arguments: type) -> argparse.ArgumentParser:
    """The CLI parser of a pre-training run: one flag per field of the `arguments` dataclass."""
    from lastvit.arguments import add_arguments

    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, arguments)
    return parser


def run_pretraining(
    parser: argparse.ArgumentParser, argv, arguments: type, train: Callable, errors: tuple[type, ...] = ()
) -> int:
    """Parse `argv` (before any heavy import: --help stays fast), run ``train(arguments(...))`` and print
    its results as JSON (once, from the main process of a multi-process run). Bad options or data
    (`PretrainingError`, `DataError`, `errors`) exit with code 1 and one line naming the problem and the fix."""
    namespace = parser.parse_args(argv)
    from accelerate import PartialState

    from lastvit.arguments import from_args
    from lastvit.errors import LastViTUserError

    try:
        results = train(from_args(arguments, namespace))
    except (LastViTUserError, *errors) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if PartialState().is_main_process:
        print(json.dumps(results, indent=2))
    return 0


def cosine_schedule(
    start: float, end: float, step: int, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0
) -> float:
    """Linear warm-up from `warmup_start` to `start` over `warmup_steps`, then cosine from `start` to `end`
    (DINO's `cosine_scheduler`, as a function of the step so that a resumed run needs no stored array)."""
    if step < warmup_steps:
        return warmup_start + (start - warmup_start) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))


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
