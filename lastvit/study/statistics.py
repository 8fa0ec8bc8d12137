"""Summaries over seeds and the paired test the study uses before it calls a difference real."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ALPHA = 0.05


def mean_std(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of per-seed numbers."""
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) by its continued fraction (Lentz's method)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * result


def student_t_two_sided(t: float, df: int) -> float:
    """Two-sided p-value of Student's t with `df` degrees of freedom: ``I_{df/(df+t^2)}(df/2, 1/2)``."""
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def paired_test(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA) -> dict:
    """Paired t-test of ``a - b`` over seeds (each seed trains both models on the same data and
    order). ``real`` is True only when the p-value is below `alpha`; with fewer than 2 pairs, or
    identical differences (no spread, so no t), there is no test and ``real`` is False."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_test needs one value per seed on both sides; got {len(a)} and {len(b)}.")
    diffs = a - b
    n = len(diffs)
    result = {
        "differences": diffs.tolist(),
        "mean_difference": float(diffs.mean()) if n else math.nan,
        "t": math.nan,
        "p": math.nan,
        "real": False,
        "n": n,
    }
    if n < 2:
        return result
    sd = float(diffs.std(ddof=1))
    if sd == 0.0:  # identical differences (often coarse, e.g. one image in 64 per seed): t is undefined
        return result
    t = float(diffs.mean() / (sd / math.sqrt(n)))
    p = student_t_two_sided(t, n - 1)
    result.update(t=t, p=p, real=bool(p < alpha))
    return result


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of `y` over `x` (e.g. a per-seed difference over the levels of a factor)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order. NaN
    entries (no test) stay NaN and do not count towards the family size."""
    p = np.asarray(p_values, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(p))
    adjusted = np.full(len(p), np.nan)
    order = valid[np.argsort(p[valid], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false-discovery-rate control), in the input order.
    NaN entries (no test) stay NaN and do not count towards the family size."""
    p = np.asarray(p_values, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(p))
    adjusted = np.full(len(p), np.nan)
    order = valid[np.argsort(p[valid], kind="stable")]
    m, running = len(order), 1.0
    for rank in range(m - 1, -1, -1):
        index = order[rank]
        running = min(running, m * p[index] / (rank + 1))
        adjusted[index] = min(1.0, running)
    return adjusted.tolist()


__all__ = ["ALPHA", "benjamini_hochberg", "holm", "mean_std", "paired_test", "slope", "student_t_two_sided"]
