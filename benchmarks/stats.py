"""Reading the rounds: paired per-round ratios, sign-test intervals for their median, and the speed verdict.

(Named `stats`, not `statistics`, so that it can never shadow the standard library's module.)"""

from __future__ import annotations

import math
import statistics

from .contenders import CONTENDERS, CONTROL, PEER_PAIRS


def ms(values: list[float]) -> float:
    """Median of times in seconds, in milliseconds."""
    return statistics.median(values) * 1e3


def round_ratios(times: dict[str, list[float]], slower: str, faster: str) -> list[float]:
    """times[slower][r] / times[faster][r] for every round r (> 1: `faster` was faster in that round)."""
    return [a / b for a, b in zip(times[slower], times[faster])]


def paired_ratio(times: dict[str, list[float]], slower: str, faster: str) -> dict:
    """Median over rounds of the per-round ratio (> 1: `faster` is faster), with its range."""
    ratios = round_ratios(times, slower, faster)
    return {"median": statistics.median(ratios), "low": min(ratios), "high": max(ratios)}


def pooler_share(group: dict, k: str) -> float:
    """Share of a LazyStrike forward spent in the pooler: pooler / (CLS forward + pooler), in %."""
    pool_ms, cls_ms = ms(group["times"][f"pool:K={k}"]), ms(group["times"]["lastvit-cls-reg"])
    return 100 * pool_ms / (cls_ms + pool_ms)


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


def group_tag(group: dict) -> str:
    """'fp32 S/16 b1' (with the attention implementation where the group has one: 'bf16 sdpa B/16 b1')."""
    parts = (group.get("dtype", "fp32"), group.get("attn"), group["shape"], f"b{group['batch']}")
    return " ".join(p for p in parts if p)


def speed_verdict(groups: list[dict], tolerance: float, pairs=PEER_PAIRS, labels: dict | None = None) -> dict | None:
    """Is LastViT (CLS pooling) at least as fast as its peers over `groups` (one section)?

    A single cell's median ratio moves by a few % between runs on a shared machine, so the lowest of
    many cells is mostly noise. The verdict therefore reads (1) the geometric mean over all cells of
    the LastViT/peer ratio, which must be at least 1 - max(`tolerance`, the A/A control's deviation
    pooled the same way), and (2) every cell alone: none may be slower beyond its 90% interval (the
    whole interval below 1). A real slowdown of a few % fails (1); one slow cell fails (2)."""
    labels = labels or {key: c.label for key, c in CONTENDERS.items()}
    cells, controls = [], []
    for g in groups:
        tag = group_tag(g)
        if CONTROL[0] in g["times"]:
            controls.append(paired_ratio(g["times"], CONTROL[1], CONTROL[0])["median"])
        for ours, peer in pairs:
            if ours in g["times"] and peer in g["times"]:
                rounds = round_ratios(g["times"], peer, ours)
                low, high = median_interval(rounds)
                cells.append(
                    {"median": statistics.median(rounds), "low": low, "high": high, "tag": f"{tag} vs {labels[peer]}"}
                )
    if not cells:
        return None
    pooled = statistics.geometric_mean([c["median"] for c in cells])
    control = statistics.geometric_mean(controls) if controls else 1.0
    allowed = max(tolerance, abs(1.0 - control))
    slower = [c for c in cells if c["high"] < 1.0]
    return {
        "pooled": pooled,
        "control": control,
        "allowed": allowed,
        "cells": len(cells),
        "slower": slower,
        "worst": min(cells, key=lambda c: c["median"]),
        "holds": pooled >= 1.0 - allowed and not slower,
    }
