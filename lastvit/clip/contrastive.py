"""CLIP's contrastive loss (and SigLIP's sigmoid loss, `sigmoid_loss`) over the pairs of every process (open_clip's ``gather_with_grad`` with
``local_loss=True``).

Each process holds a shard of the batch. Its image and text embeddings are gathered from every
process with their gradients, and each process scores its own images against all texts and its own
texts against all images: every pair of the global batch is a negative of every other, as on one
process. The mean of the per-process losses is the loss of the whole batch; with DDP averaging the
gradients, each parameter gets exactly the gradient of that whole-batch loss.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0; backward sums the gradient every process computed for this process's
    rows (all-reduce, then this process's chunk: reduce-scatter, on any backend)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` per process -> ``[world_size * B, D]`` in rank order, differentiable; `x` itself on
    one process. Every process must hold the same B (the trainers drop the last partial batch)."""
    return _GatherWithGrad.apply(x) if _distributed() else x


def contrastive_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of this process's L2-normalised pairs ``[B, D]`` against the pairs of every
    process; `logit_scale` is the multiplier (``exp`` of the learned log-scale). On one process it is
    `symmetric_contrastive_loss` of the B x B logits."""
    targets = torch.arange(image_embeds.shape[0], device=image_embeds.device)
    if not _distributed():  # the model's own operations, so one process gives its loss exactly
        logits_per_text = logit_scale * text_embeds @ image_embeds.t()
        logits_per_image = logits_per_text.t()
    else:
        targets = targets + dist.get_rank() * image_embeds.shape[0]
        logits_per_text = logit_scale * text_embeds @ gather_with_grad(image_embeds).t()
        logits_per_image = logit_scale * image_embeds @ gather_with_grad(text_embeds).t()
    return (
        nn.functional.cross_entropy(logits_per_image, targets) + nn.functional.cross_entropy(logits_per_text, targets)
    ) / 2


def sigmoid_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss of L2-normalised pairs ``[B, D]``: every (image i, text j) is a binary
    problem on ``logit = logit_scale * image_i . text_j + logit_bias``, positive for i = j, negative otherwise;
    the loss is ``-sum log sigmoid(label * logit)`` over all pairs divided by the batch size (as big_vision and
    transformers' `SiglipModel`). Across processes each one scores its own images against the texts of every
    process, so each pair is counted once and the mean over processes is the whole batch's loss."""
    rows = image_embeds.shape[0]
    texts = gather_with_grad(text_embeds)
    offset = dist.get_rank() * rows if _distributed() else 0
    logits = logit_scale * image_embeds @ texts.t() + logit_bias
    labels = -torch.ones_like(logits)
    labels[torch.arange(rows, device=logits.device), torch.arange(rows, device=logits.device) + offset] = 1.0
    return -nn.functional.logsigmoid(labels * logits).sum() / rows


class ContrastiveEmbedder(nn.Module):
    """The module a CLIP run prepares with accelerate (`clip`: a `LastViTCLIPModel`): one forward gives
    the normalised image and text embeddings (float32) and the logit scale (and, for a model with SigLIP's
    `logit_bias`, the bias: the arguments of `sigmoid_loss`), so DDP sees every parameter
    used inside its forward, and the loss can gather the embeddings across processes."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values, input_ids, attention_mask=None):
        image = self.clip.get_image_features(pixel_values=pixel_values).pooler_output
        text = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        image = nn.functional.normalize(image.float(), dim=-1)
        text = nn.functional.normalize(text.float(), dim=-1)
        scale = self.clip.logit_scale.float().exp()
        if getattr(self.clip, "logit_bias", None) is None:
            return image, text, scale
        return image, text, scale, self.clip.logit_bias.float()  # SigLIP's: the arguments of `sigmoid_loss`
