"""The main job as a library: train the paper's comparison (CLS, registers, mean pooling,
LazyStrike K = 1 and N/2) with one recipe over seeds, measure where each model looks next to its
untrained twin and map-free baselines, test the differences, and write the report.

    from lastvit.study import StudyConfig, run_study
    results = run_study(StudyConfig(output_dir="outputs/study", scale="cpu"))

The configs import no torch; the runners are imported on first use, so a CLI's `--help` stays light.
"""

import importlib

from .config import OPTIONAL_VARIANTS, SCALES, VARIANTS, StudyConfig

_LAZY = {
    "PretrainingStudyConfig": ".pretraining",
    "PretrainingStudyError": ".pretraining",
    "run_pretraining_study": ".pretraining",
    "StudyError": ".runner",
    "run_study": ".runner",
}

__all__ = [
    "OPTIONAL_VARIANTS",
    "SCALES",
    "VARIANTS",
    "PretrainingStudyConfig",
    "PretrainingStudyError",
    "StudyConfig",
    "StudyError",
    "run_pretraining_study",
    "run_study",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
