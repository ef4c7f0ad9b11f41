"""One trial of a search: the objective Optuna calls.

Data flow (`Objective.__call__`)::

    trial -> SearchSpace.suggest -> Arch -> canonical arch string
      -> seen in a COMPLETE or PRUNED trial of this study?  reuse it: same values (or pruned
         again), user attr "duplicate_of" = the first trial that evaluated it; no training
      -> analytic cost (MACs, params) -> over --max-macs / --max-params?  -> infeasible
      -> measured cost (latency, step time) when the study uses them -> over --max-latency?
         infeasible: Trial.set_constraint(...) > 0, user attr "infeasible" = the reason,
         worst-case values (reward 0; accuracy 0 at the candidate's costs), never trained
      -> train (proxy recipe, --epochs), checkpointed after every epoch to
         <run dir>/checkpoints/<key>.pt and continued from that file when it exists (see
         "Checkpoints" below); after every epoch the accuracies so far go to the user attr
         "epoch_acc"; reward mode: trial.report(reward at this epoch) and the study's
         pruner; Pareto mode: MO-ASHA (`MOASHA.should_stop`) -> TrialPruned
      -> values: (reward,) or (accuracy, *costs)
      -> once the storage holds the trial as COMPLETE or PRUNED: its checkpoint is deleted
         (`Objective.finished`, called by the runner's per-trial callback)

Checkpoints: a trial killed while it trains (SIGKILL, a lost machine) is failed once its
heartbeat is stale, and Optuna's retry callback queues a copy with the same parameters.
The copy trains the same architecture with the same settings, so it finds the killed
trial's checkpoint (``<key>`` = `checkpoint_key`: a short sha256 of the architecture
string and the training seed; the study fingerprint pins data, epochs and recipe) and
`nas.train.train` continues it from the last finished epoch to the result an
uninterrupted run gives. The restored epochs are not trained again: their accuracies are
put in ``epoch_acc`` first (and reported to the pruner in reward mode), and the user attr
``resumed_from_epoch`` says how many there were. A checkpoint `train` refuses
(`CheckpointMismatch`: a file left by a run with other settings, another precision or
device) is overwritten by a fresh run (user attr ``checkpoint_discarded`` = why). The
file is kept when a trial fails (its retry, or a later trial of the same architecture,
continues it) and deleted when it ends COMPLETE or PRUNED: a finished architecture is
reused from the storage (`find_duplicate`) and never trained again. The deletion comes
after the storage holds the final state, so a kill in between leaves at worst a stray file
(deleted when another trial of that architecture, a duplicate, finishes), never a retry
that lost the epochs it could continue.

A `TrainingFailed` (divergence, out of memory) sets the user attr ``"error"`` and
propagates; the runner passes it to Optuna's ``catch`` so the trial FAILs and the study
goes on.

User attributes of a trial (units as in `nas.search.objectives`):
``arch`` (string), ``macs``, ``params``, ``latency`` / ``step_time`` (seconds, when
measured), ``epoch_acc`` (list, index i = epoch i + 1), ``val_acc``, ``val_acc_se``,
``epochs`` (trained), ``seconds`` (wall-clock of `train`), ``images_per_s``, ``reward``
(reward mode), ``recipe``, ``seed``, ``batch_size``; and as the case may be
``duplicate_of`` (trial number), ``infeasible`` (reason), ``pruned_at`` (epoch),
``resumed_from_epoch`` (epochs restored from a killed predecessor's checkpoint, included in
``epoch_acc``; ``epochs`` and ``seconds`` count them too), ``checkpoint_discarded`` (why a
checkpoint could not be continued),
``error`` (first line of the failure), ``enqueued`` (the reference it was queued as),
``surplus`` (a trial started when the study already had its count: FAIL, not trained).
Constraints (`Trial.set_constraint`, one per hard budget, ``max_<kind>`` =
``cost / limit - 1``) are set on every trial of a study with budgets, feasible or not, so
Optuna's samplers see a constrained study.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from .budgets import candidate_costs, constraint_values, over_budget
from .early_stop import EPOCH_ACC_ATTR, MOASHA
from .objectives import MnasReward, V2Reward

__all__ = ["Objective", "TrialContext", "SurplusTrial", "find_duplicate", "checkpoint_key", "ARCH_ATTR",
           "DUPLICATE_ATTR", "INFEASIBLE_ATTR", "ERROR_ATTR", "PRUNED_AT_ATTR", "SURPLUS_ATTR", "RESUMED_ATTR",
           "DISCARDED_ATTR"]

ARCH_ATTR = "arch"
DUPLICATE_ATTR = "duplicate_of"
INFEASIBLE_ATTR = "infeasible"
ERROR_ATTR = "error"
PRUNED_AT_ATTR = "pruned_at"
SURPLUS_ATTR = "surplus"
RESUMED_ATTR = "resumed_from_epoch"
DISCARDED_ATTR = "checkpoint_discarded"

# Attributes of the first evaluation that a duplicate does not copy: its epochs were trained
# once, and compute_saved / MO-ASHA must count them once.
_NOT_COPIED = {EPOCH_ACC_ATTR, ARCH_ATTR, DUPLICATE_ATTR, "enqueued", SURPLUS_ATTR, RESUMED_ATTR, DISCARDED_ATTR}


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
    # Per-trial checkpoints (`checkpoint_key`), <run dir>/checkpoints; None: none kept.
    checkpoint_dir: Path | None = None
    extra: dict = field(default_factory=dict)


def checkpoint_key(arch: str, seed: int) -> str:
    """The file name stem of a trial's checkpoint: 16 hex digits of the sha256 of the
    architecture string and the training seed. Everything else that makes two trainings
    the same (data, epochs, recipe) is fixed for a study; `nas.train.train` refuses a file
    that differs anyway."""
    return hashlib.sha256(f"{arch}\nseed={int(seed)}".encode("utf-8")).hexdigest()[:16]


def sweep_checkpoints(study: optuna.Study, checkpoint_dir: Path, seed: int) -> int:
    """Delete the checkpoints of architectures the study holds as COMPLETE or PRUNED (a
    process killed between storing a trial and deleting its file leaves one behind), and
    the folder when it is empty; only when no trial is running, since a running one may
    be writing there. Returns how many files went."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir() or study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        return 0
    removed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        arch = t.user_attrs.get(ARCH_ATTR)
        path = folder / f"{checkpoint_key(arch, seed)}.pt" if arch else None
        if path is not None and path.exists():
            path.unlink(missing_ok=True)
            removed += 1
    try:
        folder.rmdir()
    except OSError:  # a failed trial's checkpoint stays for its retry
        pass
    return removed


