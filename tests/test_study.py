"""The main job (`lastvit-study`): statistics, the report's sentences, and a smoke run end to end."""

import json
import math

import pytest
from PIL import Image

from lastvit.study.config import PRIMARY_ENDPOINTS, VARIANTS, StudyConfig
from lastvit.study.report import endpoint_rows, summarise, verdict
from lastvit.study.statistics import benjamini_hochberg, holm, paired_test, student_t_two_sided
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


def test_holm_and_benjamini_hochberg_adjust_in_input_order_and_skip_missing_tests():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert benjamini_hochberg([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.04, 0.04])
    assert holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])
    with_gap = holm([0.01, math.nan, 0.02])
    assert with_gap[0] == pytest.approx(0.02) and math.isnan(with_gap[1]) and with_gap[2] == pytest.approx(0.02)
    assert benjamini_hochberg([0.9]) == pytest.approx([0.9])


def _run(top1, pib, pib_untrained, baseline=0.5, gap=0.0):
    run = {
        "top1": top1,
        "top5": 0.9,
        "untrained_top1": 0.14,
        "probe/k": [0, 2],
        "probe/num_patches": 16,
        "probe/high": [top1, top1],
        "probe/random": [top1, top1],
        "probe/low": [top1, top1],
        "norms/patch_max_over_median": 1.5,
        "background/mixed_rand": top1 - gap,
        "background/mixed_rand/untrained": 0.1,
        "background/bg_gap": gap,
        "background/bg_gap/untrained": 0.0,
        "background/only_bg": 0.1,
    }
    for metric in ("auroc", "point_in_box", "corloc", "segmentation_iou"):
        run[f"{metric}/patch_score"] = pib
        run[f"{metric}/patch_score/untrained"] = pib_untrained
        run[f"{metric}/ceiling"] = 1.0
        for name in ("random_patch", "centre_patch", "colour_outlier"):
            run[f"{metric}/baseline/{name}"] = baseline
    return run


def test_primary_endpoints_are_holm_corrected_and_everything_else_is_secondary():
    per_seed = {
        "vit_cls": [
            _run(0.50, 0.40, 0.45, gap=0.20),
            _run(0.52, 0.41, 0.44, gap=0.22),
            _run(0.49, 0.39, 0.46, gap=0.21),
        ],
        "lastvit_k1": [
            _run(0.51, 0.70, 0.30, gap=0.05),
            _run(0.53, 0.72, 0.31, gap=0.06),
            _run(0.50, 0.69, 0.29, gap=0.04),
        ],
    }
    endpoints = (("lastvit_k1", "background/bg_gap"), ("lastvit_k1", "auroc/patch_score"))
    summary, testing = summarise(per_seed, endpoints)
    tests = summary["lastvit_k1"]["tests"]
    primary = [tests["background/bg_gap vs vit_cls"], tests["auroc/patch_score vs vit_cls"]]
    assert all(t["family"] == "primary" for t in primary)
    assert [t["p_adjusted"] for t in primary] == pytest.approx(holm([t["p"] for t in primary]))
    assert tests["top1 vs vit_cls"]["family"] == "secondary"
    assert testing["primary"] == {
        "correction": "Holm",
        "tests": 2,
        "alpha": 0.05,
        "significant_after_correction": sum(t["real"] for t in primary),
        "significant_before_correction": sum(t["p"] < 0.05 for t in primary),
        "missing": [],
    }
    assert testing["secondary"]["correction"] == "Benjamini-Hochberg" and testing["secondary"]["tests"] > 10
    assert testing["degrees_of_freedom"] == 2
    # the claim predicts a smaller BG-gap and a higher AUROC for LazyStrike: both rows support it
    results = {"summary": summary, "primary_endpoints": [{"variant": v, "metric": m} for v, m in endpoints]}
    rows = endpoint_rows(results)
    assert [r["verdict"] for r in rows] == ["supports the claim", "supports the claim"]
    assert rows[0]["difference"] == pytest.approx(-0.16) and rows[0]["predicted"] == "lower"


