"""A study read into plot-ready rows: `read_report_data` -> `ReportData`.

Everything the plots, tables and pages of `nas report` draw comes from here, and all of it
comes from the Optuna storage alone (the study's ``search`` attribute and each trial's
values, parameters and user attributes, see `nas.search.trial`), by way of
`nas.search.results.summarize` for the counts, the front, the hypervolume and the baseline.

Trial kinds (`TrialRow.kind`, first match wins, the precedence of
`nas.search.results.trial_reason`):

* ``infeasible``: over a hard budget (user attr ``infeasible``), never trained;
* ``failed``: FAIL (training diverged, a worker died, or a surplus trial);
* ``duplicate``: repeats an earlier trial's architecture (user attr ``duplicate_of``);
* ``pruned``: stopped early at epoch ``pruned_at``;
* ``running`` / ``waiting``: not finished (a study may be read while it runs);
* ``complete``: a plain evaluation.

A trial is *evaluated* (`TrialRow.evaluated`) when it is complete, within every
constraint and its values are finite: the trials `summarize` builds fronts from.

Accuracy of a row (`TrialRow.acc`): the final validation accuracy (``val_acc``); for a
pruned, failed or running trial the last entry of ``epoch_acc`` (the accuracy it stopped
at, or has reached); None when it trained nothing (infeasible, surplus). A duplicate has its
original's accuracy.

Training seconds (`TrialRow.seconds`): the ``seconds`` user attr of a trained trial; a
pruned trial stores none (it stops before `train` returns), so its wall-clock time from
start to completion stands in; untrained trials (infeasible, duplicates) count 0.

``family.json`` (`FAMILY_FILE`, read by `load_family`, drawn on the accuracy-vs-MACs plot)
is written by the compound-scaling step into ``<out>/runs/<study>/``::

    {"family": [{"name": "b0", "arch": "<arch string>", "macs": 1.2e8, "params": 4.1e6,
                 "acc": 0.91},  ...]}

``name`` and ``arch`` are strings, ``macs`` and ``params`` positive numbers (units of
`nas.search.objectives`: MACs per image, a parameter count), ``acc`` a fraction in [0, 1]
or null (not trained yet: the member is listed but left out of the curve).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..search.early_stop import epoch_accuracies
from ..search.objectives import COST_KINDS, MnasReward, Reward, pareto_front, reward_from_dict
from ..search.results import SearchSummary, summarize, trial_reason
from ..search.trial import (ARCH_ATTR, DUPLICATE_ATTR, ERROR_ATTR, INFEASIBLE_ATTR, PRUNED_AT_ATTR,
                            SURPLUS_ATTR)

__all__ = ["TrialRow", "ReportData", "FamilyMember", "read_report_data", "load_family", "short_arch",
           "FAMILY_FILE", "KINDS"]

FAMILY_FILE = "family.json"
ENQUEUED_ATTR = "enqueued"
#: Trial kinds, in the order legends list them.
KINDS = ("complete", "pruned", "infeasible", "failed", "duplicate", "running", "waiting")


@dataclass
class TrialRow:
    """One trial, ready to draw (see the module docstring for ``kind``, ``acc``, ``seconds``)."""

    number: int
    state: str  # Optuna's state name
    kind: str
    evaluated: bool
    arch: str
    acc: float | None
    costs: dict[str, float]  # cost kind -> value, the kinds the trial recorded
    reward: float | None
    values: tuple[float, ...] | None  # the study's objective values (COMPLETE trials)
    pruned_at: int | None
    epoch_acc: list[float]
    seconds: float
    enqueued: str | None
    duplicate_of: int | None
    params: dict[str, Any]
    distributions: dict[str, Any]
    reason: str


@dataclass(frozen=True)
class FamilyMember:
    name: str
    arch: str
    macs: float
    params: float
    acc: float | None


@dataclass
class ReportData:
    """What `nas report` draws.

    Attributes:
        summary: `nas.search.results.summarize` of the study.
        rows: every trial, by number.
        costs: the cost kinds to plot, in `COST_KINDS` order: MACs and Pareto mode's cost
            objectives always, and any other (params, latency, step time) a trial recorded.
        reward: reward mode's reward (or None).
        iso_reward: the `MnasReward` whose iso-lines the plots draw: reward mode's mnas
            reward, or in Pareto mode with a target the soft EfficientNet reward at that
            target; None otherwise (the v2 reward depends on two costs at once).
        baseline: the baseline's trial number, or None.
        top: the trials the per-stage view compares with all evaluated ones: Pareto
            mode's front, reward mode's best quarter by reward (at least one).
        family: ``family.json``'s members, [] when there is none.
        notes: things the report could not draw, in sentences, for index.html.
    """

    summary: SearchSummary
    rows: list[TrialRow]
    costs: list[str]
    reward: Reward | None
    iso_reward: MnasReward | None
    baseline: int | None
    top: list[int]
    family: list[FamilyMember] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def info(self) -> dict:
        return self.summary.info

    @property
    def mode(self) -> str:
        return self.summary.mode

    @property
    def evaluated(self) -> list[TrialRow]:
        return [r for r in self.rows if r.evaluated]

    def row(self, number: int) -> TrialRow:
        return next(r for r in self.rows if r.number == number)

    def front_2d(self, cost: str) -> list[TrialRow]:
        """The evaluated trials no other evaluated trial beats in both accuracy and ``cost``
        (the step line of an accuracy-vs-cost plot), sorted by cost. With a single cost
        objective this is Pareto mode's front."""
        pts = [r for r in self.evaluated if r.acc is not None and cost in r.costs
               and math.isfinite(r.costs[cost])]
        idx = pareto_front([(r.acc, r.costs[cost]) for r in pts], ("maximize", "minimize"))
        return sorted((pts[i] for i in idx), key=lambda r: (r.costs[cost], -r.acc, r.number))


