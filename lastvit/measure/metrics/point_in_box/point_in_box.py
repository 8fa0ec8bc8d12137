"""Point-in-Box (LaSt-ViT's "Patch-BBox Hit Ratio") as a local `evaluate` metric, with its baselines.

Load it offline with ``evaluate.load("<this folder>")`` or ``lastvit.measure.load_metric("point_in_box")``.
The computation is `lastvit.measure.metrics.localisation` (one implementation, shared with the library).
"""

import datasets
import evaluate
import numpy as np

from lastvit.measure.metrics.localisation import (
    centre_patch_baseline,
    pib_filter,
    point_in_box,
    random_patch_baseline,
)

_DESCRIPTION = """
Point-in-Box (PiB): the fraction of images whose highest-scoring patch (arg-max of the Patch Score,
the cosine of each final patch token with the pooled global feature) lies inside the ground-truth box.
Boxes are mapped to the model input with the authors' rule: Resize(resize) on the short side +
CenterCrop(model_input), clipped; the patch set is every patch the mapped box overlaps (`rule="overlap"`),
or the arg-max patch's centre must lie in the box (`rule="centre"`). With `resize=None` the images were
simply rescaled to the model input (identity when already at model size).

A PiB number means little alone: the result always carries the random-patch (exact expectation) and
centre-patch baselines, plus PiB of any `baseline_scores` you pass (an untrained copy of the same
architecture, the colour-outlier heuristic, ...).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): per-patch scores of each image, row-major over the patch grid.
    references (`list` of boxes): per image one box `[x0, y0, x1, y1]` or a list of boxes (hit if in any),
        in pixels of the original image.
    image_sizes (`list` of `[width, height]`): original size of each image (order of PIL's `Image.size`).
    model_input (`int` or `[width, height]`, defaults to 224): model input size.
    patch_size (`int` or `[width, height]`, defaults to 16): patch size.
    resize (`int` or `None`, defaults to 256): short-side resize before the centre crop; `None` for a plain rescale.
    rule (`str`, defaults to `"overlap"`): `"overlap"` (authors) or `"centre"`.
    single_object_filter (`bool`, defaults to `False`): keep only images with one box of area
        < `max_area_ratio` of the image (the paper's ImageNet-val protocol).
    max_area_ratio (`float`, defaults to 0.25): area limit of that filter.
    baseline_scores (`dict[str, list]`, *optional*): more score maps (same layout as `predictions`) to report
        as `<name>` next to the model's PiB.
Returns:
    point_in_box (`float`): hit rate in [0, 1] of `predictions`.
    random_patch (`float`): expected hit rate of a uniformly random patch.
    centre_patch (`float`): hit rate of the centre patch (ties on even grids averaged).
    <name> (`float`): hit rate of each entry of `baseline_scores`.
    num_images (`int`): images evaluated (after the filter).
Examples:
    >>> metric = evaluate.load("lastvit/measure/metrics/point_in_box")
    >>> metric.compute(predictions=[[0.0, 1.0, 0.0, 0.0]], references=[[20, 2, 30, 12]], image_sizes=[[32, 32]],
    ...                model_input=32, patch_size=16, resize=None)["point_in_box"]
    1.0
"""

_CITATION = """
@article{shi2026vision,
  title={Vision Transformers Need More Than Registers},
  author={Shi, Cheng and Yu, Yizhou and Yang, Sibei},
  journal={arXiv preprint arXiv:2602.22394},
  year={2026}
}
"""


def _features(references):
    return datasets.Features(
        {
            "predictions": datasets.Sequence(datasets.Value("float32")),
            "references": references,
            "image_sizes": datasets.Sequence(datasets.Value("int64"), length=2),
        }
    )


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PointInBox(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                _features(datasets.Sequence(datasets.Value("float32"), length=4)),  # one box per image
                _features(datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=4))),  # several
            ],
            reference_urls=["https://arxiv.org/abs/2602.22394", "https://github.com/ChengShiest/LAST-ViT"],
        )

    def _compute(
        self,
        predictions,
        references,
        image_sizes,
        model_input=224,
        patch_size=16,
        resize=256,
        rule="overlap",
        single_object_filter=False,
        max_area_ratio=0.25,
        baseline_scores=None,
    ):
        reserved = {"point_in_box", "random_patch", "centre_patch", "num_images"}
        clashes = reserved & set(baseline_scores or {})
        if clashes:
            raise ValueError(f"baseline_scores names {sorted(clashes)} clash with the result keys {sorted(reserved)}.")
        scores = {"point_in_box": predictions, **(baseline_scores or {})}
        lengths = {name: len(values) for name, values in scores.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"Every score list needs one entry per image; got lengths {lengths}.")
        keep = np.ones(len(predictions), dtype=bool)
        if single_object_filter:
            keep = pib_filter(references, image_sizes, max_area_ratio)
        boxes = [box for box, k in zip(references, keep) if k]
        sizes = [size for size, k in zip(image_sizes, keep) if k]
        if not boxes:
            raise ValueError("No image left to evaluate (empty input, or the single-object filter removed all).")
        geometry = {"image_sizes": sizes, "model_input": model_input, "patch_size": patch_size, "resize": resize}
        result = {}
        for name, values in scores.items():
            kept = np.asarray([v for v, k in zip(values, keep) if k], dtype=np.float32)
            result[name] = float(point_in_box(kept, boxes, rule=rule, **geometry).mean())
        result["random_patch"] = float(random_patch_baseline(boxes, **geometry).mean())
        result["centre_patch"] = float(centre_patch_baseline(boxes, rule=rule, **geometry).mean())
        result["num_images"] = len(boxes)
        return result