def test_a_significant_difference_against_the_prediction_contradicts_the_claim():
    per_seed = {
        "vit_cls": [_run(0.5, 0.4, 0.4, gap=0.05), _run(0.5, 0.4, 0.4, gap=0.06), _run(0.5, 0.4, 0.4, gap=0.04)],
        "lastvit_k1": [_run(0.5, 0.4, 0.4, gap=0.20), _run(0.5, 0.4, 0.4, gap=0.22), _run(0.5, 0.4, 0.4, gap=0.21)],
    }
    summary, _ = summarise(per_seed, (("lastvit_k1", "background/bg_gap"),))
    rows = endpoint_rows(
        {"summary": summary, "primary_endpoints": [{"variant": "lastvit_k1", "metric": "background/bg_gap"}]}
    )
    assert rows[0]["verdict"] == "contradicts the claim"


def test_verdict_reports_learning_endpoints_and_maps_below_chance_from_the_numbers():
    per_seed = {
        "vit_cls": [_run(0.50, 0.40, 0.45), _run(0.52, 0.41, 0.44), _run(0.49, 0.39, 0.46)],
        "lastvit_k1": [_run(0.51, 0.70, 0.30), _run(0.53, 0.72, 0.31), _run(0.50, 0.69, 0.29)],
    }
    summary, testing = summarise(per_seed, (("lastvit_k1", "auroc/patch_score"),))
    results = {
        "summary": summary,
        "multiple_testing": testing,
        "chance": 0.1,
        "seeds": [0, 1, 2],
        "variants": {k: VARIANTS[k] for k in per_seed},
        "primary_endpoints": [{"variant": "lastvit_k1", "metric": "auroc/patch_score"}],
    }
    text = "\n".join(verdict(results))
    assert "The models learned something" in text
    assert "Patch-Score (pooled) map AUROC: 0.703 vs 0.400" in text and "supports the claim" in text
    assert "below 0.5 means the map ranks background patches above object patches" in text
    assert "ViT (CLS) Patch Score (pooled) (0.400)" in text
    assert "1 primary (Holm)" in text


def test_verdict_says_when_nothing_was_learned():
    per_seed = {"vit_cls": [_run(0.15, 0.4, 0.4), _run(0.16, 0.4, 0.4)]}
    summary, testing = summarise(per_seed, ())
    results = {
        "summary": summary,
        "multiple_testing": testing,
        "chance": 1 / 7,
        "seeds": [0, 1],
        "variants": {"vit_cls": VARIANTS["vit_cls"]},
        "primary_endpoints": [],
    }
    assert "mostly reflect initialisation, not learning" in verdict(results)[0]


def test_study_config_fills_the_scale_defaults_and_rejects_unknown_variants():
    config = StudyConfig(scale="auto", epochs=1.5).resolved(cuda_available=False)
    assert config.scale == "cpu" and config.epochs == 1.5 and config.image_size is not None
    assert StudyConfig(scale="auto").resolved(cuda_available=True).scale == "gpu"
    with pytest.raises(ValueError, match="Unknown variants"):
        StudyConfig(variants=("vit_cls", "vit_huge")).resolved(False)
    with pytest.raises(ValueError, match="keep it"):
        StudyConfig(variants=("vit_mean",)).resolved(False)


