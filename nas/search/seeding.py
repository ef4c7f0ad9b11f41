"""Proposals that depend on the study's history, not on the process that makes them:
`HistorySeededSampler`.

Optuna's samplers draw from one random generator per sampler object, seeded once. What the
k-th trial of a process proposes then depends on how many draws that process made before,
so a study resumed in a new process (after Ctrl-C or a killed worker) proposed other
architectures than the uninterrupted study would have. (Seeding the new process with the
same seed is no cure: it would replay the first run's proposals, all duplicates.)

`HistorySeededSampler` builds a fresh inner sampler (TPE, NSGA-II, random, grid) for each
trial, seeded from ``(seed, offset, n)`` (`derive_seed`), where ``n`` (`position`) counts
the trials of the study that stand for a proposal already made:

* COMPLETE and PRUNED trials (infeasible and duplicate ones included);
* RUNNING trials other than the one being sampled (another worker's, or a killed worker's
  trial not yet found stale: its architecture is in flight and is retried later, so it is
  not proposed again now);
* FAILED trials whose training failed (user attr ``error``: divergence, out of memory), so a
  candidate that fails deterministically is not proposed for ever, and FAILED trials whose
  retries are used up (``retry_history`` of ``max_retry`` entries: no copy will run).

Not counted: a trial interrupted by Ctrl-C (FAIL, no ``error``: the resumed study proposes
it again, as the uninterrupted one did), a stale trial that Optuna's retry callback queued
again (its WAITING copy, with the same parameters, stands for it once it finishes), a
worker's surplus trial (never sampled), WAITING trials.

Independent draws (`sample_independent`) are seeded per parameter as well, so a trial
retried after its worker was killed halfway through suggesting draws its missing parameters
as the killed trial would have. The inner samplers keep every other state in the study
(NSGA-II's generations and parents are system attributes), so with one worker a resumed
study proposes exactly what the uninterrupted one would after the same finished history.

The ``offset`` (`nas search --workers`: 1000 × (worker index + 1)) keeps workers that
sample at the same moment from proposing the same architecture; with several workers the
history each one sees depends on timing, so their proposals are not reproducible.
"""

from __future__ import annotations

import os
import threading
import zlib
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from .trial import ERROR_ATTR  # a trial whose training failed

__all__ = ["HistorySeededSampler", "derive_seed", "position"]

_STANDING = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def derive_seed(seed: int, offset: int, n: int, salt: int = 0, param: str | None = None) -> int:
    """A 32-bit seed from ``(seed, offset, n)`` (and a parameter's name) by NumPy's
    `SeedSequence`: a hash, so study seed 1 is not study seed 0 shifted by one trial, as
    ``seed + n`` would be."""
    key = 0 if param is None else zlib.crc32(param.encode("utf-8")) + 1  # stable across processes
    entropy = [int(seed) % 2**64, int(offset) % 2**64, int(n), int(salt), key]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


def position(trials: Iterable[FrozenTrial], number: int, max_retry: int | None) -> int:
    """How many of ``trials`` (all trials of a study) stand for a proposal already made,
    the trial ``number`` itself left out (see the module docstring)."""
    n = 0
    for t in trials:
        if t.number == number:
            continue
        if t.state in _STANDING:
            n += 1
        elif t.state == TrialState.FAIL:
            exhausted = max_retry is not None and len(t.system_attrs.get("retry_history", ())) >= max_retry
            if ERROR_ATTR in t.user_attrs or exhausted:
                n += 1
    return n


class HistorySeededSampler(BaseSampler):
    """A sampler made by ``factory(seed)`` afresh for every trial, its seed derived from
    ``seed``, ``offset`` and the study's history when the trial starts (`position`). Every
    method of `BaseSampler` goes to the trial's own inner sampler, ``before_trial`` and
    ``after_trial`` included (NSGA-II needs them).

    With ``per_parameter`` (TPE, NSGA-II, random), `sample_independent` asks a sampler of
    its own for each parameter, seeded with the parameter's name too, so a value does not
    depend on which parameters were drawn before it in the trial: a worker killed while its
    trial was suggesting leaves some parameters set, and the retried copy draws only the
    others, which then get the values the killed trial would have drawn. (Joint draws,
    `sample_relative`, repeat by themselves: same seed, same history.) The grid sampler
    chooses its point once per trial and needs ``per_parameter=False``.

    ``max_retry`` is the storage's retry callback's limit (`nas.search.study.MAX_RETRY`).
    `reseed_rng` (Optuna calls it for ``n_jobs`` threads) mixes fresh entropy into every
    later seed: proposals then no longer repeat between runs."""

    def __init__(self, factory: Callable[[int], BaseSampler], seed: int, *, offset: int = 0,
                 max_retry: int | None = None, per_parameter: bool = True) -> None:
        self._factory = factory
        self._seed = int(seed)
        self._offset = int(offset)
        self._max_retry = max_retry
        self._per_parameter = per_parameter
        self._salt = 0
        self._trials: dict[int, tuple[int, BaseSampler]] = {}  # trial number -> (position, its sampler)
        self._lock = threading.Lock()

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def offset(self) -> int:
        return self._offset

    def position_of(self, study: optuna.Study, trial: FrozenTrial) -> int:
        """`position` of ``trial`` in ``study``'s present history."""
        # The base class's get_trials: Hyperband hands samplers a study filtered to one
        # bracket, and the history that seeds is the whole study's.
        return position(optuna.study.Study.get_trials(study, deepcopy=False), trial.number, self._max_retry)

    def _start(self, study: optuna.Study, trial: FrozenTrial) -> tuple[int, BaseSampler]:
        n = self.position_of(study, trial)
        return n, self._factory(derive_seed(self._seed, self._offset, n, self._salt))

    def _for(self, study: optuna.Study, trial: FrozenTrial) -> tuple[int, BaseSampler]:
        """The trial's (position, inner sampler), made here when ``before_trial`` was not called."""
        with self._lock:
            entry = self._trials.get(trial.number)
        if entry is None:
            made = self._start(study, trial)
            with self._lock:
                entry = self._trials.setdefault(trial.number, made)
        return entry

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        entry = self._start(study, trial)
        with self._lock:
            self._trials[trial.number] = entry
        entry[1].before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._for(study, trial)[1].infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._for(study, trial)[1].sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution) -> Any:
        n, inner = self._for(study, trial)
        if self._per_parameter:
            inner = self._factory(derive_seed(self._seed, self._offset, n, self._salt, param_name))
        return inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        with self._lock:
            entry = self._trials.pop(trial.number, None)
        inner = entry[1] if entry is not None else self._start(study, trial)[1]
        inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._salt = int.from_bytes(os.urandom(8), "little") | 1
