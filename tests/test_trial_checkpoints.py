"""Per-trial checkpoints (`nas.search.trial`): the retry of a trial killed while it trains
continues from the killed trial's last finished epoch to the result of an uninterrupted
run; a checkpoint `train` refuses is overwritten by a fresh run; a trial that ends
COMPLETE or PRUNED leaves no checkpoint.

The kill is made deterministic the way test_storage_faults.py makes a hanging worker: the
search runs through a small wrapper of ``nas.train.train`` whose callback writes every
trained epoch to a file and, in "hang" mode, sleeps after epoch `HANG_AT` (its checkpoint
is written before the callback runs) until the test SIGKILLs it. Heartbeats are shortened
through the environment (1 s, grace 3 s), as in test_determinism.py.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from optuna.trial import TrialState

from nas.search.early_stop import EPOCH_ACC_ATTR
from nas.search.runner import CHECKPOINT_DIR, run_search
from nas.search.settings import SearchSettings
from nas.search.trial import (DISCARDED_ATTR, RESUMED_ATTR, Objective, TrialContext, checkpoint_key,
                              sweep_checkpoints)
from space.arch import Arch

ROOT = Path(__file__).resolve().parents[1]
from conftest import TINY_SPACE_BASE as BASE, TINY_SPACE_YAML as SPACE_YAML  # noqa: E402
DATA = "synthetic:240:4:16"
STUDY = "ck"
SEED = 3
EPOCHS = 6
HANG_AT = 3
FAST_HEARTBEAT = {"EFFNAS_HEARTBEAT_INTERVAL": "1", "EFFNAS_GRACE_PERIOD": "3"}
# The tiny proxy trains a few steps on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:each candidate trains only:UserWarning")

WRAPPER = f"""
import sys, time
from pathlib import Path
import nas.train
from nas.cli import main

mode, log = sys.argv[1], Path(sys.argv[2])
real = nas.train.train

def train(*args, callback=None, **kwargs):
    def cb(stats):
        verdict = callback(stats)
        with open(log, "a") as f:
            f.write(f"{{stats.epoch}}\\n")
        if mode == "hang" and stats.epoch == {HANG_AT}:
            time.sleep(600)
        return verdict
    return real(*args, callback=cb, **kwargs)