def test_the_default_study_is_the_papers_supervised_comparison_with_five_seeds_and_declared_endpoints():
    config = StudyConfig().resolved(cuda_available=False)
    assert len(config.seeds) >= 5
    assert set(config.variants) == {"vit_cls", "vit_reg4", "vit_mean", "lastvit_k1", "lastvit_k7"}
    assert VARIANTS["lastvit_k7"]["top_k_ratio"] == pytest.approx(1 / 7) and VARIANTS["lastvit_k1"]["top_k"] == 1
    assert {v for v, _ in config.primary_endpoints} == {"lastvit_k1", "lastvit_k7"}
    assert {m for _, m in PRIMARY_ENDPOINTS} == {"background/mixed_rand", "background/bg_gap", "auroc/patch_score"}
    assert config.background_correlation > 0 and config.num_validation > 0


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
            "--num-validation",
            "32",
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
    lazystrike = results["summary"]["lastvit_k1"]
    for key in (
        "top1",
        "untrained_top1",
        "validation_top1",
        "auroc/patch_score",
        "auroc/patch_score/untrained",
        "auroc/ceiling",
        "auroc/baseline/colour_outlier",
        "point_in_box/patch_score",
        "point_in_box/patch_score_cls",
        "point_in_box/votes/untrained",
        "point_in_box/cls_attention",
        "point_in_box/ceiling",
        "corloc/votes",
        "segmentation_iou/patch_score",
        "point_in_box/baseline/colour_outlier",
        "norms/patch_max_over_median",
        "norms/cls_to_patch",
    ):
        assert key in lazystrike, key
    for name in ("original", "only_fg", "only_bg", "mixed_same", "mixed_rand", "bg_gap", "flip_rate"):
        assert f"background/{name}" in lazystrike and f"background/{name}/untrained" in lazystrike, name
    gap = lazystrike["background/bg_gap"]["mean"]
    assert gap == pytest.approx(
        lazystrike["background/mixed_same"]["mean"] - lazystrike["background/mixed_rand"]["mean"]
    )
    assert "norms/register_to_patch" in results["summary"]["vit_reg4"]
    assert "norms/register_to_patch" not in lazystrike  # no registers, no ratio
    assert "point_in_box/votes" not in results["summary"]["vit_cls"]  # CLS pooling casts no votes
    assert len(results["per_seed"]["vit_cls"]) == 2
    assert "top1 vs vit_cls" in lazystrike["tests"] and "auroc/patch_score vs untrained" in lazystrike["tests"]
    probe = results["per_seed"]["vit_cls"][0]["probe/k"]
    assert probe == sorted({round(i * 16 / 7) for i in range(7)})  # the paper's N/7 grid, 16 patches
    # the declared endpoints, their Holm-corrected p-values and the count of secondary tests
    declared = [(e["variant"], e["metric"]) for e in results["primary_endpoints"]]
    assert declared == [list(e) for e in PRIMARY_ENDPOINTS] or declared == list(PRIMARY_ENDPOINTS)
    primary = [results["summary"][v]["tests"][f"{m} vs vit_cls"] for v, m in declared]
    assert all(t["family"] == "primary" and "p_adjusted" in t for t in primary)
    assert results["multiple_testing"]["primary"]["correction"] == "Holm"
    assert results["multiple_testing"]["secondary"]["correction"] == "Benjamini-Hochberg"
    layers = results["raw"]["vit_reg4-seed0"]["token_norms"]["before_final_layernorm"]["layers"]
    assert len(layers) == 4 and layers[0]["register_to_patch"] > 0


