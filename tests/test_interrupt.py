"""Ctrl-C (SIGINT) on a running `nas search`, in one process and with --workers 2: the
command exits promptly with status 130 (the shell's convention for SIGINT, via
`space.command_line.cli_entry`), no trial is left RUNNING in the storage (the trial in
flight is FAIL: Optuna's `optimize` marks an in-process trial FAIL when KeyboardInterrupt
goes through it, and re-raises; workers get the parent's SIGINT forwarded and do the same),
the outputs written so far parse, and the same command resumes to the requested count
with every trial number unique."""

import contextlib
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from conftest import TINY_SPACE_BASE as BASE, TINY_SPACE_YAML as SPACE_YAML  # noqa: E402
TRIALS = 2
STUDY = "ctrlc"


def command(tmp_path, workers: int) -> list[str]:
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE_YAML)
    # Several epochs per trial, so the interrupt lands inside a trial's training.
    return [sys.executable, "-m", "nas", "search", "--space", str(space), "--dataset", "synthetic:240:4:16",
            "--trials", str(TRIALS), "--epochs", "40", "--subset", "160", "--val-size", "40", "--threads", "1",
            "--early-stop", "none", "--study", STUDY, "--workers", str(workers), "--out", str(tmp_path / "out"),
            "--quiet"]


def storage_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'out' / 'runs' / STUDY / 'study.db'}"


def has_running_trial(db) -> bool:
    """Whether the study database holds a RUNNING trial, read with plain sqlite3 in read-only
    mode: opening it through Optuna while the command is still creating it races the
    command's own schema creation ("UNIQUE constraint failed: alembic_version")."""
    if not db.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
            return con.execute("SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0] > 0
    except sqlite3.Error:  # tables not made yet, or locked a moment
        return False


def interrupt_mid_trial(cmd, db, env):
    """Start ``cmd``, SIGINT it once a trial is training; returns (exit code, stderr)."""
    # A shell without job control starts background jobs with SIGINT ignored, and Python then
    # never turns it into KeyboardInterrupt: give the child the default disposition, as a
    # terminal would, so the test does not depend on how CI was started.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline and not has_running_trial(db):
        time.sleep(0.05)
    assert proc.poll() is None, f"the command ended before a trial ran: {proc.communicate()[1][-2000:]}"
    time.sleep(0.2)  # inside the trial's training
    os.kill(proc.pid, signal.SIGINT)
    sent = time.monotonic()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the command did not exit within 30 s of SIGINT")
    assert time.monotonic() - sent < 30
    return proc.returncode, err


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_mid_trial_fails_the_trial_cleanly_and_the_command_resumes(tmp_path, workers):
    cmd = command(tmp_path, workers)
    env = {**os.environ, "EFFNAS_HEARTBEAT_INTERVAL": "1", "EFFNAS_GRACE_PERIOD": "3"}
    url = storage_url(tmp_path)
    code, err = interrupt_mid_trial(cmd, tmp_path / "out" / "runs" / STUDY / "study.db", env)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err

    study = optuna.load_study(study_name=STUDY, storage=url)
    trials = study.get_trials(deepcopy=False)
    assert trials and not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert any(t.state in (TrialState.FAIL, TrialState.PRUNED) for t in trials), [(t.number, t.state.name) for t in trials]
    run = tmp_path / "out" / "runs" / STUDY
    if (run / "baseline.json").exists():
        json.loads((run / "baseline.json").read_text())
    if (run / "trials.csv").exists():
        with open(run / "trials.csv", newline="") as f:
            list(csv.DictReader(f))

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == TRIALS
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    json.loads((run / "baseline.json").read_text())
    with open(run / "trials.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) >= TRIALS


GRID_STUDY = "ctrlc-grid"


def test_ctrl_c_on_scaling_grid_fails_the_point_cleanly_and_the_command_resumes(tmp_path):
    # Values 1.0, 1.2, 1.4 and |a * b^2 * g^2 - 2| <= 0.05: four points
    cmd = [sys.executable, "-m", "scaling", "grid", "--arch", BASE, "--step", "0.2", "--max-coefficient", "1.4",
           "--tolerance", "0.05", "--dataset", "synthetic:240:4:16", "--epochs", "40", "--subset", "160",
           "--val-size", "40", "--threads", "1", "--study", GRID_STUDY, "--out", str(tmp_path / "out"), "--quiet"]
    env = {**os.environ, "EFFNAS_HEARTBEAT_INTERVAL": "1", "EFFNAS_GRACE_PERIOD": "3"}
    run = tmp_path / "out" / "runs" / GRID_STUDY
    url = f"sqlite:///{run / 'study.db'}"
    code, err = interrupt_mid_trial(cmd, run / "study.db", env)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err
    study = optuna.load_study(study_name=GRID_STUDY, storage=url)
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert any(t.state == TrialState.FAIL for t in trials)
    assert not (run / "coefficients.json").exists()  # no choice from an unfinished grid
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4  # every point once: the interrupted one again, no other twice
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 4
    chosen = json.loads((run / "coefficients.json").read_text())
    assert {"alpha", "beta", "gamma"} <= set(chosen)
