"""Failing the trials of dead workers, including those that died before their first heartbeat.

Optuna's `optuna.storages.fail_stale_trials` fails a RUNNING trial whose heartbeat is older
than the grace period, and the storage's callback (`RetryHeartbeatStaleTrialCallback`)
queues it again. It only looks at trials that *have* a heartbeat row, though, and a trial
gets its first one only after ``study.ask()`` returns (sampling included). A worker killed
in that window leaves a RUNNING trial without a heartbeat for ever; the other workers of a
full study wait for it and never finish (seen in ``benchmarks/soak.py``).

`StaleTrials` adds that case: a RUNNING trial that this process has seen without a
heartbeat row for longer than the grace period is failed the same way and handed to the
same callback. The clock is this process's own (when it first saw the trial), not the
trial's ``datetime_start``, which another machine wrote in its own local time.
"""

from __future__ import annotations

import copy
import time
import warnings

import optuna
from optuna.trial import TrialState

__all__ = ["StaleTrials"]


class StaleTrials:
    """Call once per poll of a worker's loop: ``stale(study)``. Keeps, per process, when each
    heartbeat-less RUNNING trial was first seen."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._first_seen: dict[int, float] = {}

    def __call__(self, study: optuna.Study) -> list[int]:
        """Fail stale trials; returns the trial ids this call failed for lack of a heartbeat."""
        with warnings.catch_warnings():  # experimental since Optuna 2.9, and the API we need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        storage = study._storage
        backend = getattr(storage, "_backend", storage)  # Optuna wraps an RDBStorage in a cache
        grace = getattr(backend, "grace_period", None)
        beating = _trial_ids_with_heartbeat(backend)
        if grace is None or beating is None:
            return []
        now = self._clock()
        running = {t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        silent = running - beating
        self._first_seen = {tid: self._first_seen.get(tid, now) for tid in silent}
        failed = []
        for tid, seen in list(self._first_seen.items()):
            if now - seen <= grace:
                continue
            del self._first_seen[tid]
            try:
                if storage.set_trial_state_values(tid, state=TrialState.FAIL):
                    failed.append(tid)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # it finished, or another worker failed it first
        callback = storage.get_heartbeat_stale_trial_callback() if failed else None
        for tid in failed if callback is not None else []:
            callback(study, copy.deepcopy(storage.get_trial(tid)))
        return failed


def _trial_ids_with_heartbeat(storage) -> set[int] | None:
    """The ids of trials with a heartbeat row in an RDB storage; None for another storage
    (or an Optuna whose tables moved: then only Optuna's own check runs)."""
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        return None
    if not isinstance(storage, optuna.storages.RDBStorage):
        return None
    with _create_scoped_session(storage.scoped_session) as session:
        return {tid for (tid,) in session.query(models.TrialHeartbeatModel.trial_id).all()}
