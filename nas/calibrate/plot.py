"""The calibration scatter plot (`plot_calibration`): high- against low-fidelity accuracy,
one point per architecture, as a PNG."""

from __future__ import annotations

import io
import os

from ..atomic import atomic_write
from .report import CalibrationReport, format_ci, format_value

__all__ = ["plot_calibration"]


def plot_calibration(report: CalibrationReport, path: str | os.PathLike) -> None:
    """Scatter plot of high- vs low-fidelity accuracy, one point per architecture, written
    atomically as PNG. Horizontal error bars are the low fidelity's std across seeds (two or
    more seeds); vertical ones the high fidelity's binomial standard error, so a reader sees
    when the reference ranking is itself within noise. Uses matplotlib's Agg canvas directly: no pyplot, no global backend change."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = report.rows
    x = [r.low_mean for r in rows]
    y = [r.high_acc for r in rows]
    xerr = [r.low_std for r in rows] if report.seeds >= 2 else None
    n_val = report.val_size
    yerr = [(a * (1 - a) / n_val) ** 0.5 for a in y] if n_val else None
    fig = Figure(figsize=(6.4, 5.2), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", ms=5, color="tab:blue", ecolor="tab:gray",
                elinewidth=1, capsize=2, alpha=0.85)
    seeds = f"mean of {report.seeds} seeds" if report.seeds >= 2 else "1 seed"
    ax.set_xlabel(f"low fidelity val accuracy: {report.low} ({seeds})")
    ax.set_ylabel(f"high fidelity val accuracy: {report.high} (\u00b1 1 s.e.)")
    ax.set_title(
        f"{report.space} on {report.dataset}: {report.archs} architectures\n"
        f"Spearman \u03c1 = {format_value(report.spearman, 2)} {format_ci(report.spearman_ci)}, "
        f"Kendall \u03c4 = {format_value(report.kendall, 2)} {format_ci(report.kendall_ci)} (95% CI)",
        fontsize=10)
    ax.grid(True, alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())