def _saved_accuracies(path: Path | None, arch: str) -> list[float]:
    """The per-epoch validation accuracies in the checkpoint at ``path`` (its ``history``),
    or [] when there is none, it cannot be read or it is of another architecture."""
    if path is None or not path.is_file():
        return []
    import torch

    from ..train.checkpoint import CheckpointMismatch, load_checkpoint

    try:
        state = load_checkpoint(path, torch.device("cpu"))  # weights_only=True
    except (CheckpointMismatch, OSError):
        return []
    try:
        if state["meta"]["arch"] != arch:
            return []
        return [float(h["val_acc"]) for h in state.get("history") or []]
    except (AttributeError, KeyError, TypeError, ValueError):
        return []


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

    def _checkpoint_path(self, arch_string: str) -> Path | None:
        d = self.ctx.checkpoint_dir
        return None if d is None else Path(d) / f"{checkpoint_key(arch_string, self.ctx.config.seed)}.pt"

    def _train(self, trial: optuna.Trial, arch, costs: dict[str, float]):
        from .. import train as train_pkg  # looked up at call time, so tests can spy on train
        from ..train import Budget, CheckpointMismatch, TrainingFailed

        ctx = self.ctx
        accs: list[float] = []
        cost_of = {k: costs[k] for k in ctx.costs}
        arch_string = arch.to_string()
        path = self._checkpoint_path(arch_string)
        # Read before `train` loads the same file: epochs it restores are not passed to the
        # callback, so their accuracies come from here (see `restored`).
        saved = _saved_accuracies(path, arch_string)
        first = True  # no epoch passed to the callback yet

        def restored(k: int, past: list[float] | None = None) -> None:
            """Epochs 1..k came from the checkpoint: their accuracies go first in
            ``epoch_acc`` and, in reward mode, to the pruner (a report, no decision: the
            killed trial passed them)."""
            if k <= 0:
                return
            if past is None:
                past = saved if len(saved) >= k else _saved_accuracies(path, arch_string)
                # Another worker training the same architecture may have rewritten the file
                # (same contents, deterministic training) or deleted it (it finished): a
                # missing epoch is NaN here and replaced from `train`'s result at the end.
                past = (list(past[:k]) + [math.nan] * k)[:k]
            accs[:0] = past
            trial.set_user_attr(RESUMED_ATTR, k)
            trial.set_user_attr(EPOCH_ACC_ATTR, list(accs))
            if ctx.mode == "reward":
                with warnings.catch_warnings():  # "already reported": a value Optuna keeps
                    warnings.simplefilter("ignore")
                    for epoch, acc in enumerate(past, start=1):
                        if math.isfinite(acc):
                            trial.report(self.reward_of(acc, costs), epoch)

        def after_epoch(stats) -> None:
            nonlocal first
            if first:
                first = False
                restored(stats.epoch - 1)
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
        # A retry starts with its killed predecessor's attributes: these are this run's.
        trial.set_user_attr(RESUMED_ATTR, 0)
        if trial.user_attrs.get(DISCARDED_ATTR) is not None:
            trial.set_user_attr(DISCARDED_ATTR, None)
        budget = Budget(epochs=ctx.epochs)
        kwargs: dict[str, Any] = {"callback": after_epoch, "progress": False}
        if path is not None:
            # Several workers may train one architecture at once (a sampler proposing it
            # again before the first finished): they write the same file, atomically and
            # with the same contents (training is deterministic), and one that finishes
            # deletes it under the others, which write it again after their next epoch.
            kwargs.update(checkpoint=path, resume=True)
        try:
            try:
                result = train_pkg.train(arch, ctx.splits, budget, ctx.config, **kwargs)
            except CheckpointMismatch as err:
                # Raised while loading, before any epoch: a file of a run with other
                # settings (an older study in this folder, another precision or device).
                trial.set_user_attr(DISCARDED_ATTR, err.reason[:500])
                result = train_pkg.train(arch, ctx.splits, budget, ctx.config, **{**kwargs, "resume": False})
        except TrainingFailed as err:
            trial.set_user_attr(ERROR_ATTR, (str(err).splitlines() or [type(err).__name__])[0][:500])
            raise
        resumed = int(getattr(result, "resumed_epoch", 0) or 0)
        if resumed:
            history = [float(h.val_acc) for h in getattr(result, "history", None) or []]
            if first:  # restored a run whose budget was already met: no epoch trained
                restored(resumed, history[:resumed])
            elif len(history) == len(accs) and any(math.isnan(a) and not math.isnan(h)
                                                   for a, h in zip(accs, history)):
                trial.set_user_attr(EPOCH_ACC_ATTR, history)
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

    def finished(self, frozen: FrozenTrial) -> None:
        """Called (by the runner, as an Optuna callback) once the storage holds ``frozen``'s
        final state: a COMPLETE or PRUNED trial's checkpoint is deleted (a finished
        architecture is reused, never trained again); a FAILed trial's is kept for its
        retry. When no trial of the study is running, the empty folder goes too."""
        if self.ctx.checkpoint_dir is None or frozen.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            return
        arch = frozen.user_attrs.get(ARCH_ATTR)
        if not arch:
            return
        path = self._checkpoint_path(arch)
        try:
            path.unlink(missing_ok=True)
        except OSError:
            return
        # Only with nothing running: a worker whose trial is training may be about to write
        # its checkpoint into this folder (it makes the folder again, but not atomically
        # with the write). A trial started after this look needs an epoch before it writes.
        try:
            if self.ctx.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                return
        except Exception:  # noqa: BLE001 - an unreachable storage: keep the folder
            return
        try:
            path.parent.rmdir()
        except OSError:  # not empty (another architecture's checkpoint), or gone
            pass
