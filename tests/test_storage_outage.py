"""A storage that stops answering mid-study (`nas.search.outage`).

Unit tests of the waiting (a fake clock), then a real PostgreSQL server of the test's own
(scripts/local_postgres.sh in a temporary folder: stopping the shared test server would
break other tests) stopped and restarted under a running `nas search`: the search waits,
carries on, and ends with every trial it asked for and the ones finished before the outage
untouched; stopped for longer than ``EFFNAS_STORAGE_PATIENCE``, it ends with one sentence
and exit code 2, and the same command finishes the study once the server is back.
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from nas.search.outage import (MAX_DELAY, PATIENCE_ENV, Outage, StorageUnreachable, is_unreachable,
                               keep_beating, storage_patience)
from space.errors import UserError
from conftest import TINY_SPACE_YAML as SPACE_YAML
from test_storage_faults import COUNTED, DATA, FAST_HEARTBEAT

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "local_postgres.sh"
SECRET_URL = "postgresql+psycopg://effnas:s3cret-pw@db.example:5432/effnas"


def _operational(message="connection refused"):
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(message))


# --------------------------------------------------------------------------- unit


def test_unreachable_errors_are_told_from_others():
    wrapped = optuna.exceptions.StorageInternalError("commit failed")
    wrapped.__cause__ = _operational()
    assert is_unreachable(_operational()) and is_unreachable(wrapped)
    assert not is_unreachable(ValueError("bad value"))
    assert not is_unreachable(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key")))


def test_waits_double_up_to_the_cap_then_one_sentence_without_the_password():
    now = [0.0]
    slept, said = [], []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    outage = Outage(SECRET_URL, patience=100, clock=lambda: now[0], sleep=sleep, say=said.append)
    with pytest.raises(StorageUnreachable) as caught:
        for _ in range(50):
            outage.wait(_operational("server closed the connection unexpectedly"))
    assert slept[:6] == [1, 2, 4, 8, 16, MAX_DELAY]
    assert sum(slept) == pytest.approx(100)  # the last sleep is cut to the patience left
    message = str(caught.value)
    assert "\n" not in message and "s3cret-pw" not in message and "***" in message
    assert PATIENCE_ENV in message and "100 s" in message and "server closed the connection" in message
    assert len(said) == 1 and "s3cret-pw" not in said[0]


def test_a_storage_that_comes_back_resets_the_clock():
    now = [0.0]
    said = []
    outage = Outage(SECRET_URL, patience=10, clock=lambda: now[0],
                    sleep=lambda s: now.__setitem__(0, now[0] + s), say=said.append)
    for _ in range(3):  # 1 + 2 + 4 s
        outage.wait(_operational())
    outage.ok()
    assert "answers again after 7 s" in said[-1]
    for _ in range(3):  # a second outage gets the whole patience again
        outage.wait(_operational())
    assert outage.outages == 2


@pytest.mark.parametrize("text", ["soon", "-1", "nan", "inf"])
def test_a_bad_patience_is_a_user_error_naming_the_variable(monkeypatch, text):
    monkeypatch.setenv(PATIENCE_ENV, text)
    with pytest.raises(UserError, match=PATIENCE_ENV):
        storage_patience()


def test_heartbeats_skip_an_outage_but_not_other_errors():
    class Backend:
        def __init__(self, err):
            self.err, self.calls = err, 0

        def record_heartbeat(self, trial_id):
            self.calls += 1
            raise self.err

    quiet = keep_beating(Backend(_operational()))
    quiet.record_heartbeat(3)
    assert quiet.calls == 1
    loud = keep_beating(Backend(ValueError("bug")))
    with pytest.raises(ValueError):
        loud.record_heartbeat(3)


# --------------------------------------------------------------------------- a real server


def _initdb_available():
    return bool(shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb"))


@pytest.fixture(scope="module")
def own_postgres():
    if not _initdb_available():
        pytest.skip("PostgreSQL's initdb is not installed (apt-get install postgresql; .ci/run does)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgres]')")
    folder = tempfile.mkdtemp(prefix="effnas-pg-outage-", dir="/tmp")
    os.chmod(folder, 0o711)
    env = {**os.environ, "EFFNAS_PG_DIR": folder}

    def script(*args):
        return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)

    started = script("start")
    if started.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"a local PostgreSQL server did not start: {started.stderr.strip()[-300:]}")
    url = script("url").stdout.strip()
    pgpass = script("pgpass").stdout.strip()
    try:
        yield {"url": url, "script": script, "env": {**os.environ, "PGPASSFILE": pgpass, **FAST_HEARTBEAT}}
    finally:
        script("clean")
        shutil.rmtree(folder, ignore_errors=True)


def _start_search(server, tmp_path, monkeypatch, study, trials, patience, wait_for):
    """Start `nas search` on the server; return (argv, env, process, the trials COMPLETE once
    ``wait_for`` of them are). This process reads the study with the same password file."""
    monkeypatch.setenv("PGPASSFILE", server["env"]["PGPASSFILE"])
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE_YAML)
    argv = [sys.executable, "-m", "nas", "search", "--space", str(space), "--dataset", DATA, "--trials", str(trials),
            "--epochs", "2", "--subset", "160", "--val-size", "40", "--threads", "1", "--early-stop", "none",
            "--storage", server["url"], "--study", study, "--out", str(tmp_path / "out"), "--quiet"]
    env = {**server["env"], PATIENCE_ENV: str(patience)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return argv, env, proc, _wait_for_complete(server, study, proc, wait_for)


def _trials(server, study):
    return optuna.load_study(study_name=study, storage=server["url"]).get_trials()


def _wait_for_complete(server, study, proc, count, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the search ended (exit {proc.returncode}) before {count} trials completed: "
                                 f"{proc.communicate()[1][-2000:]}")
        try:
            done = [t for t in _trials(server, study) if t.state == TrialState.COMPLETE]
        except KeyError:  # the study is not made yet
            done = []
        if len(done) >= count:
            return done
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"fewer than {count} trials completed within {timeout} s")


def _no_trial_counted_twice(trials):
    retries = Counter(t.system_attrs.get("failed_trial") for t in trials
                      if t.state in COUNTED and t.system_attrs.get("failed_trial") is not None)
    assert all(n == 1 for n in retries.values()), retries
    failed = {t.number for t in trials if t.state == TrialState.FAIL}  # the callback names numbers
    assert set(retries) <= failed


def test_a_search_rides_out_a_server_restart(own_postgres, tmp_path, monkeypatch):
    server = own_postgres
    _, _, proc, before = _start_search(server, tmp_path, monkeypatch, "restart", trials=8, patience=120, wait_for=2)
    stopped = server["script"]("stop")
    assert stopped.returncode == 0, stopped.stderr
    time.sleep(5)
    assert proc.poll() is None  # waiting, not dead
    assert server["script"]("start").returncode == 0
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert "does not answer" in err and "answers again" in err and "Traceback" not in err
    trials = _trials(server, "restart")
    assert len([t for t in trials if t.state in COUNTED]) == 8
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    kept = {t.number: t for t in trials}
    for t in before:  # finished before the outage: still there, unchanged
        assert kept[t.number].state == TrialState.COMPLETE and kept[t.number].values == t.values
    _no_trial_counted_twice(trials)


def test_a_search_gives_up_after_its_patience_and_the_same_command_finishes(own_postgres, tmp_path, monkeypatch):
    server = own_postgres
    argv, env, proc, before = _start_search(server, tmp_path, monkeypatch, "give-up", trials=40, patience=4,
                                            wait_for=1)
    stopped_at = time.monotonic()
    assert server["script"]("stop").returncode == 0
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        assert server["script"]("start").returncode == 0
    assert proc.returncode == 2, err[-2000:]
    assert time.monotonic() - stopped_at < 90  # bounded: 4 s of patience plus a trial's epoch
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and PATIENCE_ENV in last and "run the same command again" in last
    kept = {t.number: t for t in _trials(server, "give-up")}
    assert all(kept[t.number].values == t.values for t in before)
    # Finish it with fewer trials: the same command, a smaller count
    done = len([t for t in kept.values() if t.state in COUNTED])
    argv[argv.index("--trials") + 1] = str(done + 2)
    again = subprocess.run(argv, env={**env, PATIENCE_ENV: "60"}, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    trials = _trials(server, "give-up")
    assert len([t for t in trials if t.state in COUNTED]) == done + 2
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    _no_trial_counted_twice(trials)


def test_reads_that_work_do_not_reset_the_clock_while_every_trial_fails_to_write(monkeypatch):
    # A full disk: counting trials works, starting one fails. The search must still end, after
    # the patience, rather than loop for ever with the clock reset by each good read.
    from types import SimpleNamespace

    import nas.search.runner as runner

    monkeypatch.setenv(PATIENCE_ENV, "1")
    study = optuna.create_study()

    def optimize(*args, **kwargs):
        raise _operational("database or disk is full")

    monkeypatch.setattr(study, "optimize", optimize)
    monkeypatch.setattr(runner, "Objective", lambda ctx: SimpleNamespace(finished=lambda t: None))
    r = SimpleNamespace(settings=SimpleNamespace(trials=3), storage_url="sqlite:///study.db", max_failures=3,
                        study_name="full")
    ctx = SimpleNamespace(on_epoch=None, on_start=None)
    progress = SimpleNamespace(on_epoch=None, on_start=None, finished=lambda t: None)
    started = time.monotonic()
    with pytest.raises(StorageUnreachable, match="disk is full"):
        runner._run_trials(study, ctx, r, progress, deadline=time.monotonic() + 60)
    assert time.monotonic() - started < 10
