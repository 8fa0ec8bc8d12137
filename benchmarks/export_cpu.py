"""CPU cost of the deployable LastViT: LazyStrike's FFT vs matmul low-pass, and eager vs torch.compile vs ONNX
Runtime (fp32 and int8) for ViT-S/16 and ViT-B/16 at 224 px with CLS and LazyStrike pooling.

Every section times its contenders in one process, interleaved round-robin (the starting contender rotates each
round, `benchmarks.harness.round_robin`), and reports medians and per-round paired ratios, so that the noise of a
shared machine hits all contenders alike. The script writes the report and its JSON itself; never edit them:

    python -m benchmarks.export_cpu                       # both sections -> benchmarks/RESULTS_EXPORT.md (+ .json)
    python -m benchmarks.export_cpu --sections lowpass    # only the FFT vs matmul cost
    python -m benchmarks.export_cpu --quick --out /tmp/export.md   # a tiny smoke run, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

from .harness import round_robin
from .report import machine_info, write_text
from .stats import ms, paired_ratio

REPO_ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("lowpass", "runtimes")


def lowpass_section(widths: list[int], num_patches: int, batch: int, repeats: int) -> list[dict]:
    """The whole LazyStrike pooling (K = 1, "repo" score) with the FFT and with the matmul low-pass, per width."""
    from modeling_lastvit.pooling_lastvit import _rfft_window, channel_highpass_matrix

    rows = []
    for dim in widths:
        tokens = torch.randn(batch, num_patches, dim)
        highpass = channel_highpass_matrix(dim, math.sqrt(dim))
        window = _rfft_window(dim, math.sqrt(dim), None, torch.float32)
        cells = _lowpass_cells(tokens, highpass, window)
        with torch.inference_mode():
            times = round_robin(cells, warmup=2, repeats=repeats)
        rows.append(
            {
                "hidden_size": dim,
                "num_patches": num_patches,
                "batch": batch,
                "fft_ms": ms(times["fft"]),
                "matmul_ms": ms(times["matmul"]),
                "matmul_over_fft": paired_ratio(times, "matmul", "fft"),
                "fft_filter_ms": ms(times["fft filter"]),
                "matmul_filter_ms": ms(times["matmul filter"]),
                "filter_matmul_over_fft": paired_ratio(times, "matmul filter", "fft filter"),
            }
        )
    return rows


def _lowpass_cells(tokens, highpass, window) -> dict:
    from modeling_lastvit.pooling_lastvit import _lowpass, lazystrike_pool

    return {
        "fft": lambda: lazystrike_pool(tokens, top_k=1, lowpass="fft", return_indices=False),
        "matmul": lambda: lazystrike_pool(tokens, top_k=1, lowpass="matmul", highpass=highpass, return_indices=False),
        "fft filter": lambda: _lowpass(tokens, window) - tokens,
        "matmul filter": lambda: tokens @ highpass,
    }


RUNTIMES = ("eager", "eager matmul", "compile", "ort fp32", "ort int8")
SHAPE_ROUNDS = {"S/16": {1: 9, 16: 3}, "B/16": {1: 5, 16: 2}, "tiny": {1: 2, 2: 2}}


def _models(shape, workdir: Path, compile: bool = True) -> dict:
    """Per pooling, the callables that are timed: eager (CPU default low-pass: the FFT), eager with the matmul
    low-pass, torch.compile (inductor, dynamic=True: one graph for both batch sizes), ONNX Runtime fp32 and int8
    (dynamic quantisation). All share one set of random weights."""
    from lastvit.export import export_onnx, onnx_session, quantize_int8, run_onnx
    from modeling_lastvit import LastViTConfig, LastViTForImageClassification

    common = dict(
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        intermediate_size=shape.mlp_size,
        num_labels=1000,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    base = LastViTForImageClassification(LastViTConfig(pooling="cls", **common)).eval()
    weights = base.state_dict()
    threads = torch.get_num_threads()
    cells = {}
    for pooling in ("cls", "lazystrike"):
        example = torch.randn(2, 3, shape.image_size, shape.image_size)
        variants = {"eager": "auto", "eager matmul": "matmul"} if pooling == "lazystrike" else {"eager": "auto"}
        for name, lowpass in variants.items():
            model = LastViTForImageClassification(LastViTConfig(pooling=pooling, lazystrike_lowpass=lowpass, **common))
            model.load_state_dict(weights, assign=True)  # the same tensors: no second copy of the weights
            cells[(pooling, name)] = model.eval()
        model = cells[(pooling, "eager")]
        if compile:
            cells[(pooling, "compile")] = torch.compile(model, dynamic=True)
        fp32 = export_onnx(model, workdir / f"{pooling}.onnx", example)
        int8 = quantize_int8(fp32, workdir / f"{pooling}.int8.onnx")
        for name, path in (("ort fp32", fp32), ("ort int8", int8)):
            session = onnx_session(path, threads=threads)
            cells[(pooling, name)] = lambda pixels, session=session: run_onnx(session, pixels)["logits"]
    return cells


def _cell(call, pixels):
    return lambda: _logits(call, pixels)


def _logits(call, pixels):
    output = call(pixels)
    return output if isinstance(output, torch.Tensor) else output.logits


def runtimes_section(
    shape_names: list[str],
    batches: dict[str, list[int]],
    rounds: dict | None = None,
    compile_shapes: tuple[str, ...] = (),
    on_group=None,
) -> list[dict]:
    """Batch-1 latency and batch-16 throughput of every runtime, CLS and LazyStrike, one group per shape and batch
    (interleaved rounds); plus each runtime's largest logit difference from eager at batch 2. `on_group(groups)` is
    called after each group (the report is rewritten as it grows)."""
    import tempfile

    from .contenders import SHAPES

    groups = []
    for shape_name in shape_names:
        shape = SHAPES[shape_name]
        with tempfile.TemporaryDirectory() as workdir, torch.inference_mode():
            started = time.perf_counter()
            models = _models(shape, Path(workdir), compile=shape_name in compile_shapes)
            check = torch.randn(2, 3, shape.image_size, shape.image_size)
            reference = {p: _logits(models[(p, "eager")], check) for p in ("cls", "lazystrike")}
            differences = {
                f"{pooling} {name}": (_logits(call, check) - reference[pooling]).abs().max().item()
                for (pooling, name), call in models.items()
            }
            setup_s = time.perf_counter() - started
            for batch in batches[shape_name]:
                pixels = torch.randn(batch, 3, shape.image_size, shape.image_size)
                cells = {f"{p} {n}": _cell(call, pixels) for (p, n), call in models.items()}
                repeats = (rounds or SHAPE_ROUNDS.get(shape_name, {})).get(batch, 3)
                times = round_robin(cells, warmup=1, repeats=repeats)
                groups.append(
                    {
                        "shape": shape_name,
                        "batch": batch,
                        "rounds": repeats,
                        "setup_s": setup_s,
                        "max_abs_logit_difference": differences,
                        "ms": {key: ms(values) for key, values in times.items()},
                        "speedup_vs_eager": {
                            key: paired_ratio(times, f"{key.split()[0]} eager", key)
                            for key in times
                            if key.split(" ", 1)[1] != "eager"
                        },
                        "lazystrike_over_cls": {
                            label: paired_ratio(times, f"lazystrike {a}", f"cls {b}")
                            for label, a, b in (
                                ("eager (FFT)", "eager", "eager"),
                                ("eager matmul", "eager matmul", "eager"),
                                ("compile", "compile", "compile"),
                                ("ort fp32", "ort fp32", "ort fp32"),
                            )
                            if f"cls {b}" in times
                        },
                    }
                )
                if on_group:
                    on_group(groups)
            del models
    return groups


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("torch", "transformers", "onnx", "onnxruntime", "onnxscript"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def build_report(results: dict) -> str:
    """The Markdown report of `results` (the JSON `main` writes): header, low-pass and runtimes sections."""
    return "\n".join(_report_header(results) + _lowpass_table(results) + _runtimes_tables(results)) + "\n"


def _report_header(results: dict) -> list[str]:
    """The title and the machine: commit, date, command, CPU, threads, load and package versions."""
    info = results["machine"]
    return [
        "# LastViT export: CPU cost (generated by `python -m benchmarks.export_cpu`; do not edit)",
        "",
        f"Commit `{results['commit']}`, {results['date']}, {results['elapsed_s']:.0f} s. "
        + f"Command: `{results['command']}`.",
        f"CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs, {info['threads']} torch threads; load average at "
        f"start {', '.join(f'{v:.1f}' for v in info['loadavg_start'])}); "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v),
        "",
        "Medians over interleaved rounds; ratios are medians of per-round paired ratios (range in brackets).",
        "",
    ]


def _lowpass_table(results: dict) -> list[str]:
    """The low-pass section: FFT against matmul, the filter alone and the whole pooling."""
    if not results.get("lowpass"):
        return []
    out = [
        "## LazyStrike low-pass: FFT vs matmul (fp32)",
        "",
        "The filter alone (x_hat - x) and the whole pooling (filter, score, arg-max, gather; K = 1).",
        "",
        "| D | N | batch | filter: FFT ms | matmul ms | matmul / FFT | pooling: FFT ms | matmul ms | matmul / FFT |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["lowpass"]:
        f, r = row["filter_matmul_over_fft"], row["matmul_over_fft"]
        out.append(
            f"| {row['hidden_size']} | {row['num_patches']} | {row['batch']} | {row['fft_filter_ms']:.2f} | "
            f"{row['matmul_filter_ms']:.2f} | {f['median']:.2f} [{f['low']:.2f}, {f['high']:.2f}] | "
            f"{row['fft_ms']:.2f} | {row['matmul_ms']:.2f} | {r['median']:.2f} [{r['low']:.2f}, {r['high']:.2f}] |"
        )
    return out + [""]


def _runtime_row(group: dict, runtime: str) -> str:
    """One runtime's row of a (shape, batch) group: time and speed-up for CLS and LazyStrike, |Δ logits|."""
    batch = group["batch"]
    cells = []
    for pooling in ("cls", "lazystrike"):
        key = f"{pooling} {runtime}"
        if key not in group["ms"]:
            cells += ["–", "–"]
            continue
        value = group["ms"][key]
        cells.append(f"{value:.1f} ms" if batch == 1 else f"{1e3 * batch / value:.1f} img/s")
        r = group["speedup_vs_eager"].get(key)
        cells.append(f"{r['median']:.2f} [{r['low']:.2f}, {r['high']:.2f}]" if r else "1")
    diff = group["max_abs_logit_difference"]
    diffs = " / ".join(
        f"{diff[f'{p} {runtime}']:.1e}" if f"{p} {runtime}" in diff else "–" for p in ("cls", "lazystrike")
    )
    return f"| {group['shape']} | {batch} | {runtime} | " + " | ".join(cells) + f" | {diffs} |"


