"""Trial state changes that two processes cannot both win, on SQLite as on PostgreSQL.

Optuna's `RDBStorage.set_trial_state_values` reads the trial's state, checks it, then
writes the new one. On PostgreSQL the read is ``SELECT ... FOR UPDATE``, so a second
writer waits and then sees the first one's state. SQLite has no row locks: the driver
starts its transaction only at the first write, so two workers can both read RUNNING and
both write FAIL, and both are told they succeeded. When two workers find the same dead
worker's trial stale at once (`optuna.storages.fail_stale_trials`, which Optuna itself
also calls before every trial), each then hands it to the retry callback and the trial
is run twice (seen in ``benchmarks/soak.py`` seed 4: two COMPLETE copies of one failed
trial). The same race lets two workers both take one queued (WAITING) trial.

`atomic_state_changes` replaces that method on one storage with a compare-and-swap: a
write that takes the lock first (``UPDATE ... WHERE state IN (<the states it may leave>)``,
changing nothing), whose row count says whether the trial is still there to change, then
Optuna's own steps in the same transaction. The loser gets what Optuna's
own code gives it: `UpdateFinishedTrialError` for a finished trial, ``False`` for a
trial someone else has started.
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

import optuna
from optuna.trial import TrialState

__all__ = ["atomic_state_changes"]


def atomic_state_changes(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """Make ``storage``'s trial state changes atomic (see the module docstring) and return
    it. Storages other than `RDBStorage`, and an Optuna whose internals moved, are
    returned unchanged."""
    backend = getattr(storage, "_backend", storage)  # Optuna may wrap an RDBStorage in a cache
    if not isinstance(backend, optuna.storages.RDBStorage):
        return storage
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        return storage
    if not hasattr(backend, "_set_trial_value_without_commit"):
        return storage

    def set_trial_state_values(trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        # RUNNING only from WAITING (a queued trial being taken); a finished state from
        # either unfinished one, as Optuna allows.
        leaving = [TrialState.WAITING] if state == TrialState.RUNNING else [TrialState.WAITING, TrialState.RUNNING]
        with _create_scoped_session(backend.scoped_session) as session:
            # A write that changes nothing but takes the lock (SQLite's database lock, the row
            # lock on PostgreSQL) and tells, by its row count, whether the trial can still
            # leave its state. Everything below runs inside the transaction it opened.
            claimed = (session.query(models.TrialModel)
                       .filter(models.TrialModel.trial_id == trial_id, models.TrialModel.state.in_(leaving))
                       .update({models.TrialModel.state: models.TrialModel.state}, synchronize_session=False))
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            if not claimed:
                backend.check_trial_is_updatable(trial_id, trial.state)  # raises if finished
                return False  # someone else took the queued trial
            for objective, value in enumerate(values or ()):
                backend._set_trial_value_without_commit(session, trial, objective, value)
            trial.state = state
            if state == TrialState.RUNNING:
                trial.datetime_start = datetime.now()
            if state.is_finished():
                trial.datetime_complete = datetime.now()
        return True

    backend.set_trial_state_values = set_trial_state_values
    return storage
