"""``--sampler grid``: every point of a search space's grid once, resumable and shared by
workers: `SpaceGridSampler`.

Why not `optuna.samplers.GridSampler` itself: it ties grid points to trial numbers and to
a seeded shuffle (trial k takes the k-th point of the shuffled grid), and it counts a FAILED
trial's point as visited. Our runner re-runs failed trials, and in a resumed study or with
several workers trial numbers do not line up with the points a shuffle would give them; with
Optuna's sampler a resumed study would take points by a different shuffle (evaluating some
twice and skipping others) and a point whose training failed would never be tried again.
This sampler decides by the parameter values the study already holds instead:

* a point is *done* when a COMPLETE or PRUNED trial has its values, *taken* while a RUNNING
  trial of another process has them;
* each new trial takes a point neither done nor taken (chosen at random with the sampler's
  seed, so workers starting together rarely collide), else one not done (another worker's
  running point: the study's duplicate detection then reuses its result when it is
  finished first), else any point (the grid is exhausted: a repeat, which duplicate
  detection answers without training);
* enqueued and retried trials keep their fixed parameters.

The grid is the product of every dimension's choices (`GRID_LIMIT` points at most), in the
order `SearchSpace.dimensions` gives them. `nas search` makes this sampler afresh for each
trial, seeded from the study's history (`nas.search.seeding`), so the random choice among
free points is the same in a resumed study as in an uninterrupted one.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any, Mapping, Sequence

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

__all__ = ["SpaceGridSampler", "GRID_LIMIT", "grid_size"]

#: The most points a grid may have: the sampler lists them all.
GRID_LIMIT = 100_000

_DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def grid_size(dimensions: Mapping[str, Sequence[Any]]) -> int:
    """Number of points of the grid over ``dimensions`` (1 when there is none)."""
    return math.prod(len(c) for c in dimensions.values())


class SpaceGridSampler(BaseSampler):
    """Exhaustive search over ``search_space`` (parameter name -> choices); see the module
    docstring for how points are chosen."""

    def __init__(self, search_space: Mapping[str, Sequence[Any]], seed: int | None = None):
        size = grid_size(search_space)
        if size > GRID_LIMIT:
            raise ValueError(f"a grid of {size} points is more than {GRID_LIMIT}")
        self._names = list(search_space)
        self._points = list(itertools.product(*(list(c) for c in search_space.values())))
        self._rng = random.Random(seed)
        self._chosen: dict[int, tuple] = {}  # trial number -> point, for this process's trials

    @property
    def size(self) -> int:
        return len(self._points)

    def reseed_rng(self) -> None:
        self._rng.seed()

    def _key(self, params: Mapping[str, Any]) -> tuple | None:
        if any(n not in params for n in self._names):
            return None
        return tuple(params[n] for n in self._names)

    def _next_point(self, study: optuna.Study, number: int) -> tuple:
        done, taken = set(), set()
        for t in study.get_trials(deepcopy=False):
            key = self._key(t.params)
            if key is None or t.number == number:
                continue
            if t.state in _DONE:
                done.add(key)
            elif t.state == TrialState.RUNNING:
                taken.add(key)
        free = [p for p in self._points if p not in done and p not in taken]
        if not free:
            free = [p for p in self._points if p not in done] or self._points
        return free[self._rng.randrange(len(free))]

    def before_trial(self, study: optuna.Study, trial) -> None:
        if "fixed_params" in trial.system_attrs or trial.params:
            return  # enqueued or retried: its parameters are given
        self._chosen[trial.number] = self._next_point(study, trial.number)

    def infer_relative_search_space(self, study, trial) -> dict:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict:
        return {}

    def sample_independent(self, study, trial, param_name: str, param_distribution) -> Any:
        point = self._chosen.get(trial.number)
        if point is None:
            point = self._chosen[trial.number] = self._next_point(study, trial.number)
        if param_name not in self._names:
            raise ValueError(f"parameter {param_name!r} is not in the grid ({', '.join(self._names)})")
        return point[self._names.index(param_name)]

    def after_trial(self, study, trial, state, values) -> None:
        self._chosen.pop(trial.number, None)
