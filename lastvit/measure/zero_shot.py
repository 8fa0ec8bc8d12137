"""Zero-shot classification and segmentation of image-text models (LaSt-ViT Tab. 4 and 8).

- Class text embeddings: each class name in every prompt, encoded, L2-normalised and averaged over
  the prompts, then normalised again (CLIP's prompt ensembling).
- Zero-shot classification: arg-max over classes of cos(image embedding, class embedding).
- Zero-shot segmentation: every projected patch token (the same final LayerNorm and projection as
  the global feature) gets the class of highest cosine; each patch labels its whole patch of pixels;
  mIoU against exact masks from a confusion matrix summed over the images. Two protocols:
  ``ignore_background`` (VOC20's: pixels outside the objects are not scored, C classes) and, when
  background texts are given, C + 1 classes where a patch whose best text is a background text is
  labelled background (VOC21 / Context-style).

The mIoU is the local `evaluate` module ``mean_iou`` (`lastvit.measure.load_metric("mean_iou")`), which
calls `confusion_matrix` and `mean_iou` here: one definition for the library and the module.

Models need `get_image_features`, `get_text_features` and `get_patch_features`
(`modeling_lastvit.LastViTCLIPModel`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

IGNORE = 255
DEFAULT_PROMPTS = ("a photo of a {}.",)


def _text_features(model, tokenizer, texts: list[str]) -> torch.Tensor:
    """Projected text features ``[T, P]`` (fp32); texts longer than the text tower's positions are truncated,
    as CLIP truncates its 77-token context (a converted tower may have a shorter one)."""
    device = next(model.parameters()).device
    max_length = model.config.text_config.max_position_embeddings
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    inputs = {k: v.to(device) for k, v in encoded.items()}
    features = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    return features.pooler_output.float()


@torch.no_grad()
def class_text_embeddings(model, tokenizer, class_names: Sequence[str], prompts: Sequence[str] = DEFAULT_PROMPTS):
    """``[C, P]`` unit vectors, one per class name, averaged over `prompts` (each with one ``{}``)."""
    if not class_names:
        raise ValueError("class_text_embeddings needs at least one class name.")
    if any("{}" not in prompt for prompt in prompts):
        raise ValueError(f"every prompt needs a '{{}}' placeholder for the class name; got {list(prompts)}.")
    texts = [prompt.format(name) for name in class_names for prompt in prompts]
    embeds = torch.nn.functional.normalize(_text_features(model, tokenizer, texts), dim=-1)
    embeds = embeds.reshape(len(class_names), len(prompts), -1).mean(dim=1)
    return torch.nn.functional.normalize(embeds, dim=-1)


def patch_text_cosine(patch_features: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """``[B, N, T]`` cosine of every patch feature ``[B, N, P]`` with every unit text embedding ``[T, P]``."""
    if patch_features.ndim != 3 or patch_features.shape[-1] != text_embeddings.shape[-1]:
        raise ValueError(
            f"zero-shot segmentation needs patch features [B, N, P] and text embeddings [T, P]; got "
            f"{tuple(patch_features.shape)} and {tuple(text_embeddings.shape)}."
        )
    return torch.nn.functional.normalize(patch_features.float(), dim=-1) @ text_embeddings.float().t()


def segment_patches(patch_features: torch.Tensor, text_embeddings: torch.Tensor, num_classes: int | None = None):
    """Class index per patch ``[B, N]``: arg-max cosine over the texts. Texts ``>= num_classes``
    (background texts appended after the C classes) all map to class C, the background."""
    labels = patch_text_cosine(patch_features, text_embeddings).argmax(dim=-1)
    return labels if num_classes is None else labels.clamp(max=num_classes)


@torch.no_grad()
def zero_shot_patch_maps(
    model,
    tokenizer,
    pixel_values: torch.Tensor,
    labels: Sequence[int],
    class_names: Sequence[str],
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(patch labels [B, N], true-class cosine [B, N])`` on CPU: each patch's arg-max class over
    the C class texts (what the objects-only mIoU scores) and the cosine of each patch with the text
    embedding of its image's class in `labels` (the zero-shot map that Point-in-Box scores)."""
    if len(labels) != len(pixel_values):
        raise ValueError(f"Got {len(labels)} labels for {len(pixel_values)} images; give one label per image.")
    model.eval()
    device = next(model.parameters()).device
    texts = class_text_embeddings(model, tokenizer, class_names, prompts)
    patch_labels, own = [], []
    for start in range(0, len(pixel_values), batch_size):
        cosine = patch_text_cosine(
            model.get_patch_features(pixel_values[start : start + batch_size].to(device)), texts
        )
        index = torch.as_tensor(list(labels[start : start + batch_size]), device=cosine.device)
        patch_labels.append(cosine.argmax(dim=-1).cpu())
        own.append(cosine.gather(-1, index[:, None, None].expand(-1, cosine.shape[1], 1))[..., 0].cpu())
    return torch.cat(patch_labels), torch.cat(own)


