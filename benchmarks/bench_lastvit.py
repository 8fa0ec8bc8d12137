"""Speed and memory of LastViT against transformers' ViTModel and Dinov2WithRegistersModel (and timm's
VisionTransformer on the GPU).

One process times every contender, interleaved round-robin (the order rotates each round), after
warm-up, and reports medians and per-round paired ratios; CPU peak memory is read in a fresh
subprocess per contender. The script writes the Markdown report itself (``--out``). Run it from the
repository root:

    python -m benchmarks.bench_lastvit                      # the CPU run behind RESULTS.md
    python -m benchmarks.bench_lastvit --quick --out /tmp/quick.md   # a tiny smoke run, seconds
    python -m benchmarks.bench_lastvit --device cuda        # the GPU section, into RESULTS_GPU.md

Contenders at each shape (ViT-S/16: 384 wide, 6 heads, 12 layers, MLP 1536; ViT-B/16: 768, 12,
12, 3072; ViT-L/16: 1024, 16, 24, 4096; all at 224 px), all with ``attn_implementation="sdpa"``
(on the GPU also flash attention where installed), in eval mode and ``torch.inference_mode`` for
inference:

- ``ViTModel`` (``add_pooling_layer=False``: its pooler is an extra dense+tanh layer that LastViT
  does not have) against ``LastViT cls`` (no registers, no LayerScale): the same computation,
  checked by copying the peer's weights and comparing outputs;
- ``Dinov2WithRegistersModel`` (4 registers, LayerScale, ``mlp_ratio=4``) against ``LastViT
  cls+reg4+LS``, checked the same way;
- ``LastViT LazyStrike`` with 4 registers and LayerScale, K=1 and K=N/2, to price the pooling;
- on the GPU, timm's ``VisionTransformer`` (when timm imports) against ``LastViT cls``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

try:
    from .contenders import CONTENDERS, DTYPES, GPU_DTYPES, SHAPES, load_variants
except ImportError as error:  # run as a file: the package's modules are not importable that way
    if __package__:
        raise
    raise SystemExit(
        "benchmarks is a package: run the benchmark from the repository root as "
        "`python -m benchmarks.bench_lastvit " + " ".join(sys.argv[1:]) + "`"
    ) from error

REPO_ROOT = Path(__file__).resolve().parent.parent
CPU_SECTIONS = ("inference", "training", "memory", "compile")
SECTIONS = CPU_SECTIONS + ("gpu",)


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


QUICK = {
    "shapes": ["tiny"], "batch_sizes": [1, 2], "dtype": ["fp32", "bf16"],
    "repeats": 2, "heavy_repeats": 2, "light_repeats": 2, "train_batch_sizes": [2], "train_repeats": 2,
    "compile_shapes": ["tiny"], "compile_batch_sizes": [2], "sections": ["inference", "training", "memory"],
    "sgemm_size": 256,
    "gpu_shapes": ["tiny"], "gpu_batch_sizes": [1, 2], "gpu_dtype": ["bf16", "fp16"], "gpu_train_batch_sizes": [2],
    "gpu_repeats": 2, "gpu_latency_repeats": 2, "gpu_train_repeats": 2, "gpu_warmup": 1, "gemm_size": 256,
}  # fmt: skip
FULL = {
    "shapes": ["S/16", "B/16"], "batch_sizes": [1, 16], "dtype": ["fp32", "bf16"],
    "repeats": 5, "heavy_repeats": 3, "light_repeats": 21, "train_batch_sizes": [4], "train_repeats": 7,
    "compile_shapes": ["S/16"], "compile_batch_sizes": [1], "sections": list(CPU_SECTIONS),
    "sgemm_size": 2048,
    "gpu_shapes": ["B/16", "L/16"], "gpu_batch_sizes": [1, 64, 256], "gpu_dtype": ["bf16", "fp16"],
    "gpu_train_batch_sizes": [64, 256], "gpu_repeats": 10, "gpu_latency_repeats": 50, "gpu_train_repeats": 10,
    "gpu_warmup": 3, "gemm_size": 8192,
}  # fmt: skip


SHAPE_LIST, INT_LIST, POSITIVE = _csv(str, list(SHAPES)), _csv(int), _positive_int
# (flag, type, default, help) of the options but --quick, --device and --no-progress, in --help's order;
# a None default comes from QUICK or FULL (the [default: ...] in its help is FULL's)
OPTIONS = (
    ("--shapes", SHAPE_LIST, None,
     "comma-separated shapes: S/16, B/16, L/16 (224 px), tiny (32 px, for tests) [default: S/16,B/16]"),
    ("--batch-sizes", INT_LIST, None, "inference (and peak-memory) batch sizes [default: 1,16]"),
    ("--dtype", _csv(str, list(DTYPES)), None,
     "inference dtypes: fp32, bf16 (bf16 only where the CPU has bf16 matmul) [default: fp32,bf16]"),
    ("--repeats", POSITIVE, None, "timed rounds per inference group (and for torch.compile) [default: 5]"),
    ("--heavy-repeats", POSITIVE, None,
     ("timed rounds for inference groups above --heavy-gflop per forward; these skip the "
      "warm-up round, as the same models already ran at a smaller batch [default: 3]")),
    ("--heavy-gflop", float, 300.0,
     "a group is heavy when one forward of the batch exceeds this many GFLOP (S/16 b16: ~150, B/16 b16: ~560)"),
    ("--light-repeats", POSITIVE, None,
     "timed rounds for inference groups below --light-gflop per forward [default: 21]"),
    ("--light-gflop", float, 60.0,
     "a group is light when one forward of the batch is below this many GFLOP (S/16 b1: ~9, B/16 b1: ~35)"),
    ("--warmup", POSITIVE, 1, "untimed warm-up rounds before each group"),
    ("--tolerance", float, 0.01,
     ("timing noise allowed when judging the speed floors: the geometric mean of the "
      "LastViT/peer ratios of a section must be at least 1 - tolerance (or 1 - the A/A "
      "control's deviation, if larger)")),
    ("--train-batch-sizes", INT_LIST, None, "batch sizes of the training step [default: 4]"),
    ("--train-repeats", POSITIVE, None, "timed rounds per training group [default: 7]"),
    ("--compile-shapes", SHAPE_LIST, None, "shapes for the torch.compile section [default: S/16]"),
    ("--compile-batch-sizes", INT_LIST, None, "batch sizes for the torch.compile section [default: 1]"),
    ("--sections", _csv(str, SECTIONS), None,
     (f"what to run, of {', '.join(SECTIONS)} [default: --device cpu: all but gpu (--quick: all but "
     "compile and gpu); --device cuda: gpu]. gpu with --device cpu runs the GPU section's logic on the "
     "CPU (wall clock, no CUDA memory): a test, its numbers mean nothing")),
    ("--memory-dtype", _csv(str, list(DTYPES)), ["fp32"], "dtypes of the peak-memory section"),
    ("--memory-jobs", POSITIVE, 2, "peak-memory processes run at once (memory is not a timing, so they may overlap)"),
    ("--threads", POSITIVE, 1,
     ("torch.set_num_threads for every process; 1 keeps a shared machine's numbers stable "
      "(oversubscribed OpenMP threads stall), use the core count on an idle machine")),
    ("--sgemm-size", POSITIVE, None, "side of the fp32 torch.mm that gives the machine's matmul rate [default: 2048]"),
)  # fmt: skip
GPU_OPTIONS = (
    ("--gpu-shapes", SHAPE_LIST, None, "[default: B/16,L/16]"),
    ("--gpu-batch-sizes", INT_LIST, None, "inference batches [default: 1,64,256]"),
    ("--gpu-dtype", _csv(str, list(GPU_DTYPES)), None, "weights and inputs, inference and training [default: bf16,fp16]"),
    ("--attn", _csv(str), None,
     ("attention implementations of the inference groups (the training step uses the first); "
      "contenders that cannot run one are listed as skipped [default: sdpa, plus "
      "flash_attention_2 where flash-attn is installed]")),
    ("--gpu-train-batch-sizes", INT_LIST, None,
     "training-step batches; a group that runs out of memory is reported as such [default: 64,256]"),
    ("--gpu-repeats", POSITIVE, None, "timed rounds per group [default: 10]"),
    ("--gpu-latency-repeats", POSITIVE, None,
     "timed rounds of the batch-1 groups, whose calls are short and noisy [default: 50]"),
    ("--gpu-train-repeats", POSITIVE, None, "timed rounds per training group [default: 10]"),
    ("--gpu-warmup", POSITIVE, None, "untimed rounds before each group (kernel selection, allocator) [default: 3]"),
    ("--gemm-size", POSITIVE, None,
     "side of the square matmul whose rate, in each dtype, is the card's limit [default: 8192]"),
)  # fmt: skip


OUTPUT_OPTIONS = (
    ("--variants", None, None,
     ("Python file defining CONTENDERS (a list of benchmarks.contenders.Contender) to time as well, "
      "e.g. prototypes of model changes")),
    ("--out", None, None,
     ("where to write the Markdown report [default: benchmarks/RESULTS.md; --device cuda: "
      "benchmarks/RESULTS_GPU.md]")),
    ("--json", None, None, "also write the raw timings here"),
)  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run in seconds: the tiny shape, batches 1,2, 2 rounds, every section but compile; "
        "explicit flags still override",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cpu: the CPU sections; cuda: the GPU section (CUDA events, CUDA peak memory)",
    )
    gpu = parser.add_argument_group("GPU section (--device cuda)")
    for group, options in ((parser, OPTIONS), (gpu, GPU_OPTIONS), (parser, OUTPUT_OPTIONS)):
        for flag, kind, default, text in options:
            group.add_argument(flag, type=kind, default=default, help=text)
    parser.add_argument("--no-progress", action="store_true", help="do not print progress lines to stderr")
    args = parser.parse_args(argv)
    return _complete(parser, args)


def _complete(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on --quick and --device, and check the flags fit the machine."""
    import torch

    sections_given = args.sections is not None
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA device here; run the CPU sections with --device cpu.")
        if not sections_given:
            args.sections = ["gpu"]
        cpu_asked = [s for s in args.sections if s in CPU_SECTIONS]
        if cpu_asked:
            parser.error(f"--sections {','.join(cpu_asked)} run on the CPU: drop them, or use --device cpu.")
    elif "bf16" in args.dtype and not getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)():
        print("bf16 skipped: this CPU has no bf16 matmul support", file=sys.stderr)
        args.dtype = [d for d in args.dtype if d != "bf16"] or ["fp32"]
    if args.out is None:
        name = "RESULTS_GPU.md" if args.device == "cuda" else "RESULTS.md"
        args.out = str(REPO_ROOT / "benchmarks" / name)
    if args.attn is None:
        from .gpu import attn_implementations

        args.attn = attn_implementations(args.device)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from .contenders import SHAPES as shapes_by_name
    from .cpu import bench_compile, bench_inference, bench_training, parity_checks, training_op_check
    from .memory import bench_memory
    from .report import build_report, machine_info, report_json, write_text

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    shapes = [shapes_by_name[name] for name in args.shapes]
    contenders = list(CONTENDERS.values())
    if args.variants:
        contenders += load_variants(args.variants)

    def progress(message):
        if not args.no_progress:
            print(f"[{time.perf_counter() - started:6.0f}s] {message}", file=sys.stderr, flush=True)

    info = machine_info(args)
    progress(f"{info['cpu']}, {info['threads']} thread(s), torch {info['torch']}, load {info['loadavg_start'][0]:.2f}")
    cpu = gpu = None
    if any(section in CPU_SECTIONS for section in args.sections):
        cpu = {"parity": parity_checks(shapes)}
        train_shapes = shapes if "training" in args.sections else []
        cpu["training_ops"] = [row for shape in train_shapes[:1] for row in training_op_check(shape)]
        cpu["memory"] = bench_memory(args, shapes, contenders, progress) if "memory" in args.sections else []
        cpu["inference"] = bench_inference(args, shapes, contenders, progress) if "inference" in args.sections else []
        cpu["training"] = bench_training(args, shapes, contenders, progress) if "training" in args.sections else []
        compile_shapes = [shapes_by_name[name] for name in args.compile_shapes]
        cpu["compile"] = bench_compile(args, compile_shapes, progress) if "compile" in args.sections else []
    if "gpu" in args.sections:
        from .gpu import bench_gpu

        gpu = bench_gpu(args, contenders, progress)
    info["loadavg_end"] = os.getloadavg()
    elapsed = time.perf_counter() - started
    reports, raw = [], {"args": vars(args), "machine": info}
    if cpu is not None:
        reports.append(build_report(args, info, cpu, contenders, elapsed))
        raw.update({key: cpu[key] for key in ("parity", "training_ops", "inference", "training", "compile", "memory")})
        raw.update(report_json(args, cpu["inference"], cpu["training"], cpu["compile"], cpu["memory"]))
    if gpu is not None:
        from .report_gpu import build_gpu_report, gpu_report_json

        reports.append(build_gpu_report(args, gpu, elapsed, standalone=not reports))
        raw["gpu"] = {**gpu, **gpu_report_json(args, gpu)}
    report = "\n".join(reports)
    write_text(args.out, report)
    if args.json:
        write_text(args.json, json.dumps(raw, indent=1, default=str))
    print(report)
    progress(f"done in {elapsed / 60:.1f} min; report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
