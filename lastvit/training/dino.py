"""DINO self-distillation parts (Caron et al. 2021, facebookresearch/dino), with LazyStrike as the
backbone's readout: the head reads the backbone's `pooler_output`, which is the LazyStrike token for
LaSt-ViT and the CLS token for the plain baseline (`pooling="cls"`): one code path, a config switch.

- `DINOHead`: 3-layer MLP (GELU) -> L2-normalised bottleneck -> weight-normalised prototype layer
  (its norm fixed to 1, as DINO's `norm_last_layer=True`).
- `DINOLoss`: cross-entropy between the sharpened, centred teacher distribution of each global crop
  and the student distribution of every other crop; the centre is an EMA of the teacher outputs.
- `update_teacher`: EMA of the student weights; `teacher_momentum` its cosine schedule.
- `clip_gradients`: DINO's per-parameter clipping (each parameter's gradient norm clipped alone).
- `dino_diagnostics`: the collapse diagnostics of a step (teacher entropy, KL(teacher || student),
  centre norm), which tell a collapsed run from a slowly learning one.
- `MultiCrop`: global and local crops in PIL/NumPy (no torchvision), seeded by (seed, epoch, index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import nn

from lastvit.training.pretraining import cosine_schedule


class DINOHead(nn.Module):
    """DINO's projection head on the backbone's pooled feature."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        norm = self.last_layer.parametrizations.weight.original0
        norm.data.fill_(1.0)
        norm.requires_grad = False  # prototypes stay unit vectors (norm_last_layer=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(nn.functional.normalize(self.mlp(x), dim=-1))


