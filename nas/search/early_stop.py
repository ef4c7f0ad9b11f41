"""MO-ASHA-style early stopping for multi-objective Optuna studies.

Optuna raises ``NotImplementedError`` on `Trial.report` in a multi-objective study, so none
of its pruners can stop an accuracy-vs-cost search. This module stops such trials the way
multi-objective asynchronous successive halving (MO-ASHA, Schmucker et al. 2021) does, from
data every worker can read through the study's storage:

* Rungs sit at epochs ``r, r*eta, r*eta**2, ...`` strictly below ``max_epochs``
  (`rung_epochs`).
* When a trial finishes a rung epoch, every trial that has reached that epoch is a point
  (accuracy at that epoch, cost 1, cost 2, ...). The points are ranked by non-dominated
  sorting, crowding distance breaking ties inside a front (NSGA-II), then trial order. The
  trial goes on only if it is in the first ``max(1, n // eta)`` of the ``n`` points
  (`promotable`); otherwise the caller records it as pruned.

Conventions
-----------
* Epochs are 1-based counts of finished epochs: "epoch 3" is the state after three full
  passes over the training split.
* Accuracy is a fraction in [0, 1], maximised. Costs (MACs, params, latency, step time...:
  one or more, or none for plain accuracy-only ASHA) are minimised and constant over a
  trial's life.
* A trial's validation accuracies are stored in its user attribute ``EPOCH_ACC_ATTR``
  (``"epoch_acc"``) as a list (JSON in the storage): index ``i`` holds the accuracy after
  epoch ``i + 1``. The study code rewrites the whole list after every epoch, so workers in
  other processes or on other machines see it through the storage. Its costs are stored in
  user attributes named after the cost kind (``"macs"``, ``"params"``, ...: the
  ``cost_keys`` of `MOASHA`), written before training starts.
* A pruned trial keeps its ``epoch_acc``; its last entry is the accuracy it was stopped
  with (Optuna refuses values on a pruned multi-objective trial).

Decisions are asynchronous, as in ASHA: a trial is judged against whatever has reached its
rung by the time it gets there and is never revisited. The first trials of a study
compete against few others (with ``n < eta`` the ``max(1, ...)`` lets the best one, i.e.
any lone trial, go on), so early on the rule is lenient and it sharpens as the study fills
up; a trial promoted early is not stopped later for having been lucky in its timing.

No torch here: this module only reads numbers from the study.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from space.errors import UserError

__all__ = [
    "EPOCH_ACC_ATTR", "MACS_ATTR", "PARAMS_ATTR", "MOASHA", "Saved", "compute_saved",
    "crowding_distance", "epoch_accuracies", "non_dominated_sort", "promotable",
    "rank_at_rung", "rung_epochs",
]

EPOCH_ACC_ATTR = "epoch_acc"
MACS_ATTR = "macs"
PARAMS_ATTR = "params"

# A trial in any other state (FAIL, WAITING) never trained to a rung that counts.
_COMPETING_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise UserError(f"{name} must be at least {minimum}, got {value}")
    return value


def rung_epochs(min_epochs: int, eta: int, max_epochs: int) -> list[int]:
    """The rung epochs ``min_epochs * eta**k`` strictly below ``max_epochs``.

    A trial that reaches ``max_epochs`` has finished, so ``max_epochs`` itself is never a
    rung; with ``max_epochs == min_epochs`` there are none.
    """
    _check_int("min_epochs", min_epochs, 1)
    _check_int("eta", eta, 2)
    _check_int("max_epochs", max_epochs, 1)
    if max_epochs < min_epochs:
        raise UserError(f"max_epochs must be at least min_epochs ({min_epochs}), got {max_epochs}")
    rungs = []
    epoch = min_epochs
    while epoch < max_epochs:
        rungs.append(epoch)
        epoch *= eta
    return rungs


def _signs(directions: Sequence[str | StudyDirection], dims: int) -> np.ndarray:
    """+1 for a maximised objective, -1 for a minimised one."""
    if len(directions) != dims:
        raise ValueError(f"{len(directions)} directions for points of {dims} objectives")
    signs = []
    for d in directions:
        if d in (StudyDirection.MAXIMIZE, "maximize"):
            signs.append(1.0)
        elif d in (StudyDirection.MINIMIZE, "minimize"):
            signs.append(-1.0)
        else:
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {d!r}")
    return np.array(signs)


def _as_array(points: Sequence[Sequence[float]]) -> np.ndarray:
    arr = np.asarray(points, dtype=float)
    if arr.ndim != 2:
        raise ValueError("points must be a list of equal-length sequences of numbers")
    return arr


def non_dominated_sort(points: Sequence[Sequence[float]],
                       directions: Sequence[str | StudyDirection]) -> list[list[int]]:
    """Fronts of point indices, best first, each in ascending index order.

    ``a`` dominates ``b`` when it is no worse in every objective and strictly better in one,
    so equal points never dominate each other and share a front. Values must be finite
    (`rank_at_rung` sets the others aside).
    """
    if len(points) == 0:
        return []
    arr = _as_array(points)
    # Negate the maximised objectives so "better" is "smaller" everywhere.
    y = -arr * _signs(directions, arr.shape[1])
    n = len(y)
    # dominated_by[i, j]: point j dominates point i.
    dominated_by = np.empty((n, n), dtype=bool)
    for i in range(n):
        dominated_by[i] = np.all(y <= y[i], axis=1) & np.any(y < y[i], axis=1)
    counts = dominated_by.sum(axis=1)
    remaining = np.ones(n, dtype=bool)
    fronts = []
    while remaining.any():
        front = np.flatnonzero(remaining & (counts == 0))
        fronts.append(front.tolist())
        remaining[front] = False
        counts -= dominated_by[:, front].sum(axis=1)
    return fronts


def crowding_distance(points: Sequence[Sequence[float]], front: Sequence[int]) -> list[float]:
    """NSGA-II crowding distance of each member of ``front``, in ``front``'s order.

    Per objective, the front is sorted by that objective (ties by index); the two ends get
    an infinite distance and every other member adds the gap between its neighbours divided
    by the objective's range on the front. An objective whose range is 0 adds nothing, not
    even the infinities: every member is then equally extreme in it, and which of them
    happened to sort first must not decide. Directions do not matter for a distance.
    """
    if len(front) == 0:
        return []
    arr = _as_array(points)[list(front)]
    m = len(front)
    dist = np.zeros(m)
    for k in range(arr.shape[1]):
        col = arr[:, k]
        span = col.max() - col.min()
        if span == 0:
            continue
        order = sorted(range(m), key=lambda i: (col[i], front[i]))
        dist[order[0]] = dist[order[-1]] = math.inf
        for pos in range(1, m - 1):
            dist[order[pos]] += (col[order[pos + 1]] - col[order[pos - 1]]) / span
    return dist.tolist()


def rank_at_rung(points: Sequence[Sequence[float]],
                 directions: Sequence[str | StudyDirection]) -> list[int]:
    """Point indices best first: by front, then crowding distance (larger first), then index.

    A point with a non-finite value (a diverged accuracy, an unmeasured cost) cannot be
    compared with the others; such points come last, in index order.
    """
    if len(points) == 0:
        return []
    arr = _as_array(points)
    _signs(directions, arr.shape[1])
    is_finite = np.all(np.isfinite(arr), axis=1)
    finite = np.flatnonzero(is_finite).tolist()
    broken = np.flatnonzero(~is_finite).tolist()
    sub = arr[finite]
    order = []
    for front in non_dominated_sort(sub, directions):
        crowd = crowding_distance(sub, front)
        ranked = sorted(range(len(front)), key=lambda i: (-crowd[i], front[i]))
        order.extend(finite[front[i]] for i in ranked)
    return order + broken


def promotable(candidate_index: int, points: Sequence[Sequence[float]],
               directions: Sequence[str | StudyDirection], eta: int) -> bool:
    """Whether ``points[candidate_index]`` is in the top ``1/eta`` of the points at a rung.

    ``points`` are all the trials that reached the rung, the candidate included. The
    candidate goes on iff its position in `rank_at_rung` is below
    ``k = max(1, len(points) // eta)``. This is the rule of Optuna's
    ``SuccessiveHalvingPruner`` (``optuna/pruners/_successive_halving.py``,
    ``_is_trial_promotable_to_next_rung``: ``promotable_idx = n // reduction_factor - 1``,
    raised to 0 when negative, so at least the best trial always goes on), with a Pareto
    ranking in place of sorting one value. Optuna promotes a trial tied with the k-th value
    (``value >= competing[-(promotable_idx + 1)]``); here ties go by crowding distance, then
    index, and `MOASHA.should_stop` puts the candidate at index 0 so that it, too, wins a
    full tie.
    """
    n = len(points)
    if not 0 <= candidate_index < n:
        raise ValueError(f"candidate_index {candidate_index} is not an index of {n} points")
    _check_int("eta", eta, 2)
    k = max(1, n // eta)
    return rank_at_rung(points, directions).index(candidate_index) < k


def epoch_accuracies(trial: FrozenTrial) -> list[float]:
    """The trial's per-epoch validation accuracies (index i = epoch i + 1); [] if none.

    Accepts the list Optuna returns and, leniently, the same list written as a JSON string.
    """
    raw = trial.user_attrs.get(EPOCH_ACC_ATTR)
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = json.loads(raw)
    return [float(a) for a in raw]


@dataclass(frozen=True, kw_only=True)
class MOASHA:
    """MO-ASHA early stopping over (accuracy, *costs) with rungs `rung_epochs`.

    ``cost_keys`` name the trials' cost user attributes, all minimised. With no cost keys the
    ranking is by accuracy alone: plain ASHA, usable for single-objective (reward) studies too.
    """

    min_epochs: int = 1
    eta: int = 3
    max_epochs: int
    cost_keys: tuple[str, ...]
    rungs: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rungs", tuple(rung_epochs(self.min_epochs, self.eta,
                                                            self.max_epochs)))
        keys = (self.cost_keys,) if isinstance(self.cost_keys, str) else tuple(self.cost_keys)
        if len(set(keys)) != len(keys):
            raise UserError(f"cost_keys must not repeat a cost, got {list(keys)}")
        if EPOCH_ACC_ATTR in keys:
            raise UserError(f"{EPOCH_ACC_ATTR!r} holds accuracies, not a cost")
        object.__setattr__(self, "cost_keys", keys)

    @property
    def directions(self) -> list[str]:
        return ["maximize"] + ["minimize"] * len(self.cost_keys)

    def should_stop(self, study: optuna.Study, trial_number: int, epoch: int, acc: float,
                    costs: Mapping[str, float]) -> bool:
        """Whether trial ``trial_number``, having finished ``epoch`` with accuracy ``acc``,
        must stop here. Only rung epochs can stop a trial.

        The competitors are the study's COMPLETE, PRUNED and RUNNING trials whose
        ``epoch_acc`` reaches ``epoch``, read from the storage now (a running trial of
        another worker counts once it has stored that epoch); the candidate itself enters
        with ``acc`` and ``costs``, whether or not it has stored them yet, and first, so it
        goes on when tied with the last trial that would (see `promotable`). A competitor
        without one of the cost attributes cannot be placed and is left out. A candidate
        whose accuracy is NaN stops.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"epoch must be a count of finished epochs (>= 1), got {epoch!r}")
        if epoch not in self.rungs:
            return False
        if math.isnan(acc):
            return True
        missing = [k for k in self.cost_keys if k not in costs]
        if missing:
            raise ValueError(f"costs lack {missing} (cost_keys are {list(self.cost_keys)})")
        points = [[float(acc)] + [float(costs[k]) for k in self.cost_keys]]
        for t in study.get_trials(deepcopy=False, states=_COMPETING_STATES):
            if t.number == trial_number:
                continue
            accs = epoch_accuracies(t)
            if len(accs) < epoch or any(k not in t.user_attrs for k in self.cost_keys):
                continue
            points.append([accs[epoch - 1]] + [float(t.user_attrs[k]) for k in self.cost_keys])
        return not promotable(0, points, self.directions, self.eta)