def _runtimes_tables(results: dict) -> list[str]:
    """The runtimes section: speed and speed-up of each runtime, then LazyStrike's cost over CLS."""
    if not results.get("runtimes"):
        return []
    out = [
        "## Runtimes: eager vs torch.compile vs ONNX Runtime (fp32, int8), 224 px",
        "",
        (
            "Batch 1: latency (ms per call); larger batches: throughput (images/s). Speed-up = the eager time of "
            "the same pooling / this runtime's, per round (> 1: faster than eager). Eager LazyStrike uses the CPU "
            "default low-pass (FFT); `eager matmul` the FFT-free one. torch.compile: inductor, `dynamic=True`. "
            "ONNX: the dynamo exporter; int8: onnxruntime dynamic quantisation (weights int8). "
            "|Δ logits| is the largest difference from eager at batch 2 (random weights)."
        ),
        "",
        "| model | batch | runtime | CLS | speed-up | LazyStrike K=1 | speed-up | |Δ logits| CLS / LazyStrike |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for group in results["runtimes"]:
        out += [_runtime_row(group, runtime) for runtime in RUNTIMES]
    out += [
        "",
        "LazyStrike's cost: time with LazyStrike / time with CLS, same runtime (1.02 = +2%).",
        "",
        "| model | batch | eager (FFT) | eager matmul | compile | ORT fp32 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for group in results["runtimes"]:
        ratios = group["lazystrike_over_cls"]
        cells = [ratios.get(k) for k in ("eager (FFT)", "eager matmul", "compile", "ort fp32")]
        out.append(
            f"| {group['shape']} | {group['batch']} | "
            + " | ".join(f"{r['median']:.3f} [{r['low']:.2f}, {r['high']:.2f}]" if r else "–" for r in cells)
            + " |"
        )
    return out + [""]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {SECTIONS}")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run: small widths, 2 rounds")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per lowpass cell (default: 9)")
    parser.add_argument("--shapes", default="S/16,B/16", help="runtimes: comma-separated shapes (default S/16,B/16)")
    parser.add_argument("--batches", default="1,16", help="runtimes: batch sizes (default 1,16)")
    parser.add_argument(
        "--batch1-only", default="", help="runtimes: shapes timed at batch 1 only (a short run on a slow machine)"
    )
    parser.add_argument(
        "--compile-shapes", default="S/16,B/16", help="runtimes: shapes that also time torch.compile (default: all)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch and onnxruntime threads (default 1: stable on a shared machine)"
    )
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "RESULTS_EXPORT.md"))
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    args.shapes, args.batch1_only, args.compile_shapes = (
        [s.strip() for s in text.split(",") if s.strip()]
        for text in (args.shapes, args.batch1_only, args.compile_shapes)
    )
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = {
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python -m benchmarks.export_cpu", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(args),
        "versions": package_versions(),
    }
    if "lowpass" in args.sections:
        widths, patches, batch = ([32, 64], 16, 2) if args.quick else ([384, 768, 1024], 196, 16)
        results["lowpass"] = lowpass_section(widths, patches, batch, args.repeats or (2 if args.quick else 9))
    out = Path(args.out)

    def save(groups=None):
        if groups is not None:
            results["runtimes"] = groups
        results["elapsed_s"] = time.perf_counter() - start
        write_text(out, build_report(results))
        write_text(out.with_suffix(".json"), json.dumps(results, indent=2) + "\n")

    save()
    if "runtimes" in args.sections:
        if args.quick:
            shapes, batches, compile_shapes = ["tiny"], {"tiny": [1, 2]}, ["tiny"]
        else:
            shapes = args.shapes
            batches = {shape: args.batches for shape in shapes}
            for shape in args.batch1_only:
                batches[shape] = [1]
            compile_shapes = args.compile_shapes
        results["compile_shapes"] = list(compile_shapes)
        runtimes_section(shapes, batches, compile_shapes=tuple(compile_shapes), on_group=save)
    save()
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
