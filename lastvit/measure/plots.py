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
from transformers.image_utils import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from transformers.image_utils import IMAGENET_DEFAULT_STD as IMAGENET_STD


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
    original-image boxes with `lastvit.measure.grid.map_box`). The arg-max patch gets a white frame.
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


def plot_map_grid(
    images: Sequence,
    rows: Mapping[str, Mapping[str, Sequence]],
    path,
    grid: Sequence[int],
    boxes: Sequence[Sequence[float]] | None = None,
    masks: Sequence | None = None,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    cmap: str = "jet",
) -> Path:
    """One figure comparing maps: for every image, a row per ``rows`` entry (e.g. a model) and a
    column per map of that entry (``{model: {map name: [B, N] values}}``), each overlaid on the
    image with the object's box (lime) and, when given, the exact mask's outline (white). The
    first column shows the image. Maps are min-max scaled per panel; the arg-max patch is framed."""
    from matplotlib.patches import Rectangle

    columns = list(dict.fromkeys(name for maps in rows.values() for name in maps))
    n_rows, n_cols = len(images) * len(rows), 1 + len(columns)
    figure = _figure(1.9 * n_cols, 1.9 * n_rows)
    axes = np.asarray(figure.subplots(n_rows, n_cols, squeeze=False))
    grid_rows, grid_cols = int(grid[0]), int(grid[1])
    for i, image in enumerate(images):
        picture = image_to_display(image, mean, std)
        height, width = picture.shape[:2]
        extent = (0, width, height, 0)
        for j, (row_name, maps) in enumerate(rows.items()):
            line = axes[i * len(rows) + j]
            line[0].imshow(picture, extent=extent)
            line[0].set_title(row_name, fontsize=7, loc="left")
            for c, name in enumerate(columns, start=1):
                axis = line[c]
                axis.imshow(picture, extent=extent)
                if name in maps:
                    values = _to_numpy(maps[name][i]).astype(np.float32).reshape(grid_rows, grid_cols)
                    span = values.max() - values.min()
                    scaled = (values - values.min()) / span if span > 0 else np.zeros_like(values)
                    axis.imshow(scaled, extent=extent, cmap=cmap, alpha=0.5, interpolation="nearest", vmin=0, vmax=1)
                    r, k = np.unravel_index(int(np.argmax(values)), values.shape)
                    pw, ph = width / grid_cols, height / grid_rows
                    axis.add_patch(Rectangle((k * pw, r * ph), pw, ph, fill=False, edgecolor="white", linewidth=1.5))
                if i == 0 and j == 0:
                    axis.set_title(name, fontsize=7)
            for axis in line:
                if boxes is not None:
                    x0, y0, x1, y1 = (float(v) for v in boxes[i])
                    axis.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1))
                if masks is not None:
                    mask = np.asarray(masks[i], dtype=float)
                    ys = (np.arange(mask.shape[0]) + 0.5) * height / mask.shape[0]
                    xs = (np.arange(mask.shape[1]) + 0.5) * width / mask.shape[1]
                    axis.contour(xs, ys, mask, levels=[0.5], colors="white", linewidths=0.6)
                axis.set_xlim(0, width)
                axis.set_ylim(height, 0)
                axis.set_axis_off()
    return _save(figure, path)


def plot_probe_comparison(
    ks: Sequence[int],
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    path,
    num_patches: int,
    chance: float | None = None,
) -> Path:
    """Masking-probe curves of several models side by side: one panel per model, one line per
    order (``{model: {"high": [...], "random": [...], "low": [...]}}``)."""
    x = np.asarray(ks, dtype=np.float64) / num_patches
    figure = _figure(3.2 * len(curves), 3.2)
    axes = np.atleast_1d(figure.subplots(1, len(curves), sharey=True))
    styles = {"high": ("tab:red", "o"), "low": ("tab:blue", "s"), "random": ("tab:gray", "^")}
    for axis, (name, orders) in zip(axes, curves.items()):
        for order, values in orders.items():
            color, marker = styles.get(order, (None, "x"))
            axis.plot(x, values, marker=marker, color=color, label=f"{order} first")
        if chance is not None:
            axis.axhline(chance, color="black", linestyle=":", linewidth=1, label="chance")
        axis.set_title(name, fontsize=8)
        axis.set_xlabel("fraction masked")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy")
    axes[0].legend(fontsize=7)
    return _save(figure, path)


