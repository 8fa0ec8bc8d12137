"""The step/epoch loop and resume checkpoints the three Accelerate trainers share (supervised, DINO, CLIP).

A checkpoint is `Accelerator.save_state` (model, optimiser, everything registered with
`register_for_checkpointing`, RNG states) plus ``trainer_state.json``, written to a staging folder
and swapped in for ``checkpoints/last``: a killed run never leaves a half-written checkpoint. The
JSON state holds at least ``step``, ``epoch`` and ``batch_in_epoch``: a resumed run sets the epoch
(data order, augmentation) and skips the batches already seen, so it ends where the uninterrupted
run ends.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from lastvit.files import swap_in

STATE_FILE = "trainer_state.json"


def prepare_output_dir(output_dir: Path, resume: bool, overwrite: bool, error: type[Exception]) -> None:
    """Refuse to mix runs: resuming needs a checkpoint, a fresh run needs an empty folder (or --overwrite).
    `error` is the exception class the calling CLI reports as one line."""
    output_dir = Path(output_dir)
    has_files = output_dir.exists() and any(output_dir.iterdir())
    if resume:
        if not (output_dir / "checkpoints" / "last" / STATE_FILE).exists():
            raise error(
                f"--resume: {output_dir} holds no resumable checkpoint (checkpoints/last); start without --resume."
            )
    elif has_files and not overwrite:
        raise error(
            f"{output_dir} already holds files (another run?); pass --resume to continue it, --overwrite to replace "
            "it, or choose another --output-dir."
        )
    elif has_files:
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)


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
    """Restore what `save_checkpoint` wrote into the prepared objects; returns the JSON trainer state."""
    accelerator.load_state(str(folder))
    return json.loads((Path(folder) / STATE_FILE).read_text())


class StepLoop:
    """Drives ``train_step(batch)`` over epochs until `total_steps` optimiser steps, with resume,
    periodic checkpoints, ``--stop-after`` and a progress bar.

    `state` (a fresh run's JSON trainer state, replaced by the checkpoint's with `resume`) holds
    ``step``, ``epoch`` and ``batch_in_epoch``, which the loop keeps; the trainer may keep its own
    keys in it (losses, best score), and they are saved with every checkpoint. A checkpoint is
    written every `save_every` steps (0: at each epoch end) and once more by `save()` at the end.
    """

    def __init__(
        self,
        accelerator,
        checkpoint_dir: Path,
        state: dict,
        total_steps: int,
        *,
        resume: bool = False,
        save_every: int = 0,
        stop_after: int | None = None,
        progress: bool = True,
        desc: str = "training",
    ):
        self.accelerator = accelerator
        self.checkpoint_dir = Path(checkpoint_dir)
        self.state = load_checkpoint(accelerator, self.checkpoint_dir) if resume else state
        self.total_steps = total_steps
        self.save_every = save_every
        self.stop_after = stop_after
        self.show_progress = progress
        self.desc = desc
        self.steps_this_run = 0

    def save(self) -> None:
        """Write the resume checkpoint (`state` and every prepared or registered object) to `checkpoint_dir`."""
        save_checkpoint(self.accelerator, self.checkpoint_dir, self.state)

    def run(
        self,
        loader,
        train_step: Callable[[dict], float | None],
        *,
        epoch_aware: Iterable = (),
        after_step: Callable[[float], None] | None = None,
        after_epoch: Callable[[], None] | None = None,
        postfix: Callable[[], dict] | None = None,
    ) -> bool:
        """Train until `total_steps`; returns True when ``stop_after`` steps of this call stopped it early.

        ``train_step(batch)`` returns the loss of the optimiser step the batch completed, or None when
        it completed none (gradient accumulation, a batch of skipped images). `epoch_aware` objects
        (sampler, dataset) get ``.epoch`` set at each epoch start. ``after_step(loss)`` runs after the
        step count went up, before a periodic checkpoint; ``after_epoch()`` at each epoch end, before
        its checkpoint; ``postfix()`` adds figures to the progress bar's loss.
        """
        from tqdm.auto import tqdm

        state, accelerator = self.state, self.accelerator
        epoch_aware = tuple(epoch_aware)
        bar = tqdm(
            total=self.total_steps,
            initial=state["step"],
            desc=self.desc,
            disable=not self.show_progress or not accelerator.is_local_main_process,
        )
        try:
            while state["step"] < self.total_steps:
                for holder in epoch_aware:
                    holder.epoch = state["epoch"]
                epoch_loader = (
                    accelerator.skip_first_batches(loader, state["batch_in_epoch"])
                    if state["batch_in_epoch"]
                    else loader
                )
                for batch in epoch_loader:
                    state["batch_in_epoch"] += 1
                    loss = train_step(batch)
                    if loss is None:
                        continue
                    state["step"] += 1
                    self.steps_this_run += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", **(postfix() if postfix else {}))
                    if after_step is not None:
                        after_step(loss)
                    if self.save_every and state["step"] % self.save_every == 0:
                        self.save()
                    if self.stop_after is not None and self.steps_this_run >= self.stop_after:
                        return True
                    if state["step"] >= self.total_steps:
                        return False
                state["epoch"] += 1
                state["batch_in_epoch"] = 0
                if after_epoch is not None:
                    after_epoch()
                if not self.save_every:
                    self.save()
            return False
        finally:
            bar.close()


def reset_accelerate() -> None:
    """Forget Accelerate's process-wide singletons, so that several runs in one Python process (the
    studies) each build their own `Accelerator`."""
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(True)
    PartialState._reset_state()
