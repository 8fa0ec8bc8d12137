"""What a map has to beat, and the best it could do. Point-in-Box means little on its own (pasted or
centred objects are salient): report it next to a uniformly random patch (an exact expectation,
`metrics.localisation.random_patch_baseline`), the centre patch (`maps.centre_patch_scores`,
`metrics.localisation.centre_patch_baseline`), a colour-outlier heuristic (`maps.colour_outlier_scores`),
the same architecture untrained (`untrained_copy`) and the ceiling, the exact coverage map through
the same rules (`ceiling_metrics`). `point_in_box_with_baselines` and `baseline_metrics` give them all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .grid import flat_scores, patch_coverage
from .maps import centre_patch_scores, colour_outlier_scores
from .metrics.localisation import centre_patch_baseline, map_metrics, point_in_box, random_patch_baseline


def untrained_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A freshly initialised model of the same class and config (the "same architecture,
    untrained" baseline), in eval mode; the global RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model)(model.config)
    return fresh.to(next(model.parameters()).device).eval()


def point_in_box_with_baselines(
    scores,
    boxes,
    image_sizes=None,
    model_input=224,
    patch_size=16,
    resize: int | None = 256,
    rule: str = "overlap",
    pixel_values: torch.Tensor | None = None,
    untrained_scores=None,
    extra_scores: dict | None = None,
) -> dict[str, float]:
    """Point-in-Box of `scores` next to its baselines, as a dict of rates in [0, 1]:
    ``point_in_box``, ``random_patch``, ``centre_patch``, ``colour_outlier`` (if `pixel_values`,
    at model input size, are given), ``untrained`` (if `untrained_scores`, e.g. from
    `untrained_copy`, are given), any `extra_scores` by name, and ``num_images``."""
    args = (image_sizes, model_input, patch_size, resize)
    report = {
        "point_in_box": float(point_in_box(scores, boxes, *args, rule=rule).mean()),
        "random_patch": float(random_patch_baseline(boxes, *args).mean()),
        "centre_patch": float(centre_patch_baseline(boxes, *args, rule=rule).mean()),
    }
    if pixel_values is not None:
        outlier = colour_outlier_scores(pixel_values, patch_size)
        report["colour_outlier"] = float(point_in_box(outlier, boxes, *args, rule=rule).mean())
    if untrained_scores is not None:
        report["untrained"] = float(point_in_box(untrained_scores, boxes, *args, rule=rule).mean())
    for name, values in (extra_scores or {}).items():
        report[name] = float(point_in_box(values, boxes, *args, rule=rule).mean())
    report["num_images"] = len(flat_scores(scores))
    return report


def baseline_metrics(pixel_values, boxes, masks, patch_size: Sequence[int], grid: Sequence[int]) -> dict:
    """`map_metrics` of the map-free baselines on images at model input size: a random map (its
    Point-in-Box the exact expectation), the centre patch and the colour-outlier heuristic (distance
    of a patch's mean colour from the median). `patch_size` is ``(patch_h, patch_w)``."""
    patch_h, patch_w = int(patch_size[0]), int(patch_size[1])
    n = len(pixel_values)
    centre = centre_patch_scores(grid).expand(n, -1)
    outlier = colour_outlier_scores(pixel_values, (patch_w, patch_h))
    random_scores = torch.rand(n, grid[0] * grid[1], generator=torch.Generator().manual_seed(0))
    baselines = {
        "centre_patch": map_metrics(centre, boxes, masks, patch_size, grid),
        "colour_outlier": map_metrics(outlier, boxes, masks, patch_size, grid),
        "random_patch": map_metrics(random_scores, boxes, masks, patch_size, grid),
    }
    pib_geometry = (None, (int(grid[1]) * patch_w, int(grid[0]) * patch_h), (patch_w, patch_h), None)
    baselines["centre_patch"]["point_in_box"] = float(centre_patch_baseline(boxes, *pib_geometry).mean())
    baselines["random_patch"]["point_in_box"] = float(random_patch_baseline(boxes, *pib_geometry).mean())
    return baselines


def ceiling_metrics(boxes, masks, patch_size: Sequence[int], grid: Sequence[int]) -> dict | None:
    """Every `map_metrics` number of the perfect map at this grid (exact object coverage through the
    same rules), with ``single_class_images``: images whose patches are all object or all background
    (no AUROC); None without exact `masks`."""
    if masks is None:
        return None
    coverage = patch_coverage(masks, (int(patch_size[1]), int(patch_size[0])))
    ceiling = map_metrics(coverage, boxes, masks, patch_size, grid)
    ceiling["single_class_images"] = len(coverage) - ceiling["auroc_images"]
    return ceiling


__all__ = ["baseline_metrics", "ceiling_metrics", "point_in_box_with_baselines", "untrained_copy"]
