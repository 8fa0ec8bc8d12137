"""Measurements: where a ViT looks (LaSt-ViT, `localization`), how its global feature is built
(Lappe & Giese, `lappe_giese`), the local `evaluate` modules (`metrics`) and figures (`plots`).

The functions of `localization` and `lappe_giese` and `load_metric` are re-exported here.
"""

from .lappe_giese import *  # noqa: F403
from .lappe_giese import __all__ as _lappe_giese_all
from .localization import *  # noqa: F403
from .localization import __all__ as _localization_all
from .metrics import load_metric, metric_path

__all__ = [*_localization_all, *_lappe_giese_all, "load_metric", "metric_path"]
