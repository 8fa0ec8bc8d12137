"""The Markdown report of the GPU section: device and limits, summary, the floors of the GPU issue, and
the tables of inference, LazyStrike and training."""

from __future__ import annotations

import statistics

from .contenders import CONTROL, GPU_PEER_PAIRS, POOLERS
from .report import cell_name, cell_order, fmt_ratio, holds_word, report_header
from .stats import ms, paired_ratio, pooler_share, speed_verdict

WHOLE_LAZYSTRIKE = {"1": "lastvit-lazy-k1", "N/2": "lastvit-lazy-khalf"}
"""The whole LazyStrike model of each pooler setting, timed against `lastvit-cls-reg` (same model, CLS pooling)."""


def _tflops(group: dict, key: str) -> float:
    return group["flops"][key] / statistics.median(group["times"][key]) / 1e12


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def lazystrike_cost(group: dict, k: str) -> float | None:
    """Median per-round (LazyStrike model time / CLS model time) − 1, in %: what LazyStrike adds."""
    whole = WHOLE_LAZYSTRIKE[k]
    if whole not in group["times"] or "lastvit-cls-reg" not in group["times"]:
        return None
    return 100 * (paired_ratio(group["times"], whole, "lastvit-cls-reg")["median"] - 1)


def _judged(groups: list[dict], args) -> list[dict]:
    """The groups the LazyStrike floors are judged on: B/16 in bf16 with the first attention (sdpa), as
    the issue states them, else the run's first shape and dtype (a test run on the tiny shape)."""
    shape = "B/16" if any(g["shape"] == "B/16" for g in groups) else (groups[0]["shape"] if groups else None)
    dtype = "bf16" if "bf16" in args.gpu_dtype else args.gpu_dtype[0]
    return [g for g in groups if g["shape"] == shape and g["dtype"] == dtype and g["attn"] == args.attn[0]]


def gpu_report_json(args, gpu: dict) -> dict:
    """What the GPU section's summary and floors say, as data (as `report.report_json`)."""
    return {
        "summary": [{"row": name, "cells": values} for name, values in _summary(args, gpu)],
        "floors": [{"floor": v["floor"], "holds": v["holds"]} for v in gpu_floor_verdicts(args, gpu)],
    }


def _floors(args, gpu: dict) -> list[str]:
    intro = (
        "**Floors** (the GPU issue's targets, judged by the script from the numbers above; speed floors "
        "as in the CPU report: geometric mean of the LastViT/peer ratios ≥ 1 − max(`--tolerance`, A/A "
        "deviation) and no cell slower beyond its 90% sign-test interval).\n"
    )
    return [intro] + [v["text"] for v in gpu_floor_verdicts(args, gpu)]


def _verdict(floor: str, holds: bool, text: str) -> dict:
    return {"floor": floor, "holds": holds, "text": text}


def _speed_floor(args, labels, groups, pairs, floor: str, what: str) -> dict | None:
    v = speed_verdict(groups, args.tolerance, pairs, labels)
    if v is None:
        return None
    worst = v["worst"]
    return _verdict(
        floor,
        v["holds"],
        f"- {what}: {holds_word(v['holds'])} (geometric mean over {v['cells']} cells "
        f"{v['pooled']:.3f}×, A/A control {v['control']:.3f}×, allowed ≥ {1 - v['allowed']:.3f}×; lowest "
        f"cell {worst['median']:.3f}×, {worst['tag']}, 90% interval {worst['low']:.2f}–{worst['high']:.2f}; "
        f"{len(v['slower'])} cell(s) slower beyond their interval).",
    )