def _kind(t: FrozenTrial) -> str:
    a = t.user_attrs
    if INFEASIBLE_ATTR in a:
        return "infeasible"
    if t.state == TrialState.FAIL or ERROR_ATTR in a or a.get(SURPLUS_ATTR):
        return "failed"
    if DUPLICATE_ATTR in a:
        return "duplicate"
    return {TrialState.PRUNED: "pruned", TrialState.RUNNING: "running",
            TrialState.WAITING: "waiting"}.get(t.state, "complete")


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _row(t: FrozenTrial, mode: str) -> TrialRow:
    a = t.user_attrs
    kind = _kind(t)
    accs = epoch_accuracies(t)
    values = tuple(t.values) if t.state == TrialState.COMPLETE and t.values is not None else None
    evaluated = (kind == "complete" and values is not None and all(math.isfinite(v) for v in values)
                 and all(v <= 0 for v in t.constraints.values()))
    acc = _finite(a.get("val_acc"))
    if acc is None and mode == "pareto" and values is not None and kind != "infeasible":
        acc = _finite(values[0])
    if acc is None and accs and kind != "infeasible":
        acc = _finite(accs[-1])
    costs = {k: float(a[k]) for k in COST_KINDS if _finite(a.get(k)) is not None}
    seconds = 0.0
    if kind not in ("infeasible", "duplicate"):
        if _finite(a.get("seconds")) is not None:
            seconds = float(a["seconds"])
        elif accs and t.datetime_start is not None and t.datetime_complete is not None:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds()
    pruned_at = a.get(PRUNED_AT_ATTR)
    if pruned_at is None and t.state == TrialState.PRUNED and accs:
        pruned_at = len(accs)
    return TrialRow(number=t.number, state=t.state.name, kind=kind, evaluated=evaluated,
                    arch=str(a.get(ARCH_ATTR, "")), acc=acc, costs=costs, reward=_finite(a.get("reward")),
                    values=values, pruned_at=int(pruned_at) if pruned_at is not None else None,
                    epoch_acc=accs, seconds=seconds, enqueued=a.get(ENQUEUED_ATTR),
                    duplicate_of=a.get(DUPLICATE_ATTR), params=dict(t.params),
                    distributions=dict(t.distributions), reason=trial_reason(t))


