"""A worker killed after creating its trial but before its first heartbeat: Optuna's own stale
check never sees that trial (it has no heartbeat row), so `nas.search.stale.StaleTrials` fails
it after the grace period and the storage's retry callback queues it again. Driven with a fake
clock on a real SQLite storage opened as `nas search` opens it."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from nas.search.stale import StaleTrials
from nas.search.study import open_storage


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNAS_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("EFFNAS_GRACE_PERIOD", "5")
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    return optuna.create_study(study_name="s", storage=storage, direction="maximize")


def _running_trial(study, x: float) -> int:
    """A RUNNING trial with a parameter and no heartbeat row, as a worker leaves it when it is
    killed inside ``study.ask()``."""
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    assert trial.params["x"] is not None
    study._storage.set_trial_param(trial._trial_id, "y", x, optuna.distributions.FloatDistribution(0, 1))
    return trial._trial_id


def test_a_trial_that_never_beat_is_failed_after_the_grace_period_and_retried(study):
    clock = Clock()
    stale = StaleTrials(clock=clock)
    silent = _running_trial(study, 0.25)
    beating = _running_trial(study, 0.75)
    study._storage.record_heartbeat(beating)

    assert stale(study) == []  # first seen now
    clock.now = 4.9
    assert stale(study) == []  # within the 5 s grace
    clock.now = 5.1
    assert stale(study) == [silent]
    states = {t._trial_id: t.state for t in study.get_trials()}
    assert states[silent] == TrialState.FAIL
    assert states[beating] == TrialState.RUNNING  # its heartbeat is fresh: not ours to fail
    # Optuna's retry callback queued a copy with the same parameters.
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].params["y"] == 0.25
    assert waiting[0].system_attrs["failed_trial"] == study._storage.get_trial(silent).number
    clock.now = 60.0
    assert stale(study) == []  # never twice


def test_a_trial_that_finishes_within_the_grace_period_is_left_alone(study):
    clock = Clock()
    stale = StaleTrials(clock=clock)
    tid = _running_trial(study, 0.5)
    assert stale(study) == []
    study._storage.set_trial_state_values(tid, TrialState.COMPLETE, [1.0])
    clock.now = 100.0
    assert stale(study) == []
    assert study._storage.get_trial(tid).state == TrialState.COMPLETE