def gpu_floor_verdicts(args, gpu: dict) -> list[dict]:
    """Each GPU floor this run can judge: ``{"floor": its name, "holds": bool, "text": the report's line}``."""
    labels, inference, training = gpu["labels"], gpu["inference"], gpu["training"]
    batch1 = [g for g in inference if g["batch"] == 1]
    verdicts = [
        _speed_floor(args, labels, inference, GPU_PEER_PAIRS, "inference speed",
                     "LastViT (CLS pooling) at least as fast as the peers, inference"),
        _speed_floor(args, labels, training, GPU_PEER_PAIRS, "training speed",
                     "LastViT (CLS pooling) at least as fast as the peers, training step"),
        _speed_floor(args, labels, batch1, (("lastvit-cls", "vit"),), "batch-1 latency",
                     "Batch-1 latency of LastViT cls no worse than ViTModel's"),
    ]  # fmt: skip
    for groups, floor, what, limit in (
        (
            [g for g in _judged(inference, args) if g["batch"] == max(args.gpu_batch_sizes)],
            "lazystrike inference cost",
            "an inference forward",
            2.0,
        ),
        (_judged(training, args), "lazystrike training cost", "a training step", 1.0),
    ):
        costs = [(c, f"{g['dtype']} {g['shape']} b{g['batch']} K={k}") for g in groups for k in WHOLE_LAZYSTRIKE
                 if (c := lazystrike_cost(g, k)) is not None]  # fmt: skip
        if costs:
            cost, tag = max(costs)
            verdicts.append(
                _verdict(
                    floor,
                    cost <= limit,
                    f"- LazyStrike adds ≤ {limit:.0f}% to {what} (whole model vs CLS pooling): "
                    f"{holds_word(cost <= limit)} (largest {cost:+.2f}%, {tag}).",
                )
            )
    ratios = [
        (
            g["peak_mib"][whole] / g["peak_mib"]["lastvit-cls-reg"],
            f"{g['dtype']} {g['attn']} {g['shape']} b{g['batch']}",
        )
        for g in inference
        for whole in WHOLE_LAZYSTRIKE.values()
        if g["peak_mib"].get(whole) is not None and g["peak_mib"].get("lastvit-cls-reg")
    ]
    if ratios:
        ratio, tag = max(ratios)
        verdicts.append(
            _verdict(
                "lazystrike peak memory",
                ratio <= 1.10,
                "- Peak inference memory with LazyStrike ≤ CLS pooling's + 10%: "
                f"{holds_word(ratio <= 1.10)} (largest {100 * (ratio - 1):+.1f}%, {tag}).",
            )
        )
    return [v for v in verdicts if v is not None]


def _summary(args, gpu: dict) -> list[tuple[str, dict]]:
    labels, rows = gpu["labels"], []
    for section, groups in (("inference", gpu["inference"]), ("training step", gpu["training"])):
        for dtype in args.gpu_dtype:
            for attn in args.attn:
                chosen = [g for g in groups if g["dtype"] == dtype and g["attn"] == attn]
                if not chosen:
                    continue
                setting = f"{section} {dtype} {attn}"
                pairs = [(CONTROL[0], CONTROL[1], f"A/A control {setting}: {labels['vit']} vs a 2nd instance")]
                pairs += [
                    (ours, peer, f"{setting}: {labels[ours]} vs {labels[peer]} (speed)")
                    for ours, peer in GPU_PEER_PAIRS
                ]
                for ours, peer, name in pairs:
                    values = {
                        cell_name(g["shape"], g["batch"]): fmt_ratio(paired_ratio(g["times"], peer, ours))
                        for g in chosen
                        if ours in g["times"] and peer in g["times"]
                    }
                    if values:
                        rows.append((name, values))
                for k in WHOLE_LAZYSTRIKE:
                    values = {
                        cell_name(g["shape"], g["batch"]): f"{cost:+.1f}%"
                        for g in chosen
                        if (cost := lazystrike_cost(g, k)) is not None
                    }
                    if values:
                        rows.append((f"{setting}: LazyStrike K={k} model vs CLS pooling (time added)", values))
                values = {
                    cell_name(g["shape"], g["batch"]): f"{_tflops(g, 'lastvit-cls'):.1f} TFLOP/s = "
                    f"{100 * _tflops(g, 'lastvit-cls') / gpu['gemm'][dtype]['tflops']:.0f}%"
                    for g in chosen
                    if "lastvit-cls" in g["flops"]
                }
                if values:
                    rows.append((f"{setting}: LastViT cls, share of the {dtype} GEMM rate", values))
    return rows


