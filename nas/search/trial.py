"""One trial of a search: the objective Optuna calls.

Data flow (`Objective.__call__`)::

    trial -> SearchSpace.suggest -> Arch -> canonical arch string
      -> seen in a COMPLETE or PRUNED trial of this study?  reuse it: same values (or pruned
         again), user attr "duplicate_of" = the first trial that evaluated it; no training
      -> analytic cost (MACs, params) -> over --max-macs / --max-params?  -> infeasible
      -> measured cost (latency, step time) when the study uses them -> over --max-latency?
         infeasible: Trial.set_constraint(...) > 0, user attr "infeasible" = the reason,
         worst-case values (reward 0; accuracy 0 at the candidate's costs), never trained
      -> train (proxy recipe, --epochs); after every epoch the accuracies so far go to the
         user attr "epoch_acc"; reward mode: trial.report(reward at this epoch) and the
         study's pruner; Pareto mode: MO-ASHA (`MOASHA.should_stop`) -> TrialPruned
      -> values: (reward,) or (accuracy, *costs)

A `TrainingFailed` (divergence, out of memory) sets the user attr ``"error"`` and
propagates; the runner passes it to Optuna's ``catch`` so the trial FAILs and the study
goes on.

User attributes of a trial (units as in `nas.search.objectives`):
``arch`` (string), ``macs``, ``params``, ``latency`` / ``step_time`` (seconds, when
measured), ``epoch_acc`` (list, index i = epoch i + 1), ``val_acc``, ``val_acc_se``,
``epochs`` (trained), ``seconds`` (wall-clock of `train`), ``images_per_s``, ``reward``
(reward mode), ``recipe``, ``seed``, ``batch_size``; and as the case may be
``duplicate_of`` (trial number), ``infeasible`` (reason), ``pruned_at`` (epoch),
``error`` (first line of the failure), ``enqueued`` (the reference it was queued as),
``surplus`` (a trial started when the study already had its count: FAIL, not trained).
Constraints (`Trial.set_constraint`, one per hard budget, ``max_<kind>`` =
``cost / limit - 1``) are set on every trial of a study with budgets, feasible or not, so
Optuna's samplers see a constrained study.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from .budgets import candidate_costs, constraint_values, over_budget
from .early_stop import EPOCH_ACC_ATTR, MOASHA
from .objectives import MnasReward, V2Reward

__all__ = ["Objective", "TrialContext", "SurplusTrial", "find_duplicate", "ARCH_ATTR",
           "DUPLICATE_ATTR", "INFEASIBLE_ATTR", "ERROR_ATTR", "PRUNED_AT_ATTR", "SURPLUS_ATTR"]

ARCH_ATTR = "arch"
DUPLICATE_ATTR = "duplicate_of"
INFEASIBLE_ATTR = "infeasible"
ERROR_ATTR = "error"
PRUNED_AT_ATTR = "pruned_at"
SURPLUS_ATTR = "surplus"

# Attributes of the first evaluation that a duplicate does not copy: its epochs were trained
# once, and compute_saved / MO-ASHA must count them once.
_NOT_COPIED = {EPOCH_ACC_ATTR, ARCH_ATTR, DUPLICATE_ATTR, "enqueued", SURPLUS_ATTR}


class SurplusTrial(Exception):
    """A trial started after other workers had already filled the study's count."""


@dataclass
class TrialContext:
    """What every trial of one search shares (built once per process by the runner)."""

    study: optuna.Study
    space: Any  # SearchSpace
    splits: Any  # nas.data.Splits, loaded once
    num_classes: int
    mode: str  # "reward" | "pareto"
    costs: tuple[str, ...]  # Pareto mode's cost objectives
    measured: set[str]  # cost kinds to measure (latency, step_time)
    budgets: dict[str, float]
    reward: MnasReward | V2Reward | None
    epochs: int
    config: Any  # TrainConfig
    batch_size: int  # resolved, for step-time measurements
    moasha: MOASHA | None = None
    trials: int | None = None  # the study's count; a trial past it is surplus
    on_epoch: Callable[[int, int, float], None] | None = None  # (trial number, epoch, acc)
    on_start: Callable[[int, str], None] | None = None  # (trial number, arch string)
    extra: dict = field(default_factory=dict)


def find_duplicate(study: optuna.Study, arch: str, number: int):
    """The first COMPLETE or PRUNED trial (lowest number) other than ``number`` that
    evaluated ``arch``, or None."""
    found = None
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.number != number and t.user_attrs.get(ARCH_ATTR) == arch and (found is None or t.number < found.number):
            found = t
    return found


