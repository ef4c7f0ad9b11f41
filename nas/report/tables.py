"""The report's tables: ``trials.csv``, ``front.csv`` and ``summary.md`` (`write_tables`).

``trials.csv``: one row per trial, by number: ``number``, ``state`` (Optuna's),
``kind`` (`nas.report.data`: complete, pruned, infeasible, failed, duplicate, running,
waiting), ``arch``, the study's objectives (``reward``, or ``acc`` and the costs),
``reward``, ``val_acc``, ``acc`` (the accuracy the plots draw: final, or where a pruned trial
stopped), every recorded cost, ``epochs`` (trained in this trial), ``pruned_at``,
``seconds`` (training), ``enqueued``, ``duplicate_of``, ``reason`` (why a trial is not a plain
evaluation, `nas.search.results.trial_reason`), then the searched parameters. An empty cell
is a value the trial does not have.

``front.csv``: the same columns (and ``baseline``: ``yes`` on the chosen trial) for Pareto
mode's front (`SearchSummary.front`, by the first cost); in reward mode, the front of
accuracy against the reward's cost (MACs for the v2 reward) over the evaluated trials.

``summary.md``: the summary (`nas.search.results.format_summary`), the front or the best
rewards as a table, the plots and what could not be drawn.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

from ..atomic import atomic_write
from ..search.objectives import COST_KINDS, MnasReward, format_quantity
from ..search.results import format_summary
from .data import ReportData, TrialRow, short_arch

__all__ = ["TRIALS_CSV", "FRONT_CSV", "SUMMARY_MD", "trial_columns", "front_rows", "write_tables",
           "top_table"]

TRIALS_CSV = "trials.csv"
FRONT_CSV = "front.csv"
SUMMARY_MD = "summary.md"


def trial_columns(data: ReportData) -> list[str]:
    s = data.summary
    cols = ["number", "state", "kind", "arch", *s.objectives, "reward", "val_acc", "acc", *data.costs,
            "epochs", "pruned_at", "seconds", "enqueued", "duplicate_of", "reason"]
    params = sorted({p for r in data.rows for p in r.params})
    return list(dict.fromkeys(cols + params))


def _cells(data: ReportData, r: TrialRow, columns: Sequence[str], records: dict[int, dict]) -> list[Any]:
    rec = records.get(r.number, {})
    values = {"number": r.number, "state": r.state, "kind": r.kind, "arch": r.arch, "reward": r.reward,
              "val_acc": rec.get("val_acc"), "acc": r.acc, "epochs": len(r.epoch_acc), "pruned_at": r.pruned_at,
              "seconds": r.seconds, "enqueued": r.enqueued, "duplicate_of": r.duplicate_of, "reason": r.reason,
              "baseline": "yes" if r.number == data.baseline else ""}
    for name in data.summary.objectives:
        values.setdefault(name, rec.get(name))
    for c in data.costs:
        values.setdefault(c, r.costs.get(c))
    values.update({p: v for p, v in r.params.items() if p not in values})
    out = []
    for c in columns:
        v = values.get(c)
        out.append("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
    return out


def front_rows(data: ReportData) -> list[TrialRow]:
    """front.csv's trials (see the module docstring)."""
    if data.mode == "pareto":
        return [data.row(r["number"]) for r in data.summary.front]
    cost = data.iso_reward.cost if isinstance(data.iso_reward, MnasReward) else "macs"
    return data.front_2d(cost)


def _csv(columns: Sequence[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows)
    return buf.getvalue()


def top_table(data: ReportData) -> tuple[str, list[str], list[list[str]]]:
    """The table index.html and summary.md show: its title, header and rows (text)."""
    s = data.summary
    if data.mode == "pareto":
        title, rows = "Pareto front", [data.row(r["number"]) for r in s.front]
    else:
        title = "Best rewards"
        rows = sorted((r for r in data.evaluated if r.reward is not None), key=lambda r: (-r.reward, r.number))[:12]
    head = ["trial", "acc"] + (["reward"] if data.mode == "reward" else []) + list(data.costs) + ["arch"]
    body = []
    for r in rows:
        cells = [f"{r.number}" + (" (baseline)" if r.number == data.baseline else ""),
                 f"{r.acc:.4f}" if r.acc is not None else "-"]
        if data.mode == "reward":
            cells.append(f"{r.reward:.4f}" if r.reward is not None else "-")
        cells += [format_quantity(r.costs[c], c) if c in r.costs else "-" for c in data.costs]
        cells.append(short_arch(r.arch, per_line=len(r.arch), channels=True))  # full strings: front.csv
        body.append(cells)
    return title, [h if h not in COST_KINDS else COST_KINDS[h].label for h in head], body


def _md_table(head: list[str], body: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in row] for row in body]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row[:-1] + [f"`{row[-1]}`"]) + " |" for row in esc]
    return "\n".join(lines)


def summary_markdown(data: ReportData, plots: Sequence[tuple[str, str]], notes: Sequence[str]) -> str:
    """summary.md's text; ``plots``: (file stem, title) of each plot drawn."""
    s = data.summary
    title, head, body = top_table(data)
    parts = [f"# Search report: {s.study}", "", "```text", format_summary(s), "```", ""]
    parts += [f"## {title}", "", _md_table(head, body) if body else "_Nothing evaluated yet._", ""]
    parts += ["## Plots", ""]
    for stem, what in plots:
        parts += [f"### {what}", "", f"![{what}]({stem}.png) ([SVG]({stem}.svg))", ""]
    if notes:
        parts += ["## Not drawn", ""] + [f"- {n}" for n in notes] + [""]
    parts += [f"Tables: [{TRIALS_CSV}]({TRIALS_CSV}), [{FRONT_CSV}]({FRONT_CSV}).", ""]
    return "\n".join(parts)


def write_tables(data: ReportData, plots_dir: Path, plots: Sequence[tuple[str, str]],
                 notes: Sequence[str]) -> list[Path]:
    """Write trials.csv, front.csv and summary.md into ``plots_dir``, each atomically."""
    plots_dir = Path(plots_dir)
    cols = trial_columns(data)
    records = {x["number"]: x for x in data.summary.records}
    front_cols = cols[:4] + ["baseline"] + cols[4:]
    texts = {
        TRIALS_CSV: _csv(cols, [_cells(data, r, cols, records) for r in data.rows]),
        FRONT_CSV: _csv(front_cols, [_cells(data, r, front_cols, records) for r in front_rows(data)]),
        SUMMARY_MD: summary_markdown(data, plots, notes),
    }
    paths = []
    for name, text in texts.items():
        with atomic_write(plots_dir / name, "w") as f:
            f.write(text)
        paths.append(plots_dir / name)
    return paths
