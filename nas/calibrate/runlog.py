"""The resumable run log in ``out``: the file names, the stored arguments
(``calibration.args.json``, checked against a new call) and one JSON line per finished run
(``runs.jsonl``: read, appended with fsync, a line cut short by a kill dropped)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

from space.errors import UserError

from .report import json_ready

__all__ = ["ARGS_FILE", "RUNS_FILE", "REPORT_FILE", "PLOT_FILE", "ARGS_FORMAT", "space_identity",
           "check_out_args", "read_runs", "drop_partial_tail", "append_run"]

ARGS_FILE = "calibration.args.json"
RUNS_FILE = "runs.jsonl"
REPORT_FILE = "calibration.json"
PLOT_FILE = "calibration.png"
ARGS_FORMAT = 1


def space_identity(space) -> dict:
    """What of a space decides the architectures drawn (its name and prose do not)."""
    d = json.loads(json.dumps(space.to_dict()))
    d.pop("name", None)
    d.pop("description", None)
    return d


def check_out_args(out: Path, args: dict, names: Mapping[str, str]) -> bool:
    """Refuse an ``out`` made with other arguments; True when ``out`` already holds these
    arguments, False when it holds no calibration yet."""
    args_path, runs_path = out / ARGS_FILE, out / RUNS_FILE
    if out.exists() and not out.is_dir():
        raise UserError(f"{names['out']} {out} is a file; pass a folder path")
    if args_path.exists():
        try:
            stored = json.loads(args_path.read_text(encoding="utf-8"))
        except ValueError:
            raise UserError(f"{names['out']} {out}: {ARGS_FILE} is not readable JSON; pass another "
                            f"{names['out']} or remove that folder") from None
        differs = [k for k in args if k != "archs" and stored.get(k) != args[k]]
        if differs:
            def show(value: Any) -> str:
                return "not given" if value is None else repr(value)

            shown = "; ".join(
                f"{names.get(k, k)} differs" if k == "space"
                else f"{names.get(k, k)} {show(args[k])} here, {show(stored.get(k))} there" for k in differs)
            raise UserError(f"{names['out']} {out} holds a calibration made with other arguments "
                            f"({shown}); pass the same arguments to resume it, or another {names['out']}")
        return True
    if runs_path.exists():
        raise UserError(f"{names['out']} {out} holds {RUNS_FILE} without {ARGS_FILE}, so its runs cannot "
                        f"be matched to these arguments; pass another {names['out']}")
    return False


def read_runs(path: Path) -> dict[tuple[str, str, int], dict]:
    """Finished runs by (arch, fidelity, seed). A last line without its newline is a write
    cut short by a kill: ignored. Another unreadable line is skipped with a warning (that
    run is simply trained again)."""
    if not path.exists():
        return {}
    # The piece after the last newline is "" for a complete file, else a cut-short record.
    complete = path.read_text(encoding="utf-8").split("\n")[:-1]
    runs: dict[tuple[str, str, int], dict] = {}
    bad = 0
    for line in complete:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            key = (str(rec["arch"]), str(rec["fidelity"]), int(rec["seed"]))
            if "failed" not in rec:
                float(rec["val_acc"]), float(rec["seconds"])
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        runs[key] = rec
    if bad:
        warnings.warn(f"{path}: skipped {bad} unreadable line{'s' if bad != 1 else ''}; "
                      "those runs are trained again")
    return runs


def drop_partial_tail(path: Path) -> None:
    """Cut a partial last line off ``path`` so that new records start on a line of their own."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())


def append_run(path: Path, record: Mapping[str, Any]) -> None:
    line = json.dumps(json_ready(dict(record)), separators=(",", ":")) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())

