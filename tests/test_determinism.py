"""Determinism of `nas search` on a CPU: the same command twice gives the same architectures,
accuracies and baseline; a study SIGKILLed in the middle of a trial and run again to the end
finishes the same architectures, in the same order, with the same accuracies, as one run
without interruption (one worker). Underneath, `nas.search.seeding.HistorySeededSampler`:
what a sampler proposes depends on the seed and the study's history, not on the process.

The end-to-end tests run `python -m nas search` in subprocesses (fresh processes, each with its
own hash seed), two at a time on the 2 cores; training runs with --threads 1.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import warnings

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from nas.search.seeding import HistorySeededSampler, derive_seed, position
from nas.search.study import MAX_RETRY, history_seeded_sampler

from conftest import TINY_SPACE_BASE as BASE, TINY_SPACE_YAML as SPACE_YAML  # noqa: E402
STUDY = "det"
FAST_HEARTBEAT = {"EFFNAS_HEARTBEAT_INTERVAL": "1", "EFFNAS_GRACE_PERIOD": "3"}
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


# --------------------------------------------------------------------------- the sampler


DIMS = {"a": [0, 1, 2, 3], "b": [0, 1, 2, 3, 4], "c": [0, 1, 2, 3, 4, 5], "d": [0, 1, 2]}  # 360 points


def _objective(n_objectives: int):
    def objective(trial):
        p = {k: trial.suggest_categorical(k, v) for k, v in DIMS.items()}
        acc = (p["a"] * 7 + p["b"] * 3 + p["c"] * 5 + p["d"]) % 11 / 10
        cost = p["a"] + 2 * p["b"] + p["c"] + p["d"] + 1
        return acc if n_objectives == 1 else (acc, cost)
    return objective


def _sampler(name: str, n_objectives: int, trials: int) -> HistorySeededSampler:
    return history_seeded_sampler(name, multi_objective=n_objectives > 1, seed=0, trials=trials, search_space=DIMS)


def _study(tmp_path, label: str, n_objectives: int, sampler) -> optuna.Study:
    directions = ["maximize"] if n_objectives == 1 else ["maximize", "minimize"]
    return optuna.create_study(study_name=label, directions=directions, sampler=sampler)  # in memory


def _finished_params(study: optuna.Study) -> list[dict]:
    return [t.params for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number) if t.state in COUNTED]


@pytest.mark.parametrize("name, n_objectives", [("tpe", 1), ("tpe", 2), ("nsga2", 2), ("random", 1), ("grid", 1)])
def test_a_resumed_study_proposes_what_an_uninterrupted_one_would(tmp_path, name, n_objectives):
    """20 trials (TPE past its 10 random start-up trials, NSGA-II past its first generation of
    8) in one go, against the same study cut three times, each time going on with a new
    sampler object after the process's random generators were disturbed: after 4 trials by
    an interrupted 5th (FAIL, as Ctrl-C leaves it), after 6 and after 14 by a worker killed
    while its trial was suggesting (1 of 4 parameters set; failed as stale, and the retry
    callback's copy keeps that one and draws the others)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trials = 20
    objective = _objective(n_objectives)
    whole = _study(tmp_path, "whole", n_objectives, _sampler(name, n_objectives, trials))
    whole.optimize(objective, n_trials=trials)
    expected = _finished_params(whole)

    def new_process(study):
        random.seed(12345)
        np.random.seed(12345)
        np.random.rand(3)
        study.sampler = _sampler(name, n_objectives, trials)

    parts = _study(tmp_path, "parts", n_objectives, _sampler(name, n_objectives, trials))
    parts.optimize(objective, n_trials=4)
    cut = parts.ask()
    for k, v in DIMS.items():
        cut.suggest_categorical(k, v)
    parts.tell(cut, state=TrialState.FAIL)
    assert cut.params == expected[4]  # the interrupted trial is proposed again
    new_process(parts)
    done = 4
    for kill_at in (6, 14):
        parts.optimize(objective, n_trials=kill_at - done)
        killed = parts.ask()
        killed.suggest_categorical("a", DIMS["a"])
        parts._storage.set_trial_state_values(killed._trial_id, TrialState.FAIL)  # as the stale check does
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRY)
        retry(parts, parts._storage.get_trial(killed._trial_id))
        assert killed.params == {"a": expected[kill_at]["a"]}
        new_process(parts)
        done = kill_at
    parts.optimize(objective, n_trials=trials - done)

    assert _finished_params(parts) == expected
    if name == "grid":  # every point at most once
        assert len({tuple(p.values()) for p in expected}) == trials


def test_the_seed_offset_and_the_study_seed_change_the_proposals(tmp_path):
    def proposals(seed: int, offset: int) -> list[dict]:
        sampler = HistorySeededSampler(lambda s: optuna.samplers.RandomSampler(seed=s), seed=seed, offset=offset)
        study = _study(tmp_path, f"s{seed}-o{offset}", 1, sampler)
        study.optimize(_objective(1), n_trials=8)
        return _finished_params(study)

    base = proposals(0, 0)
    assert proposals(0, 0) == base
    assert proposals(0, 1000) != base  # workers start apart
    # Not a shift of one sequence (seed + n would make study seed 1 study seed 0 one trial on).
    assert proposals(1, 0)[:-1] != base[1:]
    seeds = {derive_seed(s, o, n) for s in range(5) for o in (0, 1000, 2000) for n in range(50)}
    assert len(seeds) == 5 * 3 * 50


