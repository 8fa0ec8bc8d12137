"""Top-k accuracy as a local `evaluate` metric (``evaluate.load("accuracy")`` needs the Hub).

Load it offline with ``evaluate.load("<this folder>")`` or ``lastvit.measure.load_metric("top_k_accuracy")``.
"""

import datasets
import evaluate
import numpy as np
import torch

from lastvit.measure.metrics.accuracy import top_k_accuracy

_DESCRIPTION = """
Top-k accuracy: the fraction of examples whose label is among the k highest-scoring classes.
Predictions are per-class scores (logits or probabilities) or, for top-1 only, class indices.
Ties are broken towards the lower class index, like `numpy.argsort(-scores, kind="stable")`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`, or `list` of `int`): class scores per example, or predicted classes.
    references (`list` of `int`): true classes.
    k (`int` or `list` of `int`, defaults to `(1, 5)`): the k values; those larger than the class count are skipped.
Returns:
    top{k}_accuracy (`float`): accuracy in [0, 1] for every k (only `top1_accuracy` for class-index predictions).
Examples:
    >>> metric = evaluate.load("lastvit/measure/metrics/top_k_accuracy")
    >>> metric.compute(predictions=[[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], references=[2, 0], k=[1, 2])
    {'top1_accuracy': 0.5, 'top2_accuracy': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("float32")),
                        "references": datasets.Value("int64"),
                    }
                ),
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            ],
        )

    def _compute(self, predictions, references, k=(1, 5)):
        if np.ndim(predictions[0]) == 0:  # class indices
            if len(references) == 0:
                raise ValueError("top_k_accuracy got no examples.")
            return {"top1_accuracy": float(np.mean(np.asarray(predictions) == np.asarray(references)))}
        ks = [k] if isinstance(k, int) else list(k)
        accuracy = top_k_accuracy(torch.as_tensor(np.asarray(predictions, dtype=np.float64)), references, ks)
        return {f"top{value}_accuracy": score for value, score in accuracy.items()}