def _setup(args, gpu: dict) -> list[str]:
    info = gpu["device"]
    lines = []
    if info["device"].startswith("cuda"):
        lines.append(
            f"**Device.** {info['name']} ({info['memory_gib']:.0f} GiB, {info['capability']}); Python "
            f"{info['python']}, torch {info['torch']} (CUDA {info['cuda']}), transformers {info['transformers']}, "
            f"timm {info['timm'] or 'not installed'}, flash-attn {info['flash_attn'] or 'not installed'}.\n"
        )
    else:
        lines.append(
            "**Device: the CPU.** This run exercised the GPU section's logic on the CPU (wall-clock timer, no "
            "CUDA peak memory); its numbers mean nothing. Run `python -m benchmarks.bench_lastvit --device cuda` "
            "on a GPU for figures.\n"
        )
    lines.append(
        "**Method.** Inference: weights and inputs in the dtype itself. Training step: mixed precision as "
        "`torch.amp` runs it (fp32 weights and AdamW state, the forward under `torch.autocast(dtype)`, a "
        "gradient scaler for fp16). Every contender of a group is timed in one "
        "process, round-robin with a rotating start, after "
        f"{args.gpu_warmup} warm-up round(s); one call is timed by CUDA events around it, the device idle "
        "before it, so batch-1 times include the host's launch overhead. *vs peer* and the summary's ratios "
        "are medians of per-round ratios *peer time / LastViT time* (> 1: LastViT faster). *Peak MiB* is "
        "`torch.cuda.max_memory_allocated` during one call above what was allocated before it, plus the "
        "model's weights (training: plus its AdamW state): the peak of a process holding only that model. "
        "*TFLOP/s* counts the forward's FLOPs (torch's FlopCounterMode, attention included) over the median "
        "time (training step: 3× the forward's FLOPs); the limit is the rate of a square matmul in the same "
        "dtype, timed on this device. *LazyStrike … model vs CLS pooling* is the per-round time of the whole "
        "LazyStrike model over the same model with CLS pooling (4 registers, LayerScale), minus 1; the "
        "*pooler share* times the LazyStrike pooler alone on that model's final tokens.\n"
    )
    parity = ", ".join(
        f"{p['max_abs_diff']:.1e} ({gpu['labels'][p['ours']]} vs {p['peer']}, {p['shape']})" for p in gpu["parity"]
    )
    lines.append(
        f"**Parity** (fp32 on this device, the peer's weights copied in): `last_hidden_state` differs by {parity}.\n"
    )
    if gpu["skipped"]:
        reasons = {}  # one line per (attention, reason), naming the contenders or groups it hit
        for row in gpu["skipped"]:
            what = gpu["labels"].get(row.get("contender"), row.get("contender")) or row["group"]
            reasons.setdefault((row.get("attn"), row["reason"]), []).append(what)
        lines.append(
            "**Not run:** "
            + "; ".join(
                ", ".join(names) + (f" with {attn}" if attn else "") + f" ({reason})"
                for (attn, reason), names in reasons.items()
            )
            + ".\n"
        )
    lines.append("| dtype | matmul | ms | TFLOP/s (the limit) |\n|---|---|---|---|")
    for dtype, g in gpu["gemm"].items():
        lines.append(f"| {dtype} | {g['size']}² | {g['ms']:.2f} | {g['tflops']:.1f} |")
    lines.append("")
    return lines


def _group_rows(gpu: dict, groups: list[dict], what: str) -> list[str]:
    labels, peers = gpu["labels"], gpu["peers"]
    lines = [
        (
            f"| dtype | attention | shape | batch | rounds | model | {what} | images/s | vs peer | TFLOP/s "
            "| % of GEMM | peak MiB |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        for key in g["flops"]:
            peer = peers.get(key)
            ratio = paired_ratio(g["times"], peer, key) if peer in g["times"] else None
            rate = _tflops(g, key)
            lines.append(
                f"| {g['dtype']} | {g['attn']} | {g['shape']} | {g['batch']} | {g['repeats']} | {labels[key]} | "
                f"{ms(g['times'][key]):.2f} | {g['batch'] / statistics.median(g['times'][key]):.0f} | "
                f"{fmt_ratio(ratio)} | {rate:.1f} | {100 * rate / gpu['gemm'][g['dtype']]['tflops']:.0f}% | "
                f"{_mib(g['peak_mib'][key])} |"
            )
    return lines + [""]


def build_gpu_report(args, gpu: dict, elapsed: float, standalone: bool) -> str:
    lines = report_header(elapsed) if standalone else []
    lines.append("## GPU section\n")
    lines += _setup(args, gpu)
    summary = _summary(args, gpu)
    if summary:
        lines.append("### Summary\n")
        cells = sorted({c for _, values in summary for c in values}, key=cell_order)
        lines.append("| | " + " | ".join(cells) + " |")
        lines.append("|---|" + "---|" * len(cells))
        lines += [f"| {name} | " + " | ".join(values.get(c, "–") for c in cells) + " |" for name, values in summary]
        lines.append("")
        lines += _floors(args, gpu) + [""]
    if gpu["inference"]:
        lines.append("### Inference\n")
        lines += _group_rows(gpu, gpu["inference"], "ms")
        lines.append("### LazyStrike pooling against CLS pooling\n")
        lines.append(
            "| dtype | attention | shape | batch | K | pooler ms | pooler share | model vs CLS | peak vs CLS |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for g in gpu["inference"]:
            for k, _ in POOLERS:
                if f"pool:K={k}" not in g["times"]:
                    continue
                cost, whole = lazystrike_cost(g, k), WHOLE_LAZYSTRIKE[k]
                peak, cls_peak = g["peak_mib"].get(whole), g["peak_mib"].get("lastvit-cls-reg")
                lines.append(
                    f"| {g['dtype']} | {g['attn']} | {g['shape']} | {g['batch']} | {k} | "
                    f"{ms(g['times'][f'pool:K={k}']):.3f} | {pooler_share(g, k):.2f}% | "
                    + ("–" if cost is None else f"{cost:+.1f}%")
                    + " | "
                    + (f"{100 * (peak / cls_peak - 1):+.0f}%" if peak is not None and cls_peak else "–")
                    + " |"
                )
        lines.append("")
    if gpu["training"]:
        lines.append("### Training step (mixed precision: forward under autocast, backward, AdamW)\n")
        lines += _group_rows(gpu, gpu["training"], "ms / step")
    return "\n".join(lines)
