"""Speed and memory of LastViT against transformers' ViTModel and Dinov2WithRegistersModel.

One process times every contender, interleaved round-robin (the order rotates each round), after
warm-up, and reports medians and per-round paired ratios; peak memory is read in a fresh
subprocess per contender. The script writes the Markdown report itself (``--out``).

    python benchmarks/bench_lastvit.py                      # the full run behind RESULTS.md
    python benchmarks/bench_lastvit.py --quick --out /tmp/quick.md   # a tiny smoke run, seconds

Contenders at each shape (ViT-S/16: 384 wide, 6 heads, 12 layers, MLP 1536; ViT-B/16: 768, 12,
12, 3072; both at 224 px), all with ``attn_implementation="sdpa"``, in eval mode and
``torch.inference_mode`` for inference:

- ``ViTModel`` (``add_pooling_layer=False``: its pooler is an extra dense+tanh layer that LastViT
  does not have) against ``LastViT cls`` (no registers, no LayerScale): the same computation,
  checked by copying the peer's weights and comparing outputs;
- ``Dinov2WithRegistersModel`` (4 registers, LayerScale, ``mlp_ratio=4``) against ``LastViT
  cls+reg4+LS``, checked the same way;
- ``LastViT LazyStrike`` with 4 registers and LayerScale, K=1 and K=N/2, to price the pooling.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere, without installing the package
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402


# --------------------------------------------------------------------------------------------
# Shapes and contenders
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    hidden_size: int
    num_heads: int
    num_layers: int
    mlp_size: int
    image_size: int
    patch_size: int

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def vit_config(self) -> dict:
        """The shape as ViTConfig / LastViTConfig arguments (the two share these names)."""
        return dict(
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_heads,
            num_hidden_layers=self.num_layers,
            intermediate_size=self.mlp_size,
            image_size=self.image_size,
            patch_size=self.patch_size,
        )


SHAPES = {
    "S/16": Shape("S/16", 384, 6, 12, 1536, 224, 16),
    "B/16": Shape("B/16", 768, 12, 12, 3072, 224, 16),
    # Only for --quick and the smoke test: a 2-block, 64-wide model on 32x32 inputs.
    "tiny": Shape("tiny", 64, 4, 2, 256, 32, 8),
}

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclasses.dataclass(frozen=True)
class Contender:
    key: str
    label: str
    build: Callable[[Shape], nn.Module]
    feature: Callable[[object], torch.Tensor]
    """The global feature a training loss reads from the model's output."""
    peer: str | None = None
    """Key of the transformers model computing the same thing (for LastViT contenders)."""
    timed: bool = True
    """Timed in the inference rounds (the K=N/2 model is not: its pooler is timed alone)."""
    train: bool = True
    memory: bool = True
    heavy: bool = True
    """Also timed in heavy groups (B/16 b16), where the K=1 model is left out to keep the run short:
    its pooler is timed alone there."""


def _lastvit(shape: Shape, **options) -> nn.Module:
    from modeling_lastvit import LastViTConfig, LastViTModel

    return LastViTModel(LastViTConfig(**shape.vit_config(), **options))


def _vit(shape: Shape) -> nn.Module:
    from transformers import ViTConfig, ViTModel

    # layer_norm_eps: LastViT's; it only changes numerics, and lets the outputs be compared
    config = ViTConfig(**shape.vit_config(), layer_norm_eps=1e-6)
    return ViTModel(config, add_pooling_layer=False)


def _dinov2_registers(shape: Shape) -> nn.Module:
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = Dinov2WithRegistersConfig(
        hidden_size=shape.hidden_size,
        num_attention_heads=shape.num_heads,
        num_hidden_layers=shape.num_layers,
        mlp_ratio=shape.mlp_size // shape.hidden_size,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        num_register_tokens=4,
        layerscale_value=1.0,
    )
    return Dinov2WithRegistersModel(config)


def _cls_token(output) -> torch.Tensor:
    return output.last_hidden_state[:, 0]


def _pooled(output) -> torch.Tensor:
    return output.pooler_output


REGISTERS = dict(num_register_tokens=4, layerscale_value=1.0)

CONTENDERS = {
    c.key: c
    for c in (
        Contender("vit", "ViTModel", _vit, _cls_token),
        # A/A control: the same model with the same weights, built a second time. Its ratio to the first
        # instance is what the machine's noise (and where each instance's memory landed) alone produces.
        Contender("vit-2", "ViTModel, 2nd instance (A/A control)", _vit, _cls_token, peer="vit", memory=False),
        Contender("lastvit-cls", "LastViT cls", lambda s: _lastvit(s, pooling="cls"), _pooled, peer="vit"),
        Contender("dinov2-reg", "Dinov2WithRegistersModel", _dinov2_registers, _pooled),
        Contender(
            "lastvit-cls-reg",
            "LastViT cls+reg4+LS",
            lambda s: _lastvit(s, pooling="cls", **REGISTERS),
            _pooled,
            peer="dinov2-reg",
        ),
        Contender(
            "lastvit-lazy-k1",
            "LastViT LazyStrike K=1 +reg4+LS",
            lambda s: _lastvit(s, pooling="lazystrike", lazystrike_top_k=1, **REGISTERS),
            _pooled,
            peer="dinov2-reg",
            heavy=False,
        ),
        Contender(
            "lastvit-lazy-khalf",
            "LastViT LazyStrike K=N/2 +reg4+LS",
            lambda s: _lastvit(
                s, pooling="lazystrike", lazystrike_top_k=None, lazystrike_top_k_ratio=0.5, **REGISTERS
            ),
            _pooled,
            peer="dinov2-reg",
            timed=False,
            train=False,
        ),
    )
}
PEER_PAIRS = (("lastvit-cls", "vit"), ("lastvit-cls-reg", "dinov2-reg"))
CONTROL = ("vit-2", "vit")
POOLERS = (("1", dict(lazystrike_top_k=1)), ("N/2", dict(lazystrike_top_k=None, lazystrike_top_k_ratio=0.5)))
"""The LazyStrike settings whose pooler is timed alone, on the final tokens of the CLS+reg4+LS model."""