def test_which_trials_stand_for_a_proposal():
    dist = optuna.distributions.CategoricalDistribution([0, 1])

    def trial(number, state, user_attrs=None, system_attrs=None):
        t = optuna.trial.create_trial(state=state, params={"a": 0}, distributions={"a": dist},
                                      values=[1.0] if state == TrialState.COMPLETE else None,
                                      user_attrs=user_attrs or {}, system_attrs=system_attrs or {})
        t.number = number
        return t

    history = [
        trial(0, TrialState.COMPLETE),
        trial(1, TrialState.PRUNED),
        trial(2, TrialState.FAIL, {"error": "diverged"}),  # counts: not proposed again
        trial(3, TrialState.FAIL),  # Ctrl-C: proposed again
        trial(4, TrialState.FAIL),  # killed, its copy queued: the copy stands for it
        trial(5, TrialState.COMPLETE, system_attrs={"failed_trial": 4, "retry_history": [4]}),
        trial(6, TrialState.FAIL, system_attrs={"failed_trial": 4, "retry_history": [4, 5]}),  # retries used up
        trial(7, TrialState.RUNNING),  # another worker's, or a killed one not yet stale
        trial(8, TrialState.WAITING),
        trial(9, TrialState.RUNNING),  # the trial being sampled
    ]
    assert MAX_RETRY == 2
    assert position(history, 9, MAX_RETRY) == 6  # 0, 1, 2, 5, 6, 7


# --------------------------------------------------------------------------- nas search, end to end


def _command(tmp_path, out: str, trials: int, extra: tuple[str, ...] = ()) -> list[str]:
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE_YAML)
    return [sys.executable, "-m", "nas", "search", "--space", str(space), "--dataset", "synthetic:240:4:16",
            "--trials", str(trials), "--epochs", "4", "--subset", "160", "--val-size", "40", "--threads", "1",
            "--early-stop", "none", "--seed", "3", "--study", STUDY, "--out", str(tmp_path / out), "--quiet", *extra]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}  # each process its own hash seed
    return {**env, **FAST_HEARTBEAT}


def _db(tmp_path, out: str):
    return tmp_path / out / "runs" / STUDY / "study.db"


def _finished(tmp_path, out: str) -> list[tuple]:
    """(arch, state, values, val_acc, accuracy per epoch) of each counted trial, in trial order."""
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{_db(tmp_path, out)}")
    return [(t.user_attrs["arch"], t.state.name, t.values, t.user_attrs.get("val_acc"),
             t.user_attrs.get("epoch_acc"))
            for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number) if t.state in COUNTED]


def _wait(proc: subprocess.Popen, timeout: float = 120) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err[-3000:]
    return err


def test_the_same_search_twice_gives_the_same_architectures_accuracies_and_baseline(tmp_path):
    trials = 6
    procs = [subprocess.Popen(_command(tmp_path, out, trials), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env()) for out in ("one", "two")]
    for proc in procs:
        _wait(proc)
    one, two = _finished(tmp_path, "one"), _finished(tmp_path, "two")
    assert len(one) == trials and one == two
    assert len({acc for _, _, _, acc, _ in one}) > 1  # accuracies that say something, not all at chance
    baseline = [json.loads((tmp_path / out / "runs" / STUDY / "baseline.json").read_text()) for out in ("one", "two")]
    assert baseline[0] == baseline[1]
    assert baseline[0]["arch"] in {arch for arch, *_ in one}


def _running_with_heartbeat(db, at_least: int) -> int | None:
    """The number of a RUNNING trial numbered ``at_least`` or more that has beaten once (so
    Optuna's own stale check finds it after the grace period), or None."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db, timeout=1) as con:
            row = con.execute("SELECT t.number FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
                              "WHERE t.state = 'RUNNING' AND t.number >= ?", (at_least,)).fetchone()
    except sqlite3.Error:  # not created yet
        return None
    return None if row is None else row[0]


def test_a_study_killed_mid_trial_and_run_again_finishes_what_an_uninterrupted_one_does(tmp_path):
    """12 trials: TPE's 10 random start-up trials and two of its model. The run to be killed is
    SIGKILLed in its 4th trial or later; the same command, started once that trial's heartbeat
    is older than the grace period, retries it (the retry callback's copy, same parameters)
    and samples the rest."""
    trials = 12
    whole = subprocess.Popen(_command(tmp_path, "whole", trials), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=_env())
    cmd = _command(tmp_path, "killed", trials)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    db = _db(tmp_path, "killed")
    deadline = time.monotonic() + 120
    killed_at = None
    while killed_at is None and proc.poll() is None and time.monotonic() < deadline:
        killed_at = _running_with_heartbeat(db, 3)
        if killed_at is None:
            time.sleep(0.01)
    assert killed_at is not None, "no trial to kill was seen running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with sqlite3.connect(db) as con:
        left = con.execute("SELECT number FROM trials WHERE state = 'RUNNING'").fetchall()
    assert left == [(killed_at,)]  # killed inside that trial
    time.sleep(float(FAST_HEARTBEAT["EFFNAS_GRACE_PERIOD"]) + 1)
    _wait(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()))
    _wait(whole)

    resumed, uninterrupted = _finished(tmp_path, "killed"), _finished(tmp_path, "whole")
    assert len(uninterrupted) == trials
    assert [arch for arch, *_ in resumed] == [arch for arch, *_ in uninterrupted]
    assert resumed == uninterrupted  # and the same accuracies
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{db}")
    retries = [t for t in study.get_trials(deepcopy=False) if t.system_attrs.get("failed_trial") == killed_at]
    assert len(retries) == 1 and retries[0].state in COUNTED
