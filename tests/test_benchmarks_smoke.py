"""benchmarks/bench_lastvit.py runs end to end on a tiny model and writes the expected report.

Timings of a tiny model on a shared machine mean nothing, so nothing here asserts on them: only
that every section, contender and row is there, and that the harness itself behaves (interleaving,
memory worker, input errors).
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_lastvit.py"


def load_bench():
    if "bench_lastvit" not in sys.modules:  # benchmarks/ is a folder of scripts, not a package
        spec = importlib.util.spec_from_file_location("bench_lastvit", BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_lastvit"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_lastvit"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    completed = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--sections", "inference,training", "--no-progress",
         "--out", str(out / "RESULTS.md"), "--json", str(out / "raw.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return (out / "RESULTS.md").read_text(), json.loads((out / "raw.json").read_text())


def test_quick_run_writes_the_summary_rows_and_floors(quick_run):
    report, raw = quick_run
    dtypes = raw["args"]["dtype"]  # bf16 is dropped on CPUs without bf16 matmul
    assert "fp32" in dtypes
    expected_rows = [
        f"| A/A control {dtype}: ViTModel vs a 2nd ViTModel instance (ideal 1.00×) |" for dtype in dtypes
    ] + [
        f"| inference {dtype}: LastViT cls vs ViTModel (speed) |" for dtype in dtypes
    ] + [
        f"| inference {dtype}: LastViT cls+reg4+LS vs Dinov2WithRegistersModel (speed) |" for dtype in dtypes
    ] + [
        "| A/A control training step fp32: ViTModel vs a 2nd ViTModel instance (ideal 1.00×) |",
        "| training step fp32: LastViT cls vs ViTModel (speed) |",
        "| training step fp32: LastViT cls+reg4+LS vs Dinov2WithRegistersModel (speed) |",
        "| LazyStrike K=1 pooler share of the forward, fp32 |",
        "| LazyStrike K=N/2 pooler share of the forward, fp32 |",
        "| LastViT cls fp32 forward: GFLOP/s, share of the sgemm rate |",
    ]
    for row in expected_rows:
        assert row in report, f"missing summary row {row!r}"
    assert "| | tiny b1 | tiny b2 |" in report
    assert "LastViT (CLS pooling) at least as fast as the peers, inference" in report
    assert "LastViT (CLS pooling) at least as fast as the peers, training" in report
    assert "No GPU was available" in report or "GPU" in report


def test_quick_run_times_every_contender_at_every_batch(quick_run):
    report, raw = quick_run
    labels = ["ViTModel", "LastViT cls", "Dinov2WithRegistersModel", "LastViT cls+reg4+LS",
              "LastViT LazyStrike K=1 +reg4+LS"]
    for dtype in raw["args"]["dtype"]:
        for batch in (1, 2):
            for label in labels + ["ViTModel, 2nd instance (A/A control)"]:
                assert f"| {dtype} | tiny | {batch} | 2 | {label} |" in report, (dtype, batch, label)
            for k in ("1", "N/2"):
                assert f"| {dtype} | tiny | {batch} | {k} |" in report  # LazyStrike pooler row
    for label in labels + ["ViTModel, 2nd instance (A/A control)"]:
        assert f"| tiny | 2 | 2 | {label} |" in report  # training row
    assert {g["batch"] for g in raw["inference"]} == {1, 2}
    assert all(len(times) == 2 for g in raw["inference"] for times in g["times"].values())


def test_training_step_of_lastvit_cls_launches_the_same_ops_as_vit(quick_run):
    """The timing comparison is like for like: ViTModel's and LastViT's steps run the same ATen ops
    (a no-op dtype cast aside), so any gap between them is the machine's noise."""
    _, raw = quick_run
    check = {(row["ours"], row["peer"]): row for row in raw["training_ops"]}
    vit = check[("lastvit-cls", "vit")]
    assert set(vit["differences"]) <= {"aten::to"}
    assert abs(vit["ops"] - vit["peer_ops"]) <= 2
    dinov2 = check[("lastvit-cls-reg", "dinov2-reg")]
    assert set(dinov2["differences"]) <= {"aten::to", "aten::dropout"}  # Dinov2 skips p=0 dropouts