def lazystrike_pooler(model: nn.Module, **options) -> nn.Module:
    """The pooler of `model`'s configuration with LazyStrike `options` (no second model needed)."""
    from modeling_lastvit.modeling_lastvit import LastViTPooler

    config = copy.deepcopy(model.config)
    for name, value in {"pooling": "lazystrike", **options}.items():
        setattr(config, name, value)
    return LastViTPooler(config)


def pooler_share(group: dict, k: str) -> float:
    """Share of a LazyStrike forward spent in the pooler: pooler / (CLS forward + pooler), in %."""
    pool_ms, cls_ms = _ms(group["times"][f"pool:K={k}"]), _ms(group["times"]["lastvit-cls-reg"])
    return 100 * pool_ms / (cls_ms + pool_ms)


def load_variants(path: str) -> list[Contender]:
    """Extra contenders from a Python file defining ``CONTENDERS``: a list of `Contender`s (e.g.
    prototypes of model changes, with `peer` naming the contender they should beat), timed in the same rounds."""
    import importlib.util

    if not Path(path).is_file():
        raise SystemExit(f"--variants: no Python file at {path!r}.")
    sys.modules.setdefault("bench_lastvit", sys.modules[__name__])  # the file's `import bench_lastvit` is this module
    spec = importlib.util.spec_from_file_location("lastvit_bench_variants", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    variants = getattr(module, "CONTENDERS", None)
    if not variants or not all(isinstance(v, Contender) for v in variants):
        raise SystemExit(f"--variants: {path} must define CONTENDERS, a non-empty list of bench_lastvit.Contender.")
    return list(variants)


def build_model(contender: Contender, shape: Shape, dtype: torch.dtype, train: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = contender.build(shape)
    model.set_attn_implementation("sdpa")
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"{contender.label} did not switch to sdpa attention.")
    return model.to(dtype).train(train)


def copy_peer_weights(lastvit: nn.Module, peer: nn.Module) -> None:
    """Load a ViTModel / Dinov2WithRegistersModel state dict into the matching LastViT (strict)."""
    renamed = {}
    for key, value in peer.state_dict().items():
        if key == "embeddings.mask_token":
            continue
        key = re.sub(r"^layers\.", "encoder.layer.", key)
        key = key.replace(".layernorm_before.", ".norm1.").replace(".layernorm_after.", ".norm2.")
        renamed[key] = value
    lastvit.load_state_dict(renamed, strict=True)


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
                dict(shape=shape.name, ours=ours, peer=peer, max_abs_diff=(expected - got).abs().max().item())
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
            step = _train_cell(model, torch.optim.AdamW(model.parameters(), lr=1e-4), CONTENDERS[key].feature, pixels)
            step()  # AdamW creates its state on the first step
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
                step()
            counts[key] = {e.key: e.count for e in profile.key_averages() if e.key.startswith("aten::")}
        differences = {
            op: (counts[peer].get(op, 0), counts[ours].get(op, 0))
            for op in sorted(set(counts[peer]) | set(counts[ours]))
            if counts[peer].get(op, 0) != counts[ours].get(op, 0)
        }
        rows.append(dict(shape=shape.name, ours=ours, peer=peer, ops=sum(counts[ours].values()),
                         peer_ops=sum(counts[peer].values()), differences=differences))
    return rows


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def round_robin(cells: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Time every cell `repeats` times, interleaved: each round runs every cell once, and the
    starting cell rotates from round to round, so drift and neighbours hit all cells alike."""
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
                start = time.perf_counter()
                cells[key]()
                times[key].append(time.perf_counter() - start)
            gc.collect()
    finally:
        gc.enable()
        gc.unfreeze()
    return times


def round_ratios(times: dict[str, list[float]], slower: str, faster: str) -> list[float]:
    """times[slower][r] / times[faster][r] for every round r (> 1: `faster` was faster in that round)."""
    return [a / b for a, b in zip(times[slower], times[faster])]


def paired_ratio(times: dict[str, list[float]], slower: str, faster: str) -> dict:
    """Median over rounds of the per-round ratio (> 1: `faster` is faster), with its range."""
    ratios = round_ratios(times, slower, faster)
    return dict(median=statistics.median(ratios), low=min(ratios), high=max(ratios))


def sgemm_cell(size: int) -> tuple[Callable[[], object], float]:
    a, b = torch.randn(size, size), torch.randn(size, size)
    return (lambda: torch.mm(a, b)), 2.0 * size**3


def approx_gflop(shape: Shape, batch: int) -> float:
    """Forward GFLOP of a plain ViT (2 FLOPs per multiply-add), to sort cheap groups from heavy ones."""
    tokens, dim = shape.num_patches + 1, shape.hidden_size
    per_layer = 8 * tokens * dim * dim + 4 * tokens * dim * shape.mlp_size + 4 * tokens * tokens * dim
    return batch * shape.num_layers * per_layer / 1e9


def forward_flops(model: nn.Module, shape: Shape, pixels: torch.Tensor) -> float:
    """Matmul/conv FLOPs counted by torch's FlopCounterMode plus the attention's 4*B*L*T^2*D
    (the counter does not see the CPU SDPA kernel)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        tokens = model(pixels).last_hidden_state.shape[1]
    return counter.get_total_flops() + 4.0 * pixels.shape[0] * shape.num_layers * tokens**2 * shape.hidden_size


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


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
                progress(f"inference {dtype_name} {shape.name} batch {batch}: {len(in_group)} models x {repeats} rounds")
                cells = {key: _forward_cell(model, pixels) for key, model in models.items() if key in in_group}
                sgemm_flops = None
                if dtype_name == "fp32":
                    cells["sgemm"], sgemm_flops = sgemm_cell(args.sgemm_size)
                # The pooler alone, on the real final tokens: what LazyStrike costs on top of a CLS readout.
                with torch.inference_mode():
                    final_tokens = models["lastvit-cls-reg"](pixels).last_hidden_state
                for k, pooler in poolers.items():
                    cells[f"pool:K={k}"] = _pooler_cell(pooler, final_tokens)
                with torch.inference_mode():
                    times = round_robin(cells, warmup, repeats)
                flops = {
                    key: forward_flops(model, shape, pixels[:1]) * batch for key, model in models.items() if key in in_group
                }
                groups.append(
                    dict(
                        dtype=dtype_name, shape=shape.name, batch=batch, repeats=repeats, times=times,
                        flops=flops, sgemm_flops=sgemm_flops,
                    )
                )
            del models
            gc.collect()
    return groups


def _forward_cell(model: nn.Module, pixels: torch.Tensor) -> Callable[[], object]:
    return lambda: model(pixels)


def _pooler_cell(pooler: nn.Module, final_tokens: torch.Tensor) -> Callable[[], object]:
    return lambda: pooler(final_tokens)


def bench_training(args, shapes, contenders, progress) -> list[dict]:
    """One step (forward, backward, AdamW) per contender, interleaved; loss = mean square of the global feature."""
    groups = []
    trainable = [c for c in contenders if c.train]
    for shape in shapes:
        for batch in args.train_batch_sizes:
            progress(f"training fp32 {shape.name} batch {batch}: {len(trainable)} models x {args.train_repeats} rounds")
            pixels = torch.randn(batch, 3, shape.image_size, shape.image_size)
            cells = {}
            for contender in trainable:
                model = build_model(contender, shape, torch.float32, train=True)
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
                cells[contender.key] = _train_cell(model, optimizer, contender.feature, pixels)
            times = round_robin(cells, args.warmup, args.train_repeats)
            groups.append(dict(dtype="fp32", shape=shape.name, batch=batch, repeats=args.train_repeats, times=times))
            del cells
            gc.collect()
    return groups


def _train_cell(model, optimizer, feature, pixels) -> Callable[[], object]:
    def step():
        loss = feature(model(pixels)).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


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
                checks[key] = dict(
                    compile_s=compile_s,
                    max_abs_diff=(got.pooler_output - expected.pooler_output).abs().max().item(),
                )
                cells[key] = _forward_cell(model, pixels)
                cells[f"compiled:{key}"] = _forward_cell(compiled, pixels)
            progress(f"compile {shape.name} batch {batch}: eager vs compiled x {args.repeats} rounds")
            with torch.inference_mode():
                times = round_robin(cells, args.warmup, args.repeats)
            groups.append(dict(shape=shape.name, batch=batch, repeats=args.repeats, times=times, checks=checks))
    return groups


# --------------------------------------------------------------------------------------------
# Peak memory, one fresh process per contender
# --------------------------------------------------------------------------------------------


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
    result = dict(params_mib=params_mib, peak_mib={}, method="VmHWM")
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


MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "1"}


def bench_memory(args, shapes, contenders, progress) -> list[dict]:
    from concurrent.futures import ThreadPoolExecutor

    specs = [
        dict(contender=c.key, shape=s.name, dtype=d, batches=args.batch_sizes, threads=args.threads,
             variants=args.variants)
        for d in args.memory_dtype
        for s in shapes
        for c in contenders
        if c.memory
    ]

    def run(spec):
        completed = subprocess.run(
            [sys.executable, __file__, "--memory-worker", json.dumps(spec)],
            capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, **MALLOC_ENV},
        )
        if completed.returncode:
            raise RuntimeError(f"memory worker {spec} failed:\n{completed.stderr[-3000:]}")
        return {**spec, **json.loads(completed.stdout.strip().splitlines()[-1])}

    progress(f"peak memory: {len(specs)} fresh processes, {args.memory_jobs} at a time")
    with ThreadPoolExecutor(args.memory_jobs) as pool:
        return list(pool.map(run, specs))


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def machine_info(args) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        names = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = names[0].strip() if names else cpu
    except OSError:
        pass
    import transformers

    return dict(
        cpu=cpu,
        logical_cpus=os.cpu_count(),
        threads=torch.get_num_threads(),
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        os=platform.platform(),
        bf16_matmul=bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()),
        loadavg_start=os.getloadavg(),
    )


