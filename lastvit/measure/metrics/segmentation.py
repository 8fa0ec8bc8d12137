"""Segmentation by label maps, scored as VOC does: a confusion matrix summed over a set, then the
per-class IoU and their mean (mIoU). The zero-shot segmentation of image-text models
(`lastvit.measure.zero_shot`, LaSt-ViT Tab. 4) and ``lastvit-benchmark`` score their label maps
here, and so does the local `evaluate` module ``mean_iou``: one definition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IGNORE = 255
"""Target label of pixels that are not scored (VOC's void; outside the objects under VOC20's protocol)."""


def scene_targets(object_masks: np.ndarray, labels: Sequence[int], background: int | None) -> np.ndarray:
    """Per-pixel targets of one-object scenes ``[B, H, W]``: the image's class on its mask, and
    `background` elsewhere (None: `IGNORE`, the VOC20 protocol)."""
    masks = np.asarray(object_masks, dtype=bool)
    if len(labels) != len(masks):
        raise ValueError(f"Got {len(labels)} labels for {len(masks)} masks; give one label per image.")
    fill = IGNORE if background is None else background
    targets = np.full(masks.shape, fill, dtype=np.int64)
    for target, mask, label in zip(targets, masks, labels):
        target[mask] = int(label)
    return targets


def confusion_matrix(
    predicted: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int | None = IGNORE
) -> np.ndarray:
    """``[K, K]`` pixel counts (rows: target, columns: prediction); target pixels equal to
    `ignore_index` are skipped (None: every pixel is scored)."""
    predicted, target = np.asarray(predicted), np.asarray(target)
    if predicted.shape != target.shape:
        raise ValueError(f"predictions {predicted.shape} and targets {target.shape} must have one shape.")
    keep = np.ones(target.shape, dtype=bool) if ignore_index is None else target != ignore_index
    target, predicted = target[keep].astype(np.int64), predicted[keep].astype(np.int64)
    if ((target < 0) | (target >= num_classes) | (predicted < 0) | (predicted >= num_classes)).any():
        ignored = "" if ignore_index is None else f" (or be {ignore_index} in the target to be ignored)"
        raise ValueError(f"labels must lie in [0, {num_classes}){ignored}; raise num_classes or fix the maps.")
    return np.bincount(target * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def mean_iou(confusion: np.ndarray) -> dict:
    """Per-class IoU ``TP / (TP + FP + FN)`` and their mean over the classes that occur (in the
    target or the prediction); a class with an empty union is left out (NaN), as mmseg does."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
    accuracy = true_positive.sum() / max(confusion.sum(), 1)
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        "per_class_iou": iou.tolist(),
        "pixel_accuracy": float(accuracy),
    }


def dataset_mean_iou(predictions, references, num_classes: int, ignore_index: int | None = IGNORE) -> dict:
    """`mean_iou` of label maps summed over a whole dataset (VOC's rule): one confusion matrix over
    every pair, so large images weigh more than small ones. Each pair must have one shape; pairs may
    differ in size. What the ``mean_iou`` evaluate module computes."""
    if len(predictions) != len(references):
        raise ValueError(f"Got {len(predictions)} predicted maps for {len(references)} reference maps.")
    if not len(predictions):
        raise ValueError("mean IoU needs at least one pair of label maps.")
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for predicted, target in zip(predictions, references):
        confusion += confusion_matrix(predicted, target, num_classes, ignore_index)
    return mean_iou(confusion)


__all__ = ["IGNORE", "confusion_matrix", "dataset_mean_iou", "mean_iou", "scene_targets"]
