"""The study storage when things go wrong: a worker killed with SIGKILL in the middle of a
trial (on SQLite, and on PostgreSQL when ``EFFNAS_TEST_POSTGRES_URL`` is set), an
unreachable storage, and passwords in storage URLs, which are never shown.

Heartbeats are shortened for these tests through the environment (`EFFNAS_HEARTBEAT_INTERVAL`
1 s, `EFFNAS_GRACE_PERIOD` 3 s), as a user may do; the defaults are 10 s and 30 s.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.cli import main as nas_main
from nas.search.runner import run_search
from nas.search.settings import SearchSettings, resolve_settings
from nas.search.storage_url import redact, scrub
from nas.search.study import GRACE_PERIOD, HEARTBEAT_INTERVAL, heartbeat_settings, open_storage
from space.errors import UserError

DATA = "synthetic:240:4:16"
COMMON = dict(dataset=DATA, epochs=1, subset=160, val_size=40, num_threads=1, early_stop="none")
FAST_HEARTBEAT = {"EFFNAS_HEARTBEAT_INTERVAL": "1", "EFFNAS_GRACE_PERIOD": "3"}
POSTGRES_URL = os.environ.get("EFFNAS_TEST_POSTGRES_URL", "")
NO_POSTGRES = ("EFFNAS_TEST_POSTGRES_URL is not set (a SQLAlchemy URL of a PostgreSQL database the tests may "
               "use, such as scripts/local_postgres.sh gives; .ci/run sets it)")
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
# The tiny proxy trains a few steps on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:each candidate trains only:UserWarning")


def postgres_url() -> str:
    """The test server's URL, or skip (with the reason) when there is none or no driver."""
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgres]')")
    return POSTGRES_URL


def unique_study(prefix: str) -> str:
    """A study name of its own: the PostgreSQL database is shared by every test and run."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def fast_heartbeat(monkeypatch):
    for key, value in FAST_HEARTBEAT.items():
        monkeypatch.setenv(key, value)


def settings_dict(space_file, tmp_path, **kw) -> dict:
    return {"space": str(space_file), "out": str(tmp_path / "out"), **COMMON, **kw}


def counted(trials):
    return [t for t in trials if t.state in COUNTED]


# A worker whose training never ends: it writes the marker once its trial is RUNNING (the
# trial's parameters and arch are in the storage, its heartbeat thread runs) and then hangs
# until it is killed. Its settings come on stdin, so no password is on its command line.
HANGING_WORKER = """
import json, sys, time
from pathlib import Path
import nas.train
from nas.search.runner import run_search
from nas.search.settings import SearchSettings, resolve_settings

marker = Path(sys.argv[1])
def hang(*args, **kwargs):
    marker.write_text("training")
    time.sleep(600)