def _fmt_ratio(r: dict | None) -> str:
    if r is None:
        return "–"
    return f"**{r['median']:.2f}×** ({r['low']:.2f}–{r['high']:.2f})"


def _ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def _cell_name(shape: str, batch: int) -> str:
    return f"{shape} b{batch}"


def build_report(args, info, parity, op_checks, inference, training, compiled, memory, contenders, elapsed) -> str:
    labels = {c.key: c.label for c in contenders}
    lines = []
    add = lines.append
    add("# LastViT speed and memory against transformers' ViT and DINOv2-with-registers\n")
    add(
        f"Generated by `benchmarks/bench_lastvit.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"in {elapsed / 60:.1f} min; every number below comes from this one run.\n"
    )
    add("```bash\n" + "python " + " ".join(_quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]]) + "\n```\n")
    add(
        f"**Machine.** {info['cpu']}, {info['logical_cpus']} logical CPUs, `torch.set_num_threads({info['threads']})`; "
        f"Python {info['python']}, torch {info['torch']}, transformers {info['transformers']}; {info['os']}. "
        f"bf16 matmul support (oneDNN): {'yes' if info['bf16_matmul'] else 'no'}. "
        f"Load average at start {info['loadavg_start'][0]:.2f}, at end {info['loadavg_end'][0]:.2f} "
        "(other jobs share the machine: absolute numbers are noisy, the interleaved ratios much less). "
        "No GPU was available for this run, so there are no H100/H200 or flash-attention figures.\n"
    )
    add(
        "**Method.** Contenders are timed in one process, round-robin (every round runs each once, the "
        f"starting contender rotates), after {args.warmup} warm-up round(s); times are medians. "
        "**Ratios** are the median over rounds of the per-round ratio *peer time / LastViT time* "
        "(> 1: LastViT faster), with the range over rounds in parentheses. All models use "
        "`attn_implementation=\"sdpa\"`; inference runs in eval mode under `torch.inference_mode()`. "
        "ViTModel is built with `add_pooling_layer=False` (its pooler is a dense+tanh that LastViT has not); "
        "it is compared with LastViT without registers or LayerScale, and Dinov2WithRegistersModel "
        "(4 registers, LayerScale, MLP ratio 4) with LastViT with 4 registers and LayerScale. "
        "Parity: with the peer's weights copied in, LastViT's `last_hidden_state` differs from the peer's by at most "
        + ", ".join(f"{p['max_abs_diff']:.1e} ({labels[p['ours']]} vs {p['peer']}, {p['shape']})" for p in parity)
        + "."
        + _op_check_sentence(op_checks, labels)
        + "\n"
    )

    summary = _summary_rows(args, inference, training, compiled, memory)
    if summary:
        add("## Summary\n")
        cells = sorted({c for row in summary for c in row[1]}, key=_cell_order)
        add("| | " + " | ".join(cells) + " |")
        add("|---|" + "---|" * len(cells))
        for name, values in summary:
            add(f"| {name} | " + " | ".join(values.get(c, "–") for c in cells) + " |")
        add("")
        add(_floors(args, inference, training, memory, compiled))

    if inference:
        add("## Inference throughput\n")
        add(
            "Images/s from the median time of a forward pass; *vs peer* is the paired ratio against the "
            "transformers model computing the same thing (ViTModel for `LastViT cls`, "
            "Dinov2WithRegistersModel for the others). GFLOP/s counts matmul/conv FLOPs (torch's "
            "FlopCounterMode) plus attention (4·B·L·T²·D); *% sgemm* divides it by the fp32 rate of a "
            f"{args.sgemm_size}² `torch.mm`, timed in the same rounds.\n"
        )
        add("| dtype | shape | batch | rounds | model | ms | images/s | vs peer | GFLOP/s | % sgemm |")
        add("|---|---|---|---|---|---|---|---|---|---|")
        for g in inference:
            sgemm_rate = g["sgemm_flops"] / statistics.median(g["times"]["sgemm"]) / 1e9 if g["sgemm_flops"] else None
            for key in g["flops"]:
                ms = _ms(g["times"][key])
                peer = _peer_of(key, contenders)
                ratio = paired_ratio(g["times"], peer, key) if peer and peer in g["times"] else None
                rate = g["flops"][key] / (ms / 1e3) / 1e9
                add(
                    f"| {g['dtype']} | {g['shape']} | {g['batch']} | {g['repeats']} | {labels[key]} | {ms:.1f} | "
                    f"{g['batch'] / (ms / 1e3):.1f} | {_fmt_ratio(ratio)} | {rate:.1f} | "
                    + (f"{100 * rate / sgemm_rate:.0f}% |" if sgemm_rate else "– |")
                )
            if sgemm_rate:
                add(f"| {g['dtype']} | {g['shape']} | {g['batch']} | {g['repeats']} | `torch.mm` {args.sgemm_size}² | "
                    f"{_ms(g['times']['sgemm']):.1f} | – | – | {sgemm_rate:.1f} | 100% |")
        add("")
        add("### LazyStrike pooling against CLS pooling\n")
        add(
            "*Pooler share*: the LazyStrike pooler alone, run on the final tokens of the CLS+reg4+LS model "
            "and timed in the same rounds, as a share of (CLS forward + pooler), both with 4 registers and "
            "LayerScale. *End to end* (K=1): (LazyStrike forward − CLS forward) / LazyStrike forward, "
            "from the two whole models; differences of a few % are within the noise of a shared machine, "
            "which is why the pooler is also timed alone.\n"
        )
        add("| dtype | shape | batch | K | pooler ms | pooler share | end-to-end share |")
        add("|---|---|---|---|---|---|---|")
        for g in inference:
            for k, _ in POOLERS:
                if f"pool:K={k}" not in g["times"]:
                    continue
                end_to_end = "–"
                if k == "1" and "lastvit-lazy-k1" in g["times"]:
                    fwd_ms, cls_ms = _ms(g["times"]["lastvit-lazy-k1"]), _ms(g["times"]["lastvit-cls-reg"])
                    end_to_end = f"{100 * (fwd_ms - cls_ms) / fwd_ms:+.1f}%"
                add(
                    f"| {g['dtype']} | {g['shape']} | {g['batch']} | {k} | {_ms(g['times'][f'pool:K={k}']):.2f} | "
                    f"{pooler_share(g, k):.2f}% | {end_to_end} |"
                )
        add("")

    if training:
        add("## Training step (forward + backward + AdamW, fp32)\n")
        add("Loss: mean square of the global feature (the CLS token for the peers).\n")
        add("| shape | batch | rounds | model | ms / step | images/s | vs peer |")
        add("|---|---|---|---|---|---|---|")
        for g in training:
            for key in g["times"]:
                ms = _ms(g["times"][key])
                peer = _peer_of(key, contenders)
                ratio = paired_ratio(g["times"], peer, key) if peer and peer in g["times"] else None
                add(
                    f"| {g['shape']} | {g['batch']} | {g['repeats']} | {labels[key]} | {ms:.0f} | "
                    f"{g['batch'] / (ms / 1e3):.1f} | {_fmt_ratio(ratio)} |"
                )
        add("")

    if memory:
        add("## Peak inference memory\n")
        method = memory[0].get("method", "VmHWM")
        add(
            "Each contender runs in a fresh Python process with glibc's mmap threshold fixed at 64 KiB "
            "(so RSS follows the live tensor buffers, not what the heap kept): build the model and the "
            "inputs, one warm-up forward, then per batch "
            + (
                "reset the kernel's peak-RSS counter (`/proc/self/clear_refs` ← 5), run one forward and read "
                "`VmHWM` minus the RSS before it"
                if method == "VmHWM"
                else "read `ru_maxrss` before and after one forward"
            )
            + ". That is the memory inference adds on top of the weights (activations, workspaces, outputs); "
            "the weights are listed apart. *vs peer* = peer MiB / LastViT MiB (≥ 1: LastViT uses no more).\n"
        )
        add("| dtype | shape | model | weights MiB | " + " | ".join(f"peak b{b} MiB | vs peer" for b in args.batch_sizes) + " |")
        add("|---|---|---|---|" + "---|---|" * len(args.batch_sizes))
        by_key = {(m["dtype"], m["shape"], m["contender"]): m for m in memory}
        for m in memory:
            peer = _peer_of(m["contender"], contenders)
            peer_row = by_key.get((m["dtype"], m["shape"], peer))
            cols = []
            for b in args.batch_sizes:
                mib = m["peak_mib"][str(b)]
                ratio = f"{peer_row['peak_mib'][str(b)] / mib:.2f}" if peer_row and mib > 0 else "–"
                cols.append(f"{mib:.1f} | {ratio}")
            add(f"| {m['dtype']} | {m['shape']} | {labels[m['contender']]} | {m['params_mib']:.1f} | " + " | ".join(cols) + " |")
        add("")

    if compiled:
        add("## torch.compile (inductor, fp32)\n")
        add("| shape | batch | model | compile s | max abs diff vs eager | eager ms | compiled ms | speed-up |")
        add("|---|---|---|---|---|---|---|---|")
        for g in compiled:
            for key, check in g["checks"].items():
                ratio = paired_ratio(g["times"], key, f"compiled:{key}")
                add(
                    f"| {g['shape']} | {g['batch']} | {labels[key]} | {check['compile_s']:.0f} | {check['max_abs_diff']:.1e} | "
                    f"{_ms(g['times'][key]):.1f} | {_ms(g['times'][f'compiled:{key}']):.1f} | {_fmt_ratio(ratio)} |"
                )
        add("")
    return "\n".join(lines)


