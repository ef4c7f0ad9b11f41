"""``nas report``: every plot and table of a search study, redrawn from its Optuna storage
alone (any study made by ``nas search``, finished or still running).

    from nas.report import make_report
    report = make_report(optuna.load_study(...), out=".")   # -> <out>/runs/<study>/plots/

Modules, one job each:

* `data`: the study read into plot-ready rows (`ReportData`, `TrialRow`), and the
  ``family.json`` format of the scaled family (`load_family`);
* `pareto_plot`: accuracy against each cost, with the front, the reward's iso-lines, the
  baseline, queued architectures and the family (ours);
* `history_plot`: hypervolume or best reward against trial number and training time (ours);
* `early_stop_plot`: per-epoch accuracies with the rungs and the compute saved (ours);
* `importance_plot`: parameter importance (numbers from Optuna's
  `optuna.importance.get_param_importances`, PED-ANOVA by default; chart ours) and the
  per-stage share of each choice among the top trials (ours);
* `style`: what the plots share (trial kinds' look, cost axes, PNG + SVG output, labels
  that avoid one another);
* `tables`: ``trials.csv``, ``front.csv``, ``summary.md``; `html`: ``index.html``;
* `build`: `make_report`, which writes them all; `cli`: the ``report`` sub-command.

Which plots are Optuna's own: none is drawn by ``optuna.visualization.matplotlib``; all are
drawn here with matplotlib (Agg canvas, no pyplot), because Optuna's plots cannot show what
a search report needs (pruned and infeasible trials as such, budgets, reward iso-lines,
labelled baselines, accuracy of Pareto-mode pruned trials kept in user attributes). The
parameter importances themselves are Optuna's.

The package imports matplotlib only when a report is made (`make_report` is loaded on
first use), so the ``nas`` command starts as fast without it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["make_report", "Report"]


def __getattr__(name: str) -> Any:
    if name in ("make_report", "Report"):
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module 'nas.report' has no attribute {name!r}")
