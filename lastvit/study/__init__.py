"""The main job as a library: train the paper's comparison (CLS, registers, mean pooling,
LazyStrike K = 1 and N/2) with one recipe over seeds, measure where each model looks next to its
untrained twin and map-free baselines, test the differences, and write the report.

    from lastvit.study import StudyConfig, run_study
    results = run_study(StudyConfig(output_dir="outputs/study", scale="cpu"))
"""

from .config import OPTIONAL_VARIANTS, SCALES, VARIANTS, StudyConfig
from .pretraining import PretrainingStudyConfig, PretrainingStudyError, run_pretraining_study
from .runner import StudyError, run_study

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
