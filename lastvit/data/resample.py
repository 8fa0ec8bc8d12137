"""Image resampling the project controls, so that generated data does not change with Pillow.

Pillow's results are not stable across its releases (measured: from 12.1.0 to 13.0.0 its bilinear
resize of premultiplied "RGBa" cut-outs moved 25 of 300 Fashion-MNIST items by one level, and its
RGBA thumbnail changed, so the default study's data changed); the scenes generator uses these
functions instead, and Pillow only decodes files (PNG, and JPEG at full size: identical under both)
and holds pixels. Everything here is exact integer arithmetic after the filter weights are made:

- weights: for each output pixel, the filter (support scaled by the downscale factor, so that
  downscaling is antialiased) is evaluated at the input pixel centres in float64 with + - * /
  only (no transcendental functions, no BLAS, sums in a fixed order), normalised, then rounded
  half-up to integers of :data:`WEIGHT_BITS` bits;
- the image is filtered along x, then along y, in int64, keeping :data:`INTERMEDIATE_BITS`
  fraction bits between the passes, and rounded half-up to uint8 at the end.

So the same uint8 input gives the same uint8 output with any numpy, Pillow or CPU.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

WEIGHT_BITS = 22
INTERMEDIATE_BITS = 8
FILTERS = ("box", "bilinear", "bicubic")
_SUPPORT = {"box": 0.5, "bilinear": 1.0, "bicubic": 2.0}


def _kernel(name: str, x: np.ndarray) -> np.ndarray:
    if name == "box":
        return ((x >= -0.5) & (x < 0.5)).astype(np.float64)  # half-open: a centre on an edge counts once
    x = np.abs(x)
    if name == "bilinear":
        return np.maximum(1.0 - x, 0.0)
    # Keys' cubic convolution, a = -0.5 (a polynomial, so exact in float64 arithmetic)
    a = -0.5
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@lru_cache(maxsize=4096)
def _weights(in_size: int, out_size: int, start: float, stop: float, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer weights [out, taps] and the input index of each tap [out, taps] (clamped; a
    clamped tap has weight 0) for resampling [start, stop) of an axis of ``in_size`` pixels."""
    scale = (stop - start) / out_size
    stretch = max(scale, 1.0)
    support = _SUPPORT[name] * stretch
    centres = start + (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    first = np.clip(np.floor(centres - support + 0.5).astype(np.int64), 0, in_size)
    last = np.clip(np.floor(centres + support + 0.5).astype(np.int64), 0, in_size)
    taps = max(1, int((last - first).max()))
    index = first[:, None] + np.arange(taps)[None, :]
    inside = index < last[:, None]
    values = np.where(inside, _kernel(name, (index + 0.5 - centres[:, None]) / stretch), 0.0)
    if name == "box":
        empty = values.sum(axis=1) == 0  # a tiny crop: use the pixel under the centre
        values[empty, 0] = 1.0
    total = np.zeros(out_size)
    for k in range(taps):  # a fixed summation order
        total = total + values[:, k]
    total = np.where(total == 0, 1.0, total)
    weights = np.floor(values / total[:, None] * (1 << WEIGHT_BITS) + 0.5).astype(np.int64)
    return weights, np.minimum(index, in_size - 1)


def _filter_axis(pixels: np.ndarray, weights: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(pixels, axis, 0)
    out = np.zeros((weights.shape[0],) + moved.shape[1:], dtype=np.int64)
    extra = (1,) * (moved.ndim - 1)
    for k in range(weights.shape[1]):
        out += weights[:, k].reshape(-1, *extra) * moved[index[:, k]]
    return np.moveaxis(out, 0, axis)


def _shift_round(values: np.ndarray, bits: int) -> np.ndarray:
    return (values + (1 << (bits - 1))) >> bits  # half-up; >> floors negative values too


def resize_array(
    pixels: np.ndarray,
    size: tuple[int, int],
    filter: str = "bilinear",
    box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Resample a uint8 image ``[H, W]`` or ``[H, W, C]`` to ``size`` = (width, height).

    ``box`` = (x0, y0, x1, y1), in input pixels (floats allowed), is the region to resample (like
    Pillow's ``box``; default the whole image). Downscaling is antialiased (the filter's support
    grows with the factor). Filters: :data:`FILTERS`. Channels are filtered independently, so
    resize premultiplied alpha (see :func:`premultiply`) to keep hidden colours out of the edges.
    """
    if filter not in FILTERS:
        raise ValueError(f"Unknown filter {filter!r}; choose from {FILTERS}.")
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise ValueError(f"resize_array takes uint8 pixels, got {pixels.dtype}.")
    height, width = pixels.shape[:2]
    out_width, out_height = int(size[0]), int(size[1])
    if out_width < 1 or out_height < 1:
        raise ValueError(f"size must be at least 1x1, got {size}.")
    x0, y0, x1, y1 = (0.0, 0.0, float(width), float(height)) if box is None else (float(v) for v in box)
    if (out_width, out_height) == (width, height) and (x0, y0, x1, y1) == (0.0, 0.0, width, height):
        return pixels.copy()
    weights_x, index_x = _weights(width, out_width, x0, x1, filter)
    weights_y, index_y = _weights(height, out_height, y0, y1, filter)
    top, left = int(index_y.min()), int(index_x.min())  # filter only the region the taps read
    region = pixels[top : int(index_y.max()) + 1, left : int(index_x.max()) + 1].astype(np.int64)
    rows = _filter_axis(region, weights_x, index_x - left, axis=1)
    rows = _shift_round(rows, WEIGHT_BITS - INTERMEDIATE_BITS)
    result = _shift_round(_filter_axis(rows, weights_y, index_y - top, axis=0), WEIGHT_BITS + INTERMEDIATE_BITS)
    return np.clip(result, 0, 255).astype(np.uint8)


def resize(
    image: Image.Image,
    size: tuple[int, int],
    filter: str = "bilinear",
    box: tuple[float, float, float, float] | None = None,
) -> Image.Image:
    """:func:`resize_array` on a PIL image of mode L, RGB, RGBA or RGBa; returns the same mode."""
    return from_array(resize_array(np.asarray(image), size, filter, box), image.mode)


def from_array(pixels: np.ndarray, mode: str) -> Image.Image:
    """A PIL image of ``mode`` holding uint8 ``pixels`` as they are (no conversion)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    return Image.frombytes(mode, (pixels.shape[1], pixels.shape[0]), pixels.tobytes())


def premultiply(rgba: np.ndarray) -> np.ndarray:
    """uint8 RGBA -> premultiplied RGBa: each colour times alpha / 255, rounded half-up."""
    rgba = np.asarray(rgba, dtype=np.int64)
    colour = (2 * rgba[..., :3] * rgba[..., 3:] + 255) // 510
    return np.concatenate([colour, rgba[..., 3:]], axis=-1).astype(np.uint8)


def composite_over(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """uint8 RGBA (straight alpha) over an opaque colour -> uint8 RGB, rounded half-up."""
    rgba = np.asarray(rgba, dtype=np.int64)
    alpha = rgba[..., 3:]
    mixed = rgba[..., :3] * alpha + np.asarray(background, dtype=np.int64) * (255 - alpha)
    return ((2 * mixed + 255) // 510).astype(np.uint8)


def fit_size(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is at most ``longest`` (never enlarged),
    each side rounded half-up and at least 1."""
    width, height = size
    if max(width, height) <= longest:
        return width, height
    scale = longest / max(width, height)
    return max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5))


__all__ = ["FILTERS", "composite_over", "fit_size", "from_array", "premultiply", "resize", "resize_array"]
