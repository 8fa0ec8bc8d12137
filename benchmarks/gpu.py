"""The GPU section: inference and a training step in bf16 and fp16, per attention implementation, timed
with CUDA events in interleaved rounds, with CUDA peak memory, the LazyStrike pooler's share, and the
card's measured GEMM rate as the limit.

Everything device-specific sits behind `harness.clock_for` and `harness.peak_mib`, so with
``--device cpu --sections gpu`` the same code runs on the CPU (wall clock, no peak memory): that is
how the tests exercise it without a GPU."""

from __future__ import annotations

import gc
import importlib.metadata
import platform
import statistics

import torch

from .contenders import (
    CONTENDERS,
    GPU_DTYPES,
    PEER_PAIRS,
    POOLERS,
    SHAPES,
    TIMM,
    Contender,
    UnsupportedAttention,
    build_model,
    copy_peer_weights,
    lazystrike_pooler,
    timm_available,
)
from .harness import (
    clock_for,
    forward_cell,
    forward_flops,
    matmul_cell,
    mixed_precision_train_cell,
    peak_mib,
    pooler_cell,
    round_robin,
)


def attn_implementations(device: str) -> list[str]:
    """sdpa, plus flash-attn's kernels (2 and 3) where their packages are installed (CUDA only)."""
    if torch.device(device).type != "cuda":
        return ["sdpa"]
    from transformers import utils

    installed = {
        "flash_attention_2": getattr(utils, "is_flash_attn_2_available", lambda: False),
        "flash_attention_3": getattr(utils, "is_flash_attn_3_available", lambda: False),
    }
    return ["sdpa"] + [name for name, available in installed.items() if available()]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_info(device: torch.device) -> dict:
    import transformers

    info = {
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "timm": _version("timm"),
        "flash_attn": _version("flash-attn"),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(
            name=properties.name,
            memory_gib=properties.total_memory / 2**30,
            capability=f"sm_{properties.major}{properties.minor}",
        )
    return info


def _weights_mib(model: torch.nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _build_all(contenders, shape, dtype, attn, device, train, skipped) -> dict[str, torch.nn.Module]:
    """Every contender that can run `attn`; the others go to `skipped` with the reason, once."""
    models = {}
    for contender in contenders:
        try:
            models[contender.key] = build_model(contender, shape, dtype, train=train, attn=attn, device=device)
        except UnsupportedAttention as error:
            row = {"contender": contender.key, "attn": attn, "reason": str(error)}
            if row not in skipped:
                skipped.append(row)
    return models


def gemm_limits(args, device, clock) -> dict[str, dict]:
    """The rate of a `--gemm-size`² matmul in each dtype: what the card's tensor cores reach on the
    friendliest shape, the ceiling a forward's TFLOP/s is read against."""
    limits = {}
    for name in args.gpu_dtype:
        cell, flops = matmul_cell(args.gemm_size, GPU_DTYPES[name], device)
        times = round_robin({"gemm": cell}, args.gpu_warmup, max(args.gpu_repeats, 10), clock)["gemm"]
        seconds = statistics.median(times)
        limits[name] = {"size": args.gemm_size, "ms": seconds * 1e3, "tflops": flops / seconds / 1e12}
    return limits


def gpu_parity(shapes, device) -> list[dict]:
    """LastViT with its peer's weights gives the peer's output on this device (fp32): like is timed with like."""
    rows = []
    for shape in shapes:
        pixels = torch.randn(2, 3, shape.image_size, shape.image_size, device=device)
        for ours, peer in PEER_PAIRS:
            peer_model = build_model(CONTENDERS[peer], shape, torch.float32, device=device)
            our_model = build_model(CONTENDERS[ours], shape, torch.float32, device=device)
            copy_peer_weights(our_model, peer_model)
            with torch.inference_mode():
                expected, got = peer_model(pixels).last_hidden_state, our_model(pixels).last_hidden_state
            diff = (expected - got).abs().max().item()
            rows.append({"shape": shape.name, "ours": ours, "peer": peer, "max_abs_diff": diff})
    return rows


def gpu_inference(args, contenders, shapes, device, clock, progress, skipped) -> list[dict]:
    """Forward of every contender per (dtype, attention, shape, batch), interleaved, plus the LazyStrike
    pooler alone on the CLS+reg4+LS model's final tokens; then each call's CUDA peak."""
    groups = []
    for dtype_name in args.gpu_dtype:
        dtype = GPU_DTYPES[dtype_name]
        for attn in args.attn:
            for shape in shapes:
                models = _build_all(contenders, shape, dtype, attn, device, False, skipped)
                if not models:
                    continue
                one = torch.randn(1, 3, shape.image_size, shape.image_size, device=device).to(dtype)
                flops = {key: forward_flops(model, shape, one) for key, model in models.items()}
                poolers = {}
                if "lastvit-cls-reg" in models:
                    poolers = {k: lazystrike_pooler(models["lastvit-cls-reg"], **o) for k, o in POOLERS}
                for batch in args.gpu_batch_sizes:
                    repeats = args.gpu_latency_repeats if batch == 1 else args.gpu_repeats
                    tag = f"{dtype_name} {attn} {shape.name} batch {batch}"
                    progress(f"gpu inference {tag}: {len(models)} models x {repeats} rounds")
                    try:
                        with torch.inference_mode():
                            pixels = torch.randn(batch, 3, shape.image_size, shape.image_size, device=device)
                            pixels = pixels.to(dtype)
                            cells = {key: forward_cell(model, pixels) for key, model in models.items()}
                            if poolers:
                                final_tokens = models["lastvit-cls-reg"](pixels).last_hidden_state
                                cells.update({f"pool:K={k}": pooler_cell(p, final_tokens) for k, p in poolers.items()})
                            times = round_robin(cells, args.gpu_warmup, repeats, clock)
                            peaks = {key: peak_mib(cells[key], device) for key in models}
                    except torch.cuda.OutOfMemoryError:
                        skipped.append({"group": f"inference {tag}", "reason": "out of memory"})
                        cells = final_tokens = pixels = None
                        _free(device)
                        continue
                    groups.append(
                        {
                            "dtype": dtype_name,
                            "attn": attn,
                            "shape": shape.name,
                            "batch": batch,
                            "repeats": repeats,
                            "times": times,
                            "flops": {key: f * batch for key, f in flops.items()},
                            "weights_mib": {key: _weights_mib(model) for key, model in models.items()},
                            "peak_mib": {key: _plus(peaks[key], _weights_mib(models[key])) for key in models},
                        }
                    )
                    cells = final_tokens = pixels = None
                models = poolers = None
                _free(device)
    return groups


def _plus(peak: float | None, resident: float) -> float | None:
    """A call's peak above what was live before it, plus the model's own resident memory: the peak
    a process holding only this model would see."""
    return None if peak is None else peak + resident


def gpu_training(args, contenders, shapes, device, clock, progress, skipped) -> list[dict]:
    """One mixed-precision step (forward under autocast, backward, AdamW on fp32 weights) of every
    contender per (dtype, shape, batch), interleaved, with the first attention implementation."""
    groups, attn = [], args.attn[0]
    by_key = {c.key: c for c in contenders}
    for dtype_name in args.gpu_dtype:
        dtype = GPU_DTYPES[dtype_name]
        for shape in shapes:
            models = _build_all(contenders, shape, torch.float32, attn, device, True, skipped)
            if not models:
                continue
            one = torch.randn(1, 3, shape.image_size, shape.image_size, device=device)
            flops = {key: 3 * forward_flops(model, shape, one) for key, model in models.items()}  # fwd + 2x bwd
            optimizers = {key: torch.optim.AdamW(model.parameters(), lr=1e-4) for key, model in models.items()}
            for batch in args.gpu_train_batch_sizes:
                tag = f"{dtype_name} {attn} {shape.name} batch {batch}"
                progress(f"gpu training {tag}: {len(models)} models x {args.gpu_train_repeats} rounds")
                try:
                    pixels = torch.randn(batch, 3, shape.image_size, shape.image_size, device=device)
                    cells = {
                        key: mixed_precision_train_cell(model, optimizers[key], by_key[key].feature, pixels, dtype)
                        for key, model in models.items()
                    }
                    times = round_robin(cells, args.gpu_warmup, args.gpu_train_repeats, clock)
                    peaks = {key: peak_mib(cells[key], device) for key in models}
                except torch.cuda.OutOfMemoryError:
                    skipped.append({"group": f"training {tag}", "reason": "out of memory"})
                    for optimizer in optimizers.values():
                        optimizer.zero_grad(set_to_none=True)
                    cells = pixels = None
                    _free(device)
                    continue
                resident = {key: _weights_mib(model) + _state_mib(optimizers[key]) for key, model in models.items()}
                groups.append(
                    {
                        "dtype": dtype_name,
                        "attn": attn,
                        "shape": shape.name,
                        "batch": batch,
                        "repeats": args.gpu_train_repeats,
                        "times": times,
                        "flops": {key: f * batch for key, f in flops.items()},
                        "peak_mib": {key: _plus(peaks[key], resident[key]) for key in models},
                    }
                )
                cells = pixels = None
            models = optimizers = None
            _free(device)
    return groups


def _state_mib(optimizer: torch.optim.Optimizer) -> float:
    return (
        sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
        / 2**20
    )


def gpu_contenders(contenders: list[Contender]) -> list[Contender]:
    """The given contenders (those of the CPU sections and any --variants) plus timm's ViT when timm imports."""
    return list(contenders) + ([TIMM] if timm_available() else [])


def bench_gpu(args, contenders, progress) -> dict:
    """The whole GPU section: device facts, GEMM limits, parity, inference and training groups."""
    device = torch.device(args.device)
    if device.type != "cuda":
        progress("gpu section on the CPU: this tests the section's logic, its numbers mean nothing")
    clock = clock_for(device)
    shapes = [SHAPES[name] for name in args.gpu_shapes]
    contenders = gpu_contenders(contenders)
    skipped = [] if timm_available() else [{"contender": "timm", "reason": "timm is not installed"}]
    progress(f"gpu: {args.gemm_size}² matmul rate in {', '.join(args.gpu_dtype)}")
    result = {"device": device_info(device), "gemm": gemm_limits(args, device, clock)}
    result["parity"] = gpu_parity(shapes, device)
    result["labels"] = {c.key: c.label for c in [*contenders, TIMM]}
    result["peers"] = {c.key: c.peer for c in contenders if c.peer}
    result["inference"] = gpu_inference(args, contenders, shapes, device, clock, progress, skipped)
    result["training"] = gpu_training(args, contenders, shapes, device, clock, progress, skipped)
    result["skipped"] = skipped
    return result
