"""Measurements: where a ViT looks (LaSt-ViT, `localization`; CorLoc and coarse segmentation,
`dense`; one classifier's whole evaluation, `evaluation` and `evaluation_report`), how its global
feature is built (Lappe & Giese, `lappe_giese`; the whole analysis, `decoupling`,
`decoupling_summary` and `decoupling_report`), the local `evaluate` modules (`metrics`) and
figures (`plots`).

The functions of `localization` and `lappe_giese` and `load_metric` are re-exported here.
"""

from .lappe_giese import *
from .lappe_giese import __all__ as _lappe_giese_all
from .localization import *
from .localization import __all__ as _localization_all
from .metrics import load_metric, metric_path

__all__ = [*_localization_all, *_lappe_giese_all, "load_metric", "metric_path"]  # noqa: PLE0604
