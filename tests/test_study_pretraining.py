"""`lastvit-study-pretraining` (`lastvit.study.pretraining`): the DINO and CLIP readout comparison
end to end at a tiny scale, the pre-declared tests (DINO-CLS learns; the readout x caption-rate
interaction; Holm-adjusted secondary tests) on hand-made per-seed numbers, and the AUROC of a map
against exact object coverage. The tests read report.json, not the prose."""

import json
import math

import numpy as np
import pytest
import torch

from lastvit.data.background_challenge import COUNTERFACTUAL_SETS
from lastvit.measure.grid import patch_coverage
from lastvit.measure.metrics.localisation import auroc_against_coverage
from lastvit.study.pretraining import (
    BACKGROUND_MEASURES,
    METRICS,
    TESTED,
    VARIANTS,
    PretrainingStudyConfig,
    PretrainingStudyError,
    build_data,
    holm,
    merge_reports,
    run_pretraining_study,
    slope,
    study_tests,
    summarise,
    with_counterfactuals,
)
from training_scripts import study_pretraining


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """``(folder, results)`` of the whole design at a tiny scale: one seed, two caption rates."""
    out = tmp_path_factory.mktemp("pretraining") / "study"
    config = PretrainingStudyConfig(
        output_dir=out,
        seeds=(0,),
        num_train=32,
        num_val=8,
        num_test=16,
        batch_size=16,
        dino_epochs=1,
        clip_epochs=1,
        caption_rates=(0.0, 0.9),
        dino_knn_every=1,
    )
    return out, run_pretraining_study(config)


def test_tiny_study_trains_every_variant_at_every_caption_rate_and_writes_the_declared_design(tiny_study):
    out, results = tiny_study
    report = json.loads((out / "report.json").read_text())
    assert set(report["per_seed"]) == set(VARIANTS)
    assert {"dino_k1", "dino_kn7", "clip_k1", "clip_khalf"} <= set(VARIANTS)
    for name, runs in report["per_seed"].items():
        family = VARIANTS[name]["family"]
        assert len(runs) == (1 if family == "dino" else 2)  # CLIP: one run per caption rate
        for run in runs:
            assert run["steps"] == 2  # 32 images, batch 16, one epoch
            assert set(TESTED[family]) <= set(run["trained"]) and set(TESTED[family]) <= set(run["untrained"])
    assert sorted(r["caption_rate"] for r in report["per_seed"]["clip_k1"]) == [0.0, 0.9]
    # the backgrounds challenge of every image tower and its untrained twin (DINO: k-NN, CLIP: zero-shot)
    prefix = {"dino": "knn", "clip": "zero_shot"}
    for name, runs in report["per_seed"].items():
        measures = {f"{prefix[VARIANTS[name]['family']]}_{key}" for key in BACKGROUND_MEASURES}
        assert all(measures <= set(run[side]) for run in runs for side in ("trained", "untrained"))
        assert all(0.0 <= run["trained"][m] <= 1.0 for run in runs for m in measures if "bg_gap" not in m)
    assert "knn_top1_mixed_rand" in report["summary"]["dino_k1"]["metrics"]
    assert "zero_shot_top1_only_bg" in report["summary"]["clip_cls"]["by_rate"]["0.9"]
    mixed_rand = [t for t in report["tests"] if t["metric"].endswith("_top1_mixed_rand")]
    # DINO: 3 variants vs untrained + 2 readouts vs CLS and gain; CLIP: 2 readouts vs CLS at 2 rates
    assert [t["family"] for t in mixed_rand].count("dino") == 7 and [t["family"] for t in mixed_rand].count(
        "clip"
    ) == 4
    assert all(t["kind"] == "secondary" and "p_adjusted" in t for t in mixed_rand)
    assert not any(t["metric"].endswith("only_bg") for t in report["tests"])  # at chance by construction: shown only
    curve = report["per_seed"]["dino_cls"][0]["curves"]["knn_curve"]
    assert [p["step"] for p in curve] == [0, 1, 2]
    # the scenes name each image's background, so the curve also tracks how well the teacher tells them apart
    assert all(set(p) == {"step", "knn_top1", "knn_background_top1"} for p in curve)
    summary_curve = report["summary"]["dino_cls"]["knn_curve"]
    assert summary_curve["knn_background_top1"]["per_seed"] == [[p["knn_background_top1"] for p in curve]]
    assert report["design"]["primary"].keys() == {"dino", "clip"}
    assert report["config"]["caption_rates"] == [0.0, 0.9] and report["config"]["primary_clip_variant"] == "clip_k1"
    kinds = [t["kind"] for t in report["tests"]]
    assert kinds.count("primary") == 2 and kinds.index("secondary") > kinds.index("primary")
    assert report["verdict"] == results["verdict"] and report["verdict"][0].startswith("Primary (DINO)")
    assert set(report["data_fingerprint"]) == {"train", "validation", "test"}
    assert {"pillow", "numpy", "datasets", "torch"} <= set(report["environment"]["packages"])
    for name in ("dino.png", "dino_curves.png", "clip_rates.png", "report.md"):
        assert (out / name).exists()
    assert not list(out.parent.glob(".study*"))  # staging and work folders are gone