class Objective:
    """The function Optuna calls with each trial (see the module docstring)."""

    def __init__(self, ctx: TrialContext):
        self.ctx = ctx

    # -- values ------------------------------------------------------------------------

    def reward_of(self, acc: float, costs: dict[str, float]) -> float:
        r = self.ctx.reward
        if isinstance(r, V2Reward):
            return r(acc, costs["step_time"], costs["params"])
        return r(acc, costs[r.cost])

    def _worst(self, costs: dict[str, float]):
        """Values of an infeasible candidate: reward 0, or accuracy 0 at its costs (a cost
        left unmeasured, because the candidate was refused first, is infinite)."""
        if self.ctx.mode == "reward":
            return 0.0
        return self._values(0.0, costs)

    def _values(self, acc: float, costs: dict[str, float]):
        if self.ctx.mode == "reward":
            return self.reward_of(acc, costs)
        return (acc, *(costs.get(k, math.inf) for k in self.ctx.costs))

    @staticmethod
    def _set_constraints(trial: optuna.Trial, values: dict[str, float]) -> None:
        have = trial.constraints  # a retried trial carries its predecessor's
        for key, value in values.items():
            if key not in have:
                trial.set_constraint(key, value)

    # -- the trial ---------------------------------------------------------------------

    def __call__(self, trial: optuna.Trial):
        ctx = self.ctx
        if ctx.trials is not None:
            self._check_not_surplus(trial)
        arch = ctx.space.suggest(trial)
        arch_string = arch.to_string()
        trial.set_user_attr(ARCH_ATTR, arch_string)
        if trial.user_attrs.get(EPOCH_ACC_ATTR):  # a retried trial: its predecessor's epochs
            trial.set_user_attr(EPOCH_ACC_ATTR, [])
        if ctx.on_start is not None:
            ctx.on_start(trial.number, arch_string)

        original = find_duplicate(ctx.study, arch_string, trial.number)
        if original is not None:
            return self._reuse(trial, original)

        costs = candidate_costs(arch, ctx.num_classes, set())  # analytic: microseconds
        if not self._within_budgets(trial, costs):
            return self._worst(costs)
        if ctx.measured:
            costs.update(candidate_costs(arch, ctx.num_classes, ctx.measured, device=ctx.config.device,
                                         batch_size=ctx.batch_size, num_threads=ctx.config.num_threads))
            if not self._within_budgets(trial, costs):
                return self._worst(costs)
        self._set_constraints(trial, constraint_values(costs, ctx.budgets))
        return self._train(trial, arch, costs)

    def _check_not_surplus(self, trial: optuna.Trial) -> None:
        """With several workers, two can ask for the last trial at once: the one with the
        higher number steps aside (trial numbers are assigned in order by the storage)."""
        ahead = sum(1 for t in self.ctx.study.get_trials(deepcopy=False)
                    if t.number < trial.number and t.state in (TrialState.COMPLETE, TrialState.PRUNED,
                                                                TrialState.RUNNING))
        if ahead >= self.ctx.trials:
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise SurplusTrial(f"trial {trial.number} started after the study had its {self.ctx.trials} trials")

    def _within_budgets(self, trial: optuna.Trial, costs: dict[str, float]) -> bool:
        for k, v in costs.items():
            trial.set_user_attr(k, v)
        reasons = over_budget(costs, self.ctx.budgets)
        if not reasons:
            return True
        self._set_constraints(trial, constraint_values(costs, self.ctx.budgets))
        trial.set_user_attr(INFEASIBLE_ATTR, "; ".join(reasons))
        if self.ctx.mode == "reward":
            trial.set_user_attr("reward", 0.0)
        return False

    def _reuse(self, trial: optuna.Trial, original):
        root = original.user_attrs.get(DUPLICATE_ATTR, original.number)
        trial.set_user_attr(DUPLICATE_ATTR, root)
        for key, value in original.user_attrs.items():
            if key not in _NOT_COPIED:
                trial.set_user_attr(key, value)
        self._set_constraints(trial, original.constraints)
        if original.state == TrialState.PRUNED:
            raise optuna.TrialPruned(f"duplicate of trial {root}, which was pruned")
        return original.value if self.ctx.mode == "reward" else tuple(original.values)

    def _train(self, trial: optuna.Trial, arch, costs: dict[str, float]):
        from .. import train as train_pkg  # looked up at call time, so tests can spy on train
        from ..train import Budget, TrainingFailed

        ctx = self.ctx
        accs: list[float] = []
        cost_of = {k: costs[k] for k in ctx.costs}

        def after_epoch(stats) -> None:
            acc = float(stats.val_acc)
            accs.append(acc)
            # The whole list every epoch: workers elsewhere read it through the storage.
            trial.set_user_attr(EPOCH_ACC_ATTR, list(accs))
            if ctx.on_epoch is not None:
                ctx.on_epoch(trial.number, stats.epoch, acc)
            if ctx.mode == "reward":
                if math.isfinite(acc):
                    trial.report(self.reward_of(acc, costs), stats.epoch)
                if stats.epoch < ctx.epochs and trial.should_prune():
                    trial.set_user_attr(PRUNED_AT_ATTR, stats.epoch)
                    raise optuna.TrialPruned(f"pruned at epoch {stats.epoch} by the study's pruner")
            elif ctx.moasha is not None and ctx.moasha.should_stop(ctx.study, trial.number, stats.epoch,
                                                                   acc, cost_of):
                trial.set_user_attr(PRUNED_AT_ATTR, stats.epoch)
                raise optuna.TrialPruned(f"pruned at epoch {stats.epoch} by MO-ASHA")

        trial.set_user_attr("recipe", ctx.config.recipe)
        trial.set_user_attr("seed", ctx.config.seed)
        try:
            result = train_pkg.train(arch, ctx.splits, Budget(epochs=ctx.epochs), ctx.config,
                                     callback=after_epoch, progress=False)
        except TrainingFailed as err:
            trial.set_user_attr(ERROR_ATTR, (str(err).splitlines() or [type(err).__name__])[0][:500])
            raise
        acc = float(result.val_acc)
        for key, value in (("val_acc", acc), ("val_acc_se", float(result.val_acc_se)),
                           ("epochs", float(result.epochs)), ("seconds", float(result.seconds)),
                           ("images_per_s", float(result.images_per_s)), ("batch_size", int(result.batch_size)),
                           ("recipe", result.recipe)):
            trial.set_user_attr(key, value)
        values = self._values(acc, costs)
        if ctx.mode == "reward":
            trial.set_user_attr("reward", float(values))
        return values