def patch_labels_to_pixels(patch_labels, grid: Sequence[int], patch_size: Sequence[int]) -> np.ndarray:
    """``[B, N]`` (row-major) patch labels to ``[B, H, W]`` pixel labels, each patch over its pixels."""
    array = patch_labels.cpu().numpy() if isinstance(patch_labels, torch.Tensor) else np.asarray(patch_labels)
    array = array.reshape(-1, int(grid[0]), int(grid[1]))
    return np.repeat(np.repeat(array, int(patch_size[0]), axis=1), int(patch_size[1]), axis=2)


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


@torch.no_grad()
def evaluate_zero_shot(
    model,
    tokenizer,
    pixel_values: torch.Tensor,
    labels: Sequence[int],
    object_masks: np.ndarray | None,
    class_names: Sequence[str],
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    background_texts: Sequence[str] = (),
    batch_size: int = 64,
) -> dict:
    """Zero-shot top-1 and, with exact `object_masks` ``[B, H, W]`` at the input's size, segmentation
    mIoU (``ignore_background``; plus ``with_background`` over C + 1 classes when `background_texts`
    are given: each is a full text, e.g. "a photo of sand.")."""
    model.eval()
    device = next(model.parameters()).device
    texts = class_text_embeddings(model, tokenizer, class_names, prompts)
    if background_texts:
        extra = _text_features(model, tokenizer, list(background_texts))
        texts_bg = torch.cat([texts, torch.nn.functional.normalize(extra, dim=-1)])
    num_classes = len(class_names)
    height, width = pixel_values.shape[-2:]
    patch_size = model.config.vision_config.patch_size_hw
    grid = (height // patch_size[0], width // patch_size[1])
    correct = 0
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    confusion_bg = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for start in range(0, len(pixel_values), batch_size):
        batch = pixel_values[start : start + batch_size].to(device)
        batch_labels = list(labels[start : start + batch_size])
        image = torch.nn.functional.normalize(
            model.get_image_features(pixel_values=batch).pooler_output.float(), dim=-1
        )
        correct += int((image @ texts.t()).argmax(dim=-1).cpu().eq(torch.as_tensor(batch_labels)).sum())
        if object_masks is None:
            continue
        masks = np.asarray(object_masks[start : start + batch_size], dtype=bool)
        if masks.shape[-2:] != (height, width):
            raise ValueError(
                f"object masks are {masks.shape[-2:]} but the inputs are {(height, width)}; map them alike."
            )
        patches = model.get_patch_features(batch)
        predicted = patch_labels_to_pixels(segment_patches(patches, texts), grid, patch_size)
        confusion += confusion_matrix(predicted, scene_targets(masks, batch_labels, None), num_classes)
        if background_texts:
            predicted = patch_labels_to_pixels(segment_patches(patches, texts_bg, num_classes), grid, patch_size)
            confusion_bg += confusion_matrix(
                predicted, scene_targets(masks, batch_labels, num_classes), num_classes + 1
            )
    results = {"zero_shot_top1": correct / max(len(labels), 1), "num_images": len(labels)}
    if object_masks is not None:
        results["segmentation_ignore_background"] = mean_iou(confusion)
        if background_texts:
            results["segmentation_with_background"] = mean_iou(confusion_bg)
    return results


__all__ = [
    "IGNORE",
    "class_text_embeddings",
    "confusion_matrix",
    "dataset_mean_iou",
    "evaluate_zero_shot",
    "mean_iou",
    "patch_labels_to_pixels",
    "patch_text_cosine",
    "scene_targets",
    "segment_patches",
    "zero_shot_patch_maps",
]