def _write_part(folder, report: dict, names: list[str]) -> None:
    """A report folder holding only the runs of `names`, as a run with those families would write it."""
    families = sorted({VARIANTS[n]["family"] for n in names}, key=["dino", "clip"].index)
    part = {
        **report,
        "config": {**report["config"], "families": families},
        "per_seed": {n: report["per_seed"][n] for n in names},
    }
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(part))


@pytest.fixture
def parts(tiny_study, tmp_path):
    """The tiny study's report split into its DINO part and its CLIP part."""
    report = json.loads((tiny_study[0] / "report.json").read_text())
    _write_part(tmp_path / "dino", report, [n for n in VARIANTS if VARIANTS[n]["family"] == "dino"])
    _write_part(tmp_path / "clip", report, [n for n in VARIANTS if VARIANTS[n]["family"] == "clip"])
    return report, [tmp_path / "dino", tmp_path / "clip"]


def test_merging_the_parts_of_a_study_gives_the_whole_studys_tests_and_summary(parts, tmp_path):
    whole, folders = parts
    merged = merge_reports(folders, tmp_path / "merged")
    written = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert written["tests"] == whole["tests"] and written["summary"] == whole["summary"]
    assert written["verdict"] == whole["verdict"] and written["design"] == whole["design"]
    assert written["config"]["families"] == ["dino", "clip"] and merged["per_seed"] == whole["per_seed"]
    assert [p["families"] for p in written["parts"]] == [["dino"], ["clip"]]
    assert written["minutes"] == pytest.approx(2 * whole["minutes"])