class Saved(NamedTuple):
    """Training compute of a search in epochs: trained, what it would have been with no
    pruning, and the fraction saved (0 when nothing was trained)."""

    epochs_trained: int
    epochs_if_unpruned: int
    fraction_saved: float


def compute_saved(trials: Iterable[FrozenTrial], max_epochs: int) -> Saved:
    """The training compute early stopping saved, counted in epochs.

    Only COMPLETE and PRUNED trials count (running ones have not finished deciding, failed
    ones would not have trained further). A pruned trial would have run ``max_epochs``; a
    complete one ran what it was going to, its stored length (which is below ``max_epochs``
    when something else, a time budget, ended it). Epochs are counted from ``epoch_acc``, so
    a trial that trained nothing (over a hard budget, a reused result) stores none and
    counts for nothing. Epochs of different architectures cost different amounts; this is a
    count, not a weighted sum.
    """
    _check_int("max_epochs", max_epochs, 1)
    trained = unpruned = 0
    for t in trials:
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        done = min(len(epoch_accuracies(t)), max_epochs)
        if done == 0:
            continue
        trained += done
        unpruned += max_epochs if t.state == TrialState.PRUNED else done
    fraction = 1.0 - trained / unpruned if unpruned else 0.0
    return Saved(trained, unpruned, fraction)
