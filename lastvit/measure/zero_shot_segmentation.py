"""Zero-shot segmentation of full images as SCLIP's evaluation does it (the protocol of LaSt-ViT
Tab. 4; github.com/wangf3014/SCLIP ``clip_segmentor.py``), on a `LastViTCLIPModel`:

1. queries: every name of every class (synonyms included) in each of the 80 ImageNet templates,
   encoded, normalised, averaged over the templates and normalised again
   (`zero_shot.class_text_embeddings`);
2. sliding window (`window_boxes`): crops of the model's input size with stride = half of it
   over the image resized to the set's short side; each crop's projected patch features
   (`get_patch_features`, the final LayerNorm and projection of the global feature) give the
   cosine with every query, upsampled bilinearly to the crop; overlapping crops are averaged;
3. the averaged cosines are upsampled bilinearly to the label map's original size, multiplied by
   the logit scale and soft-maxed over the queries; a class scores the maximum over its names;
4. with an area threshold (VOC21), foreground classes whose arg-max area is at most that share of
   all foreground pixels are zeroed; the arg-max is the prediction, and pixels whose highest
   probability is below the probability threshold become background (class 0).
The mIoU sums one confusion matrix over the set (`metrics.segmentation.confusion_matrix`,
`metrics.segmentation.mean_iou`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F


def window_boxes(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """``(y0, y1, x0, x1)`` of every sliding window (mmseg's ``slide_inference`` grid): the last
    window of a row or column is moved back so it ends at the border; a side shorter than `crop`
    gives one window of that side."""
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    boxes = []
    for row in range(rows):
        for col in range(cols):
            y1, x1 = min(row * stride + crop, height), min(col * stride + crop, width)
            boxes.append((max(y1 - crop, 0), y1, max(x1 - crop, 0), x1))
    return boxes


@torch.no_grad()
def window_cosines(model, image: torch.Tensor, queries: torch.Tensor, crop: int, stride: int, batch_size: int = 16):
    """``[Q, h, w]``: per pixel of `image` ``[3, h, w]``, the cosine with every unit query ``[Q, P]``,
    averaged over the sliding windows that cover it."""
    _, height, width = image.shape
    patch_h, patch_w = model.config.vision_config.patch_size_hw
    boxes = window_boxes(height, width, crop, stride)
    total = image.new_zeros((len(queries), height, width), dtype=torch.float32)
    count = image.new_zeros((1, height, width), dtype=torch.float32)
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        crops = torch.stack([image[:, y0:y1, x0:x1] for y0, y1, x0, x1 in chunk])
        crop_h, crop_w = crops.shape[-2:]
        if crop_h % patch_h or crop_w % patch_w:
            raise ValueError(
                f"a {crop_h}x{crop_w} window is not a multiple of the {patch_h}x{patch_w} patches; the image "
                "side must be at least the window size."
            )
        features = F.normalize(model.get_patch_features(crops).float(), dim=-1)  # [n, N, P]
        cosine = (features @ queries.float().t()).transpose(1, 2)  # [n, Q, N]
        cosine = cosine.reshape(len(chunk), len(queries), crop_h // patch_h, crop_w // patch_w)
        cosine = F.interpolate(cosine, size=(crop_h, crop_w), mode="bilinear", align_corners=False)
        for (y0, y1, x0, x1), values in zip(chunk, cosine):
            total[:, y0:y1, x0:x1] += values
            count[:, y0:y1, x0:x1] += 1
    return total / count


def predict_labels(
    cosines: torch.Tensor,
    query_classes: Sequence[int],
    output_size: tuple[int, int],
    logit_scale: float,
    prob_threshold: float = 0.0,
    area_threshold: float | None = None,
) -> torch.Tensor:
    """``[H, W]`` class per pixel from window-averaged query cosines ``[Q, h, w]`` (steps 3-4 of the
    module docstring); `query_classes` gives each query's class."""
    logits = F.interpolate(cosines[None].float(), size=output_size, mode="bilinear", align_corners=False)[0]
    probs = (logits * logit_scale).softmax(dim=0)
    index = torch.as_tensor(list(query_classes), device=probs.device)
    num_classes = int(index.max()) + 1
    if num_classes != len(index):
        per_class = probs.new_zeros((num_classes, *probs.shape[1:]))
        probs = per_class.scatter_reduce_(0, index[:, None, None].expand_as(probs), probs, "amax")
    if area_threshold is not None:
        area = F.one_hot(probs.argmax(dim=0), num_classes)[..., 1:].sum(dim=(0, 1))
        keep = (area > area_threshold * area.sum()).to(probs.dtype)
        probs[1:] *= keep[:, None, None]
    best, labels = probs.max(dim=0)
    labels[best < prob_threshold] = 0
    return labels


__all__ = ["predict_labels", "window_boxes", "window_cosines"]
