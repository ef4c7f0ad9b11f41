"""Which searched choices matter: `param_importances` / `plot_importance` and
`stage_shares` / `plot_stage_choices`.

Importance numbers are Optuna's own (`optuna.importance.get_param_importances` with its
default evaluator, PED-ANOVA in Optuna 5: how much the best 10% of trials' distribution of
a parameter differs from all trials'); the bar charts are ours, drawn with matplotlib
(Optuna's ``plot_param_importances`` takes one target per figure and every COMPLETE trial,
infeasible ones included at their worst-case values). Each target is computed over the
trials where it means something, in a throw-away in-memory study whose direction says
which end is good:

* accuracy (and reward mode's reward), maximised: the evaluated trials only (complete,
  feasible, not duplicates: a pruned trial's accuracy is from an earlier epoch and an
  infeasible trial's 0 was never measured);
* each cost, minimised: every trial that recorded it, one per architecture (a cost is
  known before training, so pruned and infeasible trials count).

A target with fewer than `MIN_TRIALS` trials, a single value, or no parameter that varies
is skipped with a sentence in the report instead of a meaningless chart.

The per-stage view (ours): for each stage and each searched field (parameters
``s<i>.<field>``: ``block``, ``kernel``, ``expand``, ``se``, ``layers``, ``width``), the
share of each choice among the top trials (`ReportData.top`: Pareto mode's front, reward
mode's best quarter by reward) next to its share among all evaluated trials. A choice the
top trials take far more often than the rest is one the search found worth its cost.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from typing import Callable

import numpy as np
import optuna
from optuna.trial import create_trial

from ..search.objectives import COST_KINDS
from .data import ReportData, TrialRow
from .style import new_figure

__all__ = ["MIN_TRIALS", "param_importances", "plot_importance", "stage_shares", "plot_stage_choices",
           "FIELD_ORDER"]

MIN_TRIALS = 5
FIELD_ORDER = ("block", "kernel", "expand", "se", "layers", "width")
_PARAM = re.compile(r"^s(\d+)\.(\w+)$")
_SHOWN = 12  # parameters per importance panel


def _targets(data: ReportData) -> list[tuple[str, str, Callable[[TrialRow], float | None], bool]]:
    """(name, label, value of a row or None, maximise) for each importance target."""
    out = [("acc", "accuracy", lambda r: r.acc if r.evaluated else None, True)]
    if data.mode == "reward":
        out.append(("reward", "reward", lambda r: r.reward if r.evaluated else None, True))
    for c in data.costs:
        out.append((c, COST_KINDS[c].label, lambda r, c=c: r.costs.get(c)
                    if r.kind not in ("duplicate", "waiting") else None, False))
    return out


def param_importances(data: ReportData) -> tuple[dict[str, dict[str, float]], dict[str, str], list[str]]:
    """Importances per target (name -> {parameter: importance}, largest first), the
    targets' axis labels, and a sentence for each target skipped."""
    result: dict[str, dict[str, float]] = {}
    labels: dict[str, str] = {}
    notes: list[str] = []
    for name, label, value_of, maximise in _targets(data):
        rows, seen = [], set()
        for r in data.rows:
            v = value_of(r)
            if v is None or not math.isfinite(v) or not r.params:
                continue
            if not maximise:  # one per architecture: costs repeat exactly
                if r.arch in seen:
                    continue
                seen.add(r.arch)
            rows.append((r, float(v)))
        names = set.intersection(*(set(r.params) for r, _ in rows)) if rows else set()
        varied = [p for p in sorted(names) if len({repr(r.params[p]) for r, _ in rows}) > 1]
        why = None
        if len(rows) < MIN_TRIALS:
            why = (f"only {len(rows)} trial{'s' if len(rows) != 1 else ''} to compare ({MIN_TRIALS} needed: "
                   + ("complete, feasible, not duplicates)" if maximise else "one per architecture)"))
        elif len({v for _, v in rows}) < 2:
            why = f"every trial has the same {label}"
        elif not varied:
            why = "no searched parameter varies among those trials"
        if why is None:
            try:
                study = optuna.create_study(direction="maximize" if maximise else "minimize")
                for r, v in rows:
                    study.add_trial(create_trial(params={p: r.params[p] for p in varied},
                                                 distributions={p: r.distributions[p] for p in varied}, value=v))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    imp = optuna.importance.get_param_importances(study)
            except Exception as err:  # noqa: BLE001 - a report must not die on an evaluator's limits
                why = f"Optuna's evaluator failed ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
            else:
                result[name] = dict(sorted(imp.items(), key=lambda kv: (-kv[1], kv[0])))
                labels[name] = label
        if why is not None:
            notes.append(f"Parameter importance for {label} skipped: {why}.")
    return result, labels, notes