nas.train.train = hang
run_search(SearchSettings(**json.loads(sys.stdin.read())), progress=False)
"""


def start_hanging_worker(settings: dict, marker: Path) -> subprocess.Popen:
    env = {**os.environ, **FAST_HEARTBEAT}
    proc = subprocess.Popen([sys.executable, "-c", HANGING_WORKER, str(marker)], stdin=subprocess.PIPE, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc.stdin.write(json.dumps(settings).encode())
    proc.stdin.close()
    deadline = time.monotonic() + 180
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the worker ended before its first trial: {proc.stdout.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the worker did not start a trial within 180 s")
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_worker_killed_mid_trial_is_retried_by_another_and_the_count_is_reached(
        backend, space_file, tmp_path, fast_heartbeat):
    """Worker A is SIGKILLed while training trial 0; worker B, started next, finds it RUNNING,
    runs the other trial, and once A's heartbeat is older than the grace period the trial is
    marked FAIL and a WAITING copy with the same parameters is queued, which B runs. The study
    ends with exactly the requested count: the killed trial is not counted, nothing twice."""
    if backend == "postgresql":
        url = postgres_url()
        study_name = unique_study("kill")
    else:
        url = f"sqlite:///{tmp_path / 'shared' / 'study.db'}"
        study_name = "kill"
    trials = 2
    d = settings_dict(space_file, tmp_path, trials=trials, storage=url, study=study_name)
    a = start_hanging_worker(d, tmp_path / "a-is-training")
    os.kill(a.pid, signal.SIGKILL)
    assert a.wait(timeout=30) == -signal.SIGKILL

    study = optuna.load_study(study_name=study_name, storage=url)
    (killed,) = study.get_trials(deepcopy=False)
    assert killed.state == TrialState.RUNNING and killed.number == 0  # left behind by the kill

    started = time.monotonic()
    summary = run_search(SearchSettings(**d), progress=False)  # worker B
    assert time.monotonic() - started < 120

    trials_now = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials_now}
    assert len(by_number) == len(trials_now)  # no trial number twice
    assert by_number[0].state == TrialState.FAIL  # the killed trial: failed, not counted
    retries = [t for t in trials_now if t.system_attrs.get("failed_trial") == 0]
    assert len(retries) == 1, "the killed trial is retried exactly once"
    retry = retries[0]
    assert retry.state in COUNTED and retry.params == killed.params
    assert retry.user_attrs["arch"] == killed.user_attrs["arch"]
    done = counted(trials_now)
    assert len(done) == trials and summary.counts["counted"] == trials
    assert not [t for t in trials_now if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # Nothing counted twice: each counted trial trained once (its own log line), and B's log
    # holds exactly the requested number of finished trials.
    log = (tmp_path / "out" / "runs" / study_name / "search.log").read_text().splitlines()
    assert sum(" COMPLETE " in line or " PRUNED " in line for line in log) == trials
    if backend == "postgresql":
        optuna.delete_study(study_name=study_name, storage=url)


# --------------------------------------------------------------------------- heartbeats


def test_heartbeat_interval_and_grace_period_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("EFFNAS_HEARTBEAT_INTERVAL", raising=False)
    monkeypatch.delenv("EFFNAS_GRACE_PERIOD", raising=False)
    assert heartbeat_settings() == (HEARTBEAT_INTERVAL, GRACE_PERIOD) == (10, 30)
    monkeypatch.setenv("EFFNAS_HEARTBEAT_INTERVAL", "2")
    monkeypatch.setenv("EFFNAS_GRACE_PERIOD", "7")
    assert heartbeat_settings() == (2, 7)
    monkeypatch.setenv("EFFNAS_GRACE_PERIOD", "soon")
    with pytest.raises(UserError, match=r"^EFFNAS_GRACE_PERIOD must be a whole number of seconds of at least 1, got 'soon'$"):
        heartbeat_settings()
    monkeypatch.setenv("EFFNAS_GRACE_PERIOD", "2")
    with pytest.raises(UserError, match=r"grace period \(2 s, EFFNAS_GRACE_PERIOD\) must be longer than the heartbeat"):
        heartbeat_settings()


# --------------------------------------------------------------------------- URLs and passwords

SECRET = "Zq7-secret-PW"


def test_redact_masks_the_password_and_nothing_else():
    assert redact(f"postgresql+psycopg://ann:{SECRET}@db.example:5432/nas") == \
        "postgresql+psycopg://ann:***@db.example:5432/nas"
    assert redact("postgresql+psycopg://ann@db.example/nas") == "postgresql+psycopg://ann@db.example/nas"
    assert redact("sqlite:////tmp/out/runs/s/study.db") == "sqlite:////tmp/out/runs/s/study.db"
    # Encoded characters, and text SQLAlchemy does not parse as a URL.
    assert "p@ss" not in redact("postgresql://ann:p%40ss@h/db") and "p%40ss" not in redact("postgresql://ann:p%40ss@h/db")
    assert redact(f"ann:{SECRET}@db.example/nas") == "ann:***@db.example/nas"
    assert SECRET not in scrub(f"failed for postgresql://ann:{SECRET}@h/db and {SECRET}", f"postgresql://ann:{SECRET}@h/db")


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


def test_an_unreachable_storage_is_one_sentence_exit_2_and_no_password(space_file, tmp_path, capfd):
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgres]')")
    url = f"postgresql+psycopg://ann:{SECRET}@127.0.0.1:{_closed_port()}/nas"
    code = nas_main(["search", "--space", str(space_file), "--dataset", DATA, "--trials", "1", "--epochs", "1",
                     "--subset", "160", "--val-size", "40", "--threads", "1", "--storage", url, "--study", "s",
                     "--out", str(tmp_path / "out"), "--quiet"])
    out, err = capfd.readouterr()
    assert code == 2 and out == ""
    assert SECRET not in err and "Traceback" not in err
    # (the tiny proxy's "warning: each candidate trains only 5 steps" may come first)
    (line,) = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert line.startswith("error: --storage postgresql+psycopg://ann:***@127.0.0.1:") and "cannot be opened" in line
    assert "refused" in line.lower()
    assert not (tmp_path / "out" / "runs").exists()  # nothing written


def test_a_missing_driver_or_a_url_without_scheme_names_the_url_without_password(tmp_path):
    with pytest.raises(UserError) as info:
        open_storage(f"mysql+nosuchdriver://ann:{SECRET}@127.0.0.1/nas")
    assert SECRET not in str(info.value) and "ann:***@127.0.0.1" in str(info.value)
    with pytest.raises(UserError) as info:
        resolve_settings(SearchSettings(space="mnasnet_cifar", dataset=DATA, storage=f"ann:{SECRET}@host/nas",
                                        out=str(tmp_path)))
    assert str(info.value).startswith("--storage must be a database URL") and SECRET not in str(info.value)
    assert "ann:***@host/nas" in str(info.value)
