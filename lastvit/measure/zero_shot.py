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

The mIoU and the per-pixel targets are `lastvit.measure.metrics.segmentation` (the rule of the local
`evaluate` module ``mean_iou`` too).

Models need `get_image_features`, `get_text_features` and `get_patch_features`
(`modeling_lastvit.LastViTCLIPModel`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .grid import patches_to_pixels
from .metrics.segmentation import confusion_matrix, mean_iou, scene_targets

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
        predicted = patches_to_pixels(segment_patches(patches, texts), patch_size, grid)
        confusion += confusion_matrix(predicted, scene_targets(masks, batch_labels, None), num_classes)
        if background_texts:
            predicted = patches_to_pixels(segment_patches(patches, texts_bg, num_classes), patch_size, grid)
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
    "DEFAULT_PROMPTS",
    "class_text_embeddings",
    "evaluate_zero_shot",
    "patch_text_cosine",
    "segment_patches",
    "zero_shot_patch_maps",
]
