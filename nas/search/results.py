"""What a search found, read from its study alone (so `nas best` works at any time, from
any machine that reaches the storage): `summarize` -> `SearchSummary`, `pick_knee`, and
`write_outputs`, which writes ``<out>/runs/<study>/baseline.json``, ``trials.csv`` and
``summary.txt`` atomically.

Which trials count
------------------
"Evaluated" trials are COMPLETE, feasible (no ``infeasible`` attr, every constraint <= 0)
and not duplicates (a duplicate repeats its original's values). Reward mode's best is the
evaluated trial with the highest reward (ties: the lower number). Pareto mode's front is
`objectives.pareto_front` of the evaluated trials' values.

Hypervolume reference point
---------------------------
Accuracy 0, and for each cost its hard budget when the study has one, else for MACs and
params the costliest architecture of the space (`budgets.largest_reachable`, fixed when the
study is created and stored as ``hv_reference``), so the figure is comparable over a study's
life and between studies of one space. A measured cost (latency, step time) without a budget
takes the largest value among the evaluated trials: the costliest trial then adds no volume
and the figure moves as costlier ones appear. The summary prints the reference.

Pareto mode's baseline (the rule is stored in ``baseline.json`` under ``"rule"``)
----------------------------------------------------------------------------------
1. with a target (``--target-macs 30M``...): the most accurate front member whose cost of
   that kind is at most the target;
2. else, with a hard budget: the most accurate front member (all of them meet it);
3. else (or when no member is under the target) the knee, `pick_knee`.

A rule stored by ``nas pick`` (`nas.search.pick`, the study user attribute ``"pick"``)
replaces these in either mode; when it no longer chooses anything (which a budget or
the knee cannot, and a trial number only if the storage was edited) the search's own rule
applies and ``rule`` says why.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from space.arch import Arch, ArchError

from ..atomic import atomic_write
from .early_stop import Saved, compute_saved, epoch_accuracies
from .objectives import format_quantity, hypervolume, pareto_front
from .study import STUDY_ATTR
from .trial import (ARCH_ATTR, DUPLICATE_ATTR, ERROR_ATTR, INFEASIBLE_ATTR, PRUNED_AT_ATTR,
                    SURPLUS_ATTR)

__all__ = ["SearchSummary", "summarize", "write_outputs", "pick_knee", "trial_record",
           "trial_reason", "BASELINE_FILE", "TRIALS_FILE", "SUMMARY_FILE", "LOG_FILE"]

BASELINE_FILE = "baseline.json"
TRIALS_FILE = "trials.csv"
SUMMARY_FILE = "summary.txt"
LOG_FILE = "search.log"


def pick_knee(points: Sequence[Sequence[float]], directions: Sequence[str]) -> int:
    """Index of the knee of a front: the point farthest from the line joining the front's
    two extremes, in normalised objective space, on the side of the ideal point.

    Every objective is turned into one to minimise and scaled to [0, 1] over the given
    points (an objective with no spread becomes 0). With two objectives the extremes are
    the best point in each; the signed distance to the line through them is positive
    toward the ideal corner (0, 0), and the knee is the largest (ties: the lower index).
    With three or more objectives a line through "the extremes" is not defined; the knee
    is then the point nearest the ideal point (Euclidean, normalised). With fewer than
    three points, or when every point lies on the line, the most accurate point (best in
    the first objective) is returned.
    """
    p = np.asarray(points, dtype=float)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError("pick_knee needs a non-empty list of points")
    signs = np.array([-1.0 if str(getattr(d, "value", d)).lower() == "maximize" else 1.0 for d in directions])
    y = p * signs
    lo, span = y.min(axis=0), y.max(axis=0) - y.min(axis=0)
    z = np.where(span > 0, (y - lo) / np.where(span > 0, span, 1.0), 0.0)
    first_best = int(np.lexsort((np.arange(len(z)), z[:, 0]))[0])
    if len(z) < 3:
        return first_best
    if z.shape[1] >= 3:
        d = np.linalg.norm(z, axis=1)
        return int(np.lexsort((np.arange(len(d)), d))[0])
    a = z[first_best]
    b = z[int(np.lexsort((np.arange(len(z)), z[:, 1]))[0])]
    direction = b - a
    length = float(np.hypot(*direction))
    if length == 0:
        return first_best
    # Signed distance: the 2D cross product, oriented so the ideal corner (0, 0) is positive.
    cross = (direction[0] * (z[:, 1] - a[1]) - direction[1] * (z[:, 0] - a[0])) / length
    ideal = (direction[0] * (0 - a[1]) - direction[1] * (0 - a[0])) / length
    signed = cross * (1.0 if ideal >= 0 else -1.0)
    if np.max(signed) <= 1e-12:
        return first_best
    return int(np.lexsort((np.arange(len(signed)), -signed))[0])


def _is_feasible(t: FrozenTrial) -> bool:
    return INFEASIBLE_ATTR not in t.user_attrs and all(v <= 0 for v in t.constraints.values())


def trial_reason(t: FrozenTrial) -> str:
    """Why a trial is not a plain evaluation (infeasible, failed, duplicate, pruned, surplus), or an empty string."""
    a = t.user_attrs
    if a.get(SURPLUS_ATTR):
        return "surplus: the study already had its trials"
    if INFEASIBLE_ATTR in a:
        return f"infeasible: {a[INFEASIBLE_ATTR]}"
    if ERROR_ATTR in a:
        return f"failed: {a[ERROR_ATTR]}"
    if DUPLICATE_ATTR in a:
        return f"duplicate of trial {a[DUPLICATE_ATTR]}"
    if t.state == TrialState.PRUNED:
        at = a.get(PRUNED_AT_ATTR)
        return f"pruned at epoch {at}" if at is not None else "pruned"
    if t.state == TrialState.FAIL:
        return "failed: " + str(t.system_attrs.get("fail_reason", "worker stopped")).splitlines()[0][:200]
    return ""


def trial_record(t: FrozenTrial, objective_names: Sequence[str]) -> dict[str, Any]:
    """One trial as a flat dict (a row of ``trials.csv``)."""
    a = t.user_attrs
    rec: dict[str, Any] = {"number": t.number, "state": t.state.name, "arch": a.get(ARCH_ATTR, "")}
    values = t.values if t.state == TrialState.COMPLETE and t.values is not None else None
    for i, name in enumerate(objective_names):
        rec[name] = values[i] if values is not None else (
            epoch_accuracies(t)[-1] if name == "acc" and epoch_accuracies(t) else a.get(name))
    for key in ("reward", "val_acc", "val_acc_se", "macs", "params", "latency", "step_time"):
        rec.setdefault(key, a.get(key))
    # epochs this architecture was trained for (a duplicate trains none; a retry resumed from its
    # killed predecessor's checkpoint counts the restored epochs too)
    rec["epochs"] = len(epoch_accuracies(t))
    rec["seconds"] = a.get("seconds") if DUPLICATE_ATTR not in a else 0.0
    rec["duplicate_of"] = a.get(DUPLICATE_ATTR)
    rec["reason"] = trial_reason(t)
    return rec


@dataclass
class SearchSummary:
    """A study's results (see the module docstring for the rules).

    Attributes:
        study, storage: where it lives (the storage URL without its password).
        mode, objectives, directions: as stored on the study.
        counts: trials by state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``,
            ``WAITING``) plus ``infeasible`` and ``duplicate`` (COMPLETE trials of those kinds),
            ``counted`` (COMPLETE + PRUNED: what counts toward ``--trials``) and ``surplus``
            (FAIL trials of workers that started after the count was reached; never trained).
        best: reward mode's best trial record, or None.
        front: Pareto mode's front, trial records sorted by the first cost.
        hypervolume, reference: the front's hypervolume and its reference point (accuracy 0,
            costs as described in the module docstring); None in reward mode.
        baseline: the chosen trial's record (best or picked), None when nothing is evaluated.
        rule: how ``baseline`` was chosen, in words.
        saved: training epochs trained, would-be-trained without pruning, fraction saved.
        run_dir: the run folder of `write_outputs` (None from `summarize` alone).
    """

    study: str
    storage: str
    mode: str
    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    counts: dict[str, int]
    best: dict | None
    front: list[dict]
    hypervolume: float | None
    reference: tuple[float, ...] | None
    baseline: dict | None
    rule: str
    saved: Saved
    info: dict = field(default_factory=dict)
    records: list[dict] = field(default_factory=list, repr=False)
    run_dir: Path | None = None

    def to_dict(self) -> dict:
        return {"study": self.study, "storage": self.storage, "mode": self.mode,
                "objectives": list(self.objectives), "counts": self.counts, "best": self.best,
                "front": self.front, "hypervolume": self.hypervolume,
                "reference": list(self.reference) if self.reference is not None else None,
                "baseline": self.baseline, "rule": self.rule, "saved": self.saved._asdict()}

    def table(self) -> str:
        """The one-screen summary."""
        return format_summary(self)


def _storage_url(study: optuna.Study) -> str:
    storage = getattr(study, "_storage", None)
    inner = getattr(storage, "_backend", storage)
    from .storage_url import redact

    return redact(str(getattr(inner, "url", "") or ""))  # shown and written: never the password


_STORED = object()


def summarize(study: optuna.Study, *, pick: Any = _STORED, strict: bool = False) -> SearchSummary:
    """Read ``study`` (made by `nas search`) into a `SearchSummary`.

    ``pick``: the `nas.search.pick` rule that chooses the baseline; by default the one
    stored on the study, if any (None: the search's own rule). ``strict``: raise the rule's
    `PickError` when it chooses nothing, instead of falling back to the search's rule.
    """
    info = dict(study.user_attrs[STUDY_ATTR])
    mode, names = info["mode"], tuple(info["objectives"])
    directions = tuple(info["directions"])
    trials = study.get_trials(deepcopy=False)
    counts = {s: 0 for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    counts["infeasible"] = sum(1 for t in complete if not _is_feasible(t))
    counts["duplicate"] = sum(1 for t in complete if DUPLICATE_ATTR in t.user_attrs)
    counts["counted"] = counts["COMPLETE"] + counts["PRUNED"]
    # Surplus trials (a worker that lost the race for the last trial) failed without work.
    counts["surplus"] = sum(1 for t in trials if t.state == TrialState.FAIL and t.user_attrs.get(SURPLUS_ATTR))
    evaluated = [t for t in complete if _is_feasible(t) and DUPLICATE_ATTR not in t.user_attrs
                 and t.values is not None and all(math.isfinite(v) for v in t.values)]
    records = [trial_record(t, names) for t in sorted(trials, key=lambda t: t.number)]
    by_number = {r["number"]: r for r in records}
    saved = compute_saved(trials, int(info["epochs"]))

    best = None
    members: list[FrozenTrial] = []
    front: list[dict] = []
    hv = ref = None
    baseline = None
    rule = "nothing evaluated yet"
    if mode == "reward":
        if evaluated:
            top = max(evaluated, key=lambda t: (t.values[0], -t.number))
            best = baseline = by_number[top.number]
            rule = "the highest reward"
    elif evaluated:
        points = [list(t.values) for t in evaluated]
        idx = pareto_front(points, directions)
        members = [evaluated[i] for i in idx]
        budgets = info.get("budgets") or {}
        fixed = info.get("hv_reference") or {}
        costs = list(names[1:])
        ref = tuple([0.0] + [float(fixed[c]) if c in fixed else float(budgets[c]) if c in budgets
                             else max(p[k + 1] for p in points) for k, c in enumerate(costs)])
        hv = hypervolume(points, ref, directions)
        front = sorted((by_number[t.number] for t in members), key=lambda r: (r[costs[0]], r["number"]))
        target = info.get("target")
        chosen = None
        if target:
            kind, limit = target[0], float(target[1])
            under = [t for t in members if t.user_attrs.get(kind) is not None and t.user_attrs[kind] <= limit]
            if under:
                chosen = max(under, key=lambda t: (t.values[0], -t.number))
                rule = f"the most accurate front member at or under {format_quantity(limit, kind)}"
        if chosen is None and budgets:
            chosen = max(members, key=lambda t: (t.values[0], -t.number))
            rule = "the most accurate front member (all meet the hard budgets)"
        if chosen is None:
            chosen = members[pick_knee([list(t.values) for t in members], directions)]
            rule = ("the knee of the front (farthest from the line joining its extremes, normalised)"
                    + (" (no front member is under the target)" if target else ""))
        baseline = by_number[chosen.number]
    if pick is _STORED:
        from .pick import stored_rule

        pick = stored_rule(study)
    if pick is not None:
        from .pick import PickError, choose, rule_flags

        try:
            picked, picked_rule = choose(pick, study_name=study.study_name, mode=mode, names=names,
                                         directions=directions, evaluated=evaluated, members=members,
                                         trials=trials)
        except PickError as err:
            if strict:
                raise
            if baseline is not None:
                rule += f" (the stored nas pick {rule_flags(pick)} chooses nothing: {err})"
        else:
            baseline, rule = by_number[picked.number], picked_rule
    return SearchSummary(study=study.study_name, storage=_storage_url(study), mode=mode, objectives=names,
                         directions=directions, counts=counts, best=best, front=front, hypervolume=hv,
                         reference=ref, baseline=baseline, rule=rule, saved=saved, info=info, records=records)


def _short_label(arch: str) -> str:
    """The table's arch column: stages in short form with channels (full strings, which share a
    long prefix, are in trials.csv)."""
    try:
        return Arch.from_string(arch).short_label(channels=True)
    except ArchError:
        return arch if len(arch) <= 60 else arch[:57] + "..."


def _fmt(value: Any, kind: str | None = None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind in ("macs", "params", "latency", "step_time"):
        return format_quantity(value, kind) if math.isfinite(float(value)) else "inf"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_summary(s: SearchSummary) -> str:
    """The one-screen summary table of `SearchSummary.table`."""
    c = s.counts
    lines = [f"study {s.study} ({s.mode} mode: {', '.join(s.objectives)})" + (f" in {s.storage}" if s.storage else "")]
    if s.info.get("reward_text"):
        lines.append(f"reward: {s.info['reward_text']}")
    lines.append(f"trials: {c['counted']} counted = {c['COMPLETE']} complete ({c['infeasible']} infeasible, "
                 f"{c['duplicate']} duplicates) + {c['PRUNED']} pruned; {c['FAIL']} failed, "
                 f"{c['RUNNING']} running, {c['WAITING']} waiting")
    sv = s.saved
    lines.append(f"training: {sv.epochs_trained} epochs of {sv.epochs_if_unpruned} without early stopping "
                 f"({100 * sv.fraction_saved:.0f}% saved)")
    costs = list(s.objectives[1:]) if s.mode == "pareto" else []
    if s.mode == "pareto":
        if s.hypervolume is not None:
            ref = ", ".join([f"acc {s.reference[0]:g}"] + [_fmt(v, k) for k, v in zip(costs, s.reference[1:])])
            lines.append(f"front: {len(s.front)} architectures, hypervolume {s.hypervolume:.4g} "
                         f"(reference point: {ref})")
        rows = s.front
    else:
        rows = sorted((r for r in s.records if r["state"] == "COMPLETE" and r["reward"] is not None
                       and not r["reason"]), key=lambda r: (-r["reward"], r["number"]))[:8]
        if rows:
            lines.append("best rewards:")
    if rows:
        head = ["trial", "acc", "reward"] if s.mode == "reward" else ["trial", "acc"]
        head += [k for k in dict.fromkeys(("macs", "params", *costs)) if k not in head]
        lines.append("  " + "  ".join(f"{h:>12}" for h in head) + "  arch")
        for r in rows[:12]:
            cells = [str(r["number"]), _fmt(r.get("val_acc")), *([_fmt(r.get("reward"), digits=4)]
                     if s.mode == "reward" else [])]
            cells += [_fmt(r.get(k), k) for k in head[len(cells):]]
            arch = _short_label(r["arch"])
            lines.append("  " + "  ".join(f"{x:>12}" for x in cells) + "  " + arch)
        if len(rows) > 12:
            lines.append(f"  ... {len(rows) - 12} more in {TRIALS_FILE}")
    if s.baseline is not None:
        b = s.baseline
        lines.append(f"baseline: trial {b['number']}, {s.rule}: acc {_fmt(b.get('val_acc'))} "
                     f"+- {_fmt(b.get('val_acc_se'))}, {_fmt(b.get('macs'), 'macs')}, {_fmt(b.get('params'), 'params')}")
        lines.append(f"  {b['arch']}")
    else:
        lines.append("baseline: none yet (no feasible trial has finished)")
    return "\n".join(lines)


def baseline_document(s: SearchSummary) -> dict | None:
    """baseline.json's content: the arch string under ``"arch"`` (so ``nas train --arch
    baseline.json`` and ``space info baseline.json`` read it) and how it was chosen."""
    b = s.baseline
    if b is None:
        return None
    doc = {"arch": b["arch"], "study": s.study, "mode": s.mode, "rule": s.rule, "trial": b["number"],
           "objectives": {name: b.get(name) for name in s.objectives}}
    for key in ("val_acc", "val_acc_se", "reward", "macs", "params", "latency", "step_time"):
        if b.get(key) is not None:
            doc[key] = b[key]
    for key in ("num_classes", "dataset", "epochs", "recipe", "seed"):
        if key in s.info:
            doc[key if key != "epochs" else "proxy_epochs"] = s.info[key]
    return doc


def _csv_text(s: SearchSummary) -> str:
    fixed = ["number", "state", "arch", *s.objectives]
    rest = ["reward", "val_acc", "val_acc_se", "macs", "params", "latency", "step_time", "epochs", "seconds",
            "duplicate_of", "reason"]
    columns = fixed + [c for c in rest if c not in fixed]
    if not any(r.get("latency") is not None for r in s.records) and "latency" not in fixed:
        columns.remove("latency")
    if not any(r.get("step_time") is not None for r in s.records) and "step_time" not in fixed:
        columns.remove("step_time")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in s.records:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
    return buf.getvalue()


def write_outputs(study: optuna.Study, out: str | Path) -> SearchSummary:
    """Summarise ``study`` and write ``<out>/runs/<study>/`` ``baseline.json`` (when a
    feasible trial has finished), ``trials.csv`` and ``summary.txt``, each atomically."""
    s = summarize(study)
    run_dir = Path(out) / "runs" / study.study_name
    s.run_dir = run_dir
    doc = baseline_document(s)
    if doc is not None:
        with atomic_write(run_dir / BASELINE_FILE, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    with atomic_write(run_dir / TRIALS_FILE, "w") as f:
        f.write(_csv_text(s))
    with atomic_write(run_dir / SUMMARY_FILE, "w") as f:
        f.write(s.table() + "\n")
    return s
