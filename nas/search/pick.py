"""``nas pick``: choose a study's baseline by a rule of one's own, and keep that choice.

A search chooses its baseline by the rule in `nas.search.results` (the highest reward;
in Pareto mode the most accurate front member under ``--target-*``, under the hard
budgets, or the knee). ``nas pick`` replaces that rule for one study:

* ``--max-macs Q`` / ``--max-params Q`` / ``--max-latency T``: a budget. Pareto mode: the
  most accurate front member whose cost of that kind is at most the budget (when that cost
  is not one of the study's objectives the front says nothing about it, so every evaluated
  trial under the budget competes). Reward mode: the evaluated trial with the highest
  reward under the budget. Ties: the lower trial number.
* ``--knee``: the knee of the front (`nas.search.results.pick_knee`); Pareto mode only.
* ``--trial N``: that trial, which must be evaluated (complete, feasible, not a duplicate).

The rule (not the trial) is stored in the study as the user attribute `PICK_ATTR`, and
`nas.search.results.summarize` applies it whenever it chooses the baseline, so ``nas
best``, a resumed ``nas search`` and ``baseline.json`` all show the current choice. A
budget rule stays satisfiable as a study grows (a new front member that displaces one under
the budget dominates it, so it is under the budget too); the knee can move as the front
does. ``--reset`` forgets the stored rule.

Errors are `PickError` (a `UserError`): one sentence naming the flag.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from space.errors import UserError

from .objectives import COST_KINDS, format_quantity, parse_quantity

__all__ = ["PICK_ATTR", "BUDGET_FLAGS", "PickError", "budget_rule", "choose", "rule_flags", "stored_rule",
           "pick", "reset_pick"]

PICK_ATTR = "pick"

#: The cost kinds ``nas pick`` can budget, with their flags.
BUDGET_FLAGS = {"macs": "--max-macs", "params": "--max-params", "latency": "--max-latency"}


class PickError(UserError):
    """A pick rule that cannot be applied to the study (one sentence naming the flag)."""


def budget_rule(kind: str, text: str) -> dict:
    """The stored form of a budget rule: ``{"rule": "budget", "kind", "limit", "text"}``;
    ``text`` is parsed by `parse_quantity` (``"20M"``, ``"5ms"``)."""
    if kind not in BUDGET_FLAGS:
        raise PickError(f"a pick budget is on one of {', '.join(BUDGET_FLAGS)}, got {kind!r}")
    try:
        limit = parse_quantity(text, kind)
    except UserError as err:
        raise PickError(f"{BUDGET_FLAGS[kind]}: {err}") from None
    return {"rule": "budget", "kind": kind, "limit": float(limit), "text": str(text)}


def rule_flags(rule: Mapping[str, Any]) -> str:
    """The command-line form of a stored rule: ``--max-macs 20M``, ``--knee``, ``--trial 7``."""
    kind = rule.get("rule")
    if kind == "budget":
        return f"{BUDGET_FLAGS[rule['kind']]} {rule.get('text') or format_quantity(rule['limit'], rule['kind'])}"
    if kind == "knee":
        return "--knee"
    if kind == "trial":
        return f"--trial {rule['number']}"
    return str(dict(rule))


def stored_rule(study: optuna.Study) -> dict | None:
    """The rule `nas pick` stored on ``study``, or None."""
    rule = study.user_attrs.get(PICK_ATTR)
    return dict(rule) if isinstance(rule, Mapping) and rule.get("rule") in ("budget", "knee", "trial") else None


def _finite(t: FrozenTrial) -> bool:
    return t.values is not None and all(math.isfinite(v) for v in t.values)


def _why_not_evaluated(t: FrozenTrial) -> str:
    from .results import trial_reason
    from .trial import DUPLICATE_ATTR, INFEASIBLE_ATTR, PRUNED_AT_ATTR

    a = t.user_attrs
    if t.state == TrialState.COMPLETE:
        if DUPLICATE_ATTR in a:
            return f"is a duplicate of trial {a[DUPLICATE_ATTR]}; pick --trial {a[DUPLICATE_ATTR]}"
        if INFEASIBLE_ATTR in a or any(v > 0 for v in t.constraints.values()):
            return f"is infeasible ({a.get(INFEASIBLE_ATTR, 'over a hard budget')}), so it was never trained"
        if not _finite(t):
            return "has no finite result"
        return "is not evaluated"
    if t.state == TrialState.PRUNED:
        at = a.get(PRUNED_AT_ATTR)
        return f"was pruned{f' at epoch {at}' if at is not None else ''}, so it has no final accuracy"
    if t.state == TrialState.FAIL:
        return f"{trial_reason(t) or 'failed'}, so it has no result"
    return f"is still {t.state.name.lower()}; pick it once it has finished"


def _cost(t: FrozenTrial, kind: str) -> float | None:
    value = t.user_attrs.get(kind)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(float(value)) else None


def choose(rule: Mapping[str, Any], *, study_name: str, mode: str, names: Sequence[str],
           directions: Sequence[str], evaluated: Sequence[FrozenTrial], members: Sequence[FrozenTrial],
           trials: Sequence[FrozenTrial]) -> tuple[FrozenTrial, str]:
    """The trial ``rule`` chooses and the rule in words (for ``baseline.json``'s ``"rule"``).

    ``evaluated``: the study's evaluated trials (see `nas.search.results`); ``members``:
    Pareto mode's front (of ``evaluated``), empty in reward mode; ``trials``: all trials.
    Raises `PickError` when the rule chooses nothing.
    """
    from .results import pick_knee

    kind = rule.get("rule")
    flags = rule_flags(rule)
    if kind == "trial":
        number = int(rule["number"])
        found = next((t for t in trials if t.number == number), None)
        if found is None:
            numbers = [t.number for t in trials]
            span = f"its trials are numbered {min(numbers)} to {max(numbers)}" if numbers else "it has no trial"
            raise PickError(f"--trial {number}: study {study_name} has no trial {number} ({span})")
        if not any(t.number == number for t in evaluated):
            raise PickError(f"--trial {number} {_why_not_evaluated(found)}")
        if mode == "pareto":
            on = any(t.number == number for t in members)
            where = "on the front" if on else "not on the front"
            return found, f"trial {number}, picked by hand ({where}) (nas pick {flags})"
        rank = 1 + sum(1 for t in evaluated if (t.values[0], -t.number) > (found.values[0], -found.number))
        return found, f"trial {number}, picked by hand (reward rank {rank} of {len(evaluated)}) (nas pick {flags})"
    if not evaluated:
        raise PickError(f"study {study_name} has no finished feasible trial yet, so {flags} has nothing to pick from")
    if kind == "knee":
        if mode != "pareto":
            raise PickError(f"--knee needs a pareto-mode study and {study_name} is in {mode} mode; pick with "
                            f"--trial N or a budget ({', '.join(BUDGET_FLAGS.values())})")
        chosen = members[pick_knee([list(t.values) for t in members], directions)]
        return chosen, ("the knee of the front (farthest from the line joining its extremes, normalised) "
                        f"(nas pick {flags})")
    if kind != "budget":
        raise PickError(f"unknown pick rule {dict(rule)!r}")
    cost, limit = str(rule["kind"]), float(rule["limit"])
    flag = BUDGET_FLAGS[cost]
    label = COST_KINDS[cost].label
    if mode == "pareto" and cost in names[1:]:
        pool, what = list(members), "front member"
    else:
        pool, what = list(evaluated), "evaluated trial"
    known = [t for t in pool if _cost(t, cost) is not None]
    if not known:
        raise PickError(f"{flag}: study {study_name} has no {label} measured for its trials (objectives: "
                        f"{', '.join(names)}), so a {label} budget cannot be applied; budget another cost")
    under = [t for t in known if _cost(t, cost) <= limit]
    shown = format_quantity(limit, cost)
    if not under:
        cheapest = min(known, key=lambda t: (_cost(t, cost), t.number))
        raise PickError(f"{flag} {rule.get('text') or shown}: no {what} is at or under {shown}; the cheapest "
                        f"{what} is trial {cheapest.number} at {format_quantity(_cost(cheapest, cost), cost)}")
    chosen = max(under, key=lambda t: (t.values[0], -t.number))
    if mode == "pareto":
        note = "" if what == "front member" else f", {label} not being an objective of the study"
        text = f"the most accurate {what} at or under {shown}{note}"
    else:
        text = f"the highest reward at or under {shown}"
    return chosen, f"{text} (nas pick {flags})"


def pick(study: optuna.Study, rule: Mapping[str, Any], out: str | Path):
    """Apply ``rule`` to ``study`` now (`PickError` when it chooses nothing, and then
    nothing is stored or written), store it as `PICK_ATTR` and write the outputs
    (`write_outputs`: ``<out>/runs/<study>/baseline.json`` ...). Returns the `SearchSummary`."""
    from .results import summarize, write_outputs

    summarize(study, pick=dict(rule), strict=True)  # raises when the rule chooses nothing
    study.set_user_attr(PICK_ATTR, dict(rule))
    return write_outputs(study, out)


def reset_pick(study: optuna.Study, out: str | Path):
    """Forget the stored rule (the search's own applies again) and rewrite the outputs."""
    from .results import write_outputs

    if PICK_ATTR in study.user_attrs:
        study.set_user_attr(PICK_ATTR, None)
    return write_outputs(study, out)
