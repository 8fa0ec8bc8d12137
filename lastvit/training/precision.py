"""`--mixed-precision auto`: the precision a run can use on every one of its devices.

bf16 only where every process's GPU supports it (compute capability 8.0 or newer: A100, H100, RTX 30xx
and later), fp16 with loss scaling where one does not (V100, T4: Accelerate scales the loss), full
precision (``no``) on CPUs. A mixed fleet takes the weakest device's choice, so every process runs the
same arithmetic. Imports torch only when called.
"""

from __future__ import annotations

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
_RANK = {"no": 0, "fp16": 1, "bf16": 2}  # what a device supports, weakest first


def device_precision() -> str:
    """What this process's device supports best: ``bf16`` (CUDA capability >= 8.0), ``fp16`` (older
    CUDA cards) or ``no`` (no GPU)."""
    import torch
    from accelerate.utils import parse_flag_from_env

    if not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU"):
        return "no"
    major, _ = torch.cuda.get_device_capability()
    return "bf16" if major >= 8 and torch.cuda.is_bf16_supported() else "fp16"


def weakest(choices) -> str:
    """The precision every device of `choices` supports."""
    return min(choices, key=_RANK.__getitem__)


def resolve_mixed_precision(requested: str | None, say=print) -> str:
    """`requested` as given (no / fp16 / bf16), or for ``auto`` (and None) the weakest of every
    process's `device_precision` (gathered across the processes of a distributed run); `say` prints
    the choice once (main process)."""
    if requested not in (None, "auto"):
        return requested
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # as Accelerator() will start it
    choice = device_precision()
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        choice = weakest(gather_object([choice]))
    if state.is_main_process:
        say(f"--mixed-precision auto: {choice} ({_REASON[choice]})")
    return choice


_REASON = {
    "no": "full precision: no GPU on at least one process",
    "fp16": "a GPU without bf16 (compute capability < 8.0) on at least one process; the loss is scaled",
    "bf16": "every GPU supports bf16",
}
