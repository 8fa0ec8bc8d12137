"""`python -m benchmarks.export_cpu` writes its report and JSON itself (timings of a tiny run mean nothing, so only
the structure is asserted)."""

import json

from benchmarks import export_cpu


def test_lowpass_section_writes_report_and_json(tmp_path):
    out = tmp_path / "export.md"
    assert export_cpu.main(["--quick", "--sections", "lowpass", "--repeats", "1", "--out", str(out)]) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    assert [row["hidden_size"] for row in results["lowpass"]] == [32, 64]
    assert {"fft_ms", "matmul_ms", "matmul_over_fft", "filter_matmul_over_fft"} <= set(results["lowpass"][0])
    assert results["versions"]["torch"] and results["commit"]
    assert out.read_text() == export_cpu.build_report(results)  # the report renders the JSON it wrote


def test_runtime_table_has_a_row_per_runtime():
    ratio = {"median": 1.0, "low": 1.0, "high": 1.0}
    keys = [
        f"{p} {r}" for p in ("cls", "lazystrike") for r in export_cpu.RUNTIMES if (p, r) != ("cls", "eager matmul")
    ]
    group = {
        "shape": "S/16",
        "batch": 1,
        "ms": dict.fromkeys(keys, 2.0),
        "speedup_vs_eager": {k: ratio for k in keys if not k.endswith(" eager")},
        "max_abs_logit_difference": dict.fromkeys(keys, 0.0),
        "lazystrike_over_cls": {k: ratio for k in ("eager (FFT)", "eager matmul", "compile", "ort fp32")},
    }
    results = {
        "commit": "abc",
        "date": "now",
        "elapsed_s": 1.0,
        "command": "python -m benchmarks.export_cpu",
        "machine": {"cpu": "x", "logical_cpus": 2, "threads": 1, "loadavg_start": (1.0, 1.0, 1.0)},
        "versions": {"torch": "2.13"},
        "runtimes": [group],
    }
    rows = [line for line in export_cpu.build_report(results).splitlines() if line.startswith("| S/16 | 1 |")]
    assert [row.split(" | ")[2] for row in rows[: len(export_cpu.RUNTIMES)]] == list(export_cpu.RUNTIMES)