def test_the_cli_merges_parts_and_refuses_a_single_one(parts, tmp_path, capsys):
    whole, folders = parts
    out = tmp_path / "cli"
    assert study_pretraining.main(["--merge", *map(str, folders), "--output-dir", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["tests"] == whole["tests"]
    assert study_pretraining.main(["--merge", str(folders[0]), "--output-dir", str(tmp_path / "one")]) == 1
    assert "two or more parts" in capsys.readouterr().err and not (tmp_path / "one").exists()


def test_merging_refuses_parts_of_different_studies_and_incomplete_or_duplicated_runs(parts, tmp_path):
    whole, (dino, clip) = parts
    with pytest.raises(PretrainingStudyError, match="merge parts that together ran every seed"):
        merge_reports([dino, dino], tmp_path / "twice")
    other = json.loads((clip / "report.json").read_text())
    other["config"]["clip_epochs"] = 2
    (clip / "report.json").write_text(json.dumps(other))
    with pytest.raises(PretrainingStudyError, match="differs from .* in clip_epochs"):
        merge_reports([dino, clip], tmp_path / "other")
    other["config"]["clip_epochs"], other["data_fingerprint"] = whole["config"]["clip_epochs"], {"train": "x"}
    (clip / "report.json").write_text(json.dumps(other))
    with pytest.raises(PretrainingStudyError, match="other scenes"):
        merge_reports([dino, clip], tmp_path / "other")
    with pytest.raises(PretrainingStudyError, match="holds no report.json"):
        merge_reports([dino, tmp_path], tmp_path / "other")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("a user's file")
    with pytest.raises(PretrainingStudyError, match="pass --overwrite"):
        merge_reports([dino, clip], tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "a user's file"
    assert not (tmp_path / "other").exists() and not (tmp_path / "twice").exists()


def test_the_counterfactual_renderings_are_the_test_scenes_with_only_the_background_changed():
    config = PretrainingStudyConfig(output_dir="unused", num_train=4, num_val=2, num_test=6, progress=False)
    data = build_data(config)
    rendered = with_counterfactuals(config, data)
    assert rendered["test"].column_names == data["test"].column_names + [f"image_{n}" for n in COUNTERFACTUAL_SETS]
    assert rendered["train"].column_names == data["train"].column_names
    original = [np.asarray(image) for image in data["test"]["image"]]
    assert all((np.asarray(a) == b).all() for a, b in zip(rendered["test"]["image"], original))
    mask = np.asarray(data["test"][0]["mask"]) > 127
    only_fg, only_bg, mixed_rand = (
        np.asarray(rendered["test"][0][f"image_{n}"]) for n in ("only_fg", "only_bg", "mixed_rand")
    )
    assert (only_fg[~mask] == 0).all() and only_fg[mask].any()  # the object on black
    assert (only_bg[~mask] == original[0][~mask]).all() and (only_bg[mask] != original[0][mask]).any()  # no object
    assert (mixed_rand[~mask] != original[0][~mask]).any()  # a new background around the same object


def _dino(values, untrained, seeds=(0, 1, 2, 3, 4)):
    return [
        {"seed": s, "trained": {"knn_top1": v, "map_auroc": 0.5}, "untrained": {"knn_top1": u, "map_auroc": 0.5}}
        for s, v, u in zip(seeds, values, untrained)
    ]


def test_dinos_primary_test_is_cls_trained_vs_untrained_knn_and_the_rest_is_holm_adjusted():
    config = PretrainingStudyConfig(output_dir="unused", families=("dino",))
    per_seed = {
        "dino_cls": _dino([0.30, 0.32, 0.31, 0.33, 0.29], [0.14] * 5),
        "dino_k1": _dino([0.31, 0.30, 0.33, 0.32, 0.30], [0.15, 0.16, 0.15, 0.14, 0.16]),
        "dino_kn7": _dino([0.14, 0.15, 0.16, 0.14, 0.15], [0.14, 0.15, 0.15, 0.14, 0.16]),
    }
    tests = study_tests(config, per_seed)
    primary = tests[0]
    assert primary["kind"] == "primary" and primary["description"].startswith("DINO-CLS k-NN top-1")
    assert primary["mean_difference"] == pytest.approx(0.17) and primary["real"]
    secondary = [t for t in tests if t["kind"] == "secondary"]
    # knn: 2 variants vs untrained + 2 x (vs CLS, gain vs CLS's); AUROC: 3 vs untrained + 2 x 2
    assert len(secondary) == 6 + 7
    assert all(t["p_adjusted"] >= t["p"] or math.isnan(t["p"]) for t in secondary)
    summary = summarise(config, per_seed)
    assert summary["dino_cls"]["metrics"]["knn_top1"]["untrained"]["mean"] == pytest.approx(0.14)


def _clip(config, difference, noise=0.0):
    """CLIP runs where the primary variant beats CLS by ``difference(rate) + noise * (seed - 2)``."""
    per_seed = {name: [] for name in ("clip_cls", "clip_k1", "clip_khalf")}
    for seed in config.seeds:
        for rate in config.caption_rates:
            base = 0.2 + 0.01 * seed
            values = {"clip_cls": base, "clip_k1": base + difference(rate) + noise * (seed - 2), "clip_khalf": base}
            for name, value in values.items():
                per_seed[name].append(
                    {
                        "seed": seed,
                        "caption_rate": rate,
                        "trained": {"zero_shot_top1": value},
                        "untrained": {"zero_shot_top1": 0.1},
                    }
                )
    return per_seed


def test_the_primary_clip_test_is_the_per_seed_slope_of_the_readout_difference_over_the_rates():
    config = PretrainingStudyConfig(output_dir="unused", families=("clip",))
    assert config.caption_rates == (0.0, 0.3, 0.6, 0.9) and len(config.seeds) >= 5
    # LazyStrike's advantage grows by 0.1 per unit rate on every seed, with a little per-seed offset
    growing = _clip(config, lambda rate: 0.1 * rate + 0.02, noise=0.003)
    primary = study_tests(config, growing)[0]
    assert primary["kind"] == "primary" and primary["family"] == "clip"
    assert primary["slopes"] == pytest.approx([0.1] * 5)
    assert primary["difference_by_rate"]["0.9"]["mean"] == pytest.approx(0.11)
    assert primary["mean_difference"] == pytest.approx(0.1) and primary["real"]
    # slopes that vary around 0.1: a real, positive interaction
    varied = _clip(config, lambda rate: 0.1 * rate)
    for run in varied["clip_k1"]:
        run["trained"]["zero_shot_top1"] += 0.01 * run["caption_rate"] * (run["seed"] - 2)
    primary = study_tests(config, varied)[0]
    assert primary["mean_difference"] == pytest.approx(0.1) and primary["real"]
    # a constant advantage (no interaction): slope 0 on every seed
    flat = study_tests(config, _clip(config, lambda rate: 0.05, noise=0.01))[0]
    assert flat["mean_difference"] == pytest.approx(0.0, abs=1e-12) and not flat["real"]
    secondary = [t for t in study_tests(config, varied) if t["kind"] == "secondary"]
    # the other variant's slope; per rate: 3 models vs untrained, 2 readouts vs CLS on zero-shot top-1
    assert len(secondary) == 1 + 4 * (3 + 2)
    assert secondary[0]["description"].startswith("CLIP-LazyStrike K=N/2 minus CLIP-CLS")


def test_holm_and_slope_on_hand_cases():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, math.nan, 0.01]) == pytest.approx([0.5, math.nan, 0.02], nan_ok=True)
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    assert slope([0.0, 0.3, 0.6, 0.9], [1.0, 1.3, 1.6, 1.9]) == pytest.approx(1.0)
    assert slope([0.0, 1.0], [2.0, 2.0]) == 0.0


def test_map_auroc_against_coverage_is_threshold_free_and_sign_aware():
    coverage = torch.tensor([[0.0, 0.2, 0.6, 1.0], [0.0, 0.2, 0.6, 1.0], [1.0, 1.0, 1.0, 1.0]])
    assert auroc_against_coverage(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), coverage[:1]) == 1.0
    assert auroc_against_coverage(torch.tensor([[4.0, 3.0, 2.0, 1.0]]), coverage[:1]) == 0.0  # background first
    assert auroc_against_coverage(torch.tensor([[1.0, 1.0, 1.0, 1.0]]), coverage[:1]) == 0.5  # ties count half
    # an image that is all object has no AUROC and does not count
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    assert auroc_against_coverage(scores, coverage) == pytest.approx((1.0 + 3 / 4) / 2)  # 2>1, 4>1, 4>3; not 2>3
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True
    masks[0, 2, 2] = True
    torch.testing.assert_close(patch_coverage(masks, (2, 2)), torch.tensor([[1.0, 0.0, 0.0, 0.25]]))