def _peer_of(key: str, contenders: list[Contender]) -> str | None:
    for contender in contenders:
        if contender.key == key:
            return contender.peer
    return None


def _cell_order(cell: str):
    shape, batch = cell.rsplit(" b", 1)
    return (list(SHAPES).index(shape) if shape in SHAPES else 99, int(batch))


def _op_check_sentence(op_checks: list[dict], labels: dict) -> str:
    if not op_checks:
        return ""
    parts = []
    for row in op_checks:
        diff = "; ".join(f"`{op}` {a} vs {b}" for op, (a, b) in row["differences"].items()) or "none"
        parts.append(
            f"{labels[row['ours']]} {row['ops']} vs {labels[row['peer']]} {row['peer_ops']} "
            f"(ops whose counts differ, peer vs LastViT: {diff})"
        )
    return (
        f" One profiled training step ({op_checks[0]['shape']}, batch 1) launches these ATen op calls: "
        + ", ".join(parts)
        + ". Apart from the ops listed, LastViT's step launches the peer's kernels the same number of times."
    )


def _summary_rows(args, inference, training, compiled, memory) -> list[tuple[str, dict]]:
    rows = []
    for dtype in args.dtype:
        values = {
            _cell_name(g["shape"], g["batch"]): _fmt_ratio(paired_ratio(g["times"], CONTROL[1], CONTROL[0]))
            for g in inference
            if g["dtype"] == dtype and CONTROL[0] in g["times"]
        }
        if values:
            rows.append((f"A/A control {dtype}: ViTModel vs a 2nd ViTModel instance (ideal 1.00×)", values))
        for ours, peer in PEER_PAIRS:
            values = {
                _cell_name(g["shape"], g["batch"]): _fmt_ratio(paired_ratio(g["times"], peer, ours))
                for g in inference
                if g["dtype"] == dtype and ours in g["times"] and peer in g["times"]
            }
            if values:
                rows.append((f"inference {dtype}: {CONTENDERS[ours].label} vs {CONTENDERS[peer].label} (speed)", values))
    values = {
        _cell_name(g["shape"], g["batch"]): _fmt_ratio(paired_ratio(g["times"], CONTROL[1], CONTROL[0]))
        for g in training
        if CONTROL[0] in g["times"]
    }
    if values:
        rows.append(("A/A control training step fp32: ViTModel vs a 2nd ViTModel instance (ideal 1.00×)", values))
    for ours, peer in PEER_PAIRS:
        values = {
            _cell_name(g["shape"], g["batch"]): _fmt_ratio(paired_ratio(g["times"], peer, ours))
            for g in training
            if ours in g["times"] and peer in g["times"]
        }
        if values:
            rows.append((f"training step fp32: {CONTENDERS[ours].label} vs {CONTENDERS[peer].label} (speed)", values))
    for dtype in args.memory_dtype:
        for ours, peer in PEER_PAIRS:
            mem = {(m["shape"], m["contender"]): m for m in memory if m["dtype"] == dtype}
            values = {}
            for (shape, key), m in mem.items():
                if key == ours and (shape, peer) in mem:
                    for b in args.batch_sizes:
                        ours_mib, peer_mib = m["peak_mib"][str(b)], mem[(shape, peer)]["peak_mib"][str(b)]
                        values[_cell_name(shape, b)] = f"{peer_mib:.0f} / {ours_mib:.0f} MiB"
            if values:
                rows.append((f"peak memory {dtype}: {CONTENDERS[peer].label} / {CONTENDERS[ours].label}", values))
    for dtype in args.dtype:
        for k, _ in POOLERS:
            values = {
                _cell_name(g["shape"], g["batch"]): f"{pooler_share(g, k):.2f}%"
                for g in inference
                if g["dtype"] == dtype and f"pool:K={k}" in g["times"]
            }
            if values:
                rows.append((f"LazyStrike K={k} pooler share of the forward, {dtype}", values))
    values = {}
    for g in inference:
        if g["sgemm_flops"] and "lastvit-cls" in g["flops"]:
            sgemm_rate = g["sgemm_flops"] / statistics.median(g["times"]["sgemm"])
            rate = g["flops"]["lastvit-cls"] / statistics.median(g["times"]["lastvit-cls"])
            values[_cell_name(g["shape"], g["batch"])] = f"{rate / 1e9:.0f} GFLOP/s = {100 * rate / sgemm_rate:.0f}%"
    if values:
        rows.append(("LastViT cls fp32 forward: GFLOP/s, share of the sgemm rate", values))
    for key in ("lastvit-cls", "lastvit-lazy-k1"):
        values = {
            _cell_name(g["shape"], g["batch"]): _fmt_ratio(paired_ratio(g["times"], key, f"compiled:{key}"))
            for g in compiled
            if key in g["checks"]
        }
        if values:
            rows.append((f"torch.compile speed-up, {CONTENDERS[key].label} fp32", values))
    return rows


