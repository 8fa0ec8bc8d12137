"""The reproduction check (`lastvit-study --check REPORT.json`): the same seed gives the same
report twice, and a re-run names its first difference: data hash, then package, then metric."""

import json

import pytest

from lastvit.study import runner
from lastvit.study.check import check_report
from lastvit.study.config import StudyConfig
from tests.test_scenes import debian  # noqa: F401  (fixture: fails with the install command)
from training_scripts import study


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory, debian):  # noqa: F811
    out = tmp_path_factory.mktemp("check") / "study"
    config = StudyConfig(
        output_dir=out,
        scale="cpu",
        data_variant="fashion",
        num_train=64,
        num_test=16,
        epochs=1,
        seeds=(0,),
        variants=("vit_cls",),
        probe_images=8,
        progress=False,
    )
    runner.run_study(config)
    return out / "report.json"


def test_report_records_package_versions_and_data_hashes(tiny_report):
    report = json.loads(tiny_report.read_text())
    packages = report["environment"]["packages"]
    assert {"torch", "transformers", "accelerate", "datasets", "numpy", "pillow", "peft"} <= set(packages)
    assert {"python", "platform", "machine", "cpu_threads"} <= set(report["environment"])
    assert set(report["data_fingerprint"]) == {"train", "validation", "test"}


def test_the_same_seed_gives_the_same_report_and_the_check_passes(tiny_report):
    result = check_report(tiny_report, seed=0)
    committed = json.loads(tiny_report.read_text())
    assert result.matches and result.metrics_compared > 10, result.summary()
    assert result.rerun["per_seed"] == committed["per_seed"]
    assert result.rerun["data_fingerprint"] == committed["data_fingerprint"]


def test_changed_data_is_named_as_the_first_difference(tiny_report, monkeypatch, capsys):
    build = runner.build_data

    def perturbed(config):
        data = build(config)
        flip = lambda row, index: {"label": (row["label"] + 1) % 10 if index == 0 else row["label"]}
        data["train"] = data["train"].map(flip, with_indices=True)
        return data

    monkeypatch.setattr(runner, "build_data", perturbed)
    assert study.main(["--check", str(tiny_report), "--no-progress"]) == 1
    output = capsys.readouterr().out
    assert "first difference: data hash of the train split" in output


def test_a_different_package_version_is_named_before_the_metrics(tiny_report, tmp_path, capsys):
    report = json.loads(tiny_report.read_text())
    report["environment"]["packages"]["numpy"] = "0.0.1"
    report["per_seed"]["vit_cls"][0]["top1"] = -1.0
    changed = tmp_path / "report.json"
    changed.write_text(json.dumps(report))
    assert study.main(["--check", str(changed), "--check-seed", "0", "--no-progress"]) == 1
    output = capsys.readouterr().out
    assert "first difference: package numpy: committed 0.0.1" in output
    assert "metric vit_cls top1: committed -1.0" in output


def test_a_seed_the_report_did_not_run_is_refused(tiny_report, capsys):
    assert study.main(["--check", str(tiny_report), "--check-seed", "7"]) == 2
    assert "pick one of them" in capsys.readouterr().err


def test_the_check_runs_with_the_thread_count_the_report_records():
    import torch

    from lastvit.study.check import recorded_threads

    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    seen = []
    with recorded_threads({"environment": {"device": "cpu", "cpu_threads": other}}):
        seen.append(torch.get_num_threads())
    with recorded_threads({"environment": {"device": "cuda:0", "cpu_threads": other}}):
        seen.append(torch.get_num_threads())
    with recorded_threads({}):
        seen.append(torch.get_num_threads())
    assert seen == [other, before, before] and torch.get_num_threads() == before
