"""`lastvit-study-pretraining` (`lastvit.study.pretraining`): the DINO and CLIP readout comparison
end to end at a tiny scale, and the summary and sentences it writes from per-seed numbers."""

import json

import pytest

from lastvit.study.pretraining import (
    METRICS,
    VARIANTS,
    PretrainingStudyConfig,
    PretrainingStudyError,
    markdown,
    run_pretraining_study,
    summarise,
    verdict,
)
from training_scripts import study_pretraining


def test_tiny_study_trains_every_variant_and_writes_the_report_with_untrained_twins(tmp_path):
    out = tmp_path / "study"
    config = PretrainingStudyConfig(
        output_dir=out, seeds=(0,), num_train=32, num_test=16, batch_size=16, dino_epochs=1, clip_epochs=1
    )
    results = run_pretraining_study(config)
    assert set(results["per_seed"]) == set(VARIANTS)
    for name, runs in results["per_seed"].items():
        metrics = METRICS[VARIANTS[name]["family"]]
        assert len(runs) == 1 and runs[0]["steps"] == 2  # 32 images, batch 16, one epoch
        assert set(metrics) <= set(runs[0]["trained"]) and set(metrics) <= set(runs[0]["untrained"])
    assert json.loads((out / "report.json").read_text())["verdict"] == results["verdict"]
    assert set(results["data_fingerprint"]) == {"train", "test"}
    assert {"pillow", "numpy", "datasets", "torch"} <= set(results["environment"]["packages"])
    report = (out / "report.md").read_text()
    assert "DINO-LazyStrike K=N/2" in report and "zero-shot seg. mIoU, untrained" in report
    assert (out / "dino.png").exists() and (out / "clip.png").exists()
    assert not list(tmp_path.glob(".study*"))  # staging and work folders are gone


def _runs(values, untrained=(0.1, 0.1, 0.1)):
    return [{"trained": {"knn_top1": v}, "untrained": {"knn_top1": u}} for v, u in zip(values, untrained)]


def test_a_consistent_gain_over_cls_is_called_higher_and_noise_is_not():
    config = PretrainingStudyConfig(output_dir="unused", families=("dino",))
    per_seed = {
        "dino_cls": _runs([0.50, 0.52, 0.51]),
        "dino_k1": _runs([0.70, 0.71, 0.73]),  # +0.20 on every seed
        "dino_khalf": _runs([0.49, 0.55, 0.50]),  # +0.003 on average, spread out
    }
    summary = summarise(config, per_seed)
    assert summary["dino_k1"]["vs_cls"]["knn_top1"]["real"]
    assert not summary["dino_khalf"]["vs_cls"]["knn_top1"]["real"]
    assert summary["dino_cls"]["vs_cls"] == {} and "knn_top1" in summary["dino_cls"]["vs_untrained"]
    lines = verdict(config, summary)
    assert lines[0].startswith("DINO-LazyStrike K=1: trained, it is higher on k-NN top-1 (+0.203) than DINO-CLS;")
    assert "gain from training (trained − untrained) is larger on k-NN top-1 (+0.203)" in lines[0]
    assert "already differ" not in lines[0]  # the untrained twins are equal here
    assert "no trained metric differs from DINO-CLS" in lines[1]
    results = {"summary": summary, "verdict": lines, "chance": 0.1, "minutes": 1.0, "environment": {"device": "cpu"}}
    assert "| k-NN top-1, untrained | 0.100 ± 0.000" in markdown(config, results, [])


def test_a_gap_the_untrained_twins_already_show_is_not_credited_to_training():
    config = PretrainingStudyConfig(output_dir="unused", families=("dino",))
    per_seed = {
        "dino_cls": _runs([0.50, 0.52, 0.51], untrained=(0.40, 0.42, 0.41)),
        "dino_k1": _runs([0.30, 0.33, 0.31], untrained=(0.20, 0.23, 0.21)),  # 0.2 lower, trained or not
        "dino_khalf": _runs([0.50, 0.52, 0.51], untrained=(0.40, 0.42, 0.41)),
    }
    line = verdict(config, summarise(config, per_seed))[0]
    assert "lower on k-NN top-1 (-0.197)" in line
    assert "the untrained twins already differ the same way on k-NN top-1" in line
    assert "its gain from training does not differ from CLS's on any metric" in line


def test_unknown_family_and_no_seeds_are_refused_with_the_fix():
    with pytest.raises(PretrainingStudyError, match="families must be among"):
        PretrainingStudyConfig(output_dir="x", families=("mae",))
    with pytest.raises(PretrainingStudyError, match="at least one seed"):
        PretrainingStudyConfig(output_dir="x", seeds=())


def test_cli_refuses_to_overwrite_a_folder_without_overwrite(tmp_path, capsys):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "keep.txt").write_text("x")
    assert study_pretraining.main(["--output-dir", str(tmp_path / "study"), "--seeds", "0"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "study" / "keep.txt").exists()
