"""Linear CKA (Kornblith et al. 2019) as a local `evaluate` metric, as used by Lappe & Giese (arXiv 2505.05892).

Load it offline with ``evaluate.load("<this folder>")`` or ``lastvit.measure.load_metric("linear_cka")``.
The computation is `lastvit.measure.lappe_giese.linear_cka`.
"""

import datasets
import evaluate

from lastvit.measure.lappe_giese import linear_cka

_DESCRIPTION = """
Linear centred kernel alignment between two representations of the same inputs, one row per example:
CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred Xc, Yc. In [0, 1]; 1 for
identical representations; invariant to orthogonal transforms and isotropic scaling. Lappe & Giese compare
the CLS attention output o_full with its patch-only and register-only parts (o_patch, o_reg) this way.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): representation X, one vector per example (e.g. o_patch).
    references (`list` of `list` of `float`): representation Y of the same examples (e.g. o_full).
Returns:
    linear_cka (`float`): CKA(X, Y); NaN when either representation is constant across examples.
Examples:
    >>> metric = evaluate.load("lastvit/measure/metrics/linear_cka")
    >>> metric.compute(predictions=[[1, 0], [0, 1], [1, 1]], references=[[2, 0], [0, 2], [2, 2]])
    {'linear_cka': 1.0}
"""

_CITATION = """
@inproceedings{kornblith2019similarity,
  title={Similarity of Neural Network Representations Revisited},
  author={Kornblith, Simon and Norouzi, Mohammad and Lee, Honglak and Hinton, Geoffrey},
  booktitle={ICML},
  year={2019}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LinearCKA(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("float64")),
                }
            ),
            reference_urls=["https://arxiv.org/abs/1905.00414", "https://arxiv.org/abs/2505.05892"],
        )

    def _compute(self, predictions, references):
        if len(predictions) < 2:
            raise ValueError("linear_cka needs at least two examples.")
        return {"linear_cka": linear_cka(predictions, references)}
