"""Semantic-segmentation mIoU over a whole dataset (VOC's rule) as a local `evaluate` metric.

Load it offline with ``evaluate.load("<this folder>")`` or ``lastvit.measure.load_metric("mean_iou")``.
The computation is `lastvit.measure.zero_shot.dataset_mean_iou` (one implementation, shared with
`lastvit-evaluate --mode clip`).
"""

import datasets
import evaluate

from lastvit.measure.metrics.segmentation import IGNORE, dataset_mean_iou

_DESCRIPTION = """
Mean intersection-over-union of per-pixel class maps, VOC style: one confusion matrix summed over
every image of the dataset, then per class IoU = TP / (TP + FP + FN); the mean is over the classes
that occur in the reference or the prediction (a class absent from both has no IoU, NaN, and does
not count). Reference pixels equal to `ignore_index` are not scored.

LaSt-ViT's zero-shot segmentation (Tab. 4) in its two protocols, as `lastvit-evaluate --mode clip`
reports them: objects only (VOC20, `segmentation_ignore_background`): references carry the object's
class on its pixels and `ignore_index` elsewhere, predictions are over the C classes; with background
(VOC21 / Context, `segmentation_with_background`): background is class C of C + 1 in both maps.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 2-D `list`/array of `int`): predicted class per pixel of each image.
    references (`list` of 2-D `list`/array of `int`): reference class per pixel, same shape as its prediction.
    num_labels (`int`): number of classes K; every scored label must lie in [0, K).
    ignore_index (`int` or `None`, defaults to 255): reference value of pixels not scored; `None` scores all.
Returns:
    miou (`float`): mean IoU over the classes that occur (0.0 when no pixel is scored).
    per_class_iou (`list` of `float`): IoU of each class, NaN for a class absent from both maps.
    pixel_accuracy (`float`): share of scored pixels predicted right.
Examples:
    >>> metric = evaluate.load("lastvit/measure/metrics/mean_iou")
    >>> metric.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 0], [1, 255]]], num_labels=2)["miou"]
    0.5
"""

_CITATION = """
@article{everingham2010pascal,
  title={The Pascal Visual Object Classes (VOC) Challenge},
  author={Everingham, Mark and Van Gool, Luc and Williams, Christopher K. I. and Winn, John and Zisserman, Andrew},
  journal={International Journal of Computer Vision},
  volume={88},
  pages={303--338},
  year={2010}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    def _info(self):
        label_map = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": label_map, "references": label_map}),
            reference_urls=["http://host.robots.ox.ac.uk/pascal/VOC/", "https://arxiv.org/abs/2602.22394"],
        )

    def _compute(self, predictions, references, num_labels=None, ignore_index=IGNORE):
        if num_labels is None:
            raise ValueError("mean_iou needs num_labels, the number of classes (background included if scored).")
        return dataset_mean_iou(predictions, references, int(num_labels), ignore_index)