def load_family(run_dir: Path) -> tuple[list[FamilyMember], str | None]:
    """``run_dir/family.json``'s members (see the module docstring), and a sentence saying
    why it was not read when it exists but does not have that format ([] and None when
    there is no file)."""
    path = Path(run_dir) / FAMILY_FILE
    if not path.is_file():
        return [], None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        items = doc["family"]
        if not isinstance(items, list):
            raise TypeError("'family' is not a list")
        members = []
        for i, m in enumerate(items):
            acc = m.get("acc")
            if acc is not None and not (isinstance(acc, (int, float)) and 0 <= acc <= 1):
                raise ValueError(f"member {i + 1}: acc must be a fraction in [0, 1] or null")
            macs, params = float(m["macs"]), float(m["params"])
            if not (macs > 0 and params > 0 and math.isfinite(macs) and math.isfinite(params)):
                raise ValueError(f"member {i + 1}: macs and params must be positive")
            members.append(FamilyMember(str(m["name"]), str(m.get("arch", "")), macs, params,
                                        None if acc is None else float(acc)))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        return [], f"{path} was not drawn: it is not a family file ({type(err).__name__}: {err})"
    return members, None


def short_arch(arch: str, per_line: int = 4, *, channels: bool = False) -> str:
    """A short label for an arch string (`Arch.short_label`): per stage ``k<kernel>e<expand>``,
    ``c<channels>`` when asked, ``xN`` for N layers and a leading ``F`` for Fused-MBConv, a
    line break every ``per_line`` stages (the rest is in trials.csv). The string itself, cut,
    when it is not one."""
    from space import Arch

    try:
        parts = Arch.from_string(arch).short_label(channels=channels).split(" ")
    except Exception:  # noqa: BLE001 - any unreadable string just gets cut
        return arch if len(arch) <= 24 else arch[:21] + "..."
    return "\n".join(" ".join(parts[i:i + per_line]) for i in range(0, len(parts), per_line))


def _top(summary: SearchSummary, rows: list[TrialRow]) -> list[int]:
    if summary.mode == "pareto":
        return [r["number"] for r in summary.front]
    ranked = sorted((r for r in rows if r.evaluated and r.reward is not None), key=lambda r: (-r.reward, r.number))
    return [r.number for r in ranked[:max(1, len(ranked) // 4)]]


def read_report_data(study: optuna.Study, run_dir: Path | None = None) -> ReportData:
    """Read ``study`` (made by `nas search`) and, when ``run_dir`` is given, its
    ``family.json``."""
    summary = summarize(study)
    info = summary.info
    rows = [_row(t, summary.mode) for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)]
    wanted = {"macs", *summary.objectives[1:]} if summary.mode == "pareto" else {"macs"}
    costs = [k for k in COST_KINDS if k in wanted or any(k in r.costs for r in rows)]
    notes: list[str] = []
    reward = None
    if info.get("reward"):
        reward = reward_from_dict(info["reward"])
    iso = None
    if isinstance(reward, MnasReward):
        iso = reward
    elif summary.mode == "pareto" and info.get("target"):
        kind, value = info["target"][0], float(info["target"][1])
        iso = MnasReward.soft(value, kind)
    elif reward is not None:
        notes.append("No reward iso-lines: the v2 reward depends on step time and parameters at once.")
    family, why = load_family(run_dir) if run_dir is not None else ([], None)
    if why:
        notes.append(why)
    baseline = summary.baseline["number"] if summary.baseline is not None else None
    return ReportData(summary=summary, rows=rows, costs=costs, reward=reward, iso_reward=iso,
                      baseline=baseline, top=_top(summary, rows), family=family, notes=notes)
