"""Measurements, one room per concept, each using only the rooms before it in this list:

- `grid`: patch-grid geometry (boxes and masks to patches and back, object coverage, box IoU);
- `maps`: per-patch maps from a model's outputs (Patch Score, votes, CLS attention, their
  foreground and its box, token norms, the map-free centre and colour-outlier maps);
- `metrics`: each metric defined once (`metrics.localisation`: Point-in-Box, AUROC against object
  coverage, CorLoc, coarse-segmentation IoU; `metrics.segmentation`: mIoU; `metrics.accuracy`:
  top-k), and the same metrics as local `evaluate` modules (`load_metric`);
- `zero_shot`: the zero-shot maps of image-text models and their evaluation; `masking`: the masking
  probe; `baselines`: what a map has to beat (the untrained twin, the map-free baselines) and the ceiling;
- runners: `forward` (running a model), `evaluation` (one classifier), `pretrained_eval` (DINO and
  CLIP models), `benchmarks` (``lastvit-benchmark``), `decoupling` (Lappe & Giese, over the
  definitions of `lappe_giese`);
- reports: `evaluation_report`, `decoupling_report`, `benchmark_report`, `plots`.

The public functions of `grid`, `maps`, `metrics.localisation`, `masking`, `baselines` and
`lappe_giese`, and `load_metric`, are re-exported here.
"""

from .baselines import *
from .baselines import __all__ as _baselines_all
from .grid import *
from .grid import __all__ as _grid_all
from .lappe_giese import *
from .lappe_giese import __all__ as _lappe_giese_all
from .maps import *
from .maps import __all__ as _maps_all
from .masking import *
from .masking import __all__ as _masking_all
from .metrics import load_metric, metric_path
from .metrics.localisation import *
from .metrics.localisation import __all__ as _localisation_all

__all__ = [  # noqa: PLE0604
    *_grid_all,
    *_maps_all,
    *_localisation_all,
    *_masking_all,
    *_baselines_all,
    *_lappe_giese_all,
    "load_metric",
    "metric_path",
]