def median_interval(values: list[float], coverage: float = 0.9) -> tuple[float, float]:
    """Distribution-free interval for the median of `values` (sign test on order statistics): the
    narrowest pair (v[j], v[n-1-j]) covering the median with probability >= `coverage`; with too few
    values for that coverage, the full range."""
    ordered, n = sorted(values), len(values)

    def covers(j: int) -> float:  # P(v[j] <= median <= v[n-1-j]) = 1 - 2 P(Binomial(n, 1/2) <= j)
        return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(j + 1)) / 2**n

    j = 0
    while j + 1 <= (n - 1) // 2 and covers(j + 1) >= coverage:
        j += 1
    return ordered[j], ordered[n - 1 - j]


def speed_verdict(groups: list[dict], tolerance: float) -> dict | None:
    """Is LastViT (CLS pooling) at least as fast as its peers over `groups` (one section)?

    A single cell's median ratio moves by a few % between runs on a shared machine, so the lowest of
    many cells is mostly noise. The verdict therefore reads (1) the geometric mean over all cells of
    the LastViT/peer ratio, which must be at least 1 - max(`tolerance`, the A/A control's deviation
    pooled the same way), and (2) every cell alone: none may be slower beyond its 90% interval (the
    whole interval below 1). A real slowdown of a few % fails (1); one slow cell fails (2)."""
    cells, controls = [], []
    for g in groups:
        tag = f"{g.get('dtype', 'fp32')} {g['shape']} b{g['batch']}"
        if CONTROL[0] in g["times"]:
            controls.append(paired_ratio(g["times"], CONTROL[1], CONTROL[0])["median"])
        for ours, peer in PEER_PAIRS:
            if ours in g["times"] and peer in g["times"]:
                rounds = round_ratios(g["times"], peer, ours)
                low, high = median_interval(rounds)
                cells.append(dict(median=statistics.median(rounds), low=low, high=high,
                                  tag=f"{tag} vs {CONTENDERS[peer].label}"))
    if not cells:
        return None
    pooled = statistics.geometric_mean([c["median"] for c in cells])
    control = statistics.geometric_mean(controls) if controls else 1.0
    allowed = max(tolerance, abs(1.0 - control))
    slower = [c for c in cells if c["high"] < 1.0]
    return dict(pooled=pooled, control=control, allowed=allowed, cells=len(cells), slower=slower,
                worst=min(cells, key=lambda c: c["median"]), holds=pooled >= 1.0 - allowed and not slower)


