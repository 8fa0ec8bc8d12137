"""`python -m benchmarks.bench_lastvit` runs end to end on a tiny model and writes its report and raw JSON,
for the CPU sections and for the GPU section (whose logic runs on the CPU with a wall clock here).

Timings of a tiny model on a shared machine mean nothing, so nothing here asserts on them: only that the
JSON (the report's contract) holds every section, contender, group, summary row and floor verdict, and
that the command line rejects bad input.
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
TIMED = {"vit", "vit-2", "lastvit-cls", "dinov2-reg", "lastvit-cls-reg", "lastvit-lazy-k1"}
"""The contenders every timed group holds (keys of `benchmarks.contenders.CONTENDERS`; `vit-2` is the A/A control)."""
POOLERS = {"pool:K=1", "pool:K=N/2"}
CELLS = {"tiny b1", "tiny b2"}


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
    # per dtype: the A/A control and two peer pairs (inference), two pooler shares; the training step's
    # control and two pairs; the fp32 forward's share of the sgemm rate
    assert len(raw["summary"]) == 5 * len(dtypes) + 3 + 1
    assert all(set(row["cells"]) <= CELLS and row["cells"] for row in raw["summary"])
    assert sum(set(row["cells"]) == {"tiny b2"} for row in raw["summary"]) == 3  # the training step's rows
    assert {floor["floor"] for floor in raw["floors"]} == {"inference speed", "training speed"}
    assert all(isinstance(floor["holds"], bool) for floor in raw["floors"])
    assert raw["args"]["quick"] and raw["args"]["sections"] == ["inference", "training"]
    assert "gpu" not in raw and report.strip()


def test_quick_run_times_every_contender_at_every_batch(quick_run):
    _, raw = quick_run
    groups = {(g["dtype"], g["batch"]): g for g in raw["inference"]}
    assert set(groups) == {(dtype, batch) for dtype in raw["args"]["dtype"] for batch in (1, 2)}
    for group in groups.values():
        assert set(group["times"]) >= TIMED | POOLERS, group["times"].keys()
        assert group["repeats"] == 2 and all(len(times) == 2 for times in group["times"].values())
    (training,) = raw["training"]
    assert training["batch"] == 2 and set(training["times"]) == TIMED


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
    _, raw = gpu_section_on_cpu
    gpu = raw["gpu"]
    assert gpu["device"]["device"] == "cpu"
    assert set(gpu["gemm"]) == {"bf16", "fp16"} and all(g["tflops"] > 0 for g in gpu["gemm"].values())
    assert "summary" not in raw and "inference" not in raw  # no CPU section ran
    assert gpu["parity"] and all(row["max_abs_diff"] < 1e-4 for row in gpu["parity"])


def test_gpu_section_times_every_contender_per_dtype_batch_and_attention(gpu_section_on_cpu):
    _, raw = gpu_section_on_cpu
    gpu = raw["gpu"]
    expected = TIMED | {"lastvit-lazy-khalf"} | POOLERS
    if timm_available():
        expected.add("timm")
    else:
        assert {"contender": "timm", "reason": "timm is not installed"} in gpu["skipped"]
    inference, training = gpu["inference"], gpu["training"]
    assert {(g["dtype"], g["attn"], g["batch"]) for g in inference} == {
        (dtype, "sdpa", batch) for dtype in ("bf16", "fp16") for batch in (1, 2)
    }
    assert all(set(g["times"]) >= expected and g["repeats"] == 2 for g in inference)
    assert {(g["dtype"], g["batch"]) for g in training} == {("bf16", 2), ("fp16", 2)}
    assert all(peak is None for g in inference for peak in g["peak_mib"].values())  # no CUDA memory on the CPU
    assert all(flops > 0 for g in inference + training for flops in g["flops"].values())
    rows = gpu["summary"]
    assert rows and all(set(row["cells"]) <= CELLS and row["cells"] for row in rows)


def test_gpu_section_judges_the_gpu_issue_floors(gpu_section_on_cpu):
    _, raw = gpu_section_on_cpu
    floors = raw["gpu"]["floors"]
    assert {floor["floor"] for floor in floors} == {
        "inference speed",
        "training speed",
        "batch-1 latency",
        "lazystrike inference cost",
        "lazystrike training cost",
    }  # no peak-memory floor: the CPU has no CUDA peak memory
    assert all(isinstance(floor["holds"], bool) for floor in floors)


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
