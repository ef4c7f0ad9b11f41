"""Rank statistics: Spearman's rho and Kendall's tau-b for many resamples at once
(`spearman_rows`, `kendall_rows`), percentile bootstrap intervals, and scipy's correlation
with its p-value."""

from __future__ import annotations

import math
import warnings
import numpy as np

__all__ = ["spearman_rows", "kendall_rows", "bootstrap_ci", "correlation"]


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho between ``x[b]`` and ``y[b]`` for every row ``b`` of two ``(B, n)``
    arrays: the Pearson correlation of average ranks, as `scipy.stats.spearmanr` computes it
    (ties included). NaN where a row is constant."""
    from scipy.stats import rankdata

    rx = rankdata(np.asarray(x, dtype=float), axis=1)
    ry = rankdata(np.asarray(y, dtype=float), axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    num = (rx * ry).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(rho, -1.0, 1.0)


def kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between ``x[b]`` and ``y[b]`` for every row ``b`` of two ``(B, n)``
    arrays, as `scipy.stats.kendalltau` computes it: ``(concordant - discordant) /
    sqrt(pairs untied in x * pairs untied in y)``. NaN where a row is constant."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    rows, n = x.shape
    out = np.empty(rows)
    # Pairwise sign matrices are (chunk, n, n); bound them to a few tens of MB.
    chunk = max(1, 2_000_000 // max(1, n * n))
    for start in range(0, rows, chunk):
        xs, ys = x[start:start + chunk], y[start:start + chunk]
        sx = np.sign(xs[:, :, None] - xs[:, None, :])
        sy = np.sign(ys[:, :, None] - ys[:, None, :])
        # Full matrices count every pair twice, numerator and denominator alike.
        num = (sx * sy).sum(axis=(1, 2))
        den = np.sqrt(np.count_nonzero(sx, axis=(1, 2)).astype(float)
                      * np.count_nonzero(sy, axis=(1, 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + chunk] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(out, -1.0, 1.0)


def bootstrap_ci(x: np.ndarray, y: np.ndarray, stat, idx: np.ndarray,
                 confidence: float = 0.95) -> tuple[tuple[float, float], int]:
    """Percentile bootstrap interval of ``stat`` over the resamples ``idx`` (rows of
    architecture indices), and how many resamples gave a defined value."""
    values = stat(x[idx], y[idx])
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return (math.nan, math.nan), int(len(values))
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return (float(lo), float(hi)), int(len(values))


def correlation(kind: str, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) from scipy; NaN for constant input (scipy warns; we say why
    ourselves, once, in the report)."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.spearmanr(x, y) if kind == "spearman" else stats.kendalltau(x, y)
    return float(res.statistic), float(res.pvalue)