class DINOModel(nn.Module):
    """Backbone + head over a multi-crop batch: crops of one size go through the backbone together."""

    def __init__(self, backbone: nn.Module, head: DINOHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        """`crops`: one ``[B, 3, h, w]`` tensor per crop view; returns ``[len(crops) * B, out_dim]``."""
        outputs, start = [], 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            pooled = self.backbone(pixel_values=torch.cat(crops[start:end])).pooler_output
            outputs.append(pooled)
            start = end
        return self.head(torch.cat(outputs))


def teacher_temperature(step: int, warmup_steps: int, warmup_temp: float, final_temp: float) -> float:
    """Linear warm-up of the teacher temperature, then constant (DINO's `teacher_temp_schedule`)."""
    if step < warmup_steps:
        return warmup_temp + (final_temp - warmup_temp) * step / warmup_steps
    return final_temp


def teacher_momentum(step: int, total_steps: int, base: float = 0.996) -> float:
    """EMA momentum from `base` to 1 along a cosine (DINO's `momentum_schedule`)."""
    return cosine_schedule(base, 1.0, step, total_steps)


@torch.no_grad()
def clip_gradients(parameters, max_norm: float) -> list[float]:
    """DINO's `clip_gradients`: each parameter's gradient is scaled down to L2 norm `max_norm` on its
    own (``g *= max_norm / (|g| + 1e-6)`` when that factor is below 1), not by the norm of all
    gradients together. Returns the norms before clipping. A sharded gradient (FSDP2 DTensor) is
    measured whole."""
    from torch.distributed.tensor import DTensor

    norms = []
    for p in parameters:
        if p.grad is None:
            continue
        norm = p.grad.norm(2)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        norms.append(float(norm))
        factor = max_norm / (norms[-1] + 1e-6)
        if factor < 1:
            p.grad.mul_(factor)
    return norms


@torch.no_grad()
def dino_diagnostics(
    student_out: torch.Tensor,
    teacher_out: torch.Tensor,
    center: torch.Tensor,
    teacher_temp: float,
    student_temp: float = 0.1,
    num_global: int = 2,
) -> dict:
    """Collapse diagnostics of one step (Caron et al. 2021, Sec. 5.3), on the loss's own distributions:

    - ``teacher_entropy``: mean entropy of each centred, sharpened teacher distribution (nats); near
      ``log(out_dim)`` the teacher is uniform (collapse by flattening), near 0 it is one-hot;
    - ``teacher_batch_entropy``: entropy of the batch's mean teacher distribution; near 0 every image
      goes to one prototype (collapse onto one dimension);
    - ``kl``: mean KL(teacher || student) over the loss's pairs (teacher view g, student view v != g);
      0 when the student predicts exactly what the teacher does, e.g. both collapsed the same way;
    - ``center_norm``: L2 norm of the centre.

    The loss equals ``teacher_entropy + kl``; a learning run keeps the KL above 0 while the entropy falls."""
    logits = (teacher_out.float() - center) / teacher_temp
    teacher = logits.softmax(dim=-1)
    log_teacher = logits.log_softmax(dim=-1)
    mean = teacher.mean(dim=0)
    num_views = student_out.shape[0] // (teacher_out.shape[0] // num_global)
    log_student = (student_out.float() / student_temp).log_softmax(dim=-1).chunk(num_views)
    kls = [
        (q * (log_q - log_student[v])).sum(dim=-1).mean()
        for g, (q, log_q) in enumerate(zip(teacher.chunk(num_global), log_teacher.chunk(num_global)))
        for v in range(num_views)
        if v != g
    ]
    return {
        "teacher_entropy": float(-(teacher * log_teacher).sum(dim=-1).mean()),
        "teacher_batch_entropy": float(-(mean * mean.clamp_min(1e-12).log()).sum()),
        "kl": float(torch.stack(kls).mean()),
        "center_norm": float(center.float().norm()),
    }


class DINOLoss(nn.Module):
    """DINO's loss; `center` is a buffer, so it travels in checkpoints with the module."""

    def __init__(self, out_dim: int, num_global: int = 2, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.num_global = num_global
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """`student_out` ``[V * B, K]`` (all V views), `teacher_out` ``[G * B, K]`` (the G global views);
        mean over the pairs (teacher view g, student view v != g) of ``-sum_k q_gk log p_vk``."""
        num_views = student_out.shape[0] // (teacher_out.shape[0] // self.num_global)
        student = (student_out / self.student_temp).log_softmax(dim=-1).chunk(num_views)
        teacher = ((teacher_out - self.center) / teacher_temp).softmax(dim=-1).detach().chunk(self.num_global)
        total, terms = 0.0, 0
        for g, q in enumerate(teacher):
            for v, log_p in enumerate(student):
                if v == g:
                    continue
                total = total + (-q * log_p).sum(dim=-1).mean()
                terms += 1
        return total / terms

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor, reduce=None) -> None:
        """``center <- m * center + (1 - m) * mean(teacher_out)``; `reduce` averages the batch mean
        across processes (e.g. `accelerator.reduce(x, "mean")`)."""
        batch_center = teacher_out.float().mean(dim=0, keepdim=True)
        if reduce is not None:
            batch_center = reduce(batch_center)
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))