def plot_seed_points(
    values: Mapping[str, Mapping[str, Sequence[float]]],
    path,
    reference: Mapping[str, float] | None = None,
    ylabel: str = "value",
) -> Path:
    """Per-seed points (and their mean as a bar outline) of several metrics for several models:
    ``{metric: {model: [one value per seed]}}``; `reference` draws a dashed line per metric
    (e.g. chance or the best map-free baseline)."""
    figure = _figure(3.4 * len(values), 3.4)
    axes = np.atleast_1d(figure.subplots(1, len(values)))
    for axis, (metric, models) in zip(axes, values.items()):
        for x, (model, points) in enumerate(models.items()):
            points = np.asarray(points, dtype=np.float64)
            axis.bar(x, points.mean(), color="none", edgecolor="tab:blue")
            axis.scatter(np.full(points.shape, x), points, color="tab:blue", s=12, zorder=3)
        if reference and metric in reference:
            axis.axhline(reference[metric], color="black", linestyle="--", linewidth=1)
        axis.set_xticks(range(len(models)))
        axis.set_xticklabels(list(models), rotation=45, ha="right", fontsize=7)
        axis.set_title(metric, fontsize=9)
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3, axis="y")
    return _save(figure, path)


def _class_colours(num_classes: int):
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    palette = colormaps["tab20"].colors
    return ListedColormap([palette[i % len(palette)] for i in range(num_classes)])


def _outline(axis, mask, width: int, height: int, color: str = "white") -> None:
    mask = np.asarray(mask, dtype=float)
    if mask.any() and not mask.all():
        ys = (np.arange(mask.shape[0]) + 0.5) * height / mask.shape[0]
        xs = (np.arange(mask.shape[1]) + 0.5) * width / mask.shape[1]
        axis.contour(xs, ys, mask, levels=[0.5], colors=color, linewidths=0.6)


def _box(axis, box, color: str, linewidth: float = 1.0) -> None:
    if box is not None and len(box) == 4:
        from matplotlib.patches import Rectangle

        x0, y0, x1, y1 = (float(v) for v in box)
        axis.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=linewidth))


def plot_label_grid(
    images: Sequence,
    label_maps: Mapping[str, Sequence],
    path,
    grid: Sequence[int],
    num_classes: int,
    targets: Sequence | None = None,
    class_names: Sequence[str] | None = None,
    ignore_index: int = 255,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> Path:
    """Per-patch class maps (e.g. zero-shot segmentation's arg-max) of several models side by side:
    a row per image; columns: the image, the reference labels when `targets` ``[B, H, W]`` are given
    (pixels equal to `ignore_index` left uncoloured), then one per model (``{model: [B, N] class
    indices}``, row-major over `grid`). One colour per class, shared by every panel and named in the
    legend; the reference object's outline (white) is drawn on every panel."""
    from matplotlib.patches import Patch

    colours = _class_colours(num_classes)
    columns = (["reference"] if targets is not None else []) + list(label_maps)
    figure = _figure(1.9 * (1 + len(columns)), 1.9 * len(images) + 0.5)
    axes = np.asarray(figure.subplots(len(images), 1 + len(columns), squeeze=False))
    grid_rows, grid_cols = int(grid[0]), int(grid[1])
    used = set()
    for i, image in enumerate(images):
        picture = image_to_display(image, mean, std)
        height, width = picture.shape[:2]
        extent = (0, width, height, 0)
        axes[i, 0].imshow(picture, extent=extent)
        panels = {}
        if targets is not None:
            panels["reference"] = np.asarray(targets[i])
        for name, maps in label_maps.items():
            panels[name] = _to_numpy(maps[i]).astype(np.int64).reshape(grid_rows, grid_cols)
        for c, name in enumerate(columns, start=1):
            values = panels[name]
            shown = np.ma.masked_equal(values, ignore_index)
            used.update(int(v) for v in np.unique(shown.compressed()))
            axes[i, c].imshow(picture, extent=extent)
            axes[i, c].imshow(
                shown,
                extent=extent,
                cmap=colours,
                vmin=-0.5,
                vmax=num_classes - 0.5,
                alpha=0.6,
                interpolation="nearest",
            )
            if i == 0:
                axes[i, c].set_title(name, fontsize=7)
        for axis in axes[i]:
            if targets is not None:
                _outline(axis, np.asarray(targets[i]) != ignore_index, width, height)
            axis.set_xlim(0, width)
            axis.set_ylim(height, 0)
            axis.set_axis_off()
    names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
    handles = [Patch(color=colours(k), label=names[k] if k < len(names) else str(k)) for k in sorted(used)]
    if handles:
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=7, frameon=False)
    return _save(figure, path)


