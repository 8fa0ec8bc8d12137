"""The main job (`lastvit-study`): statistics, the report's sentences, and a smoke run end to end."""

import json
import math

import pytest
from PIL import Image

from lastvit.study.config import VARIANTS, StudyConfig
from lastvit.study.report import summarise, verdict
from lastvit.study.statistics import paired_test, student_t_two_sided
from training_scripts import study


def test_student_t_p_values_match_tables():
    assert student_t_two_sided(4.302652729911275, 2) == pytest.approx(0.05, abs=1e-9)
    assert student_t_two_sided(2.262157, 9) == pytest.approx(0.05, abs=1e-6)
    assert student_t_two_sided(2.0, 2) == pytest.approx(0.1835034, abs=1e-6)
    assert student_t_two_sided(0.0, 5) == pytest.approx(1.0)


def test_paired_test_calls_only_consistent_large_differences_real():
    consistent = paired_test([0.30, 0.32, 0.31], [0.20, 0.21, 0.25])
    assert consistent["real"] and consistent["p"] < 0.05
    assert consistent["differences"] == pytest.approx([0.10, 0.11, 0.06])
    noisy = paired_test([0.30, 0.10, 0.31], [0.20, 0.21, 0.25])
    assert not noisy["real"]
    for no_test in (paired_test([0.3], [0.2]), paired_test([0.3, 0.3], [0.2, 0.2])):
        assert not no_test["real"] and math.isnan(no_test["p"])
    with pytest.raises(ValueError, match="one value per seed"):
        paired_test([0.1, 0.2], [0.1])


def _run(top1, pib, pib_untrained, baseline=0.5):
    run = {
        "top1": top1,
        "top5": 0.9,
        "untrained_top1": 0.14,
        "probe/k": [0, 2],
        "probe/num_patches": 16,
        "probe/high": [top1, top1],
        "probe/random": [top1, top1],
        "probe/low": [top1, top1],
        "high_norm_tokens_per_image": 0.0,
        "max_norm": 1.0,
    }
    for metric in ("point_in_box", "corloc", "segmentation_iou"):
        run[f"{metric}/patch_score"] = pib
        run[f"{metric}/patch_score/untrained"] = pib_untrained
        for name in ("random_patch", "centre_patch", "colour_outlier"):
            run[f"{metric}/baseline/{name}"] = baseline
    return run


def test_verdict_reports_learning_tests_and_the_strongest_baseline_from_the_numbers():
    per_seed = {
        "vit_cls": [_run(0.50, 0.40, 0.45), _run(0.52, 0.41, 0.44), _run(0.49, 0.39, 0.46)],
        "lastvit_khalf": [_run(0.51, 0.70, 0.30), _run(0.53, 0.72, 0.31), _run(0.50, 0.69, 0.29)],
    }
    results = {"summary": summarise(per_seed), "chance": 0.1, "variants": {k: VARIANTS[k] for k in per_seed}}
    text = "\n".join(verdict(results))
    assert "The models learned the task" in text
    assert "Patch-Score Point-in-Box (pooled feature): 0.703 vs 0.400" in text and "a real difference" in text
    assert "ViT (CLS): training lowered" in text  # 0.45 untrained -> 0.40 trained
    assert "models with a map above it: LaSt-ViT (LazyStrike, K = N/2)" in text


def test_verdict_says_when_nothing_was_learned():
    per_seed = {"vit_cls": [_run(0.15, 0.4, 0.4), _run(0.16, 0.4, 0.4)]}
    results = {"summary": summarise(per_seed), "chance": 1 / 7, "variants": {"vit_cls": VARIANTS["vit_cls"]}}
    assert "mostly reflect initialisation, not learning" in verdict(results)[0]


def test_study_config_fills_the_scale_defaults_and_rejects_unknown_variants():
    config = StudyConfig(scale="auto", epochs=1.5).resolved(cuda_available=False)
    assert config.scale == "cpu" and config.epochs == 1.5 and config.image_size is not None
    assert StudyConfig(scale="auto").resolved(cuda_available=True).scale == "gpu"
    with pytest.raises(ValueError, match="Unknown variants"):
        StudyConfig(variants=("vit_cls", "vit_huge")).resolved(False)
    with pytest.raises(ValueError, match="keep it"):
        StudyConfig(variants=("vit_mean",)).resolved(False)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    code = study.main(
        [
            "--output-dir",
            str(out),
            "--scale",
            "cpu",
            "--data-variant",
            "scenes",
            "--num-train",
            "128",
            "--num-test",
            "32",
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--seeds",
            "0",
            "1",
            "--probe-images",
            "16",
            "--no-progress",
        ]
    )
    assert code == 0
    return out


def test_study_reports_every_variant_with_untrained_twins_and_baselines(study_dir):
    results = json.loads((study_dir / "report.json").read_text())
    assert set(results["summary"]) == set(VARIANTS)
    assert results["chance"] == pytest.approx(1 / 7) and results["seeds"] == [0, 1]
    assert {"device", "torch", "transformers"} <= set(results["environment"])
    assert set(results["timings_s"]) == {"data", "training", "evaluation"}
    lazystrike = results["summary"]["lastvit_khalf"]
    for key in (
        "top1",
        "untrained_top1",
        "point_in_box/patch_score",
        "point_in_box/patch_score/untrained",
        "point_in_box/patch_score_cls",
        "point_in_box/votes/untrained",
        "point_in_box/cls_attention",
        "corloc/votes",
        "segmentation_iou/patch_score",
        "point_in_box/baseline/colour_outlier",
    ):
        assert key in lazystrike, key
    assert "point_in_box/votes" not in results["summary"]["vit_cls"]  # CLS pooling casts no votes
    assert len(results["per_seed"]["vit_cls"]) == 2
    assert "top1 vs vit_cls" in lazystrike["tests"] and "point_in_box/patch_score vs untrained" in lazystrike["tests"]
    probe = results["per_seed"]["vit_cls"][0]["probe/k"]
    assert probe == sorted({round(i * 16 / 7) for i in range(7)})  # the paper's N/7 grid, 16 patches


def test_study_report_has_tables_sentences_and_readable_figures(study_dir):
    report = (study_dir / "report.md").read_text()
    for heading in (
        "## Accuracy",
        "## Point-in-Box",
        "## CorLoc",
        "## coarse-segmentation IoU",
        "## Masking probe",
        "## What the numbers support",
        "## Paired tests",
    ):
        assert heading in report
    figures = [line.split("](")[1][:-1] for line in report.splitlines() if line.startswith("![")]
    assert {"maps.png", "masking_probe.png", "per_seed.png"} <= set(figures)
    for name in figures:
        with Image.open(study_dir / name) as image:
            image.verify()


def test_study_ships_the_trained_lastvit_as_an_auto_model_folder_with_a_card(study_dir):
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(study_dir / "lastvit-model", trust_remote_code=True)
    assert model.config.pooling == "lazystrike" and model.config.lazystrike_top_k_ratio == 0.5
    assert "model-index" in (study_dir / "lastvit-model" / "README.md").read_text()
    assert not (study_dir / "lastvit-model" / "checkpoints").exists()
    assert not list(study_dir.parent.glob(".*"))  # no staging folder left behind


def test_study_refuses_to_overwrite_a_previous_report(study_dir, capsys):
    assert study.main(["--output-dir", str(study_dir), "--seeds", "0"]) == 1
    assert "--overwrite" in capsys.readouterr().err