def test_bad_designs_are_refused_with_the_fix():
    with pytest.raises(PretrainingStudyError, match="families must be among"):
        PretrainingStudyConfig(output_dir="x", families=("mae",))
    with pytest.raises(PretrainingStudyError, match="at least one seed"):
        PretrainingStudyConfig(output_dir="x", seeds=())
    with pytest.raises(PretrainingStudyError, match="at least two distinct shares"):
        PretrainingStudyConfig(output_dir="x", caption_rates=(0.3,))
    with pytest.raises(PretrainingStudyError, match="clip_k1 or clip_khalf"):
        PretrainingStudyConfig(output_dir="x", primary_clip_variant="clip_cls")


def test_cli_refuses_to_overwrite_a_folder_without_overwrite(tmp_path, capsys):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "keep.txt").write_text("x")
    assert study_pretraining.main(["--output-dir", str(tmp_path / "study"), "--seeds", "0"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "study" / "keep.txt").exists()


def test_the_study_declares_its_design_in_the_config_defaults():
    config = PretrainingStudyConfig(output_dir="unused")
    assert config.caption_rates == (0.0, 0.3, 0.6, 0.9) and len(config.seeds) >= 5
    assert config.primary_clip_variant == "clip_k1" and config.momentum_teacher == 0.996
    assert set(config.design()["primary"]) == {"dino", "clip"} and "holm" in config.design()["correction"]
    assert set(METRICS["dino"]) >= set(TESTED["dino"])
    args = study_pretraining.build_parser().parse_args(["--pilot", "dino_cls", "--caption-rates", "0", "0.5"])
    assert args.pilot == "dino_cls" and args.caption_rates == [0.0, 0.5]