def plot_foreground_grid(
    images: Sequence,
    maps: Mapping[str, Mapping[str, Sequence]],
    path,
    grid: Sequence[int],
    boxes: Sequence | None = None,
    masks: Sequence | None = None,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    cmap: str = "jet",
) -> Path:
    """Per-patch maps and their thresholded foreground, several models side by side (LaSt-ViT Tab.
    6/7): a row per image; columns: the image, then per model its map (min-max scaled) and its
    foreground patches (cyan) with the predicted box (red) and, when known, its IoU with the
    reference. `maps` is ``{model: {"scores": [B, N], "foreground": [B, rows, cols] bools,
    "boxes": [B] (x0, y0, x1, y1) or None, "box_iou"?: [B] floats}}``. The reference box (lime) and
    exact mask outline (white) are drawn on every panel when given."""
    from matplotlib.colors import ListedColormap

    cyan = ListedColormap(["cyan"])
    n_cols = 1 + 2 * len(maps)
    figure = _figure(1.9 * n_cols, 1.9 * len(images))
    axes = np.asarray(figure.subplots(len(images), n_cols, squeeze=False))
    grid_rows, grid_cols = int(grid[0]), int(grid[1])
    for i, image in enumerate(images):
        picture = image_to_display(image, mean, std)
        height, width = picture.shape[:2]
        extent = (0, width, height, 0)
        for axis in axes[i]:
            axis.imshow(picture, extent=extent)
        if i == 0:
            axes[i, 0].set_title("image", fontsize=7)
        for m, (name, entry) in enumerate(maps.items()):
            score_axis, mask_axis = axes[i, 1 + 2 * m], axes[i, 2 + 2 * m]
            values = _to_numpy(entry["scores"][i]).astype(np.float32).reshape(grid_rows, grid_cols)
            span = values.max() - values.min()
            scaled = (values - values.min()) / span if span > 0 else np.zeros_like(values)
            score_axis.imshow(scaled, extent=extent, cmap=cmap, alpha=0.5, interpolation="nearest", vmin=0, vmax=1)
            foreground = np.asarray(entry["foreground"][i], dtype=bool).reshape(grid_rows, grid_cols)
            mask_axis.imshow(np.ma.masked_equal(foreground.astype(int), 0), extent=extent, cmap=cyan, alpha=0.45)
            _box(mask_axis, entry["boxes"][i], "red", 1.5)
            if "box_iou" in entry:
                mask_axis.text(
                    1,
                    1,
                    f"IoU {entry['box_iou'][i]:.2f}",
                    fontsize=6,
                    color="white",
                    va="top",
                    bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0},
                )
            if i == 0:
                score_axis.set_title(f"{name}: map", fontsize=7)
                mask_axis.set_title(f"{name}: foreground", fontsize=7)
        for axis in axes[i]:
            if boxes is not None:
                _box(axis, boxes[i], "lime")
            if masks is not None:
                _outline(axis, masks[i], width, height)
            axis.set_xlim(0, width)
            axis.set_ylim(height, 0)
            axis.set_axis_off()
    return _save(figure, path)


__all__ = [
    "image_to_display",
    "plot_foreground_grid",
    "plot_label_grid",
    "plot_map_grid",
    "plot_masking_probe",
    "plot_norm_histogram",
    "plot_patch_map",
    "plot_probe_comparison",
    "plot_seed_points",
]
