"""Trial state changes two workers cannot both win (`nas.search.trial_states`).

The oracle is a count: however many storages race to fail (or to take) one trial, exactly
one of them is told it succeeded. Unpatched Optuna on SQLite tells all of them (checked
below, so the race is really exercised and the test can fail)."""

import threading
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from nas.search.trial_states import atomic_state_changes
from test_storage_faults import NO_POSTGRES, POSTGRES_URL

RACERS = 6


def _storages(url, patched):
    made = [optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}}
                                       if url.startswith("sqlite") else None) for _ in range(RACERS)]
    return [atomic_state_changes(s) for s in made] if patched else made


def _race(storages, trial_id, state):
    """Every storage changes the trial at once (a barrier); returns how many were told yes."""
    barrier = threading.Barrier(len(storages))
    wins, errors = [], []

    def go(storage):
        barrier.wait()
        try:
            if storage.set_trial_state_values(trial_id, state=state):
                wins.append(storage)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=go, args=(s,)) for s in storages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return len(wins)


def _sqlite(tmp_path):
    return f"sqlite:///{tmp_path / 'race.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield _sqlite(tmp_path)
        return
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    pytest.importorskip("psycopg")
    yield POSTGRES_URL


def _study(url):
    name = f"race-{uuid.uuid4().hex[:8]}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(storage=url, study_name=name), name


def test_unpatched_sqlite_lets_several_workers_fail_one_trial(tmp_path):
    url = _sqlite(tmp_path)
    study, _ = _study(url)
    storages = _storages(url, patched=False)
    several = sum(_race(storages, study.ask()._trial_id, TrialState.FAIL) > 1 for _ in range(10))
    assert several > 0  # the race this module exists for is real on this machine


def test_one_winner_when_workers_fail_the_same_trial(url):
    study, name = _study(url)
    storages = _storages(url, patched=True)
    try:
        for _ in range(15):
            trial = study.ask()
            assert _race(storages, trial._trial_id, TrialState.FAIL) == 1
            assert study._storage.get_trial(trial._trial_id).state == TrialState.FAIL
    finally:
        if url.startswith("postgres"):
            optuna.delete_study(study_name=name, storage=url)


def test_one_worker_takes_a_queued_trial(url):
    study, name = _study(url)
    storages = _storages(url, patched=True)
    try:
        for k in range(10):
            study.enqueue_trial({"x": float(k)})
        waiting = [t._trial_id for t in study.get_trials(states=(TrialState.WAITING,))]
        assert len(waiting) == 10
        for trial_id in waiting:
            assert _race(storages, trial_id, TrialState.RUNNING) == 1
            assert study._storage.get_trial(trial_id).state == TrialState.RUNNING
    finally:
        if url.startswith("postgres"):
            optuna.delete_study(study_name=name, storage=url)


def test_a_study_on_a_patched_storage_records_values_and_times(tmp_path):
    url = _sqlite(tmp_path)
    storage = atomic_state_changes(optuna.storages.RDBStorage(url))
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    study.enqueue_trial({"x": 2.0})
    study.optimize(lambda t: (t.suggest_float("x", 0, 4), 3.0), n_trials=3)
    trials = optuna.load_study(study_name=study.study_name, storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert trials[0].values == [2.0, 3.0]  # the queued one, taken and finished through the patch
    assert all(t.datetime_start <= t.datetime_complete for t in trials)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(trials[0]._trial_id, state=TrialState.FAIL)