def test_study_report_has_tables_sentences_and_readable_figures(study_dir):
    report = (study_dir / "report.md").read_text()
    for heading in (
        "## Primary endpoints",
        "## Background test",
        "## Accuracy",
        "## AUROC vs exact object coverage",
        "## Point-in-Box (secondary",
        "## CorLoc (secondary",
        "## coarse-segmentation IoU (secondary",
        "## Masking probe",
        "## Token norms before the final LayerNorm",
        "## What the numbers support",
        "## Secondary tests",
        "## How the defaults were chosen",
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
    assert model.config.pooling == "lazystrike" and model.config.lazystrike_top_k == 1  # the released setting
    assert "model-index" in (study_dir / "lastvit-model" / "README.md").read_text()
    assert not (study_dir / "lastvit-model" / "checkpoints").exists()
    assert not list(study_dir.parent.glob(".*"))  # no staging folder left behind


def test_study_refuses_to_overwrite_a_previous_report(study_dir, capsys):
    assert study.main(["--output-dir", str(study_dir), "--seeds", "0"]) == 1
    assert "--overwrite" in capsys.readouterr().err


def _part(study_dir, tmp_path, index):
    """Seed `index` of the fixture's study as a finished study folder of its own."""
    import shutil

    results = json.loads((study_dir / "report.json").read_text())
    seed = results["seeds"][index]
    results["seeds"] = results["config"]["seeds"] = [seed]
    results["per_seed"] = {name: [runs[index]] for name, runs in results["per_seed"].items()}
    results["raw"] = {k: v for k, v in results["raw"].items() if k.endswith(f"-seed{seed}")}
    for phase in ("training", "evaluation"):
        results["timings_s"][phase] = {
            k: v for k, v in results["timings_s"][phase].items() if k.endswith(f"-seed{seed}")
        }
    folder = tmp_path / f"part{seed}"
    shutil.copytree(study_dir / "lastvit-model", folder / "lastvit-model")
    shutil.copy2(study_dir / "maps.png", folder / "maps.png")
    (folder / "report.json").write_text(json.dumps(results))
    return folder


def test_merging_studies_of_disjoint_seeds_gives_the_study_of_all_seeds(study_dir, tmp_path):
    parts = [_part(study_dir, tmp_path, 1), _part(study_dir, tmp_path, 0)]
    out = tmp_path / "merged"
    assert study.main(["--merge", *map(str, parts), "--output-dir", str(out)]) == 0
    merged, whole = json.loads((out / "report.json").read_text()), json.loads((study_dir / "report.json").read_text())
    assert merged["seeds"] == [0, 1] and [p["seeds"] for p in merged["merged_from"]] == [[0], [1]]
    assert merged["summary"]["lastvit_k1"]["top1"] == whole["summary"]["lastvit_k1"]["top1"]
    test = "background/bg_gap vs vit_cls"
    assert merged["summary"]["lastvit_k1"]["tests"][test] == whole["summary"]["lastvit_k1"]["tests"][test]
    assert merged["multiple_testing"] == whole["multiple_testing"]
    assert {"report.md", "maps.png", "per_seed.png", "masking_probe.png", "lastvit-model"} <= {
        p.name for p in out.iterdir()
    }
    assert study.main(["--merge", str(parts[0]), str(parts[0]), "--output-dir", str(tmp_path / "twice")]) == 1


def test_learning_curves_score_each_setting_on_validation_and_record_how_they_ran(tmp_path):
    from lastvit.study.curves import run_learning_curves

    config = StudyConfig(
        output_dir=tmp_path / "curves",
        data_variant="scenes",
        num_train=64,
        num_validation=16,
        num_test=16,
        epochs=1,
        batch_size=16,
        progress=False,
    )
    settings = (
        ("CLS", "vit_cls", {}, {}),
        ("CLS, small objects", "vit_cls", {"scale_range": (0.3, 0.4)}, {"learning_rate": 2e-3}),
    )
    results = run_learning_curves(config, settings=settings, eval_every=2)
    saved = json.loads((tmp_path / "curves" / "learning_curves.json").read_text())
    assert saved["curves"] == json.loads(json.dumps(results["curves"]))
    assert saved["study_steps"] == 4 and saved["config"]["num_test"] == 16
    assert saved["command"].startswith("lastvit-study") and "packages" in saved["environment"]
    assert (tmp_path / "curves" / "learning_curves.png").stat().st_size > 0
    for curve, (name, _, data_overrides, overrides) in zip(saved["curves"], settings, strict=True):
        assert curve["name"] == name and curve["overrides"] == overrides
        assert curve["data_overrides"] == json.loads(json.dumps(data_overrides))
        assert curve["steps"] == [2, 4, 6, 8] and len(curve["validation_top1"]) == 4  # 2x the study's steps
        assert curve["validation_background_test"]["num_images"] == 16
        assert set(curve["validation_background_test"]) >= {"mixed_rand", "only_bg", "bg_gap", "flip_rate"}