@torch.no_grad()
def update_teacher(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """``teacher <- m * teacher + (1 - m) * student`` for every parameter (buffers are copied).

    `student` is the unwrapped module; a student sharded by FSDP2 (`fully_shard`: DTensor parameters)
    is read whole (`full_tensor()`, one all-gather per parameter, on every process), so the teacher
    stays an ordinary full module on every process."""
    from torch.distributed.tensor import DTensor

    for s, t in zip(student.parameters(), teacher.parameters(), strict=True):
        s = s.full_tensor() if isinstance(s, DTensor) else s.detach()
        t.mul_(momentum).add_(s.to(t.dtype), alpha=1 - momentum)
    for s, t in zip(student.buffers(), teacher.buffers(), strict=True):
        t.copy_(s)


@dataclass
class MultiCrop:
    """DINO's augmentation: 2 global crops (scale `global_scale`) and `num_local` smaller crops
    (`local_scale`), each flipped, colour-jittered (p `colour_jitter`, DINO's 0.8; 0 turns it off),
    greyed (p 0.2) and blurred (p 1.0 / 0.1 / 0.5 for global 1 / global 2 / local), global 2
    solarised (p 0.2); then normalised. Randomness is a function of (seed, epoch, index), so a
    resumed run sees the same crops."""

    global_size: int
    local_size: int
    num_local: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    seed: int = 0
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    colour_jitter: float = 0.8

    def __call__(self, image: Image.Image, index: int, epoch: int) -> list[torch.Tensor]:
        image = image.convert("RGB")
        rng = np.random.default_rng([self.seed, epoch, index])
        views = [
            self._view(image, rng, self.global_size, self.global_scale, blur=1.0, solarize=0.0),
            self._view(image, rng, self.global_size, self.global_scale, blur=0.1, solarize=0.2),
        ]
        views += [
            self._view(image, rng, self.local_size, self.local_scale, blur=0.5, solarize=0.0)
            for _ in range(self.num_local)
        ]
        return views

    def _view(self, image, rng, size, scale, blur: float, solarize: float) -> torch.Tensor:
        image = random_resized_crop(image, rng, size, scale)
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        array = np.asarray(image, dtype=np.float32) / 255.0
        if rng.random() < self.colour_jitter:
            array = colour_jitter(array, rng)
        if rng.random() < 0.2:
            array = np.repeat(array @ np.array([0.299, 0.587, 0.114], np.float32), 3).reshape(array.shape)
        if rng.random() < blur:
            radius = rng.uniform(0.1, 2.0) * size / 224  # DINO's sigma range, scaled to the crop
            image = Image.fromarray(np.uint8(np.clip(array, 0, 1) * 255)).filter(ImageFilter.GaussianBlur(radius))
            array = np.asarray(image, dtype=np.float32) / 255.0
        if rng.random() < solarize:
            array = np.where(array >= 0.5, 1.0 - array, array)
        array = (array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))


def random_resized_crop(image: Image.Image, rng: np.random.Generator, size: int, scale) -> Image.Image:
    """RandomResizedCrop (ratio 3/4-4/3, 10 tries, else the whole image), bicubic as DINO."""
    width, height = image.size
    for _ in range(10):
        target = width * height * rng.uniform(*scale)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return image.resize((size, size), Image.BICUBIC, box=(x0, y0, x0 + w, y0 + h))
    return image.resize((size, size), Image.BICUBIC)


def colour_jitter(array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness 0.4, contrast 0.4, saturation 0.2 in a random order (DINO's ColorJitter without hue)."""
    for op in rng.permutation(3):
        factor = rng.uniform(1 - (0.4, 0.4, 0.2)[op], 1 + (0.4, 0.4, 0.2)[op])
        if op == 0:
            array = array * factor
        elif op == 1:
            grey = (array @ np.array([0.299, 0.587, 0.114], np.float32)).mean()
            array = (array - grey) * factor + grey
        else:
            grey = (array @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
            array = (array - grey) * factor + grey
        array = np.clip(array, 0.0, 1.0)
    return array.astype(np.float32)


def default_local_size(global_size: int, patch: int, min_patches: int = 3) -> int:
    """DINO's local crop side (96 of 224 px: 3/7 of the global crop, 6 x 6 patches of 16), rounded to
    a patch multiple and at least `min_patches` patches wide, so that a crop can hold an object part
    (2 x 2 patches of a 32 px scene hold a few pixels each), and never above the global size."""
    return min(global_size, max(min_patches * patch, round(global_size * 3 / 7 / patch) * patch))


def collate_crops(examples) -> dict:
    """``[(views, label), ...]`` -> ``{"crops": [view tensors [B, 3, h, w]], "labels": [B]}``."""
    num_views = len(examples[0][0])
    crops = [torch.stack([views[v] for views, _ in examples]) for v in range(num_views)]
    return {"crops": crops, "labels": torch.tensor([label for _, label in examples])}
