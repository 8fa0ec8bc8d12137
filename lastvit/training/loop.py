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

from lastvit.errors import LastViTUserError
from lastvit.files import swap_in

STATE_FILE = "trainer_state.json"


def prepare_output_dir(output_dir: Path, resume: bool, overwrite: bool, error: type[Exception]) -> None:
    """Check and claim `output_dir` at once (`OutputFolder`): for callers that validated their inputs already."""
    OutputFolder(output_dir, resume, overwrite, error).take()


class OutputFolder:
    """The output folder of a run, claimed only once the run's inputs are known to be good.

    Creating it only checks (nothing is written): resuming needs a checkpoint (or an unfinished run
    without one, which then starts again in place), a fresh run needs an empty folder or
    ``--overwrite``. `take()` (main process, after every input was validated) claims it: with
    ``--overwrite`` the old run is moved aside to a hidden sibling, not deleted. Leaving the
    ``with`` block by an error puts the old run back unchanged; leaving it normally deletes it.
    A run killed in between leaves the old run in that sibling, and the next ``--overwrite``
    keeps it there until a run finishes. `error` is the exception class the calling CLI reports as one line.
    """

    def __init__(self, output_dir: Path, resume: bool, overwrite: bool, error: type[Exception]):
        self.path = Path(output_dir)
        self.aside = self.path.with_name(f".{self.path.name}.replaced")
        self.replace = False
        self.fresh_in_place = False
        self.taken = False
        has_files = self.path.is_dir() and any(self.path.iterdir())
        if self.path.exists() and not self.path.is_dir():
            raise error(f"--output-dir {self.path} is a file; give a folder.")
        if resume:
            if (self.path / "checkpoints" / "last" / STATE_FILE).exists():
                return
            if not unfinished_without_checkpoint(self.path):
                raise error(
                    f"--resume: {self.path} holds no resumable checkpoint (checkpoints/last); start without --resume."
                )
            self.fresh_in_place = True  # killed before its first complete checkpoint: start again here
        elif has_files and not overwrite:
            hint = (
                "it holds a run stopped before its first complete checkpoint: pass --resume to start it again in place"
                if unfinished_without_checkpoint(self.path)
                else "pass --resume to continue it"
            )
            raise error(
                f"{self.path} already holds files (another run?); {hint}, --overwrite to replace it, or choose "
                "another --output-dir."
            )
        else:
            self.replace = has_files

    def take(self) -> None:
        """Claim the folder (main process only): move an old run aside (``--overwrite``) and create it."""
        if self.replace:
            if self.aside.exists():  # an earlier --overwrite was killed: the old run is still there
                shutil.rmtree(self.path)
            else:
                self.path.rename(self.aside)
        self.path.mkdir(parents=True, exist_ok=True)
        self.taken = True

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if not (self.taken and self.replace and self.aside.exists()):
            return
        if kind is None:
            shutil.rmtree(self.aside)
        else:  # the new run failed: the old one comes back as it was
            shutil.rmtree(self.path, ignore_errors=True)
            self.aside.rename(self.path)


def unfinished_without_checkpoint(folder: Path) -> bool:
    """True for a run folder killed before its first complete checkpoint: it has `checkpoints/` (perhaps
    only a staging folder) or `best/` but neither `checkpoints/last` nor a final model."""
    folder = Path(folder)
    started = (folder / "checkpoints").is_dir() or (folder / "best").is_dir()
    finished = any((folder / name).exists() for name in ("config.json", "adapter_config.json"))
    return started and not finished and not (folder / "checkpoints" / "last" / STATE_FILE).exists()


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


class ResumeMismatch(LastViTUserError):
    """`--resume` with settings that would make another run than the one checkpointed."""


def check_resume_settings(checkpoint_dir: Path, settings: dict | None) -> None:
    """Compare the settings a checkpoint was written with (``settings`` in its trainer state) with the
    resumed run's; any difference stops, in one line listing each. Older checkpoints carry none."""
    if settings is None:
        return
    saved = json.loads((Path(checkpoint_dir) / STATE_FILE).read_text()).get("settings")
    if saved is None:
        return
    changed = [
        f"--{name.replace('_', '-')} {saved.get(name)!r} -> {settings.get(name)!r}"
        for name in sorted(set(saved) | set(settings))
        if saved.get(name) != settings.get(name)
    ]
    if changed:
        raise ResumeMismatch(
            f"--resume: these settings differ from the run in {Path(checkpoint_dir).parent.parent}: "
            + "; ".join(changed)
            + ". Resume with the run's own settings, or start a new run (another --output-dir, or --overwrite)."
        )


def run_settings(config, harmless: set[str]) -> dict:
    """What defines a run, for `check_resume_settings`: every field of the dataclass `config` but the
    `harmless` ones (logging, evaluation and checkpoint frequency, progress bars), as JSON values."""
    import dataclasses

    settings = {}
    for field in dataclasses.fields(config):
        if field.name in harmless:
            continue
        value = getattr(config, field.name)
        if field.name == "dataset" and not isinstance(value, str):
            value = "<in-memory DatasetDict>"
        settings[field.name] = json.loads(json.dumps(value, default=str))
    return settings


# Settings that may change between a run and its --resume: they do not change the trained weights.
HARMLESS_SETTINGS = {
    "output_dir",
    "overwrite",
    "resume",
    "eval_every",
    "save_every",
    "stop_after",
    "report_to",
    "push_to_hub",
    "progress",
    "num_workers",
    "on_bad_image",
    "attn_implementation",
    "trust_remote_code",
    "mixed_precision",  # e.g. a run continued on other GPUs
}


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
        if resume:
            check_resume_settings(self.checkpoint_dir, state.get("settings"))
            self.state = load_checkpoint(accelerator, self.checkpoint_dir)
            self.state["settings"] = state.get("settings", self.state.get("settings"))
        else:
            self.state = state
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
