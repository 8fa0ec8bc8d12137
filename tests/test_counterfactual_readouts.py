"""`lastvit.measure.counterfactual`: the backgrounds challenge through a DINO backbone's k-NN and a
LastViT-CLIP model's zero-shot classifier. On the original images each gives its headline top-1;
a set equal to the original flips nothing."""

import pytest
import torch

from lastvit.clip.captions import train_word_tokenizer
from lastvit.data.background_challenge import COUNTERFACTUAL_SETS
from lastvit.measure.counterfactual import (
    ZeroShotClassifier,
    flat_background,
    knn_background_test,
)
from lastvit.measure.evaluation import background_test
from lastvit.measure.pretrained_eval import knn_accuracy
from lastvit.measure.zero_shot import evaluate_zero_shot
from modeling_lastvit import LastViTCLIPModel, LastViTModel

from .tiny import tiny_clip_config, tiny_config


def _pixels(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_knn_readout_gives_the_knn_top1_on_the_original_and_flips_only_where_the_background_changes():
    torch.manual_seed(0)
    backbone = LastViTModel(tiny_config(pooling="lazystrike")).eval()
    bank_pixels, bank_labels = _pixels(40, 1), [i % 4 for i in range(40)]
    original, other = _pixels(12, 2), _pixels(12, 3)
    labels = [i % 4 for i in range(12)]
    top1 = knn_accuracy(backbone, bank_pixels, bank_labels, original, labels, k=5)
    other_top1 = knn_accuracy(backbone, bank_pixels, bank_labels, other, labels, k=5)

    same = {name: original for name in ("original", *COUNTERFACTUAL_SETS)}
    measured = knn_background_test(backbone, (bank_pixels, bank_labels), same, labels, k=5)
    assert set(measured) == {f"knn_top1_{n}" for n in COUNTERFACTUAL_SETS} | {"knn_bg_gap", "knn_flip_rate"}
    assert all(measured[f"knn_top1_{n}"] == pytest.approx(top1) for n in COUNTERFACTUAL_SETS)
    assert measured["knn_bg_gap"] == 0.0 and measured["knn_flip_rate"] == 0.0

    swapped = knn_background_test(backbone, (bank_pixels, bank_labels), {**same, "mixed_rand": other}, labels, k=5)
    assert swapped["knn_top1_mixed_rand"] == pytest.approx(other_top1)
    assert swapped["knn_bg_gap"] == pytest.approx(top1 - other_top1)
    assert 0.0 < swapped["knn_flip_rate"] <= 1.0


def test_zero_shot_readout_gives_the_zero_shot_top1_on_the_original():
    tokenizer = train_word_tokenizer(["a photo of a bird.", "a photo of a mammal.", "a photo of a vehicle."], 32)
    torch.manual_seed(0)
    model = LastViTCLIPModel(tiny_clip_config(tokenizer)).eval()
    names = ["bird", "mammal", "vehicle"]
    pixels, labels = _pixels(9, 4), [i % 3 for i in range(9)]
    headline = evaluate_zero_shot(model, tokenizer, pixels, labels, None, names)["zero_shot_top1"]
    sets = {name: pixels for name in ("original", *COUNTERFACTUAL_SETS)}
    result = background_test(ZeroShotClassifier(model, tokenizer, names), sets, torch.as_tensor(labels))
    assert result["original"] == pytest.approx(headline)
    flat = flat_background(result, "zero_shot")
    assert flat["zero_shot_top1_mixed_rand"] == pytest.approx(headline) and flat["zero_shot_flip_rate"] == 0.0
    assert "zero_shot_top1_original" not in flat  # the headline top-1 is not repeated