def _floors(args, inference, training, memory, compiled) -> str:
    """The issue's floors, judged from this run's numbers."""
    out = [
        "**Floors** (judged by the script from the numbers above). LastViT and its peer run the same kernels "
        "on the same weights (outputs agree, see *Parity*), so their true speed ratio is 1, and a single "
        "cell's median moves by a few % between runs on a shared machine. A speed floor holds when (1) the "
        "geometric mean of the LastViT/peer ratios over all cells of the section is at least 1 − the "
        f"larger of `--tolerance` ({100 * args.tolerance:.0f}%) and the A/A control's deviation pooled the "
        "same way, and (2) no cell is slower beyond its 90% interval (sign-test interval of the median "
        "per-round ratio lying wholly below 1).\n"
    ]

    def speed_floor(groups, what):
        v = speed_verdict(groups, args.tolerance)
        if v is None:
            return
        worst = v["worst"]
        slower = "; ".join(f"{c['tag']} {c['median']:.3f}× ({c['low']:.2f}–{c['high']:.2f})" for c in v["slower"])
        out.append(
            f"- LastViT (CLS pooling) at least as fast as the peers, {what}: **{'holds' if v['holds'] else 'FAILS'}** "
            f"(geometric mean over {v['cells']} cells {v['pooled']:.3f}×, A/A control {v['control']:.3f}×, "
            f"allowed ≥ {1 - v['allowed']:.3f}×; lowest cell {worst['median']:.3f}×, {worst['tag']}, 90% interval "
            f"{worst['low']:.2f}–{worst['high']:.2f}; "
            + (f"slower beyond their interval: {slower})." if slower else "no cell slower beyond its interval).")
        )

    speed_floor(inference, "inference")
    speed_floor(training, "training")
    shares = [
        (pooler_share(g, k), f"{g['dtype']} b{g['batch']} K={k}")
        for g in inference
        if g["shape"] == "B/16"
        for k, _ in POOLERS
        if f"pool:K={k}" in g["times"]
    ]
    if shares:
        share, tag = max(shares)
        out.append(
            f"- LazyStrike adds ≤ 2% to a B/16-224 forward: **{'holds' if share <= 2.0 else 'FAILS'}** "
            f"(largest pooler share {share:.2f}%, {tag})."
        )
    if memory:
        mem = {(m["dtype"], m["shape"], m["contender"]): m for m in memory}
        worst = None
        for (dtype, shape, key), m in mem.items():
            for ours, peer in PEER_PAIRS:
                if key == ours and (dtype, shape, peer) in mem:
                    for b in args.batch_sizes:
                        excess = m["peak_mib"][str(b)] - mem[(dtype, shape, peer)]["peak_mib"][str(b)]
                        if worst is None or excess > worst[0]:
                            worst = (excess, f"{dtype} {shape} b{b} vs {CONTENDERS[peer].label}")
        if worst:
            excess, tag = worst
            out.append(
                f"- Peak inference memory no higher than the peers': **{'holds' if excess <= 1.0 else 'FAILS'}** "
                f"(largest excess {excess:+.1f} MiB, {tag}; RSS is counted in pages, so ±1 MiB is the resolution)."
            )
    if compiled:
        worst_diff = max(c["max_abs_diff"] for g in compiled for c in g["checks"].values())
        out.append(
            f"- `torch.compile` works and matches eager: **{'holds' if worst_diff < 1e-3 else 'FAILS'}** "
            f"(largest max-abs difference of the pooled feature {worst_diff:.1e}); "
            "also tested in `tests/test_compile.py`."
        )
    return "\n".join(out) + "\n"


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w./=,:+-]+", arg) else json.dumps(arg)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _csv(kind, choices=None):
    def parse(text: str):
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list, got nothing")
        try:
            items = [kind(item) for item in items]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
        if choices is not None:
            unknown = [item for item in items if item not in choices]
            if unknown:
                raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(choices)}")
        if kind is int and min(items) < 1:
            raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
        return items

    return parse


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


