"""lastvit-analysis: the Lappe & Giese report (JSON, Markdown, PNGs) for a LastViT checkpoint folder.

Tiny random models only: these tests guard the mechanics and the invariants of the numbers (shares
sum to 1, CKA in [0, 1], o_full reproduces the layer), never a scientific result.
"""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lastvit.measure.decoupling import AnalysisError, analyze
from lastvit.measure.decoupling_report import write_report
from modeling_lastvit import LastViTForImageClassification, LastViTImageProcessor, LastViTModel
from tests.tiny import tiny_config
from training_scripts.analyze import main

TOL = 1e-6
CLS_SECTIONS = ("attention_share", "contribution_norms", "cka", "gram", "cls_cosine")


def converted_dinov2_with_registers():
    """A tiny transformers Dinov2WithRegistersModel converted to LastViT, with its processor."""
    import transformers

    from lastvit.conversion import ConversionOptions, convert_hf_model

    source = transformers.Dinov2WithRegistersModel(
        transformers.Dinov2WithRegistersConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            mlp_ratio=2,
            num_register_tokens=4,
        )
    )
    result = convert_hf_model(source, ConversionOptions())
    return result.model, result.image_processor


def make_models():
    torch.manual_seed(0)
    dinov2, dinov2_processor = converted_dinov2_with_registers()
    return {
        "lazystrike_registers": (
            LastViTForImageClassification(tiny_config(num_register_tokens=4, lazystrike_top_k=2, num_labels=3)),
            LastViTImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}),
        ),
        "cls_no_registers": (LastViTModel(tiny_config(pooling="cls")), None),
        "dinov2_registers": (dinov2, dinov2_processor),
        "no_cls": (LastViTModel(tiny_config(use_cls_token=False, pooling="mean")), None),
    }


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Each tiny model saved to a folder and analysed by the CLI on 8 generated scenes."""
    root = tmp_path_factory.mktemp("analysis")
    out = {}
    for name, (model, processor) in make_models().items():
        folder = root / name
        model.save_pretrained(folder)
        if processor is not None:
            processor.save_pretrained(folder)
        report = root / f"{name}-report"
        argv = [
            "--model",
            str(folder),
            "--random-images",
            "8",
            "--num-overlays",
            "2",
            "--batch-size",
            "3",
            "--output-dir",
            str(report),
            "--no-progress",
        ]
        assert main(argv) == 0, name
        out[name] = (folder, report, json.loads((report / "analysis.json").read_text()))
    return out


@pytest.mark.parametrize("name", ["lazystrike_registers", "cls_no_registers", "dinov2_registers"])
def test_cls_models_get_every_measurement_with_consistent_numbers(reports, name):
    _, _, numbers = reports[name]
    for key in ("model", "data", "token_norms", "readout", "localisation", "figures", *CLS_SECTIONS):
        assert key in numbers, key
    assert numbers["data"]["num_images"] == 8 and numbers["data"]["has_boxes"]

    shares = numbers["attention_share"]
    assert shares["cls_self"]["mean"] + shares["registers"]["mean"] + shares["patches"]["mean"] == pytest.approx(
        1, abs=1e-5
    )
    assert all(0 <= shares[k]["mean"] <= 1 for k in ("cls_self", "registers", "patches"))
    for suffix in ("", "_after_projection"):  # before the output projection (the paper's default), and after it
        gram = numbers["gram" + suffix]
        assert gram["patch_patch"] + gram["cross"] + gram["reg_reg"] == pytest.approx(1, abs=1e-6)
        assert gram["cross"] == pytest.approx(gram["patch_reg"] + gram["reg_patch"])
        defined = {k: v for k, v in numbers["cka" + suffix].items() if v is not None}
        assert {"o_full_vs_o_patch", "o_full_vs_o_skip"} <= set(defined)
        assert all(-TOL <= v <= 1 + TOL for v in defined.values()), defined
        assert numbers["contribution_norms" + suffix]["skip_to_patch_ratio"]["mean"] > 0
    # o_skip + o_full is the CLS token after the sub-block only in the residual space, after the projection.
    assert {"residual_vs_o_patch", "residual_vs_o_skip"} <= set(numbers["cka_after_projection"])
    assert "residual_vs_o_patch" not in numbers["cka"]
    for key in ("cka_pooled_vs_patch_mean", "cka_pooled_vs_final_cls"):
        assert -TOL <= numbers["readout"][key] <= 1 + TOL

    cosine = numbers["cls_cosine"]
    assert len(cosine["mean"]) == numbers["model"]["num_hidden_layers"] + 1
    assert cosine["mean"][-1] == pytest.approx(1, abs=1e-5)  # the final CLS against itself
    # o_full recomputed from the weights is the layer's own attention output, and its parts add up to it.
    checks = numbers["checks"]
    assert checks["o_full_after_projection_vs_layer_attention_output_max_abs_diff"] < 1e-5
    assert checks["o_full_vs_sum_of_parts_max_abs_diff"] < 1e-5
    assert checks["o_full_after_projection_vs_sum_of_parts_max_abs_diff"] < 1e-5
    assert numbers["token_norms"]["threshold"] > 0 and numbers["token_norms"]["high_norm_total"] >= 0


def test_every_decomposition_is_reported_before_and_after_the_output_projection(reports):
    numbers = reports["dinov2_registers"][2]
    assert set(numbers["contributions"]) == {"default", "after_projection"}
    for section in ("cka", "contribution_norms"):
        assert set(numbers[section]) <= set(numbers[f"{section}_after_projection"]), section
    assert {"o_full_vs_o_patch"} <= set(numbers["cka"]) and "skip_to_patch_ratio" in numbers["contribution_norms"]


def test_register_image_dependence_is_reported_per_register_raw_and_after_norm1(reports):
    numbers = reports["dinov2_registers"][2]
    registers = numbers["register_dependence"]
    assert len(registers["per_register"]) == 4
    for view in ("raw", "after_norm1"):
        shares = [entry[view]["top_norm_share"] for entry in registers["per_register"]]
        assert sum(shares) == pytest.approx(1.0)  # exactly one register has the highest norm in each image
        assert all(-1 - TOL <= entry[view]["mean_pairwise_cosine"] <= 1 + TOL for entry in registers["per_register"])
        assert 0 <= registers[view]["most_often_highest_norm"] < 4
    assert "register_dependence" in reports["cls_no_registers"][2]["not_applicable"]


def test_registers_are_measured_only_where_there_are_registers(reports):
    with_registers = reports["lazystrike_registers"][2]
    assert with_registers["model"]["num_register_tokens"] == 4
    assert 0 <= with_registers["cka"]["o_full_vs_o_reg"] <= 1 + TOL
    assert with_registers["attention_share_without_self"]["registers"]["mean"] > 0
    assert "register_norm" in with_registers["token_norms"]

    without = reports["cls_no_registers"][2]
    assert without["attention_share"]["registers"]["mean"] == 0
    assert without["cka"]["o_full_vs_o_reg"] is None
    assert "cka.o_full_vs_o_reg" in without["not_applicable"]
    assert without["gram"]["register_part"].startswith("o_cls_self")


def test_converted_dinov2_with_registers_is_analysed_as_a_cls_model_with_layerscale(reports):
    numbers = reports["dinov2_registers"][2]
    assert numbers["model"]["layerscale"] and numbers["model"]["num_register_tokens"] == 4
    assert numbers["readout"]["pooling"] == "cls" and not numbers["readout"]["patch_only_by_construction"]
    assert numbers["readout"]["cka_pooled_vs_final_cls"] == pytest.approx(1, abs=1e-6)


def test_lazystrike_readout_is_patch_only_and_equals_the_mean_of_its_selected_patches(reports):
    numbers = reports["lazystrike_registers"][2]
    readout = numbers["readout"]
    assert readout["patch_only_by_construction"]
    assert readout["cka_pooled_vs_selected_patches"] == pytest.approx(1, abs=1e-6)
    assert readout["selected_patches_max_abs_diff"] < 1e-6
    assert "cls_note" in numbers  # its CLS output is discarded: the CLS numbers describe a register-like token


def test_a_model_without_cls_gets_what_applies_and_the_reason_for_the_rest(reports):
    _, report, numbers = reports["no_cls"]
    for section in CLS_SECTIONS:
        assert section not in numbers and section in numbers["not_applicable"]
    assert numbers["readout"]["patch_only_by_construction"]
    assert numbers["readout"]["cka_pooled_vs_patch_mean"] == pytest.approx(1, abs=1e-6)  # mean pooling
    assert "token_norms" in numbers
    assert not list(report.glob("cls_attention_*.png")) and not (report / "cls_cosine.png").exists()


@pytest.mark.parametrize("name", ["lazystrike_registers", "cls_no_registers", "dinov2_registers", "no_cls"])
def test_markdown_embeds_every_figure_and_the_figures_decode(reports, name):
    _, report, numbers = reports[name]
    markdown = (report / "analysis.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert sorted(linked) == pngs and pngs
    assert sorted(n for names in numbers["figures"].values() for n in names) == pngs
    assert "norm_histogram.png" in pngs and "readout_map_1.png" in pngs
    if numbers["model"]["use_cls_token"]:
        assert {"cls_attention_0.png", "cls_attention_1.png", "cls_cosine.png"} <= set(pngs)
    for png in pngs:
        with Image.open(report / png) as image:
            image.load()
            assert image.format == "PNG" and min(image.size) > 50
    assert not list(report.parent.glob(f".{report.name}*"))  # no staging folder left behind


def test_an_existing_report_is_refused_unless_overwrite(reports):
    folder, report, _ = reports["cls_no_registers"]
    before = (report / "analysis.json").read_text()
    argv = [
        "--model",
        str(folder),
        "--random-images",
        "4",
        "--num-overlays",
        "0",
        "--output-dir",
        str(report),
        "--no-progress",
    ]
    assert main(argv) == 1
    assert (report / "analysis.json").read_text() == before
    assert main(argv + ["--overwrite"]) == 0
    assert json.loads((report / "analysis.json").read_text())["data"]["num_images"] == 4
    assert not list(report.glob("cls_attention_*.png"))  # the old figures went with the old report


def test_dataset_boxes_are_mapped_through_the_eval_transform(tmp_path):
    """A saved dataset with [x, y, w, h] boxes: the analysis reads the split, maps each box through
    resize + centre crop, and scores Point-in-Box against it."""
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for _ in range(5)]
    split = datasets.Dataset.from_dict(
        {"image": images, "label": [0, 1, 0, 1, 0], "bbox": [[8.0, 0.0, 48.0, 48.0]] * 5}
    ).cast_column("image", datasets.Image())
    datasets.DatasetDict({"test": split}).save_to_disk(str(tmp_path / "data"))
    model_dir = tmp_path / "model"
    LastViTModel(tiny_config(num_register_tokens=2)).save_pretrained(model_dir)
    report = tmp_path / "report"
    argv = [
        "--model",
        str(model_dir),
        "--dataset",
        str(tmp_path / "data"),
        "--eval-split",
        "test",
        "--num-images",
        "4",
        "--num-overlays",
        "0",
        "--output-dir",
        str(report),
        "--no-progress",
    ]
    assert main(argv) == 0
    numbers = json.loads((report / "analysis.json").read_text())
    assert numbers["data"]["num_images"] == 4 and numbers["data"]["has_boxes"]
    # The box covers the whole centre crop, so every arg-max is inside it.
    assert numbers["localisation"]["cls_attention_pib"] == 1.0
    assert numbers["localisation"]["random_patch_pib"] == 1.0


def test_analyze_in_memory_restores_the_models_attention_backend_and_mode(tmp_path):
    model = LastViTForImageClassification(tiny_config(num_register_tokens=2, num_labels=2))
    model.set_attn_implementation("sdpa")
    model.train()
    results = analyze(model, torch.randn(4, 3, 32, 32), progress=False, num_overlays=1)
    assert model.config._attn_implementation == "sdpa" and model.training
    assert results.arrays["images"].shape == (1, 3, 32, 32)
    write_report(results, tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "analysis.md").exists() and (tmp_path / "r" / "cls_attention_0.png").exists()
    with pytest.raises(AnalysisError, match="already holds files"):
        write_report(results, tmp_path / "r", progress=False)


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    model_dir = tmp_path / "model"
    LastViTModel(tiny_config()).save_pretrained(model_dir)
    base = ["--model", str(model_dir), "--output-dir", str(tmp_path / "out"), "--no-progress"]
    assert main(base + ["--random-images", "1"]) == 1
    assert "at least 2 images" in capsys.readouterr().err
    assert main(base + ["--random-images", "4", "--dataset", "scenes"]) == 1
    assert "not both" in capsys.readouterr().err
    with pytest.raises(AnalysisError, match="at least 2"):
        analyze(LastViTModel(tiny_config()), torch.randn(1, 3, 32, 32), progress=False)

    import transformers

    vit_dir = tmp_path / "vit"
    transformers.ViTModel(
        transformers.ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
        )
    ).save_pretrained(vit_dir)
    assert (
        main(["--model", str(vit_dir), "--random-images", "4", "--output-dir", str(tmp_path / "o2"), "--no-progress"])
        == 1
    )
    assert "lastvit-convert" in capsys.readouterr().err


def test_an_unreadable_image_is_named_in_the_error(tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    good = Image.new("RGB", (32, 32), (200, 30, 30))
    split = datasets.Dataset.from_dict({"image": [good, good]}).cast_column("image", datasets.Image())
    split = split.cast_column("image", datasets.Image(decode=False))
    rows = [split[0]["image"], {"bytes": b"not an image", "path": "broken.png"}]
    split = datasets.Dataset.from_dict({"image": rows}, features=split.features)
    datasets.DatasetDict({"validation": split}).save_to_disk(str(tmp_path / "data"))
    model_dir = tmp_path / "model"
    LastViTModel(tiny_config()).save_pretrained(model_dir)
    argv = ["--model", str(model_dir), "--dataset", str(tmp_path / "data"), "--eval-split", "validation",
            "--output-dir", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    assert main(argv) == 1
    assert "broken.png" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from training_scripts.analyze import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported for --help'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--one-shot" in result.stdout


def labelled_dataset(folder, num_classes=3, per_class=2, size=40):
    """A saved dataset with train and test splits of random images, `per_class` images per class."""
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    splits = {}
    for split in ("train", "test"):
        labels = [c for c in range(num_classes) for _ in range(per_class)]
        images = [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in labels]
        features = datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=[f"class{c}" for c in range(num_classes)])}
        )
        splits[split] = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return folder


def test_one_shot_runs_from_the_cli_on_a_labelled_dataset(tmp_path):
    data = labelled_dataset(tmp_path / "data")
    model_dir = tmp_path / "model"
    LastViTModel(tiny_config(num_register_tokens=2)).save_pretrained(model_dir)
    report = tmp_path / "report"
    argv = ["--model", str(model_dir), "--dataset", str(data), "--eval-split", "test", "--num-images", "4",
            "--one-shot", "--num-overlays", "0", "--output-dir", str(report), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    numbers = json.loads((report / "analysis.json").read_text())
    one_shot = numbers["one_shot"]
    assert one_shot["num_classes"] == 3 and one_shot["train_images"] == 3 and one_shot["test_images"] == 3
    assert one_shot["train_images_per_class"] == 1 and "nearest" in one_shot["readout"]
    assert one_shot["chance"] == {"top1": pytest.approx(1 / 3), "top5": 1.0}
    for suffix in ("", "_after_projection"):
        accuracy = one_shot["accuracy" + suffix]
        assert set(accuracy) == {"o_full", "o_patch", "o_reg", "o_cls_self"}
        assert all(0 <= a["top1"] <= a["top5"] == 1.0 for a in accuracy.values())  # 3 classes: top-5 is certain


def test_one_shot_reads_an_imagefolder(tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (tmp_path / "imgs" / split / name).mkdir(parents=True)
            for i in range(2):
                image = Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8))
                image.save(tmp_path / "imgs" / split / name / f"{i}.png")
    model_dir = tmp_path / "model"
    LastViTModel(tiny_config()).save_pretrained(model_dir)
    argv = ["--model", str(model_dir), "--dataset", "imagefolder", "--data-dir", str(tmp_path / "imgs"),
            "--one-shot", "--num-overlays", "0", "--output-dir", str(tmp_path / "report"), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    numbers = json.loads((tmp_path / "report" / "analysis.json").read_text())
    assert numbers["one_shot"]["num_classes"] == 2 and numbers["data"]["num_images"] == 4


def test_one_shot_needs_labelled_images(tmp_path, capsys):
    model_dir = tmp_path / "model"
    LastViTModel(tiny_config()).save_pretrained(model_dir)
    base = ["--model", str(model_dir), "--output-dir", str(tmp_path / "out"), "--no-progress", "--one-shot"]
    assert main(base + ["--random-images", "4"]) == 1
    assert "labelled" in capsys.readouterr().err
    data = labelled_dataset(tmp_path / "data")
    assert main(base + ["--dataset", str(data), "--eval-split", "test", "--label-column", "kind"]) == 1
    assert "no column 'kind'" in capsys.readouterr().err