def plot_importance(importances: dict[str, dict[str, float]], labels: dict[str, str], study_name: str):
    """Horizontal bars, one panel per target; None when there is nothing to draw."""
    if not importances:
        return None
    n = len(importances)
    shown = max(min(len(v), _SHOWN) for v in importances.values())
    fig = new_figure(max(4.0, 3.4 * n), 1.4 + 0.28 * shown)
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
    for ax, (name, imp) in zip(axes, importances.items()):
        items = list(imp.items())[:_SHOWN][::-1]
        colour = "#1f77b4" if name in ("acc", "reward") else "#8c564b"
        ax.barh([k for k, _ in items], [v for _, v in items], color=colour)
        ax.set_title(f"for {labels[name]}" + (f" ({len(imp) - _SHOWN} more not shown)" if len(imp) > _SHOWN else ""),
                     fontsize=9, loc="left")
        ax.set_xlim(0, max(1e-9, max(v for _, v in items)) * 1.15)
        ax.tick_params(labelsize=8)
        ax.grid(True, axis="x", lw=0.4, alpha=0.5)
        ax.set_xlabel("importance (normalised)", fontsize=8)
    fig.suptitle(f"{study_name}: parameter importance (Optuna's PED-ANOVA: how differently the best 10% of "
                 "trials chose)", fontsize=10, x=0.01, ha="left")
    return fig


def stage_shares(data: ReportData) -> tuple[dict[tuple[int, str], dict[str, tuple[float, float]]], int, int]:
    """For each (stage, field): choice -> (share among top trials, share among all evaluated
    trials), choices in the order of the parameter's distribution; with the numbers of top
    and evaluated trials."""
    evaluated = [r for r in data.evaluated if r.params]
    top_set = set(data.top)
    top = [r for r in evaluated if r.number in top_set]
    out: dict[tuple[int, str], dict[str, tuple[float, float]]] = {}
    if not evaluated:
        return out, 0, 0
    names = sorted({p for r in evaluated for p in r.params if _PARAM.match(p)},
                   key=lambda p: (int(_PARAM.match(p).group(1)), _field_rank(_PARAM.match(p).group(2))))
    for p in names:
        stage, fld = int(_PARAM.match(p).group(1)), _PARAM.match(p).group(2)
        dist = next((r.distributions.get(p) for r in evaluated if p in r.distributions), None)
        choices = list(getattr(dist, "choices", None) or sorted({r.params[p] for r in evaluated if p in r.params},
                                                                   key=repr))
        with_p = [r for r in evaluated if p in r.params]
        top_p = [r for r in top if p in r.params]
        all_counts = Counter(repr(r.params[p]) for r in with_p)
        top_counts = Counter(repr(r.params[p]) for r in top_p)
        out[(stage, fld)] = {_choice_text(c): (top_counts[repr(c)] / len(top_p) if top_p else 0.0,
                                               all_counts[repr(c)] / len(with_p)) for c in choices}
    return out, len(top), len(evaluated)


def _field_rank(f: str) -> int:
    return FIELD_ORDER.index(f) if f in FIELD_ORDER else len(FIELD_ORDER)


def _choice_text(c) -> str:
    if isinstance(c, float):
        return f"{c:g}"
    return str(c)


def plot_stage_choices(data: ReportData):
    """Grouped bars: one panel per (stage, field); None when no evaluated trial has
    per-stage parameters. Returns the figure and `stage_shares`' table."""
    shares, n_top, n_all = stage_shares(data)
    if not shares or n_top == 0:
        return None, shares
    stages = sorted({s for s, _ in shares})
    fields = sorted({f for _, f in shares}, key=_field_rank)
    fig = new_figure(max(6.0, 2.3 * len(fields)), 1.0 + 1.6 * len(stages))
    axes = fig.subplots(len(stages), len(fields), squeeze=False, sharey=True)
    top_words = "front" if data.mode == "pareto" else "best quarter by reward"
    for i, st in enumerate(stages):
        for j, fld in enumerate(fields):
            ax = axes[i][j]
            cell = shares.get((st, fld))
            if cell is None:
                ax.axis("off")
                continue
            x = np.arange(len(cell))
            ax.bar(x - 0.2, [v[1] for v in cell.values()], 0.38, color="#bbbbbb", label=f"all evaluated ({n_all})")
            ax.bar(x + 0.2, [v[0] for v in cell.values()], 0.38, color="#d62728", label=f"{top_words} ({n_top})")
            ax.set_xticks(x, list(cell), fontsize=8)
            ax.set_ylim(0, 1.05)
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(True, axis="y", lw=0.4, alpha=0.5)
            if i == 0 or shares.get((stages[i - 1], fld)) is None:
                ax.set_title(fld, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"stage {st}\nshare", fontsize=8)
    handles, lab = next(ax for row in axes for ax in row if ax.axison).get_legend_handles_labels()
    fig.legend(handles, lab, loc="outside upper right", fontsize=8, ncols=2, frameon=False)
    fig.suptitle(f"{data.summary.study}: choices of the {top_words} vs all evaluated trials",
                 fontsize=10, x=0.01, ha="left")
    return fig, shares
