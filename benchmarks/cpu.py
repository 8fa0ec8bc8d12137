"""The CPU sections: parity and op checks, inference throughput, training step, torch.compile."""

from __future__ import annotations

import gc
import time

import torch

from .contenders import (
    CONTENDERS,
    DTYPES,
    PEER_PAIRS,
    POOLERS,
    Shape,
    build_model,
    copy_peer_weights,
    lazystrike_pooler,
)
from .harness import approx_gflop, forward_cell, forward_flops, matmul_cell, pooler_cell, round_robin, train_cell


def parity_checks(shapes: list[Shape]) -> list[dict]:
    """With the peer's weights, LastViT must give the peer's output: the timings compare like with like."""
    rows = []
    for shape in shapes:
        pixels = torch.randn(2, 3, shape.image_size, shape.image_size)
        for ours, peer in PEER_PAIRS:
            peer_model = build_model(CONTENDERS[peer], shape, torch.float32)
            our_model = build_model(CONTENDERS[ours], shape, torch.float32)
            copy_peer_weights(our_model, peer_model)
            with torch.inference_mode():
                expected, got = peer_model(pixels).last_hidden_state, our_model(pixels).last_hidden_state
            rows.append(
                {"shape": shape.name, "ours": ours, "peer": peer, "max_abs_diff": (expected - got).abs().max().item()}
            )
    return rows


def training_op_check(shape: Shape) -> list[dict]:
    """The ATen ops one training step runs, LastViT against its peer (counts per op name, from the profiler).

    Equal counts mean the two steps launch the same kernels the same number of times, so a timing gap
    between them can only be noise (or where each model's memory landed), not extra work."""
    rows = []
    pixels = torch.randn(1, 3, shape.image_size, shape.image_size)
    for ours, peer in PEER_PAIRS:
        counts = {}
        for key in (peer, ours):
            model = build_model(CONTENDERS[key], shape, torch.float32, train=True)
            step = train_cell(model, torch.optim.AdamW(model.parameters(), lr=1e-4), CONTENDERS[key].feature, pixels)
            step()  # AdamW creates its state on the first step
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
                step()
            counts[key] = {e.key: e.count for e in profile.key_averages() if e.key.startswith("aten::")}
        differences = {
            op: (counts[peer].get(op, 0), counts[ours].get(op, 0))
            for op in sorted(set(counts[peer]) | set(counts[ours]))
            if counts[peer].get(op, 0) != counts[ours].get(op, 0)
        }
        rows.append(
            {
                "shape": shape.name,
                "ours": ours,
                "peer": peer,
                "ops": sum(counts[ours].values()),
                "peer_ops": sum(counts[peer].values()),
                "differences": differences,
            }
        )
    return rows


def bench_inference(args, shapes, contenders, progress) -> list[dict]:
    """Throughput of every contender, per (dtype, shape, batch) group, interleaved; plus the pooler alone."""
    groups = []
    for dtype_name in args.dtype:
        for shape in shapes:
            models = {c.key: build_model(c, shape, DTYPES[dtype_name]) for c in contenders if c.timed}
            poolers = {k: lazystrike_pooler(models["lastvit-cls-reg"], **options) for k, options in POOLERS}
            for batch in args.batch_sizes:
                pixels = torch.randn(batch, 3, shape.image_size, shape.image_size).to(DTYPES[dtype_name])
                gflop = approx_gflop(shape, batch)
                heavy = gflop > args.heavy_gflop
                if heavy:
                    warmup, repeats = 0, args.heavy_repeats
                else:  # cheap groups (batch 1) are the noisiest per round and cost little: more rounds
                    warmup, repeats = args.warmup, args.light_repeats if gflop < args.light_gflop else args.repeats
                in_group = {c.key for c in contenders if c.timed and (c.heavy or not heavy)}
                progress(
                    f"inference {dtype_name} {shape.name} batch {batch}: {len(in_group)} models x {repeats} rounds"
                )
                cells = {key: forward_cell(model, pixels) for key, model in models.items() if key in in_group}
                sgemm_flops = None
                if dtype_name == "fp32":
                    cells["sgemm"], sgemm_flops = matmul_cell(args.sgemm_size)
                # The pooler alone, on the real final tokens: what LazyStrike costs on top of a CLS readout.
                with torch.inference_mode():
                    final_tokens = models["lastvit-cls-reg"](pixels).last_hidden_state
                for k, pooler in poolers.items():
                    cells[f"pool:K={k}"] = pooler_cell(pooler, final_tokens)
                with torch.inference_mode():
                    times = round_robin(cells, warmup, repeats)
                flops = {
                    key: forward_flops(model, shape, pixels[:1]) * batch
                    for key, model in models.items()
                    if key in in_group
                }
                groups.append(
                    {
                        "dtype": dtype_name,
                        "shape": shape.name,
                        "batch": batch,
                        "repeats": repeats,
                        "times": times,
                        "flops": flops,
                        "sgemm_flops": sgemm_flops,
                    }
                )
            del models
            gc.collect()
    return groups


def bench_training(args, shapes, contenders, progress) -> list[dict]:
    """One step (forward, backward, AdamW) per contender, interleaved; loss = mean square of the global feature."""
    groups = []
    trainable = [c for c in contenders if c.train]
    for shape in shapes:
        for batch in args.train_batch_sizes:
            progress(
                f"training fp32 {shape.name} batch {batch}: {len(trainable)} models x {args.train_repeats} rounds"
            )
            pixels = torch.randn(batch, 3, shape.image_size, shape.image_size)
            cells = {}
            for contender in trainable:
                model = build_model(contender, shape, torch.float32, train=True)
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
                cells[contender.key] = train_cell(model, optimizer, contender.feature, pixels)
            times = round_robin(cells, args.warmup, args.train_repeats)
            groups.append(
                {"dtype": "fp32", "shape": shape.name, "batch": batch, "repeats": args.train_repeats, "times": times}
            )
            del cells
            gc.collect()
    return groups


def bench_compile(args, shapes, progress) -> list[dict]:
    """torch.compile (inductor) of LastViT: compile time, agreement with eager, and speed, interleaved."""
    groups = []
    for shape in shapes:
        for batch in args.compile_batch_sizes:
            pixels = torch.randn(batch, 3, shape.image_size, shape.image_size)
            cells, checks = {}, {}
            for key in ("lastvit-cls", "lastvit-lazy-k1"):
                model = build_model(CONTENDERS[key], shape, torch.float32)
                compiled = torch.compile(model, backend="inductor")
                progress(f"compile {shape.name} batch {batch}: {key}")
                start = time.perf_counter()
                with torch.inference_mode():
                    got, expected = compiled(pixels), model(pixels)
                compile_s = time.perf_counter() - start
                checks[key] = {
                    "compile_s": compile_s,
                    "max_abs_diff": (got.pooler_output - expected.pooler_output).abs().max().item(),
                }
                cells[key] = forward_cell(model, pixels)
                cells[f"compiled:{key}"] = forward_cell(compiled, pixels)
            progress(f"compile {shape.name} batch {batch}: eager vs compiled x {args.repeats} rounds")
            with torch.inference_mode():
                times = round_robin(cells, args.warmup, args.repeats)
            groups.append(
                {"shape": shape.name, "batch": batch, "repeats": args.repeats, "times": times, "checks": checks}
            )
    return groups
