"""A `scaling family --train` SIGKILLed while a member trains, run again with the same
command: it ends with every member trained and the same family.json as an uninterrupted
run, the member that was cut off continues from its last finished epoch, and the finished
one is not trained again.

How it resumes: the family is a study of nas's search runner (one grid trial per member,
`scaling.family.train_listed`); a member's training is a trial, checkpointed after every
epoch in ``runs/<study>/checkpoints/`` (`nas.search.trial`). The killed trial stays RUNNING
in the study's SQLite file until its heartbeat is older than the grace period; the next run
then marks it FAIL and runs a retry (a copy with the same candidate,
`RetryHeartbeatStaleTrialCallback`), which continues that member's checkpoint (user attr
``resumed_from_epoch``) to the uninterrupted result; finished members are counted and not
trained again, and a finished member's checkpoint is deleted.

Heartbeats are shortened through the environment (1 s, grace 3 s) as in
test_storage_faults.py; the defaults (10 s, 30 s) would only make the second run wait
longer for the killed trial to go stale.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.search.early_stop import EPOCH_ACC_ATTR

ROOT = Path(__file__).resolve().parents[1]
BASE = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l1-head_c32"
STUDY = "tiny-family"
EPOCHS = 4


def family(out: Path) -> list[str]:
    return [sys.executable, "-m", "scaling", "family", "--arch", BASE, "--alpha", "1.2", "--beta", "1.1",
            "--gamma", "1.15", "--phi", "0..1", "--train", "--dataset", "synthetic:240:4:16", "--epochs",
            str(EPOCHS), "--subset", "160", "--val-size", "40", "--threads", "1", "--quiet", "--study", STUDY,
            "--out", str(out), "--json"]


def env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "EFFNAS_HEARTBEAT_INTERVAL": "1", "EFFNAS_GRACE_PERIOD": "3"}


def trials(out: Path):
    try:
        study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{out / 'runs' / STUDY / 'study.db'}")
        return study.get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - not created yet
        return []


@pytest.mark.slow
def test_a_killed_family_training_run_again_ends_as_an_uninterrupted_one(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    straight = subprocess.run(family(tmp_path / "a"), cwd=ROOT, env=env(), capture_output=True, text=True,
                              timeout=300)
    assert straight.returncode == 0, straight.stderr

    out = tmp_path / "b"
    proc = subprocess.Popen(family(out), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        # Kill once one member has finished and the other has trained an epoch.
        while proc.poll() is None and time.monotonic() < deadline:
            states = [(t.state, len(t.user_attrs.get(EPOCH_ACC_ATTR, []))) for t in trials(out)]
            if (TrialState.COMPLETE, EPOCHS) in states and any(
                    s == TrialState.RUNNING and 1 <= n < EPOCHS for s, n in states):
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the family finished before it was killed"
    before = {t.number: t for t in trials(out)}
    # The checkpoint is written before the epoch's accuracy is stored: it holds as many, or one more.
    stored = max(len(t.user_attrs.get(EPOCH_ACC_ATTR, [])) for t in before.values() if t.state == TrialState.RUNNING)
    assert sorted(t.state.name for t in before.values()) == ["COMPLETE", "RUNNING"]
    done_label = next(t.params["candidate"] for t in before.values() if t.state == TrialState.COMPLETE)
    assert not (out / "runs" / STUDY / "family.json").exists()

    again = subprocess.run(family(out), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    after = trials(out)
    by_state = {}
    for t in after:
        by_state.setdefault(t.state.name, []).append(t)
    # The killed member failed and was retried; the finished one was not trained again.
    assert sorted(by_state) == ["COMPLETE", "FAIL"] and len(by_state["FAIL"]) == 1 and len(after) == 3
    (failed,) = by_state["FAIL"]
    assert before[failed.number].state == TrialState.RUNNING
    retried = {t.params["candidate"] for t in after if t.number not in before}
    assert retried == {failed.params["candidate"]} and done_label not in retried
    # The retry continued the killed member's checkpoint instead of training from epoch 0.
    (retry,) = [t for t in after if t.number not in before]
    assert stored <= retry.user_attrs["resumed_from_epoch"] <= stored + 1
    assert not list((out / "runs" / STUDY / "checkpoints").glob("*.pt"))
    finished = next(t for t in after if t.params["candidate"] == done_label)
    assert finished.datetime_complete == before[finished.number].datetime_complete

    a = json.loads((tmp_path / "a" / "runs" / STUDY / "family.json").read_text())
    b = json.loads((out / "runs" / STUDY / "family.json").read_text())
    assert json.loads(again.stdout) == b
    assert [r["name"] for r in b["family"]] == ["phi0", "phi1"] and all(r["n"] == 1 for r in b["family"])
    for ra, rb in zip(a["family"], b["family"]):
        assert {k: v for k, v in ra.items() if k != "trials"} == {k: v for k, v in rb.items() if k != "trials"}
    # Every epoch of every member, not only the final accuracy.
    epochs_a = {t.params["candidate"]: t.user_attrs[EPOCH_ACC_ATTR] for t in trials(tmp_path / "a")}
    epochs_b = {t.params["candidate"]: t.user_attrs[EPOCH_ACC_ATTR] for t in after if t.state == TrialState.COMPLETE}
    assert epochs_b == epochs_a
