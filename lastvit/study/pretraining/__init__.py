"""The pre-training comparison (`lastvit-study-pretraining`): does LazyStrike help DINO and CLIP?

The paper's K per paradigm: DINO-CLS vs DINO-LazyStrike K = 1 (the released DINO checkpoint's) and
K = N/7; CLIP-CLS vs CLIP-LazyStrike K = 1 and K = N/2 (Tab. 8's best). Every variant trains on one
saved copy of the scenes with one recipe and step budget per family, for several seeds (each seed
trains every variant from the same initialisation seed on the same data), and is measured next to
its untrained twin (`lastvit.measure.pretrained_eval`).

The design is declared in the config before any run (`design`, written to report.json):

- DINO's primary test: does DINO-CLS learn? Its k-NN top-1 on the test split, trained vs its untrained
  twin, paired t-test over seeds. The runs also record DINO's collapse diagnostics and a k-NN learning
  curve on a validation split of the training scenes (never the test split).
- CLIP's primary test, the caption experiment: the share of captions that name the background (the
  shortcut past the object) is the factor, at `caption_rates`; every CLIP variant trains at every rate.
  The readout x rate interaction: per seed, the least-squares slope of (zero-shot top-1 of
  `primary_clip_variant` minus that of CLIP-CLS) over the rates; the slopes are tested against 0
  (one-sample t-test over seeds, two-sided). A positive slope means LazyStrike's advantage grows with
  the shortcut, as the paper's story predicts.
- Secondary tests (exploratory), on the tested metrics only (`TESTED`): each readout vs CLS, each
  model vs its untrained twin, and the other LazyStrike variant's slope; Holm-adjusted within each
  family, their count in the report. The paper's thresholded map scores (PiB, CorLoc, coarse
  segmentation) are shown as means next to the threshold-free AUROC against exact masks, untested.
- The main study's backgrounds challenge for the image towers (`with_counterfactuals`,
  `lastvit.measure.counterfactual`): each test scene rendered again as only-FG, only-BG, mixed-same
  and mixed-rand, read out through the model's own classifier (DINO: k-NN, CLIP: zero-shot), trained
  and untrained twin, with BG-gap and flip rate. Mixed-rand top-1 is among the tested metrics; the
  rest is shown (these scenes tie no background to a class, so only-BG is at chance by construction).

report.md, report.json and figures are written whole (`write_folder`). The package follows the main
study's rooms: `config` (variants, metrics, options, the declared design; no torch), `runner` (data,
training, measurement, the DINO pilot), `analysis` (the tests and summaries over seeds, on
`lastvit.study.statistics`), `report` (verdict, Markdown, report.json) and `figures`.

    from lastvit.study.pretraining import PretrainingStudyConfig, run_pretraining_study
    run_pretraining_study(PretrainingStudyConfig(output_dir="outputs/study_pretraining"))
"""

import importlib

from .config import (
    AUROC_NOTE,
    BACKGROUND_MEASURES,
    BASELINE,
    METRICS,
    TESTED,
    VARIANTS,
    MergeOptions,
    PilotOptions,
    PretrainingStudyConfig,
    PretrainingStudyError,
)

# the rest imports numpy, datasets or torch on first use, so the CLI's --help stays light
_LAZY = {
    "interaction_test": ".analysis",
    "study_tests": ".analysis",
    "summarise": ".analysis",
    "write_figures": ".figures",
    "markdown": ".report",
    "pilot_markdown": ".report",
    "merge_reports": ".report",
    "rewrite_report": ".report",
    "verdict": ".report",
    "write_report": ".report",
    "build_data": ".runner",
    "run_dino_pilot": ".runner",
    "run_pretraining_study": ".runner",
    "train_and_measure": ".runner",
    "with_captions": ".runner",
    "with_counterfactuals": ".runner",
    "holm": "..statistics",
    "slope": "..statistics",
}

__all__ = [
    "AUROC_NOTE",
    "BACKGROUND_MEASURES",
    "BASELINE",
    "METRICS",
    "TESTED",
    "VARIANTS",
    "MergeOptions",
    "PilotOptions",
    "PretrainingStudyConfig",
    "PretrainingStudyError",
    "build_data",
    "holm",
    "interaction_test",
    "markdown",
    "merge_reports",
    "pilot_markdown",
    "rewrite_report",
    "run_dino_pilot",
    "run_pretraining_study",
    "slope",
    "study_tests",
    "summarise",
    "train_and_measure",
    "verdict",
    "with_captions",
    "with_counterfactuals",
    "write_figures",
    "write_report",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
