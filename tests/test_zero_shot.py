"""Zero-shot classification and segmentation (LaSt-ViT Tab. 4/8) on hand-built cases: the pixel
confusion matrix, mIoU with and without the background class, and the whole evaluation with a
stand-in model whose embeddings are known."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lastvit.measure.grid import patches_to_pixels
from lastvit.measure.metrics.segmentation import IGNORE, confusion_matrix, mean_iou, scene_targets
from lastvit.measure.zero_shot import (
    class_text_embeddings,
    evaluate_zero_shot,
    segment_patches,
    zero_shot_patch_maps,
)

E = torch.eye(3)
TEXTS = {"a photo of a cat.": E[0], "a photo of a dog.": E[1], "a photo of grass.": E[2], "an image of a cat.": E[1]}


class StandInTokenizer:
    def __call__(self, texts, padding=True, return_tensors="pt", **truncation):
        ids = torch.tensor([[list(TEXTS).index(text)] for text in texts])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class StandInCLIP(torch.nn.Module):
    """Texts embed to fixed unit vectors; one 4x4 image, 2x2 patches: cat, dog, grass, mostly cat."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(
            vision_config=SimpleNamespace(patch_size_hw=(2, 2)),
            text_config=SimpleNamespace(max_position_embeddings=77),
        )

    def get_text_features(self, input_ids, attention_mask=None):
        return SimpleNamespace(pooler_output=torch.stack([list(TEXTS.values())[i] for i in input_ids[:, 0]]))

    def get_image_features(self, pixel_values):
        return SimpleNamespace(pooler_output=E[1].expand(len(pixel_values), 3))  # the image looks like "dog"

    def get_patch_features(self, pixel_values):
        patches = torch.stack([E[0], E[1], E[2], torch.tensor([1.0, 0.0, 0.5])])
        return patches.expand(len(pixel_values), 4, 3)


def test_mean_iou_of_a_hand_built_confusion():
    target = np.array([[0, 0, 1, 1, IGNORE]])
    predicted = np.array([[0, 1, 1, 1, 0]])
    confusion = confusion_matrix(predicted, target, 2)
    assert confusion.tolist() == [[1, 1], [0, 2]]  # the ignored pixel is not counted
    result = mean_iou(confusion)
    assert result["per_class_iou"] == pytest.approx([1 / 2, 2 / 3])
    assert result["miou"] == pytest.approx(7 / 12)
    assert result["pixel_accuracy"] == pytest.approx(3 / 4)


def test_a_class_absent_from_target_and_prediction_does_not_count_in_the_mean():
    result = mean_iou(confusion_matrix(np.array([0, 0]), np.array([0, 0]), 3))
    assert result["miou"] == 1.0 and np.isnan(result["per_class_iou"][1])


