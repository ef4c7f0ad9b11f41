"""The search's progress (ours, drawn with matplotlib; Optuna's ``plot_optimization_history``
and ``plot_hypervolume_history`` plot against trial number only and count infeasible trials
at their worst-case values): `history_series` and `plot_history`.

Pareto mode: the hypervolume of the evaluated trials finished so far
(`nas.search.objectives.hypervolume`, under the study's final reference point
`SearchSummary.reference`, so every value is comparable with the summary's). Reward mode:
the best reward so far. Two panels: against the trial number, and against the training
time spent so far (the sum of the trials' training seconds, `TrialRow.seconds`, in trial
order). Trials are taken in number order, the order the sampler proposed them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..search.objectives import COST_KINDS, format_quantity, hypervolume
from .data import ReportData
from .style import new_figure

__all__ = ["History", "history_series", "plot_history"]


@dataclass
class History:
    """``numbers[i]``: a trial; ``values[i]``: the hypervolume or best reward once trials
    up to it have finished (NaN before the first evaluated one); ``seconds[i]``: training
    seconds spent up to and including it; ``what``: the quantity's name."""

    numbers: np.ndarray
    values: np.ndarray
    seconds: np.ndarray
    what: str


def history_series(data: ReportData) -> History:
    s = data.summary
    rows = [r for r in data.rows if r.kind not in ("waiting",)]
    numbers = np.array([r.number for r in rows], dtype=int)
    seconds = np.cumsum([r.seconds for r in rows]) if rows else np.zeros(0)
    values = np.full(len(rows), np.nan)
    if s.mode == "pareto":
        what = "hypervolume"
        points: list[tuple[float, ...]] = []
        current = np.nan
        for i, r in enumerate(rows):
            if r.evaluated and s.reference is not None:
                points.append(r.values)
                current = hypervolume(points, s.reference, s.directions)
            values[i] = current
    else:
        what = "best reward"
        best = np.nan
        for i, r in enumerate(rows):
            if r.evaluated:
                best = r.values[0] if np.isnan(best) else max(best, r.values[0])
            values[i] = best
    return History(numbers, values, np.asarray(seconds, dtype=float), what)


def plot_history(data: ReportData):
    """The two-panel figure and the `History` it draws."""
    h = history_series(data)
    s = data.summary
    fig = new_figure(11.0, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    improved = np.zeros(len(h.values), dtype=bool)
    if len(h.values):
        prev = np.concatenate(([np.nan], h.values[:-1]))
        improved = np.isfinite(h.values) & (~np.isfinite(prev) | (h.values > prev))
    for ax, x, label in ((axes[0], h.numbers, "trial number"),
                         (axes[1], h.seconds, "training time so far (s, sum over trials)")):
        if len(x):
            ax.step(x, h.values, where="post", color="#1f77b4", lw=1.5)
            ax.plot(x[improved], h.values[improved], "o", color="#1f77b4", markersize=4,
                    label="a trial that improved it")
        ax.set_xlabel(label)
        ax.grid(True, lw=0.4, alpha=0.5)
    axes[0].set_ylabel(h.what + (" (accuracy x cost units)" if h.what == "hypervolume" else ""))
    if improved.any():
        axes[0].legend(fontsize=8, loc="lower right")
    if not np.isfinite(h.values).any():
        for ax in axes:
            ax.text(0.5, 0.5, "no evaluated trial yet", transform=ax.transAxes, ha="center", va="center",
                    color="#777777")
    if s.mode == "pareto" and s.reference is not None:
        ref = ", ".join(format_quantity(v, n) if n in COST_KINDS else f"{n} {v:g}"
                        for n, v in zip(s.objectives, s.reference))
        sub = f"reference point: {ref}"
    elif s.mode == "pareto":
        sub = "no reference point yet"
    else:
        sub = s.info.get("reward_text") or ""
    fig.suptitle(f"{s.study}: {h.what} as the search went on", fontsize=12, x=0.01, ha="left")
    axes[0].set_title(sub, fontsize=8, loc="left", color="#444444")
    return fig, h
