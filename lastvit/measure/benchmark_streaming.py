"""Streaming for `lastvit-benchmark`: the DataLoader loop with its timing (`Throughput`, `stream`) and
the per-benchmark image transforms, which run in the DataLoader's workers."""

from __future__ import annotations

import contextlib
import functools
import time

import numpy as np
import torch

from lastvit.data.benchmarks.common import collate_samples


class Throughput:
    """Seconds spent waiting for the loader and running the model, and the images seen."""

    def __init__(self, device: torch.device):
        self.device, self.loader_s, self.model_s, self.images = device, 0.0, 0.0, 0
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def model(self):
        """Time the block as model time (the GPU's queue is drained first, so the time is real)."""
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.model_s += time.perf_counter() - start

    def report(self) -> dict:
        wall = time.perf_counter() - self.started
        return {
            "images": self.images,
            "wall_s": round(wall, 3),
            "loader_wait_s": round(self.loader_s, 3),
            "model_s": round(self.model_s, 3),
            "loader_images_per_s": round(self.images / self.loader_s, 2) if self.loader_s > 0 else None,
            "model_images_per_s": round(self.images / self.model_s, 2) if self.model_s > 0 else None,
            "end_to_end_images_per_s": round(self.images / wall, 2) if wall > 0 else None,
            "note": "loader_images_per_s = images / time the model waited for batches (its workers decode and "
            "resize meanwhile); model_images_per_s = images / time in the model and the metric's tensor work",
        }


def stream(dataset, options, timer: Throughput, description: str):
    """Batches of `dataset` from a DataLoader (`options.num_workers` processes decode and resize),
    counting the time the caller waits for each batch."""
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=options.batch_size,
        num_workers=options.num_workers,
        collate_fn=collate_samples,
        pin_memory=timer.device.type == "cuda",
    )
    with tqdm(total=len(dataset), desc=description, disable=not options.progress, unit="img") as bar:
        batches = iter(loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            timer.loader_s += time.perf_counter() - start
            timer.images += len(batch["index"])
            yield batch
            bar.update(len(batch["index"]))


def groups(batch: dict):
    """``(indices, stacked pixels)`` of the images of one shape (full-resolution batches mix shapes)."""
    pixels = batch["pixel_values"]
    if isinstance(pixels, torch.Tensor):
        yield list(range(len(pixels))), pixels
        return
    shapes = {}
    for i, image in enumerate(pixels):
        shapes.setdefault(tuple(image.shape), []).append(i)
    for indices in shapes.values():
        yield indices, torch.stack([pixels[i] for i in indices])


# --------------------------------------------------------------------------- transforms (run in the workers)


def to_normalised_tensor(image, mean, std) -> torch.Tensor:
    array = (np.asarray(image, dtype=np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def pad_to_patches(image, mean, std, patch: tuple[int, int]) -> torch.Tensor:
    """LOST's input: the full image, normalised, zero-padded at the right and bottom to whole patches."""
    tensor = to_normalised_tensor(image, mean, std)
    height, width = tensor.shape[-2:]
    pad_h, pad_w = -height % patch[0], -width % patch[1]
    return torch.nn.functional.pad(tensor, (0, pad_w, 0, pad_h))


def square_resize(image, size: int, mean, std) -> torch.Tensor:
    """CRATE's (Leopart's) coarse-segmentation input: Resize((size, size)), bilinear."""
    from PIL import Image

    return to_normalised_tensor(image.resize((size, size), Image.BILINEAR), mean, std)


def square_resize_labels(target: np.ndarray, size: int) -> np.ndarray:
    """The label map resized like the image, nearest neighbour."""
    from PIL import Image

    return np.asarray(Image.fromarray(target.astype(np.uint8)).resize((size, size), Image.NEAREST), dtype=np.int64)


def mmseg_rescale_size(width: int, height: int, short_side: int, long_side: int = 2048) -> tuple[int, int]:
    """mmseg's ``Resize(scale=(long_side, short_side), keep_ratio=True)`` output ``(width, height)``."""
    scale = min(long_side / max(width, height), short_side / min(width, height))
    return int(width * scale + 0.5), int(height * scale + 0.5)


def short_side_resize(image, short_side: int, mean, std) -> torch.Tensor:
    """SCLIP's input: mmseg's keep-ratio `Resize` (`mmseg_rescale_size`) the way OpenCV's bilinear
    resize works (half-pixel centres, no antialiasing, 8-bit result; OpenCV's fixed-point arithmetic
    may differ by one level), then normalised."""
    width, height = mmseg_rescale_size(*image.size, short_side)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).transpose(2, 0, 1).copy())[None]
    pixels = torch.nn.functional.interpolate(pixels, size=(height, width), mode="bilinear", align_corners=False)
    pixels = pixels[0].round().clamp(0, 255) / 255.0
    return (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def eval_transform(model, keep_native: bool = True):
    """Resize the short side to 256/224 of the input, centre-crop the input (ImageNet's evaluation)."""
    from lastvit.data.loading import ImageTransform

    transform = ImageTransform(model.image_size, model.mean, model.std, train=False, keep_native=keep_native)
    return functools.partial(transform, index=0, epoch=0)
