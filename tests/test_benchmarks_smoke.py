"""`python -m benchmarks.bench_lastvit` runs end to end on a tiny model and writes the expected report,
for the CPU sections and for the GPU section (whose logic runs on the CPU with a wall clock here).

Timings of a tiny model on a shared machine mean nothing, so nothing here asserts on them: only
that every section, contender and row is there, and that the command line rejects bad input.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.contenders import timm_available

REPO = Path(__file__).resolve().parent.parent
BENCH = [sys.executable, "-m", "benchmarks.bench_lastvit"]
LABELS = [
    "ViTModel",
    "LastViT cls",
    "Dinov2WithRegistersModel",
    "LastViT cls+reg4+LS",
    "LastViT LazyStrike K=1 +reg4+LS",
]
CONTROL = "ViTModel, 2nd instance (A/A control)"


def run_bench(tmp_path, *flags):
    completed = subprocess.run(
        [*BENCH, "--quick", "--no-progress", "--out", str(tmp_path / "RESULTS.md"),
         "--json", str(tmp_path / "raw.json"), *flags],
        capture_output=True, text=True, check=False, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return (tmp_path / "RESULTS.md").read_text(), json.loads((tmp_path / "raw.json").read_text())


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    return run_bench(tmp_path_factory.mktemp("bench"), "--sections", "inference,training")


@pytest.fixture(scope="module")
def gpu_section_on_cpu(tmp_path_factory):
    return run_bench(tmp_path_factory.mktemp("bench-gpu"), "--sections", "gpu")


def test_quick_run_writes_the_summary_rows_and_floors(quick_run):
    report, raw = quick_run
    dtypes = raw["args"]["dtype"]  # bf16 is dropped on CPUs without bf16 matmul
    assert "fp32" in dtypes
    expected_rows = (
        [f"| A/A control {dtype}: ViTModel vs a 2nd ViTModel instance (ideal 1.00×) |" for dtype in dtypes]
        + [f"| inference {dtype}: LastViT cls vs ViTModel (speed) |" for dtype in dtypes]
        + [f"| inference {dtype}: LastViT cls+reg4+LS vs Dinov2WithRegistersModel (speed) |" for dtype in dtypes]
        + [
            "| A/A control training step fp32: ViTModel vs a 2nd ViTModel instance (ideal 1.00×) |",
            "| training step fp32: LastViT cls vs ViTModel (speed) |",
            "| training step fp32: LastViT cls+reg4+LS vs Dinov2WithRegistersModel (speed) |",
            "| LazyStrike K=1 pooler share of the forward, fp32 |",
            "| LazyStrike K=N/2 pooler share of the forward, fp32 |",
            "| LastViT cls fp32 forward: GFLOP/s, share of the sgemm rate |",
        ]
    )
    for row in expected_rows:
        assert row in report, f"missing summary row {row!r}"
    assert "| | tiny b1 | tiny b2 |" in report
    assert "LastViT (CLS pooling) at least as fast as the peers, inference" in report
    assert "LastViT (CLS pooling) at least as fast as the peers, training" in report
    assert "python -m benchmarks.bench_lastvit --quick" in report  # the command that regenerates it
    assert "## GPU section" not in report


def test_quick_run_times_every_contender_at_every_batch(quick_run):
    report, raw = quick_run
    for dtype in raw["args"]["dtype"]:
        for batch in (1, 2):
            for label in [*LABELS, CONTROL]:
                assert f"| {dtype} | tiny | {batch} | 2 | {label} |" in report, (dtype, batch, label)
            for k in ("1", "N/2"):
                assert f"| {dtype} | tiny | {batch} | {k} |" in report  # LazyStrike pooler row
    for label in [*LABELS, CONTROL]:
        assert f"| tiny | 2 | 2 | {label} |" in report  # training row
    assert {g["batch"] for g in raw["inference"]} == {1, 2}
    assert all(len(times) == 2 for g in raw["inference"] for times in g["times"].values())


# Ops that do a step's real work; LastViT must launch each exactly as often as its peer.
COMPUTE_OPS = ("mm", "attention", "layer_norm", "gelu", "softmax", "convolution", "cross_entropy", "tanh")


def test_training_step_of_lastvit_cls_launches_the_same_compute_ops_as_its_peers(quick_run):
    """The timing comparison is like for like: ViTModel's / Dinov2WithRegisters' and LastViT's
    steps launch the same matmul, attention, norm and activation kernels the same number of times.
    They differ only in how the embeddings are assembled (LastViT builds [CLS, registers, patches]
    with one concatenation, so it needs fewer slices and copies than ViT), dtype casts and the
    zero-probability dropouts Dinov2 calls."""
    _, raw = quick_run
    check = {(row["ours"], row["peer"]): row for row in raw["training_ops"]}
    for pair in (("lastvit-cls", "vit"), ("lastvit-cls-reg", "dinov2-reg")):
        differing = set(check[pair]["differences"])
        assert not [op for op in differing if any(name in op for name in COMPUTE_OPS)], (pair, differing)
    vit = check[("lastvit-cls", "vit")]["differences"]
    assert all(ours <= peer for op, (ours, peer) in vit.items() if op != "aten::to"), vit


def test_gpu_section_runs_its_logic_on_the_cpu_and_says_so(gpu_section_on_cpu):
    report, raw = gpu_section_on_cpu
    assert "## GPU section" in report
    assert "**Device: the CPU.**" in report and "its numbers mean nothing" in report
    assert "| bf16 | 256² |" in report and "| fp16 | 256² |" in report  # the GEMM limit per dtype
    assert "\n## Summary\n" not in report  # no CPU section ran
    gpu = raw["gpu"]
    assert gpu["parity"] and all(row["max_abs_diff"] < 1e-4 for row in gpu["parity"])
    assert gpu["gemm"]["bf16"]["tflops"] > 0


def test_gpu_section_times_every_contender_per_dtype_batch_and_attention(gpu_section_on_cpu):
    report, raw = gpu_section_on_cpu
    labels = [*LABELS, CONTROL, "LastViT LazyStrike K=N/2 +reg4+LS"]
    if timm_available():
        labels.append("timm VisionTransformer")
    else:
        assert "timm VisionTransformer (timm is not installed)" in report
    for dtype in ("bf16", "fp16"):
        for batch in (1, 2):
            for label in labels:
                assert f"| {dtype} | sdpa | tiny | {batch} | 2 | {label} |" in report, (dtype, batch, label)
            for k in ("1", "N/2"):
                assert f"| {dtype} | sdpa | tiny | {batch} | {k} |" in report  # LazyStrike row
        for row in (
            f"| inference {dtype} sdpa: LastViT cls vs ViTModel (speed) |",
            f"| inference {dtype} sdpa: LazyStrike K=1 model vs CLS pooling (time added) |",
            f"| inference {dtype} sdpa: LastViT cls, share of the {dtype} GEMM rate |",
            f"| training step {dtype} sdpa: LastViT cls+reg4+LS vs Dinov2WithRegistersModel (speed) |",
        ):
            assert row in report, row
    inference, training = raw["gpu"]["inference"], raw["gpu"]["training"]
    assert {(g["dtype"], g["batch"]) for g in inference} == {("bf16", 1), ("bf16", 2), ("fp16", 1), ("fp16", 2)}
    assert {(g["dtype"], g["batch"]) for g in training} == {("bf16", 2), ("fp16", 2)}
    assert all(peak is None for g in inference for peak in g["peak_mib"].values())  # no CUDA memory on the CPU
    assert all(flops > 0 for g in inference + training for flops in g["flops"].values())


def test_gpu_section_judges_the_gpu_issue_floors(gpu_section_on_cpu):
    report, _ = gpu_section_on_cpu
    for floor in (
        "LastViT (CLS pooling) at least as fast as the peers, inference:",
        "LastViT (CLS pooling) at least as fast as the peers, training step:",
        "Batch-1 latency of LastViT cls no worse than ViTModel's:",
        "LazyStrike adds ≤ 2% to an inference forward",
        "LazyStrike adds ≤ 1% to a training step",
    ):
        assert floor in report, floor


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--shapes", "S/32"], "unknown ['S/32']"),
        (["--batch-sizes", "0"], "must be >= 1"),
        (["--dtype", "fp8"], "unknown"),
        (["--gpu-dtype", "fp32"], "unknown ['fp32']"),
    ],
)
def test_bad_flags_fail_with_a_clear_message(flags, message):
    completed = subprocess.run([*BENCH, *flags], capture_output=True, text=True, check=False, timeout=120, cwd=REPO)
    assert completed.returncode == 2
    assert message in completed.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_device_cuda_without_a_gpu_fails_with_a_clear_message():
    completed = subprocess.run(
        [*BENCH, "--device", "cuda"], capture_output=True, text=True, check=False, timeout=120, cwd=REPO
    )
    assert completed.returncode == 2
    assert "torch sees no CUDA device" in completed.stderr


def test_running_the_file_directly_names_the_module_command():
    completed = subprocess.run(
        [sys.executable, "benchmarks/bench_lastvit.py", "--quick"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=REPO,
    )
    assert completed.returncode == 1
    assert "python -m benchmarks.bench_lastvit --quick" in completed.stderr
