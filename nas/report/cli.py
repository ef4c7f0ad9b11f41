"""The ``nas report`` command (`add_parser`, hooked on the ``nas`` command by `nas.cli`):

    nas report --study NAME [--storage URL] [--out DIR]

Redraws the report of a study made by ``nas search`` (finished or running) from its
storage alone into ``<out>/runs/<study>/plots/`` (`nas.report.build.make_report`) and
prints the path of its ``index.html``. The storage defaults to ``nas best``'s:
``sqlite:///<out>/runs/<study>/study.db``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from space.errors import UserError

__all__ = ["add_parser"]


def _cmd_report(args: argparse.Namespace) -> int:
    from ..search.settings import STUDY_NAME_RE
    from ..search.study import load_existing_study
    from .build import make_report
    from .html import INDEX_HTML

    if not STUDY_NAME_RE.match(args.study):
        raise UserError(f"--study must be letters, digits, '_', '-' or '.', got {args.study!r}")
    url = args.storage or f"sqlite:///{(Path(args.out) / 'runs' / args.study / 'study.db').resolve()}"
    study = load_existing_study(args.study, url)
    report = make_report(study, args.out)
    for note in report.notes:
        print(f"note: {note}", flush=True)
    print(f"wrote {len(report.plots)} plots (PNG and SVG), trials.csv, front.csv and summary.md; "
          f"open {report.plots_dir / INDEX_HTML}", flush=True)
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``report`` on the ``nas`` command's sub-parsers (sets ``func``, which returns
    the exit status)."""
    r = subparsers.add_parser(
        "report", help="plots, tables and a web page of a search study",
        description="Redraw everything about a study made by `nas search` (finished or still running) "
                    "from its storage alone: accuracy against each cost with the front, reward iso-lines, "
                    "baseline and queued architectures; hypervolume or best reward over the search; "
                    "per-epoch accuracies with the early-stopping rungs; parameter importance and the "
                    "choices per stage. Writes PNG and SVG plots, index.html, trials.csv, front.csv and "
                    "summary.md into <out>/runs/<study>/plots/.")
    r.add_argument("--study", required=True, help="study name")
    r.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite <out>/runs/<study>/study.db)")
    r.add_argument("--out", default=".", help="folder holding runs/<study>/ (default: the working directory)")
    r.set_defaults(func=_cmd_report)