def test_median_interval_uses_order_statistics_that_cover_the_median():
    bench = load_bench()
    assert bench.median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)  # 5 rounds: only the range covers 90%
    values = [float(v) for v in range(21)]
    assert bench.median_interval(values) == (6.0, 14.0)  # P(Bin(21, 1/2) <= 6) = 3.9% per side
    assert bench.median_interval(values, coverage=0.99) == (4.0, 16.0)


def _group(peer_ms, ours_ms, control_ms=None):
    times = {"vit": peer_ms, "lastvit-cls": ours_ms, "dinov2-reg": peer_ms, "lastvit-cls-reg": ours_ms}
    if control_ms is not None:
        times["vit-2"] = control_ms
    return dict(dtype="fp32", shape="S/16", batch=1, times=times)


def test_speed_floor_holds_for_noise_and_fails_for_a_real_slowdown():
    bench = load_bench()
    noise = [1.00, 1.03, 0.97, 1.02, 0.98, 1.01, 0.99]
    same = [_group([10.0] * 7, [10.0 * n for n in noise], [10.0 * n for n in reversed(noise)])]
    assert bench.speed_verdict(same, tolerance=0.01)["holds"]

    slower = [_group([10.0] * 7, [10.5 * n for n in noise], [10.0] * 7)]  # LastViT 5% slower
    verdict = bench.speed_verdict(slower, tolerance=0.01)
    assert not verdict["holds"] and verdict["pooled"] < 0.96

    # One cell slower in every round fails even when the other cells make up for it on average.
    fast = [_group([10.0] * 7, [9.0] * 7) for _ in range(5)]
    one_slow = fast + [_group([10.0] * 7, [10.3 + 0.01 * i for i in range(7)])]
    verdict = bench.speed_verdict(one_slow, tolerance=0.01)
    assert verdict["pooled"] > 1.0 and not verdict["holds"]
    assert len(verdict["slower"]) == 2  # both peer pairs of that cell


def test_round_robin_rotates_the_order_and_counts_calls():
    bench = load_bench()
    calls = []
    cells = {key: (lambda key=key: calls.append(key)) for key in "abc"}
    times = bench.round_robin(cells, warmup=1, repeats=3)
    assert calls == list("abc" "abc" "bca" "cab")
    assert {key: len(values) for key, values in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_paired_ratio_is_peer_time_over_ours_per_round():
    bench = load_bench()
    ratio = bench.paired_ratio({"peer": [2.0, 3.0, 4.0], "ours": [1.0, 3.0, 2.0]}, "peer", "ours")
    assert ratio == {"median": 2.0, "low": 1.0, "high": 2.0}


def test_memory_worker_reports_a_peak_per_batch():
    bench = load_bench()
    threads = torch.get_num_threads()
    try:
        spec = dict(contender="lastvit-lazy-k1", shape="tiny", dtype="fp32", batches=[1, 2], threads=1)
        result = bench.memory_worker(spec)
    finally:
        torch.set_num_threads(threads)  # the worker sets its own count; leave the test process as it was
    assert result["params_mib"] > 0
    assert set(result["peak_mib"]) == {"1", "2"}
    assert all(value >= 0 for value in result["peak_mib"].values())


@pytest.mark.parametrize(
    "flags, message",
    [(["--shapes", "S/32"], "unknown ['S/32']"), (["--batch-sizes", "0"], "must be >= 1"), (["--dtype", "fp8"], "unknown")],
)
def test_bad_flags_fail_with_a_clear_message(flags, message):
    completed = subprocess.run([sys.executable, str(BENCH), *flags], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert message in completed.stderr
