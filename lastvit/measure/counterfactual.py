"""The backgrounds challenge (`evaluation.background_test`, Xiao et al. 2020) for models without a
classifier head, on the counterfactual renderings of the same test scenes
(`lastvit.data.background_challenge`: columns ``image_<set>`` beside ``image``):

- a DINO backbone through DINO's weighted k-NN on a memory bank of training features
  (`KNNClassifier`, the rule of `pretrained_eval.knn_accuracy`);
- a LastViT-CLIP model through zero-shot classification against its class-prompt embeddings
  (`ZeroShotClassifier`, the rule of `zero_shot.evaluate_zero_shot`).

Each gives every set's top-1, BG-gap (mixed-same minus mixed-rand) and flip rate (the share of
predictions that change from original to mixed-rand), flattened under a prefix
(``knn_top1_mixed_rand``, ``zero_shot_flip_rate``, ...). On ``original`` each classifier gives the
same predictions as its headline top-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import torch

from lastvit.data.background_challenge import COUNTERFACTUAL_SETS

from .evaluation import background_test
from .pretrained_eval import _eval_transform, global_features, knn_votes
from .zero_shot import DEFAULT_PROMPTS, class_text_embeddings


class KNNClassifier(torch.nn.Module):
    """DINO's weighted k-NN as a classifier: ``forward(pixel_values).logits`` are the class votes of
    the `k` nearest bank images (cosine of the global features, weights exp(cos / T))."""

    def __init__(self, backbone, bank_pixels, bank_labels, num_classes: int, k: int = 20, temperature: float = 0.07):
        super().__init__()
        self.backbone, self.num_classes, self.k, self.temperature = backbone, num_classes, k, temperature
        self.register_buffer("bank", torch.nn.functional.normalize(global_features(backbone, bank_pixels), dim=-1))
        self.register_buffer("bank_labels", torch.as_tensor(bank_labels))

    def forward(self, pixel_values):
        features = torch.nn.functional.normalize(global_features(self.backbone, pixel_values), dim=-1)
        votes = knn_votes(self.bank, self.bank_labels, features, self.num_classes, self.k, self.temperature)
        return SimpleNamespace(logits=votes)


class ZeroShotClassifier(torch.nn.Module):
    """A LastViT-CLIP model as a zero-shot classifier: ``forward(pixel_values).logits`` are the cosines
    of the image embedding with each class's prompt embedding."""

    def __init__(self, model, tokenizer, class_names: Sequence[str], prompts: Sequence[str] = DEFAULT_PROMPTS):
        super().__init__()
        self.model = model.eval()
        self.register_buffer("texts", class_text_embeddings(model, tokenizer, class_names, prompts))

    def forward(self, pixel_values):
        image = self.model.get_image_features(pixel_values=pixel_values).pooler_output.float()
        return SimpleNamespace(logits=torch.nn.functional.normalize(image, dim=-1) @ self.texts.t())


def has_counterfactuals(split) -> bool:
    """Whether `split` holds every counterfactual rendering (``image_<set>`` columns)."""
    return all(f"image_{name}" in split.column_names for name in COUNTERFACTUAL_SETS)


def counterfactual_pixels(split, transform, original=None) -> dict:
    """``{set: pixel values}`` of `split`'s original images (or `original`, when already transformed)
    and of each counterfactual rendering, at the evaluation `transform`."""
    from lastvit.training.pretraining import eval_arrays

    sets = {"original": eval_arrays(split, transform)[0] if original is None else original}
    for name in COUNTERFACTUAL_SETS:
        sets[name] = eval_arrays(split, transform, f"image_{name}")[0]
    return sets


def flat_background(result: dict, prefix: str) -> dict:
    """`background_test`'s counterfactual top-1s, BG-gap and flip rate as ``{prefix_...: value}``
    (``original`` is the headline top-1, so it is left out)."""
    flat = {f"{prefix}_top1_{name}": result[name] for name in COUNTERFACTUAL_SETS}
    flat[f"{prefix}_bg_gap"], flat[f"{prefix}_flip_rate"] = result["bg_gap"], result["flip_rate"]
    return flat


def knn_background_test(backbone, bank, sets: dict, labels, k: int = 20) -> dict:
    """The backgrounds challenge of a DINO backbone's k-NN, flat (``knn_top1_<set>``, ``knn_bg_gap``,
    ``knn_flip_rate``); `bank` is ``(pixels, labels)`` of the training images (its memory)."""
    bank_pixels, bank_labels = bank
    num_classes = int(max(max(bank_labels), max(labels))) + 1
    classifier = KNNClassifier(backbone, bank_pixels, bank_labels, num_classes, k)
    device = next(backbone.parameters()).device
    return flat_background(background_test(classifier, sets, torch.as_tensor(labels), device=device), "knn")


def zero_shot_background_test(model, tokenizer, split, class_names: Sequence[str], seed: int = 0) -> dict:
    """``{"trained": ..., "untrained": ...}``: the backgrounds challenge of a LastViT-CLIP model's
    zero-shot classifier and of its untrained twin (`localization.untrained_copy`, as
    `pretrained_eval.evaluate_clip_model`), flat (``zero_shot_top1_<set>``, ``zero_shot_bg_gap``,
    ``zero_shot_flip_rate``), on a split with counterfactual columns."""
    from lastvit.data.loading import ImageTransform

    from .baselines import untrained_copy

    transform = _eval_transform(model.vision_model, model.config.vision_config.image_size_hw[0], ImageTransform)
    sets = counterfactual_pixels(split, transform)
    labels = torch.as_tensor(split["label"])
    device = next(model.parameters()).device
    measured = {}
    for side, clip in (("trained", model), ("untrained", untrained_copy(model, seed))):
        classifier = ZeroShotClassifier(clip, tokenizer, class_names)
        measured[side] = flat_background(
            background_test(classifier, sets, labels, batch_size=64, device=device), "zero_shot"
        )
    return measured


__all__ = [
    "KNNClassifier",
    "ZeroShotClassifier",
    "counterfactual_pixels",
    "flat_background",
    "has_counterfactuals",
    "knn_background_test",
    "zero_shot_background_test",
]
