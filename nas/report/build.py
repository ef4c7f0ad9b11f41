"""`make_report`: every plot, table and page of ``nas report`` for one study, written into
``<out>/runs/<study>/plots/`` (each file atomically; files of plots no longer drawn are left
as they were, and index.html lists only what this run drew).

Files (stems as in `PLOT_STEMS`, each as ``.png`` and ``.svg``):

* ``acc_vs_<cost>``: accuracy against each recorded cost (`pareto_plot`);
* ``history``: hypervolume or best reward against trial number and training time
  (`history_plot`);
* ``early_stopping``: per-epoch accuracies and rungs (`early_stop_plot`);
* ``importance``: parameter importance per target, and ``stage_choices``: the per-stage
  view (`importance_plot`), each skipped with a note when the study cannot support it (the
  per-stage view needs parameters ``s<i>.<field>``: a listed space has none);
* ``index.html`` (`html`), ``trials.csv``, ``front.csv`` and ``summary.md`` (`tables`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from ..atomic import atomic_write
from ..search.objectives import COST_KINDS
from .data import ReportData, read_report_data
from .early_stop_plot import plot_early_stopping
from .history_plot import History, plot_history
from .html import INDEX_HTML, index_html
from .importance_plot import param_importances, plot_importance, plot_stage_choices
from .pareto_plot import AccCostPlot, plot_accuracy_vs_cost
from .style import save_figure
from .tables import write_tables

__all__ = ["Report", "make_report", "PLOTS_DIR"]

PLOTS_DIR = "plots"


@dataclass
class Report:
    """What `make_report` wrote and drew.

    Attributes:
        plots_dir: ``<out>/runs/<study>/plots``.
        data: the study as read (`ReportData`).
        plots: (stem, title, caption) of each plot written, in page order.
        files: every file written.
        notes: what could not be drawn, in sentences (also on the page).
        acc_cost: cost kind -> the accuracy-vs-cost plot's content (iso-lines, points, labels).
        history: the history plot's series.
        importances: target -> {parameter: importance} (targets skipped are absent).
    """

    plots_dir: Path
    data: ReportData
    plots: list[tuple[str, str, str]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    acc_cost: dict[str, AccCostPlot] = field(default_factory=dict)
    history: History | None = None
    importances: dict[str, dict[str, float]] = field(default_factory=dict)


@contextlib.contextmanager
def _quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def make_report(study: optuna.Study, out: str | Path) -> Report:
    """Draw and write the report of ``study`` (made by `nas search`, finished or running)
    into ``<out>/runs/<study>/plots/``."""
    run_dir = Path(out) / "runs" / study.study_name
    plots_dir = run_dir / PLOTS_DIR
    with _quiet_optuna():
        data = read_report_data(study, run_dir)
        report = Report(plots_dir=plots_dir, data=data, notes=list(data.notes))

        def add(fig, stem: str, title: str, caption: str) -> None:
            report.files += save_figure(fig, plots_dir, stem)
            report.plots.append((stem, title, caption))

        for cost in data.costs:
            p = plot_accuracy_vs_cost(data, cost)
            report.acc_cost[cost] = p
            label = COST_KINDS[cost].label
            caption = (f"Every trial at its {label} (log scale) and validation accuracy, by kind; pruned trials "
                       "at the accuracy they stopped with (darker: stopped later); trials that trained nothing "
                       "in the shaded band. Black steps: the front of accuracy vs " + label + ".")
            if p.iso_curves:
                caption += " Purple: curves of equal reward ACC * (X/T)^w."
            if cost == "macs" and data.family:
                caption += " Cyan: the scaled family from family.json."
            add(p.figure, f"acc_vs_{cost}", f"Accuracy vs {label}", caption)
        fig, report.history = plot_history(data)
        what = report.history.what
        add(fig, "history", f"{what[0].upper()}{what[1:]} over the search",
            f"The {what} once each trial had finished, against the trial number and against the training "
            "time spent so far (dots: trials that improved it).")
        fig, _ = plot_early_stopping(data)
        add(fig, "early_stopping", "Early stopping",
            "Validation accuracy after each epoch of every trial that trained; pruned trials end at the "
            "triangle; dotted vertical lines: the rungs where trials are compared.")
        report.importances, labels, notes = param_importances(data)
        report.notes += notes
        fig = plot_importance(report.importances, labels, data.summary.study)
        if fig is not None:
            add(fig, "importance", "Parameter importance",
                "Optuna's PED-ANOVA importance of each searched parameter for each target (accuracy over "
                "evaluated trials; costs over every trial that recorded them).")
        fig, shares = plot_stage_choices(data)
        if fig is not None:
            top = "front members" if data.mode == "pareto" else "best quarter of trials by reward"
            add(fig, "stage_choices", "Choices per stage",
                f"For each stage and searched field, how often each choice appears among the {top} (red) "
                "and among all evaluated trials (grey).")
        elif shares or not data.evaluated:
            report.notes.append("Per-stage choices not drawn: no evaluated trial yet.")
        else:
            # A listed space (one "candidate" parameter), or another without s<i>.<field>.
            report.notes.append("Per-stage choices not drawn: the study's parameters are not per-stage "
                                "choices (s<i>.<field>), as in a listed space of candidates.")
        report.files += write_tables(data, plots_dir, [(s, t) for s, t, _ in report.plots], report.notes)
        with atomic_write(plots_dir / INDEX_HTML, "w") as f:
            f.write(index_html(data, report.plots, report.notes))
        report.files.append(plots_dir / INDEX_HTML)
    return report