nas.train.train = train
sys.exit(main(sys.argv[3:]))
"""


def _env() -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **FAST_HEARTBEAT}


def _argv(space: Path, out: Path) -> list[str]:
    return ["search", "--space", str(space), "--dataset", DATA, "--trials", "1", "--epochs", str(EPOCHS),
            "--subset", "160", "--val-size", "40", "--threads", "1", "--early-stop", "none", "--seed", str(SEED),
            "--study", STUDY, "--out", str(out), "--quiet"]


def _wrapped(mode: str, log: Path, space: Path, out: Path) -> list[str]:
    return [sys.executable, "-c", WRAPPER, mode, str(log), *_argv(space, out)]


def _trials(out: Path):
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{out / 'runs' / STUDY / 'study.db'}")
    return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)


def _checkpoint_files(out: Path) -> list[Path]:
    folder = out / "runs" / STUDY / CHECKPOINT_DIR
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _epochs(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


@pytest.fixture
def space(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE_YAML)
    return path


def test_the_retry_of_a_killed_trial_resumes_from_its_checkpoint_to_the_uninterrupted_result(tmp_path, space):
    # The uninterrupted run, alongside the one to be killed.
    straight = subprocess.Popen([sys.executable, "-m", "nas", *_argv(space, tmp_path / "a")], cwd=ROOT, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    out, first_log, second_log = tmp_path / "b", tmp_path / "first.txt", tmp_path / "second.txt"
    proc = subprocess.Popen(_wrapped("hang", first_log, space, out), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(_epochs(first_log)) < HANG_AT:
            assert proc.poll() is None, f"the search ended before it was killed: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "the trial did not reach its epoch to be killed at"
            time.sleep(0.05)
        (path,) = _checkpoint_files(out)
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert state["epoch"] == HANG_AT and len(state["history"]) == HANG_AT
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (killed,) = _trials(out)
    assert killed.state == TrialState.RUNNING and len(killed.user_attrs[EPOCH_ACC_ATTR]) == HANG_AT
    assert path.name == f"{checkpoint_key(killed.user_attrs['arch'], SEED)}.pt"

    # The same command again: once the killed trial is stale, its retry continues the checkpoint.
    again = subprocess.run(_wrapped("record", second_log, space, out), cwd=ROOT, env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    _, err = straight.communicate(timeout=120)
    assert straight.returncode == 0, err[-3000:]

    failed, retry = _trials(out)
    assert failed.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == failed.number and retry.params == failed.params
    assert retry.user_attrs[RESUMED_ATTR] == HANG_AT
    assert _epochs(second_log) == list(range(HANG_AT + 1, EPOCHS + 1))  # only the remaining epochs trained
    (whole,) = _trials(tmp_path / "a")
    assert whole.state == TrialState.COMPLETE and whole.user_attrs[RESUMED_ATTR] == 0
    assert retry.user_attrs["arch"] == whole.user_attrs["arch"]
    assert len(retry.user_attrs[EPOCH_ACC_ATTR]) == EPOCHS
    assert retry.user_attrs[EPOCH_ACC_ATTR] == whole.user_attrs[EPOCH_ACC_ATTR]  # the whole curve
    assert retry.user_attrs["val_acc"] == whole.user_attrs["val_acc"] and retry.values == whole.values
    assert retry.user_attrs["epochs"] == whole.user_attrs["epochs"] == EPOCHS
    assert retry.intermediate_values == whole.intermediate_values  # every epoch reported to the pruner
    # Nothing is left: the finished trial's checkpoint went with it, in both runs.
    assert _checkpoint_files(out) == [] and _checkpoint_files(tmp_path / "a") == []


def _settings(space: Path, out: Path, **kw) -> SearchSettings:
    common = dict(space=str(space), dataset=DATA, epochs=2, subset=160, val_size=40, num_threads=1,
                  early_stop="none", seed=SEED, study=STUDY, out=str(out))
    return SearchSettings(**{**common, **kw})


def test_a_checkpoint_of_another_run_is_trained_over_and_a_finished_trial_leaves_none(tmp_path, space, monkeypatch):
    import nas.train
    from nas.data import make_splits
    from nas.train import Budget, TrainConfig

    arch = Arch.from_string(BASE).to_string()
    clean = run_search(_settings(space, tmp_path / "clean", trials=2, enqueue=(BASE,)), progress=False)
    assert clean.counts["counted"] == 2
    first = _trials(tmp_path / "clean")[0]
    assert first.user_attrs["arch"] == arch and first.user_attrs[RESUMED_ATTR] == 0
    assert DISCARDED_ATTR not in first.user_attrs
    assert not (tmp_path / "clean" / "runs" / STUDY / CHECKPOINT_DIR).exists()  # finished trials keep none

    # A file at trial 0's path from a run with other data (as an older study in the same
    # folder, or another device's precision, would leave).
    out = tmp_path / "stale"
    path = out / "runs" / STUDY / CHECKPOINT_DIR / f"{checkpoint_key(arch, SEED)}.pt"
    other = make_splits(DATA, val_size=40, subset=80)
    nas.train.train(Arch.from_string(BASE), other, Budget(epochs=1), TrainConfig.proxy(seed=SEED, num_threads=1),
                    checkpoint=path)
    assert path.exists()
    calls = []
    real = nas.train.train

    def spy(*args, **kwargs):
        calls.append(kwargs.get("resume"))
        return real(*args, **kwargs)

    monkeypatch.setattr(nas.train, "train", spy)
    run_search(_settings(space, out, trials=1, enqueue=(BASE,)), progress=False)
    (trial,) = _trials(out)
    assert trial.state == TrialState.COMPLETE and calls == [True, False]
    assert "another run" in trial.user_attrs[DISCARDED_ATTR] and trial.user_attrs[RESUMED_ATTR] == 0
    # Trained afresh: the same as the clean run's trial of that architecture.
    assert trial.user_attrs[EPOCH_ACC_ATTR] == first.user_attrs[EPOCH_ACC_ATTR] and trial.values == first.values
    assert _checkpoint_files(out) == []


def test_only_complete_and_pruned_trials_lose_their_checkpoint(tmp_path):
    study = optuna.create_study()
    ctx = TrialContext(study=study, space=None, splits=None, num_classes=4, mode="reward", costs=(), measured=set(),
                       budgets={}, reward=None, epochs=2, config=SimpleNamespace(seed=SEED), batch_size=32,
                       checkpoint_dir=tmp_path / CHECKPOINT_DIR)
    objective = Objective(ctx)
    arch = Arch.from_string(BASE).to_string()
    path = tmp_path / CHECKPOINT_DIR / f"{checkpoint_key(arch, SEED)}.pt"
    assert checkpoint_key(arch, SEED) != checkpoint_key(arch, SEED + 1)  # one file per training seed
    for state, kept in ((TrialState.FAIL, True), (TrialState.RUNNING, True), (TrialState.PRUNED, False),
                        (TrialState.COMPLETE, False)):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"weights")
        objective.finished(SimpleNamespace(state=state, user_attrs={"arch": arch}))
        assert path.exists() == kept, state
        assert path.parent.exists() == kept  # nothing running: the empty folder goes too
    # Another architecture's checkpoint (a failed trial's, kept for its retry) keeps the folder.
    path.parent.mkdir()
    (path.parent / "0123456789abcdef.pt").write_bytes(b"weights")
    path.write_bytes(b"weights")
    objective.finished(SimpleNamespace(state=TrialState.COMPLETE, user_attrs={"arch": arch}))
    assert not path.exists() and path.parent.is_dir()


def test_the_end_of_a_run_sweeps_the_checkpoints_of_finished_architectures(tmp_path):
    # A process killed between storing a trial and deleting its file leaves the file behind.
    study = optuna.create_study()
    folder = tmp_path / CHECKPOINT_DIR
    folder.mkdir()
    archs = [BASE, BASE.replace("head_c32", "head_c48"), BASE.replace("head_c32", "head_c64")]
    for arch, state in zip(archs, (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
        study.add_trial(optuna.trial.create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None,
                                                  user_attrs={"arch": arch}))
        (folder / f"{checkpoint_key(arch, SEED)}.pt").write_bytes(b"weights")
    running = study.ask()
    running.set_user_attr("arch", archs[0])
    assert sweep_checkpoints(study, folder, SEED) == 0  # a running trial may be writing there
    study.tell(running, 0.4)
    assert sweep_checkpoints(study, folder, SEED) == 2
    assert sorted(p.name for p in folder.iterdir()) == [f"{checkpoint_key(archs[2], SEED)}.pt"]  # the failed one's
    (folder / f"{checkpoint_key(archs[2], SEED)}.pt").unlink()
    assert sweep_checkpoints(study, folder, SEED) == 0 and not folder.exists()
