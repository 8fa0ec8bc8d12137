"""The timing harness: device clocks, interleaved rounds, the callables that are timed, and FLOP counts."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import torch
from torch import nn

from .contenders import Shape


class WallClock:
    """Seconds one call takes on the host (`time.perf_counter`): right for the CPU, where a call
    returns when its work is done."""

    device = torch.device("cpu")

    def __call__(self, call: Callable[[], object]) -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start


class CudaEvents:
    """Seconds one call takes on a CUDA device: events recorded on the stream before and after it,
    read once the end event completed. The device is idle when the start event is recorded (the
    previous call was waited for), so a call whose kernels wait on the host's launches, as at batch 1,
    is charged for that wait: it is the latency a caller sees."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def __call__(self, call: Callable[[], object]) -> float:
        torch.cuda.synchronize(self.device)
        self.start.record()
        call()
        self.end.record()
        self.end.synchronize()
        return self.start.elapsed_time(self.end) / 1e3


def clock_for(device: str | torch.device) -> WallClock | CudaEvents:
    device = torch.device(device)
    if device.type == "cuda":
        return CudaEvents(device)
    if device.type != "cpu":
        raise SystemExit(f"--device {device}: only cpu and cuda are supported.")
    return WallClock()


def round_robin(
    cells: dict[str, Callable[[], object]], warmup: int, repeats: int, clock: Callable | None = None
) -> dict[str, list[float]]:
    """Time every cell `repeats` times, interleaved: each round runs every cell once, and the
    starting cell rotates from round to round, so drift and neighbours hit all cells alike."""
    clock = clock or WallClock()
    keys = list(cells)
    for _ in range(warmup):
        for key in keys:
            cells[key]()
    times = {key: [] for key in keys}
    gc.collect()
    gc.freeze()  # the models and libraries go to the permanent generation: later collections are cheap
    gc.disable()  # a collection inside a timed call would land on whichever contender was running
    try:
        for round_index in range(repeats):
            offset = round_index % len(keys)
            for key in keys[offset:] + keys[:offset]:
                times[key].append(clock(cells[key]))
            gc.collect()
    finally:
        gc.enable()
        gc.unfreeze()
    return times


def forward_cell(model: nn.Module, pixels: torch.Tensor) -> Callable[[], object]:
    return lambda: model(pixels)


def pooler_cell(pooler: nn.Module, final_tokens: torch.Tensor) -> Callable[[], object]:
    return lambda: pooler(final_tokens)


def train_cell(model, optimizer, feature, pixels) -> Callable[[], object]:
    """One training step: forward, loss = mean square of the global feature, backward, AdamW."""

    def step():
        loss = feature(model(pixels)).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def mixed_precision_train_cell(model, optimizer, feature, pixels, dtype: torch.dtype) -> Callable[[], object]:
    """One training step as mixed precision runs it: fp32 weights and AdamW state, the forward under
    `torch.autocast(dtype)`, and for fp16 a gradient scaler (fp16 gradients would underflow without one)."""
    device_type = pixels.device.type
    scaler = torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)

    def step():
        with torch.autocast(device_type, dtype=dtype):
            loss = feature(model(pixels)).float().square().mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return step


def matmul_cell(
    size: int, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[Callable[[], object], float]:
    """A `size`² matmul and its FLOPs: the machine's matmul rate, the limit a forward's rate is read against."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    return (lambda: torch.mm(a, b)), 2.0 * size**3


def approx_gflop(shape: Shape, batch: int) -> float:
    """Forward GFLOP of a plain ViT (2 FLOPs per multiply-add), to sort cheap groups from heavy ones."""
    tokens, dim = shape.num_patches + 1, shape.hidden_size
    per_layer = 8 * tokens * dim * dim + 4 * tokens * dim * shape.mlp_size + 4 * tokens * tokens * dim
    return batch * shape.num_layers * per_layer / 1e9


def forward_flops(model: nn.Module, shape: Shape, pixels: torch.Tensor) -> float:
    """Matmul/conv FLOPs counted by torch's FlopCounterMode, plus the attention's 4*B*L*T^2*D where
    the counter did not see it: it sees eager attention (as `bmm`) and CUDA's SDPA kernels, but not
    the CPU SDPA kernel nor flash-attn's."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        output = model(pixels)
    flops = counter.get_total_flops()
    if any("attention" in str(op) or "bmm" in str(op) for op in counter.get_flop_counts().get("Global", {})):
        return flops
    tokens = _sequence_length(model, output)
    return flops + 4.0 * pixels.shape[0] * shape.num_layers * tokens**2 * shape.hidden_size


def _sequence_length(model: nn.Module, output) -> int:
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is not None:
        return hidden.shape[1]
    return model.patch_embed.num_patches + model.num_prefix_tokens  # timm, whose forward returns the feature


def peak_mib(call: Callable[[], object], device: torch.device) -> float | None:
    """CUDA memory one call allocates above what was live before it (`torch.cuda.max_memory_allocated`);
    None off CUDA (the CPU's peak needs a fresh process: see `benchmarks.memory`)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    call()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20
