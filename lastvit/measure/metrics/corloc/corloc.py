"""CorLoc (unsupervised object discovery) as a local `evaluate` metric.

Load it offline with ``evaluate.load("<this folder>")`` or ``lastvit.measure.load_metric("corloc")``.
The rule is `lastvit.measure.metrics.localisation.corloc_hits` (one implementation, shared with `lastvit-evaluate`).
"""

import datasets
import evaluate

from lastvit.measure.metrics.localisation import CORLOC_IOU, corloc_hits

_DESCRIPTION = """
CorLoc: the fraction of images whose predicted box has IoU >= 0.5 with any of the image's reference
boxes (LaSt-ViT Tab. 7, after LOST / TokenCut). An image without a predicted box (an empty list, e.g.
an empty foreground) counts as a miss. Boxes are (x0, y0, x1, y1) in one pixel frame per image.

`lastvit.measure.maps.foreground_boxes` gives the predicted box of a per-patch map (the box of the
largest 4-connected component of the patches above mean + std), as `lastvit-evaluate` does.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of boxes): per image one predicted box `[x0, y0, x1, y1]`, or `[]` for none.
    references (`list` of boxes): per image one box `[x0, y0, x1, y1]` or a list of boxes (hit if any matches).
    iou_threshold (`float`, defaults to 0.5): the IoU a hit needs.
Returns:
    corloc (`float`): share of images localised, in [0, 1].
    num_images (`int`): images evaluated.
Examples:
    >>> metric = evaluate.load("lastvit/measure/metrics/corloc")
    >>> metric.compute(predictions=[[0, 0, 10, 10], []], references=[[0, 0, 10, 12], [0, 0, 5, 5]])["corloc"]
    0.5
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
    return datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")), "references": references})


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CorLoc(evaluate.Metric):
    def _info(self):
        box = datasets.Sequence(datasets.Value("float64"), length=4)
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[_features(box), _features(datasets.Sequence(box))],  # one box or several per image
            reference_urls=["https://arxiv.org/abs/2602.22394"],
        )

    def _compute(self, predictions, references, iou_threshold=CORLOC_IOU):
        if not predictions:
            raise ValueError("CorLoc needs at least one image.")
        hits = corloc_hits(predictions, references, iou_threshold)
        return {"corloc": float(hits.mean()), "num_images": len(hits)}
