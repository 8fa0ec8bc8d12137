"""Peak CPU inference memory, one fresh process per contender (``python -m benchmarks.memory SPEC``).

A process's peak RSS includes whatever earlier models and calls left in the heap, so each contender
runs alone in its own process, started by `bench_memory`."""

from __future__ import annotations

import gc
import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import torch

from .contenders import CONTENDERS, DTYPES, SHAPES, build_model, load_variants

REPO_ROOT = Path(__file__).resolve().parent.parent
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "1"}


def _rss_kib() -> tuple[int, int]:
    """(current RSS, peak RSS) in KiB from /proc/self/status."""
    status = Path("/proc/self/status").read_text()
    return (
        int(re.search(r"VmRSS:\s+(\d+)", status).group(1)),
        int(re.search(r"VmHWM:\s+(\d+)", status).group(1)),
    )


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def memory_worker(spec: dict) -> dict:
    """Run in a fresh process: build one model, warm it up, then for each batch reset the peak RSS,
    run inference once and report the peak RSS above the RSS before the call.

    The parent starts it with a fixed glibc mmap threshold (64 KiB), so every tensor buffer is
    mapped on allocation and unmapped on free: RSS follows the live buffers instead of whatever
    the heap kept from an earlier call, and the warm-up (one-time kernel and library set-up)
    does not hide or inflate what the measured calls need."""
    torch.set_num_threads(spec["threads"])
    shape, dtype = SHAPES[spec["shape"]], DTYPES[spec["dtype"]]
    contenders = dict(CONTENDERS)
    if spec.get("variants"):
        contenders.update({c.key: c for c in load_variants(spec["variants"])})
    model = build_model(contenders[spec["contender"]], shape, dtype)
    inputs = {b: torch.randn(b, 3, shape.image_size, shape.image_size).to(dtype) for b in spec["batches"]}
    params_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    result = {"params_mib": params_mib, "peak_mib": {}, "method": "VmHWM"}
    with torch.inference_mode():
        model(inputs[min(inputs)])  # warm-up
        for batch in sorted(inputs):
            gc.collect()
            if _reset_peak():
                baseline = _rss_kib()[0]
                model(inputs[batch])
                peak = _rss_kib()[1]
            else:  # no /proc reset: the process high-water mark (includes model construction)
                result["method"] = "ru_maxrss"
                baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                model(inputs[batch])
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            result["peak_mib"][str(batch)] = (peak - baseline) / 1024
    return result


def bench_memory(args, shapes, contenders, progress) -> list[dict]:
    """Every contender's peak at every batch and memory dtype, `args.memory_jobs` processes at a time."""
    from concurrent.futures import ThreadPoolExecutor

    specs = [
        {
            "contender": c.key,
            "shape": s.name,
            "dtype": d,
            "batches": args.batch_sizes,
            "threads": args.threads,
            "variants": args.variants,
        }
        for d in args.memory_dtype
        for s in shapes
        for c in contenders
        if c.memory
    ]

    def run(spec):
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", json.dumps(spec)],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO_ROOT,
            env={**os.environ, **MALLOC_ENV},
        )
        if completed.returncode:
            raise RuntimeError(f"memory worker {spec} failed:\n{completed.stderr[-3000:]}")
        return {**spec, **json.loads(completed.stdout.strip().splitlines()[-1])}

    progress(f"peak memory: {len(specs)} fresh processes, {args.memory_jobs} at a time")
    with ThreadPoolExecutor(args.memory_jobs) as pool:
        return list(pool.map(run, specs))


if __name__ == "__main__":
    print(json.dumps(memory_worker(json.loads(sys.argv[1]))))
