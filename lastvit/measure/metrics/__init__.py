"""The package's metrics as local `evaluate` modules (one folder each), loadable offline."""

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent


def metric_path(name: str) -> Path:
    """Folder of the local `evaluate` module `name` shipped with this package."""
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        available = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"No local metric {name!r}; available: {available}.")
    return path


def load_metric(name: str, **kwargs):
    """``evaluate.load`` of a metric shipped with this package (``"point_in_box"``,
    ``"top_k_accuracy"``, ``"linear_cka"``, ``"mean_iou"``, ``"corloc"``), from its local folder: works
    offline, unlike Hub metrics such as ``evaluate.load("accuracy")``. Needs the `evaluate` package."""
    try:
        import evaluate
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_metric needs `evaluate`: pip install evaluate (or the package's `train` extra)."
        ) from error
    return evaluate.load(str(metric_path(name)), **kwargs)


__all__ = ["METRICS_DIR", "load_metric", "metric_path"]
