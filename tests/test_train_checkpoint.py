"""Checkpoints of `nas.train.train`: refusing a checkpoint of another run, re-running a
finished run without redoing its work, and a `nas train` killed with SIGKILL resuming from
its last checkpoint to the result of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nas.train as nas_train
from nas.data import Splits, SplitsInfo, synthetic
from nas.train import Budget, CheckpointMismatch, EpochStats, TrainConfig, train
from space import Arch
from space.errors import UserError

ARCH = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l1-head_c32"
# 128 training images in batches of 32: 4 steps per epoch.
FAST = TrainConfig(batch_size=32, optimizer="sgd", warmup_epochs=0.0, ema_decay=None)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def arch() -> Arch:
    return Arch.from_string(ARCH)


def _splits(split_seed: int = 0, train_seed: int = 0, test_seed: int = 2) -> Splits:
    info = SplitsInfo(dataset="synthetic:160:4:16", split_seed=split_seed, val_size=32, subset=None)
    return Splits(train=synthetic(128, 4, 16, seed=train_seed), val=synthetic(32, 4, 16, seed=1),
                  test=synthetic(32, 4, 16, seed=test_seed), info=info)


def _refusal(arch, data, config, ckpt) -> CheckpointMismatch:
    with pytest.raises(CheckpointMismatch) as info:
        train(arch, data, Budget(epochs=2), config, checkpoint=ckpt)
    err = info.value
    assert isinstance(err, UserError) and err.path == ckpt
    text = str(err)
    assert text.startswith(f"checkpoint {ckpt} is of another run (") and text.endswith(
        "; pass resume=False to start over")
    assert "\n" not in text and ". " not in text  # one sentence
    return err


# --- the identity of a run ---------------------------------------------------------------


def test_a_checkpoint_of_another_split_seed_data_or_precision_is_refused(arch, tmp_path):
    ckpt = tmp_path / "run" / "checkpoint.pt"
    train(arch, _splits(), Budget(epochs=1), FAST, checkpoint=ckpt)
    meta = torch.load(ckpt, weights_only=True)["meta"]
    assert meta["dataset"] == "synthetic:160:4:16" and meta["split_seed"] == 0
    assert meta["val_size"] == 32 and meta["subset"] is None
    assert meta["data_fingerprint"] == _splits().fingerprint()
    assert meta["world_size"] == 1 and meta["amp"] == "off"

    # The same images drawn with another split seed (the hand-built splits here only claim
    # it): the seed alone differs, and the message names it with both values.
    err = _refusal(arch, _splits(split_seed=1), FAST, ckpt)
    assert err.differences == ["split_seed: 0 there, 1 now"]
    assert "(split_seed: 0 there, 1 now)" in str(err)

    # Same sizes and description, other training images: only the fingerprint can tell.
    other = _splits(train_seed=5)
    assert len(other.train) == len(_splits().train)
    err = _refusal(arch, other, FAST, ckpt)
    assert err.differences == [
        f"data_fingerprint: {_splits().fingerprint()!r} there, {other.fingerprint()!r} now"]

    # The same data under another name (a relative path, a moved folder) is the same run:
    # the name is recorded, the fingerprint decides.
    renamed = _splits()
    renamed = Splits(train=renamed.train, val=renamed.val, test=renamed.test,
                     info=SplitsInfo(dataset="./elsewhere/synthetic", split_seed=0, val_size=32))
    train(arch, renamed, Budget(epochs=1), FAST, checkpoint=ckpt)

    # Another precision (bf16 autocast runs on the CPU too).
    bf16 = TrainConfig(batch_size=32, optimizer="sgd", warmup_epochs=0.0, ema_decay=None, amp="bf16")
    err = _refusal(arch, _splits(), bf16, ckpt)
    assert err.differences == ["amp: 'off' there, 'bf16' now"]

    # Several at once are all named, in one sentence.
    err = _refusal(arch, _splits(split_seed=1, train_seed=5), bf16, ckpt)
    assert [d.split(":")[0] for d in err.differences] == ["split_seed", "data_fingerprint", "amp"]

    # Nothing was overwritten by the refusals: the identical run resumes.
    resumed = train(arch, _splits(), Budget(epochs=2), FAST, checkpoint=ckpt)
    assert resumed.resumed_epoch == 1 and resumed.steps == 8


def test_a_checkpoint_of_another_world_size_is_refused(arch, tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    train(arch, _splits(), Budget(epochs=1), FAST, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=True)
    state["meta"]["world_size"] = 4  # as if written by `torchrun --nproc_per_node 4`
    torch.save(state, ckpt)
    err = _refusal(arch, _splits(), FAST, ckpt)
    assert err.differences == ["world_size: 4 there, 1 now"]


def test_an_old_format_checkpoint_is_refused(arch, tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    train(arch, _splits(), Budget(epochs=1), FAST, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=True)
    state["format"] = 1  # what nas.train wrote before runs recorded their data and precision
    for key in ("dataset", "split_seed", "subset", "val_size", "data_fingerprint", "world_size", "amp"):
        del state["meta"][key]
    torch.save(state, ckpt)
    with pytest.raises(CheckpointMismatch, match="format 1") as info:
        train(arch, _splits(), Budget(epochs=2), FAST, checkpoint=ckpt)
    assert info.value.path == ckpt and str(info.value).endswith("pass resume=False to start over")
    assert "\n" not in str(info.value)
    # resume=False overwrites it.
    fresh = train(arch, _splits(), Budget(epochs=1), FAST, checkpoint=ckpt, resume=False)
    assert fresh.resumed_epoch == 0


def test_a_file_that_is_no_checkpoint_is_refused(arch, tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"weights": torch.zeros(2)}, ckpt)
    with pytest.raises(CheckpointMismatch, match="not a checkpoint of nas.train"):
        train(arch, _splits(), Budget(epochs=1), FAST, checkpoint=ckpt)
    ckpt.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointMismatch, match="cannot be read"):
        train(arch, _splits(), Budget(epochs=1), FAST, checkpoint=ckpt)


def test_splits_without_info_are_identified_by_their_fingerprint(arch, tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    plain = Splits(train=synthetic(128, 4, 16, seed=0), val=synthetic(32, 4, 16, seed=1))
    train(arch, plain, Budget(epochs=1), FAST, checkpoint=ckpt)
    meta = torch.load(ckpt, weights_only=True)["meta"]
    assert meta["dataset"] is None and meta["split_seed"] is None
    again = train(arch, Splits(train=synthetic(128, 4, 16, seed=0), val=synthetic(32, 4, 16, seed=1)),
                  Budget(epochs=2), FAST, checkpoint=ckpt)
    assert again.resumed_epoch == 1
    err = _refusal(arch, Splits(train=synthetic(128, 4, 16, seed=7), val=synthetic(32, 4, 16, seed=1)),
                   FAST, ckpt)
    assert [d.split(":")[0] for d in err.differences] == ["data_fingerprint"]


# --- re-running a finished run -----------------------------------------------------------


@pytest.fixture
def evaluations(monkeypatch) -> list[int]:
    """The number of images of every evaluation pass `train` makes."""
    sizes: list[int] = []
    real = nas_train.loop.evaluate_loader

    def spy(*args, **kwargs):
        acc, loss, n = real(*args, **kwargs)
        sizes.append(n)
        return acc, loss, n

    monkeypatch.setattr(nas_train.loop, "evaluate_loader", spy)
    return sizes


def test_a_finished_run_reuses_its_stored_test_result(arch, tmp_path, evaluations, capsys):
    ckpt = tmp_path / "checkpoint.pt"
    first = train(arch, _splits(), Budget(epochs=1), FAST, checkpoint=ckpt, evaluate_test=True)
    assert evaluations == [32, 32]  # validation after epoch 1, then the test split
    stored = torch.load(ckpt, weights_only=True)["test"]
    assert (stored["acc"], stored["loss"]) == (first.test_acc, first.test_loss)

    evaluations.clear()
    capsys.readouterr()
    again = train(arch, _splits(), Budget(epochs=1), FAST, checkpoint=ckpt, evaluate_test=True, progress=True)
    assert evaluations == []  # neither trained nor evaluated again
    assert (again.test_acc, again.test_loss) == (first.test_acc, first.test_loss)
    assert again.val_acc == first.val_acc and again.resumed_epoch == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["already finished at epoch 1"]


def test_a_stored_test_result_is_recomputed_when_it_is_stale(arch, tmp_path, evaluations):
    ckpt = tmp_path / "checkpoint.pt"
    train(arch, _splits(), Budget(epochs=1), FAST, checkpoint=ckpt)  # no test result yet
    evaluations.clear()
    asked = train(arch, _splits(), Budget(epochs=1), FAST, checkpoint=ckpt, evaluate_test=True)
    assert evaluations == [32]  # the test split, once

    evaluations.clear()  # another test split of the same size: its result is not the stored one
    other = train(arch, _splits(test_seed=9), Budget(epochs=1), FAST, checkpoint=ckpt, evaluate_test=True)
    assert evaluations == [32] and other.test_acc is not None

    evaluations.clear()  # a raised budget trains on: the stored result is of older weights
    longer = train(arch, _splits(test_seed=9), Budget(epochs=2), FAST, checkpoint=ckpt, evaluate_test=True)
    assert evaluations == [32, 32] and longer.steps == 8
    assert asked.test_acc is not None


class _Stop(Exception):
    pass


def test_a_resumed_run_says_where_it_resumes(arch, tmp_path, capsys):
    ckpt = tmp_path / "checkpoint.pt"

    def stop_after_one(stats: EpochStats) -> None:
        if stats.epoch == 1:
            raise _Stop

    with pytest.raises(_Stop):
        train(arch, _splits(), Budget(epochs=3), FAST, checkpoint=ckpt, callback=stop_after_one)
    capsys.readouterr()
    train(arch, _splits(), Budget(epochs=3), FAST, checkpoint=ckpt, progress=True)
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "resuming from epoch 1 of 3"
    assert "already finished" not in err
    train(arch, _splits(), Budget(epochs=3), FAST, checkpoint=ckpt, progress=False)
    assert capsys.readouterr().err == ""  # quiet without progress


# --- a killed `nas train` ------------------------------------------------------------------

# Without dropout and drop path a deterministic CPU run is exact; the in-process resume test
# in test_train.py covers their random draws, RMSProp and EMA.
CLI_ARCH = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l2-head_c32"
TIMING = ("seconds", "images_per_s", "eval_seconds")  # of the machine, not of the training


def _nas_train(out, epochs: int) -> list[str]:
    return [sys.executable, "-m", "nas", "train", "--arch", CLI_ARCH, "--dataset", "synthetic:400:4:16",
            "--val-size", "80", "--epochs", str(epochs), "--threads", "1", "--out", str(out)]


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def test_a_killed_nas_train_resumes_from_its_checkpoint_to_the_uninterrupted_result(tmp_path):
    """`nas train` for E epochs, against the same command SIGKILLed once its checkpoint holds
    epoch 2 and run again: the second run resumes at the killed run's last epoch (it says
    so, and trains only the rest) and ends with the same history, accuracy and weights."""
    epochs, root = 30, Path(__file__).resolve().parents[1]
    straight = subprocess.run(_nas_train(tmp_path / "a", epochs), cwd=root, env=_env(), capture_output=True,
                              text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr

    out = tmp_path / "b"
    proc = subprocess.Popen(_nas_train(out, epochs), cwd=root, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if (out / "checkpoint.pt").exists() and torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] >= 2:
                break
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "nas train finished before it was killed"
    killed_at = torch.load(out / "checkpoint.pt", weights_only=True)["epoch"]
    assert 2 <= killed_at < epochs and not (out / "metrics.json").exists()

    again = subprocess.run(_nas_train(out, epochs), cwd=root, env=_env(), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines()[0] == f"resuming from epoch {killed_at} of {epochs}"
    assert f"epoch {killed_at}:" not in again.stderr and f"epoch {killed_at + 1}:" in again.stderr

    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert b["result"]["resumed_epoch"] == killed_at and a["result"]["resumed_epoch"] == 0
    assert len(b["history"]) == epochs
    assert _without_timing(b["history"]) == _without_timing(a["history"])
    for key in ("val_acc", "val_acc_se", "best_val_acc", "images_seen", "epochs"):
        assert b[key] == a[key], key
    assert json.loads(again.stdout)["val_acc"] == json.loads(straight.stdout)["val_acc"]
    sa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    sb = torch.load(out / "checkpoint.pt", weights_only=True)
    assert sa["model"].keys() == sb["model"].keys()
    for name, tensor in sa["model"].items():
        assert torch.equal(tensor, sb["model"][name]), name  # bit for bit
    for i, st in sa["optimizer"]["state"].items():
        assert all(torch.equal(v, sb["optimizer"]["state"][i][k]) for k, v in st.items() if torch.is_tensor(v))
    assert (sa["step"], sa["images_seen"]) == (sb["step"], sb["images_seen"])