def test_patch_labels_cover_their_pixels_and_scene_targets_fill_the_background():
    pixels = patches_to_pixels(torch.tensor([[0, 1, 2, 3]]), (2, 2), (2, 2))
    assert pixels[0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    mask = np.zeros((1, 2, 2), bool)
    mask[0, 0, 0] = True
    assert scene_targets(mask, [4], None)[0].tolist() == [[4, IGNORE], [IGNORE, IGNORE]]
    assert scene_targets(mask, [4], 7)[0].tolist() == [[4, 7], [7, 7]]


def test_background_texts_all_map_to_the_one_background_class():
    texts = torch.eye(4)  # classes 0, 1; background texts 2 and 3
    patches = torch.eye(4)[None]
    assert segment_patches(patches, texts, num_classes=2).tolist() == [[0, 1, 2, 2]]
    assert segment_patches(patches, texts).tolist() == [[0, 1, 2, 3]]


def test_class_embeddings_average_the_prompts_and_are_unit_vectors():
    embeds = class_text_embeddings(
        StandInCLIP(), StandInTokenizer(), ["cat"], ["a photo of a {}.", "an image of a {}."]
    )
    torch.testing.assert_close(embeds, torch.tensor([[0.5**0.5, 0.5**0.5, 0.0]]))
    with pytest.raises(ValueError, match="placeholder"):
        class_text_embeddings(StandInCLIP(), StandInTokenizer(), ["cat"], ["no slot"])


def test_prompts_longer_than_the_text_towers_context_are_truncated_like_clips_77_tokens():
    """A converted tower may have a short context; a long prompt is cut to it, [EOS] kept last."""
    from lastvit.clip.captions import train_word_tokenizer
    from modeling_lastvit import LastViTCLIPModel
    from tests.tiny import tiny_clip_config

    tokenizer = train_word_tokenizer(["a photo of a very very small cat on grass ."])
    config = tiny_clip_config(tokenizer)
    config.text_config.max_position_embeddings = 4
    torch.manual_seed(0)
    model = LastViTCLIPModel(config).eval()
    long_prompt = "a photo of a very very small {} on grass."
    embeds = class_text_embeddings(model, tokenizer, ["cat"], [long_prompt])
    cut = tokenizer([long_prompt.format("cat")], truncation=True, max_length=4, return_tensors="pt")
    assert cut["input_ids"].shape[1] == 4 and cut["input_ids"][0, -1] == tokenizer.eos_token_id
    expected = model.get_text_features(**cut).pooler_output
    torch.testing.assert_close(embeds, torch.nn.functional.normalize(expected, dim=-1))


def test_zero_shot_segmentation_miou_on_a_hand_built_scene():
    mask = np.zeros((1, 4, 4), bool)
    mask[0, :2, :] = True  # the cat covers the top row of patches
    results = evaluate_zero_shot(
        StandInCLIP(),
        StandInTokenizer(),
        torch.zeros(1, 3, 4, 4),
        [0],
        mask,
        ["cat", "dog"],
        background_texts=["a photo of grass."],
    )
    assert results["zero_shot_top1"] == 0.0  # the image embedding is "dog"
    # objects only: top-left patch right (cat), top-right wrong (dog); the bottom row is not scored
    assert results["segmentation_ignore_background"]["per_class_iou"] == pytest.approx([0.5, 0.0])
    assert results["segmentation_ignore_background"]["miou"] == pytest.approx(0.25)
    # with background: cat 4/(4+4+4), dog 0, background 4/(4+4)
    assert results["segmentation_with_background"]["per_class_iou"] == pytest.approx([1 / 3, 0.0, 0.5])
    assert results["segmentation_with_background"]["miou"] == pytest.approx(5 / 18)


def test_masks_of_another_size_than_the_inputs_are_refused():
    with pytest.raises(ValueError, match="object masks are"):
        evaluate_zero_shot(
            StandInCLIP(), StandInTokenizer(), torch.zeros(1, 3, 4, 4), [0], np.zeros((1, 8, 8), bool), ["cat", "dog"]
        )


def test_the_mean_iou_module_reports_what_evaluate_zero_shot_reports_in_both_protocols():
    from lastvit.measure import load_metric

    mask = np.zeros((1, 4, 4), bool)
    mask[0, :2, :] = True
    model, tokenizer = StandInCLIP(), StandInTokenizer()
    results = evaluate_zero_shot(
        model, tokenizer, torch.zeros(1, 3, 4, 4), [0], mask, ["cat", "dog"], background_texts=["a photo of grass."]
    )
    texts = class_text_embeddings(model, tokenizer, ["cat", "dog"])
    patches = model.get_patch_features(torch.zeros(1, 3, 4, 4))
    objects_only = patches_to_pixels(segment_patches(patches, texts), (2, 2), (2, 2))
    texts_bg = torch.cat([texts, E[2:3]])
    with_background = patches_to_pixels(segment_patches(patches, texts_bg, 2), (2, 2), (2, 2))
    metric = load_metric("mean_iou")
    assert_same_scores(
        metric.compute(predictions=objects_only, references=scene_targets(mask, [0], None), num_labels=2),
        results["segmentation_ignore_background"],
    )
    assert_same_scores(
        metric.compute(
            predictions=with_background, references=scene_targets(mask, [0], 2), num_labels=3, ignore_index=None
        ),
        results["segmentation_with_background"],
    )


def assert_same_scores(got: dict, expected: dict) -> None:
    """Same keys; numbers and per-class lists equal to float precision (NaN equal to NaN)."""
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_allclose(np.asarray(got[key], float), np.asarray(value, float), rtol=1e-12, equal_nan=True)


def test_zero_shot_patch_maps_give_the_arg_max_class_and_the_true_class_cosine_of_each_patch():
    labels, own = zero_shot_patch_maps(
        StandInCLIP(), StandInTokenizer(), torch.zeros(2, 3, 4, 4), [0, 1], ["cat", "dog"]
    )
    # patches: cat, dog, grass (a tie: the first class), 1.0 cat + 0.5 grass
    assert labels.tolist() == [[0, 1, 0, 0]] * 2
    torch.testing.assert_close(own[0], torch.tensor([1.0, 0.0, 0.0, 1 / 1.25**0.5]))  # cosine with "cat"
    torch.testing.assert_close(own[1], torch.tensor([0.0, 1.0, 0.0, 0.0]))  # cosine with "dog"
    with pytest.raises(ValueError, match="one label per image"):
        zero_shot_patch_maps(StandInCLIP(), StandInTokenizer(), torch.zeros(2, 3, 4, 4), [0], ["cat", "dog"])
