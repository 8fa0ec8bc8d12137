"""`lastvit-evaluate` and its library (`lastvit.measure.evaluation`) on tiny models and scenes."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from lastvit.measure.evaluation import EvaluationData, evaluate_model
from lastvit.measure.masking import masking_grid
from modeling_lastvit import LastViTForImageClassification, LastViTImageProcessor
from training_scripts import evaluate

from .test_localization import assert_png
from .tiny import tiny_clip_config, tiny_config


def save_tiny(folder, **overrides):
    LastViTForImageClassification(tiny_config(num_labels=7, **overrides)).save_pretrained(folder)
    LastViTImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_masking_grid_steps_by_a_seventh_of_the_patches():
    assert masking_grid(196) == [0, 28, 56, 84, 112, 140, 168]


def test_every_map_gets_its_untrained_twin_and_the_map_free_baselines():
    torch.manual_seed(0)
    model = LastViTForImageClassification(tiny_config(num_labels=3, pooling="lazystrike", num_register_tokens=2))
    pixels = torch.randn(6, 3, 32, 32)
    masks = np.zeros((6, 32, 32), dtype=bool)
    masks[:, :8, :8] = True
    data = EvaluationData(pixels, torch.tensor([0, 1, 2, 0, 1, 2]), [(1, 1, 7, 7)] * 6, masks)
    metrics, arrays = evaluate_model(model, data, probe_images=4)
    assert set(metrics["maps"]) == {"patch_score", "patch_score_cls", "votes", "cls_attention"}
    for values in metrics["maps"].values():
        assert {"auroc", "auroc_images", "point_in_box", "corloc", "segmentation_iou", "untrained"} <= set(values)
        assert set(values["untrained"]) == {"auroc", "auroc_images", "point_in_box", "corloc", "segmentation_iou"}
        assert 0.0 <= values["auroc"] <= 1.0 and values["auroc_images"] == 6
    assert set(metrics["baselines"]) == {"random_patch", "centre_patch", "colour_outlier"}
    assert metrics["baselines"]["random_patch"]["point_in_box"] == pytest.approx(1 / 16)  # one patch of 16
    # the ceiling: the exact coverage map (one fully covered patch) is perfect on every metric
    ceiling = metrics["ceiling"]
    assert ceiling["auroc"] == 1.0 and ceiling["point_in_box"] == 1.0 and ceiling["segmentation_iou"] == 1.0
    assert ceiling["single_class_images"] == 0
    # token norms before the final LayerNorm, per layer, with CLS and register ratios
    layers = metrics["token_norms"]["before_final_layernorm"]["layers"]
    assert len(layers) == model.config.num_hidden_layers
    assert layers[-1]["register_to_patch"] == pytest.approx(layers[-1]["register_mean"] / layers[-1]["patch_mean"])
    assert layers[-1]["cls_to_patch"] > 0
    assert metrics["box_area_fraction"] == pytest.approx(36 / 1024)
    probe = metrics["masking_probe"]
    assert probe["high"][0] == probe["low"][0] == probe["random"][0]  # k = 0 masks nothing
    attention = arrays["maps"]["cls_attention"]
    assert attention.shape == (6, 16) and bool((attention.sum(1) < 1.0).all())  # CLS and registers take the rest


def test_background_test_reports_each_set_the_gap_and_the_flip_rate():
    from lastvit.measure.evaluation import background_test

    class ByMeanColour(torch.nn.Module):  # predicts class 1 when the image is bright, else 0
        def forward(self, pixel_values):
            bright = pixel_values.mean(dim=(1, 2, 3)) > 0
            return SimpleNamespace(logits=torch.stack([(~bright).float(), bright.float()], dim=1))

    labels = torch.tensor([1, 1, 0, 0])
    bright, dark = torch.ones(4, 3, 8, 8), -torch.ones(4, 3, 8, 8)
    sets = {"original": bright, "only_fg": bright, "only_bg": dark, "mixed_same": bright, "mixed_rand": dark}
    result = background_test(ByMeanColour(), sets, labels, batch_size=3)
    assert result["original"] == 0.5 and result["only_bg"] == 0.5
    assert result["bg_gap"] == 0.0 and result["flip_rate"] == 1.0  # every prediction changes with the swap
    sets["mixed_rand"] = torch.cat([bright[:2], dark[2:]])
    result = background_test(ByMeanColour(), sets, labels)
    assert result["mixed_rand"] == 1.0 and result["bg_gap"] == -0.5 and result["flip_rate"] == 0.5
    with pytest.raises(ValueError, match="missing"):
        background_test(ByMeanColour(), {"original": bright}, labels)


def test_evaluate_reports_every_map_baselines_probe_and_norms(tmp_path):
    from lastvit.data.scenes import build_scenes

    data = tmp_path / "scenes"
    build_scenes(8, 24, image_size=32, seed=3).save_to_disk(str(data))
    model = save_tiny(tmp_path / "model")
    out = tmp_path / "eval"
    assert (
        evaluate.main(["--model", str(model), "--dataset", str(data), "--output-dir", str(out), "--no-progress"]) == 0
    )
    metrics = json.loads((out / "report.json").read_text())
    assert metrics["classification"]["num_images"] == 24
    assert {"patch_score", "votes", "cls_attention"} <= set(metrics["maps"])
    untrained_votes = metrics["maps"]["votes"]["untrained"]
    assert all(0.0 <= v <= 1.0 for k, v in untrained_votes.items() if k != "auroc_images")
    assert untrained_votes["auroc_images"] <= 24
    probe = metrics["masking_probe"]
    assert probe["k"][0] == 0 and len(probe["high"]) == len(probe["k"])
    assert probe["high"][0] == probe["low"][0] == pytest.approx(metrics["classification"]["top1"])
    for name in ("report.md", "maps.png", "masking_probe.png", "norms.png"):
        assert (out / name).exists()


def test_evaluate_without_boxes_reports_classification_only(tmp_path):
    import datasets

    model = save_tiny(tmp_path / "model")
    images = [Image.fromarray(np.full((32, 32, 3), 60 * i, dtype=np.uint8)) for i in range(4)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list("abcdefg"))})
    split = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0, 1]}, features=features)
    datasets.DatasetDict(train=split, test=split).save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "eval"
    assert (
        evaluate.main(
            ["--model", str(model), "--dataset", str(tmp_path / "data"), "--output-dir", str(out), "--no-progress"]
        )
        == 0
    )
    metrics = json.loads((out / "report.json").read_text())
    assert "maps" not in metrics and metrics["classification"]["num_images"] == 4
    assert np.isfinite(metrics["token_norms"]["after_final_layernorm"]["max_norm"])


def test_evaluate_names_a_missing_model_folder(tmp_path, capsys):
    assert evaluate.main(["--model", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "eval")]) == 1
    assert "nope" in capsys.readouterr().err


# --mode clip / --mode dino (`lastvit.measure.pretrained_eval`)


def save_scenes(folder, num_train=8, num_test=12):
    from lastvit.data.scenes import build_scenes

    build_scenes(num_train, num_test, image_size=32, seed=3).save_to_disk(str(folder))
    return folder


def save_tiny_clip(folder, pooling="lazystrike", seed=0):
    from lastvit.clip.captions import scene_captions, train_word_tokenizer
    from modeling_lastvit import LastViTCLIPModel

    names = ["bird", "mammal", "vehicle", "small animal", "insect", "fish", "aircraft"]
    tokenizer = train_word_tokenizer(scene_captions(list(range(7)), ["sand"] * 7, names, seed=0))
    torch.manual_seed(seed)
    LastViTCLIPModel(tiny_clip_config(tokenizer, pooling)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_clip_mode_measures_zero_shot_metrics_for_the_model_its_untrained_twin_and_a_baseline(tmp_path):
    data = save_scenes(tmp_path / "scenes")
    model = save_tiny_clip(tmp_path / "clip")
    baseline = save_tiny_clip(tmp_path / "clip-cls", pooling="cls", seed=1)
    out = tmp_path / "eval"
    argv = ["--mode", "clip", "--model", str(model), "--baseline", str(baseline), "--dataset", str(data)]
    assert evaluate.main([*argv, "--output-dir", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["num_images"] == 12 and set(report["models"]) == {"trained", "untrained", "baseline"}
    expected = {"zero_shot_top1", "zero_shot_miou", "zero_shot_map_pib", "patch_score_point_in_box"}
    for values in report["models"].values():
        assert expected <= set(values)
        assert all(0.0 <= values[k] <= 1.0 for k in expected)
    markdown = (out / "report.md").read_text()
    for name in ("zero_shot_segmentation.png", "zero_shot_similarity.png"):
        assert_png(out / name)
        assert f"]({name})" in markdown


def test_dino_mode_measures_knn_pib_corloc_and_segmentation_next_to_the_untrained_twin(tmp_path):
    from modeling_lastvit import LastViTModel

    data = save_scenes(tmp_path / "scenes", num_train=16)
    torch.manual_seed(0)
    LastViTModel(tiny_config(pooling="lazystrike", lazystrike_top_k=1)).save_pretrained(tmp_path / "dino")
    out = tmp_path / "eval"
    argv = ["--mode", "dino", "--model", str(tmp_path / "dino"), "--dataset", str(data), "--knn-k", "5"]
    assert evaluate.main([*argv, "--output-dir", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["models"]) == {"trained", "untrained"}
    for values in report["models"].values():
        assert set(values) == {"knn_top1", "point_in_box", "corloc", "segmentation_iou", "map_auroc"}
    markdown = (out / "report.md").read_text()
    assert_png(out / "patch_score_foreground.png")
    assert "](patch_score_foreground.png)" in markdown


def test_dino_figure_boxes_are_the_boxes_corloc_scores(tmp_path):
    import datasets

    from lastvit.measure.pretrained_eval import evaluate_pretrained
    from modeling_lastvit import LastViTModel

    from_disk = datasets.load_from_disk(str(save_scenes(tmp_path / "scenes", num_train=8)))
    LastViTModel(tiny_config(pooling="lazystrike", lazystrike_top_k=1)).save_pretrained(tmp_path / "dino")
    results, maps = evaluate_pretrained(
        "dino", tmp_path / "dino", from_disk["train"], from_disk["test"], knn_k=3, figure_images=12
    )
    assert maps["pixels"].shape == (12, 3, 32, 32) and maps["grid"] == (4, 4)
    for name in ("trained", "untrained"):
        shown = np.mean([iou >= 0.5 for iou in maps["models"][name]["box_iou"]])
        assert shown == pytest.approx(results["models"][name]["corloc"])
    assert (
        evaluate_pretrained("dino", tmp_path / "dino", from_disk["train"], from_disk["test"], figure_images=0)[1] == {}
    )


def test_clip_mode_on_a_backbone_folder_says_which_mode_fits(tmp_path, capsys):
    from modeling_lastvit import LastViTModel

    LastViTModel(tiny_config()).save_pretrained(tmp_path / "backbone")
    argv = ["--mode", "clip", "--model", str(tmp_path / "backbone"), "--dataset", str(save_scenes(tmp_path / "d"))]
    assert evaluate.main([*argv, "--output-dir", str(tmp_path / "eval")]) == 1
    assert "--mode dino" in capsys.readouterr().err


def test_baseline_is_refused_in_the_classifier_mode(tmp_path, capsys):
    model = save_tiny(tmp_path / "model")
    argv = ["--model", str(model), "--baseline", str(model), "--output-dir", str(tmp_path / "eval")]
    assert evaluate.main(argv) == 1
    assert "--baseline" in capsys.readouterr().err


class _OneHotTexts(torch.nn.Module):
    """Text i embeds as the unit vector e_i; patch features are given; 2x2 grid of 8-px patches."""

    def __init__(self, patches):
        super().__init__()
        self.patches = patches
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(
            vision_config=SimpleNamespace(patch_size_hw=(8, 8)),
            text_config=SimpleNamespace(max_position_embeddings=77),
        )

    def get_text_features(self, input_ids, attention_mask=None):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(pooler_output=torch.nn.functional.one_hot(input_ids[:, 0], 3).float())

    def get_patch_features(self, pixel_values):
        return self.patches[: len(pixel_values)]


def _class_index_tokenizer(texts, padding=True, return_tensors="pt", **truncation):
    index = [["alpha", "beta", "gamma"].index(text.split()[-1].rstrip(".")) for text in texts]
    return {"input_ids": torch.tensor(index)[:, None], "attention_mask": torch.ones(len(texts), 1, dtype=torch.long)}


def test_zero_shot_map_pib_hits_when_the_patch_closest_to_the_true_class_text_lies_in_the_box():
    from lastvit.measure.pretrained_eval import zero_shot_map_pib

    patches = torch.zeros(2, 4, 3)
    patches[:, :, 2] = 1.0  # every patch leans to class 2 ...
    patches[0, 3] = torch.tensor([0.0, 1.0, 0.0])  # ... but image 0's bottom-right patch is class 1
    patches[1, 0] = torch.tensor([0.0, 1.0, 0.0])  # and image 1's top-left patch
    model = _OneHotTexts(patches)
    pixels = torch.zeros(2, 3, 16, 16)
    boxes = [(8, 8, 16, 16), (8, 8, 16, 16)]  # both boxes cover the bottom-right patch
    score = zero_shot_map_pib(model, _class_index_tokenizer, pixels, [1, 1], boxes, ["alpha", "beta", "gamma"])
    assert score == pytest.approx(0.5)  # image 0 hits, image 1's class-1 patch is outside its box


def test_encode_gives_the_classifiers_own_logits_whatever_its_input_rule():
    from lastvit.measure.forward import encode

    torch.manual_seed(0)
    model = LastViTForImageClassification(tiny_config(num_labels=3, classifier_input="pooled_and_patch_mean")).eval()
    pixels = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits
    torch.testing.assert_close(encode(model, pixels, device="cpu")["logits"], expected)


def test_figure_helpers_draw_without_reference_masks_or_boxes_and_with_an_empty_foreground(tmp_path):
    from lastvit.measure import plots as P

    pixels = torch.randn(2, 3, 32, 32)
    labels = {"this model": torch.tensor([[0, 1] * 8, [2] * 16])}
    assert_png(P.plot_label_grid(pixels, labels, tmp_path / "labels.png", (4, 4), num_classes=3))
    empty = {"scores": torch.zeros(2, 16), "foreground": np.zeros((2, 4, 4), dtype=bool), "boxes": [None, None]}
    assert_png(
        P.plot_foreground_grid(pixels, {"this model": empty, "untrained twin": empty}, tmp_path / "fg.png", (4, 4))
    )
