"""The benchmark's timing harness, statistics and memory worker (benchmarks.harness, .stats, .memory)."""

import pytest
import torch

from benchmarks import harness, stats
from benchmarks.contenders import CONTENDERS, SHAPES, build_model
from benchmarks.memory import memory_worker


def test_round_robin_rotates_the_order_and_counts_calls():
    calls = []
    cells = {key: (lambda key=key: calls.append(key)) for key in "abc"}
    times = harness.round_robin(cells, warmup=1, repeats=3)
    assert calls == list("abcabcbcacab")
    assert {key: len(values) for key, values in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_round_robin_reads_every_call_from_the_given_clock():
    """The GPU section swaps the wall clock for CUDA events: the rounds must take whatever the clock says."""
    ticks = iter(range(1, 100))

    def clock(call):
        call()
        return float(next(ticks))

    times = harness.round_robin({"a": lambda: None, "b": lambda: None}, warmup=2, repeats=2, clock=clock)
    assert times == {"a": [1.0, 4.0], "b": [2.0, 3.0]}  # warm-up calls are not timed; round 2 starts at b


def test_the_cpu_clock_is_the_wall_clock_and_other_devices_are_refused():
    assert isinstance(harness.clock_for("cpu"), harness.WallClock)
    assert harness.clock_for("cpu")(lambda: None) >= 0
    with pytest.raises(SystemExit, match="only cpu and cuda"):
        harness.clock_for("meta")


def test_cuda_peak_memory_is_none_off_cuda():
    called = []
    assert harness.peak_mib(lambda: called.append(1), torch.device("cpu")) is None


def test_forward_flops_count_attention_once():
    """FlopCounterMode does not see the CPU SDPA kernel: the attention is added by formula, and only then."""
    shape = SHAPES["tiny"]
    model = build_model(CONTENDERS["lastvit-cls"], shape, torch.float32)
    pixels = torch.randn(1, 3, shape.image_size, shape.image_size)
    counted = harness.forward_flops(model, shape, pixels)
    eager = build_model(CONTENDERS["lastvit-cls"], shape, torch.float32, attn="eager")
    # eager attention is two matmuls the counter sees: the same total without the formula
    assert counted == pytest.approx(harness.forward_flops(eager, shape, pixels), rel=1e-6)


def test_median_interval_uses_order_statistics_that_cover_the_median():
    assert stats.median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)  # 5 rounds: only the range covers 90%
    values = [float(v) for v in range(21)]
    assert stats.median_interval(values) == (6.0, 14.0)  # P(Bin(21, 1/2) <= 6) = 3.9% per side
    assert stats.median_interval(values, coverage=0.99) == (4.0, 16.0)


def _group(peer_ms, ours_ms, control_ms=None):
    times = {"vit": peer_ms, "lastvit-cls": ours_ms, "dinov2-reg": peer_ms, "lastvit-cls-reg": ours_ms}
    if control_ms is not None:
        times["vit-2"] = control_ms
    return {"dtype": "fp32", "shape": "S/16", "batch": 1, "times": times}


def test_speed_floor_holds_for_noise_and_fails_for_a_real_slowdown():
    noise = [1.00, 1.03, 0.97, 1.02, 0.98, 1.01, 0.99]
    same = [_group([10.0] * 7, [10.0 * n for n in noise], [10.0 * n for n in reversed(noise)])]
    assert stats.speed_verdict(same, tolerance=0.01)["holds"]

    slower = [_group([10.0] * 7, [10.5 * n for n in noise], [10.0] * 7)]  # LastViT 5% slower
    verdict = stats.speed_verdict(slower, tolerance=0.01)
    assert not verdict["holds"] and verdict["pooled"] < 0.96

    # One cell slower in every round fails even when the other cells make up for it on average.
    fast = [_group([10.0] * 7, [9.0] * 7) for _ in range(5)]
    one_slow = fast + [_group([10.0] * 7, [10.3 + 0.01 * i for i in range(7)])]
    verdict = stats.speed_verdict(one_slow, tolerance=0.01)
    assert verdict["pooled"] > 1.0 and not verdict["holds"]
    assert len(verdict["slower"]) == 2  # both peer pairs of that cell


def test_speed_verdict_names_the_attention_of_gpu_groups():
    group = {**_group([10.0] * 5, [11.0] * 5), "dtype": "bf16", "attn": "sdpa", "batch": 256}
    verdict = stats.speed_verdict([group], tolerance=0.01)
    assert verdict["worst"]["tag"].startswith("bf16 sdpa S/16 b256 vs ")


def test_paired_ratio_is_peer_time_over_ours_per_round():
    ratio = stats.paired_ratio({"peer": [2.0, 3.0, 4.0], "ours": [1.0, 3.0, 2.0]}, "peer", "ours")
    assert ratio == {"median": 2.0, "low": 1.0, "high": 2.0}


def test_memory_worker_reports_a_peak_per_batch():
    threads = torch.get_num_threads()
    try:
        spec = {"contender": "lastvit-lazy-k1", "shape": "tiny", "dtype": "fp32", "batches": [1, 2], "threads": 1}
        result = memory_worker(spec)
    finally:
        torch.set_num_threads(threads)  # the worker sets its own count; leave the test process as it was
    assert result["params_mib"] > 0
    assert set(result["peak_mib"]) == {"1", "2"}
    assert all(value >= 0 for value in result["peak_mib"].values())


def test_the_report_names_the_commit_it_measured():
    import subprocess

    from benchmarks.report import report_header, source_commit

    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert source_commit().split(" ")[0] == head
    assert f"at commit `{source_commit()}`" in "".join(report_header(60.0))