SECTIONS = ("inference", "training", "memory", "compile")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="smoke run in seconds: the tiny shape, batches 1,2, 2 rounds, every section but compile; "
                             "explicit flags still override")
    parser.add_argument("--shapes", type=_csv(str, list(SHAPES)), default=None,
                        help="comma-separated shapes: S/16, B/16 (224 px), tiny (32 px, for tests) [default: S/16,B/16]")
    parser.add_argument("--batch-sizes", type=_csv(int), default=None,
                        help="inference (and peak-memory) batch sizes [default: 1,16]")
    parser.add_argument("--dtype", type=_csv(str, list(DTYPES)), default=None,
                        help="inference dtypes: fp32, bf16 (bf16 only where the CPU has bf16 matmul) [default: fp32,bf16]")
    parser.add_argument("--repeats", type=_positive_int, default=None,
                        help="timed rounds per inference group (and for torch.compile) [default: 5]")
    parser.add_argument("--heavy-repeats", type=_positive_int, default=None,
                        help="timed rounds for inference groups above --heavy-gflop per forward; these skip the "
                             "warm-up round, as the same models already ran at a smaller batch [default: 3]")
    parser.add_argument("--heavy-gflop", type=float, default=300.0,
                        help="a group is heavy when one forward of the batch exceeds this many GFLOP "
                             "(S/16 b16: ~150, B/16 b16: ~560)")
    parser.add_argument("--light-repeats", type=_positive_int, default=None,
                        help="timed rounds for inference groups below --light-gflop per forward [default: 21]")
    parser.add_argument("--light-gflop", type=float, default=60.0,
                        help="a group is light when one forward of the batch is below this many GFLOP "
                             "(S/16 b1: ~9, B/16 b1: ~35)")
    parser.add_argument("--warmup", type=_positive_int, default=1, help="untimed warm-up rounds before each group")
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="timing noise allowed when judging the speed floors: the geometric mean of the "
                             "LastViT/peer ratios of a section must be at least 1 - tolerance (or 1 - the A/A "
                             "control's deviation, if larger)")
    parser.add_argument("--train-batch-sizes", type=_csv(int), default=None,
                        help="batch sizes of the training step [default: 4]")
    parser.add_argument("--train-repeats", type=_positive_int, default=None,
                        help="timed rounds per training group [default: 7]")
    parser.add_argument("--compile-shapes", type=_csv(str, list(SHAPES)), default=None,
                        help="shapes for the torch.compile section [default: S/16]")
    parser.add_argument("--compile-batch-sizes", type=_csv(int), default=None,
                        help="batch sizes for the torch.compile section [default: 1]")
    parser.add_argument("--sections", type=_csv(str, SECTIONS), default=None,
                        help=f"what to run, of {', '.join(SECTIONS)} [default: all; --quick: all but compile]")
    parser.add_argument("--memory-dtype", type=_csv(str, list(DTYPES)), default=["fp32"],
                        help="dtypes of the peak-memory section")
    parser.add_argument("--memory-jobs", type=_positive_int, default=2,
                        help="peak-memory processes run at once (memory is not a timing, so they may overlap)")
    parser.add_argument("--threads", type=_positive_int, default=1,
                        help="torch.set_num_threads for every process; 1 keeps a shared machine's numbers stable "
                             "(oversubscribed OpenMP threads stall), use the core count on an idle machine")
    parser.add_argument("--sgemm-size", type=_positive_int, default=None,
                        help="side of the fp32 torch.mm that gives the machine's matmul rate [default: 2048]")
    parser.add_argument("--variants", default=None,
                        help="Python file defining CONTENDERS (a list of bench_lastvit.Contender) to time as well, "
                             "e.g. prototypes of model changes")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "RESULTS.md"),
                        help="where to write the Markdown report")
    parser.add_argument("--json", default=None, help="also write the raw timings here")
    parser.add_argument("--no-progress", action="store_true", help="do not print progress lines to stderr")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    quick = dict(shapes=["tiny"], batch_sizes=[1, 2], dtype=["fp32", "bf16"], repeats=2, heavy_repeats=2, light_repeats=2,
                 train_batch_sizes=[2], train_repeats=2, compile_shapes=["tiny"], compile_batch_sizes=[2],
                 sections=["inference", "training", "memory"], sgemm_size=256)
    full = dict(shapes=["S/16", "B/16"], batch_sizes=[1, 16], dtype=["fp32", "bf16"], repeats=5, heavy_repeats=3,
                light_repeats=21,
                train_batch_sizes=[4], train_repeats=7, compile_shapes=["S/16"], compile_batch_sizes=[1],
                sections=list(SECTIONS), sgemm_size=2048)
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if "bf16" in args.dtype and not getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)():
        print("bf16 skipped: this CPU has no bf16 matmul support", file=sys.stderr)
        args.dtype = [d for d in args.dtype if d != "bf16"] or ["fp32"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_worker(json.loads(args.memory_worker))))
        return 0
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    shapes = [SHAPES[name] for name in args.shapes]
    contenders = list(CONTENDERS.values())
    if args.variants:
        contenders += load_variants(args.variants)

    def progress(message):
        if not args.no_progress:
            print(f"[{time.perf_counter() - started:6.0f}s] {message}", file=sys.stderr, flush=True)

    info = machine_info(args)
    progress(f"{info['cpu']}, {info['threads']} thread(s), torch {info['torch']}, load {info['loadavg_start'][0]:.2f}")
    parity = parity_checks(shapes)
    train_shapes = shapes if "training" in args.sections else []
    op_checks = [row for shape in train_shapes[:1] for row in training_op_check(shape)]
    memory = bench_memory(args, shapes, contenders, progress) if "memory" in args.sections else []
    inference = bench_inference(args, shapes, contenders, progress) if "inference" in args.sections else []
    training = bench_training(args, shapes, contenders, progress) if "training" in args.sections else []
    compile_shapes = [SHAPES[name] for name in args.compile_shapes]
    compiled = bench_compile(args, compile_shapes, progress) if "compile" in args.sections else []
    info["loadavg_end"] = os.getloadavg()
    elapsed = time.perf_counter() - started
    report = build_report(args, info, parity, op_checks, inference, training, compiled, memory, contenders, elapsed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    if args.json:
        Path(args.json).write_text(
            json.dumps(dict(args=vars(args), machine=info, parity=parity, training_ops=op_checks, inference=inference,
                            training=training, compile=compiled, memory=memory), indent=1, default=str)
        )
    print(report)
    progress(f"done in {elapsed / 60:.1f} min; report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
