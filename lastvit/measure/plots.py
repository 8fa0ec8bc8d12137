"""Plots for the LaSt-ViT measurements: per-patch maps over images, masking-probe curves, norm histograms.

Each helper draws one figure with matplotlib's object API on the Agg canvas (no pyplot, no global
backend switch, safe on headless machines and in threads), saves a PNG and returns its path.
matplotlib is imported inside the functions, so the package works without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("The plot helpers need matplotlib: pip install matplotlib.") from error
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def image_to_display(image, mean: Sequence[float] | None = IMAGENET_MEAN, std: Sequence[float] | None = IMAGENET_STD):
    """An image as an ``[H, W, 3]`` float array in [0, 1] for display.

    Accepts a PIL image, an ``[H, W, C]`` uint8/float array, or a ``[C, H, W]`` tensor/array; a
    ``[C, H, W]`` float input is taken as normalised pixel values and un-normalised with
    `mean` / `std` (pass ``None`` for values already in [0, 1])."""
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    array = _to_numpy(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
        if mean is not None and std is not None and array.dtype != np.uint8:
            array = array * np.asarray(std, dtype=np.float32) + np.asarray(mean, dtype=np.float32)
    if array.ndim != 3:
        raise ValueError(f"Expected an image [H, W, C] or [C, H, W], got shape {array.shape}.")
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.clip(array, 0.0, 1.0)


def plot_patch_map(
    image,
    patch_map,
    path,
    box: Sequence[float] | None = None,
    grid: Sequence[int] | None = None,
    title: str | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    mark_argmax: bool = True,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> Path:
    """Overlay a per-patch map (votes, patch scores, attention) on an image, with the GT box.

    `patch_map` is ``[rows, cols]``, or ``[N]`` with `grid` ``(rows, cols)`` (a square grid is
    assumed without it). `box` is ``(x0, y0, x1, y1)`` in the displayed image's pixels (map
    original-image boxes with `lastvit.measure.localization.map_box`). The arg-max patch gets a white frame.
    The image is shown beside the overlay; see `image_to_display` for accepted images."""
    picture = image_to_display(image, mean, std)
    values = _to_numpy(patch_map).astype(np.float32)
    if values.ndim == 1:
        if grid is None:
            side = math.isqrt(values.size)
            if side * side != values.size:
                raise ValueError(f"A flat map of {values.size} patches is not square; pass grid=(rows, cols).")
            grid = (side, side)
        values = values.reshape(int(grid[0]), int(grid[1]))
    if values.ndim != 2:
        raise ValueError(f"patch_map must be [rows, cols] or [N], got shape {values.shape}.")
    height, width = picture.shape[:2]
    rows, cols = values.shape
    extent = (0, width, height, 0)

    from matplotlib.patches import Rectangle

    figure = _figure(8, 4)
    left, right = figure.subplots(1, 2)
    left.imshow(picture, extent=extent)
    left.set_title("image")
    right.imshow(picture, extent=extent)
    shown = right.imshow(values, extent=extent, cmap=cmap, alpha=alpha, interpolation="nearest")
    figure.colorbar(shown, ax=right, fraction=0.046, pad=0.04)
    right.set_title(title or "per-patch map")
    for axis in (left, right):
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
            axis.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=2))
        axis.set_xlim(0, width)
        axis.set_ylim(height, 0)
        axis.set_axis_off()
    if mark_argmax:
        row, col = np.unravel_index(int(np.argmax(values)), values.shape)
        patch_w, patch_h = width / cols, height / rows
        right.add_patch(
            Rectangle((col * patch_w, row * patch_h), patch_w, patch_h, fill=False, edgecolor="white", linewidth=2)
        )
    return _save(figure, path)


def plot_masking_probe(
    ks: Sequence[int],
    accuracies: Mapping[str, Sequence[float]],
    path,
    num_patches: int | None = None,
    title: str | None = None,
) -> Path:
    """Masking-probe curves (LaSt-ViT Fig. 2b): accuracy vs masked patches, one line per order
    (``{"high": [...], "low": [...], "random": [...]}`` from `lastvit.measure.masking_probe`).
    With `num_patches` the x axis is the masked fraction."""
    ks = np.asarray(ks, dtype=np.float64)
    x = ks / num_patches if num_patches else ks
    figure = _figure(5, 4)
    axis = figure.subplots()
    styles = {"high": ("tab:red", "o"), "low": ("tab:blue", "s"), "random": ("tab:gray", "^")}
    for order, values in accuracies.items():
        values = np.asarray(values, dtype=np.float64)
        if values.shape != ks.shape:
            raise ValueError(f"Order {order!r} has {values.size} accuracies for {ks.size} values of k.")
        color, marker = styles.get(order, (None, "x"))
        axis.plot(x, values, marker=marker, color=color, label=f"mask {order}-score patches")
    axis.set_xlabel("fraction of patches masked" if num_patches else "patches masked (k)")
    axis.set_ylabel("top-1 accuracy")
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title(title or "masking probe")
    return _save(figure, path)


def plot_norm_histogram(
    norms,
    path,
    threshold: float | None = None,
    bins: int = 50,
    log: bool = True,
    title: str | None = None,
) -> Path:
    """Histogram of patch-token L2 norms (`lastvit.measure.token_norms(...).norms`); `norms` is one
    array or a ``{label: array}`` mapping (e.g. CLS vs LazyStrike models). A dashed line marks
    the high-norm `threshold`; `log` puts counts on a log scale (outliers are rare)."""
    series = dict(norms) if isinstance(norms, Mapping) else {"patch tokens": norms}
    values = {label: _to_numpy(v).reshape(-1).astype(np.float64) for label, v in series.items()}
    if not values or any(v.size == 0 for v in values.values()):
        raise ValueError("plot_norm_histogram needs at least one non-empty array of norms.")
    low = min(v.min() for v in values.values())
    high = max(v.max() for v in values.values())
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    figure = _figure(5, 4)
    axis = figure.subplots()
    for label, v in values.items():
        axis.hist(v, bins=edges, alpha=0.5, label=label, log=log)
    if threshold is not None:
        axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    axis.set_xlabel("patch-token L2 norm")
    axis.set_ylabel("count")
    axis.legend()
    axis.set_title(title or "token norms")
    return _save(figure, path)


__all__ = ["image_to_display", "plot_masking_probe", "plot_norm_histogram", "plot_patch_map"]
