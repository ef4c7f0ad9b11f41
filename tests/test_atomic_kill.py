"""Outputs survive SIGKILL: a writer killed at any moment leaves every output whole (the old
file or the new one), and a temporary file it leaves is never taken for an output and is
removed by the next write of the same output (`nas.atomic`).

Oracles: each output is read back by the reader a user would use (``json.loads``,
``torch.load(weights_only=True)``, PIL's ``verify`` and a full decode, an XML parser for the
SVG, ``csv.reader`` with the header the table writer declares); the files whose content
does not change from one write to the next must equal, byte for byte, what an uninterrupted
write produced.

The writers are the project's own (`write_json_atomic` as ``nas train`` writes metrics.json,
`save_checkpoint` as the training loop saves, `save_figure` through the family plot,
`write_family` for the tables of ``scaling family --out``). They run in children forked
from one prepared process (imports take seconds, forking milliseconds), which are killed
after seeded random delays; the end-to-end test kills a real ``python -m nas train``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from PIL import Image

from nas.atomic import atomic_write, is_temporary, remove_leftovers, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
BASE = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l1-head_c32"
OUTPUTS = {"metrics.json", "checkpoint.pt", "family_accuracy.png", "family_accuracy.svg",
           "family.md", "family.csv", "family.json"}
HISTORY = 20000  # metrics.json of about 2.5 MB
KILLS = 20

# The prepared process: imports and builds everything once, then for each line on stdin
# forks a child that writes every output ("once": one round, then exits; "loop": rounds
# until killed), prints the child's pid, waits for it and prints its wait status.
WRITER = r"""
import os, sys, traceback
from pathlib import Path
import torch
torch.set_num_threads(1)
from nas.atomic import write_json_atomic
from nas.train.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from scaling.compound import compound
from scaling.family import plot_trained_family, write_family
from space import Arch, build_model, cost

out = Path(sys.argv[1])
base = Arch.from_string(sys.argv[2])
history = [{"epoch": i, "val_acc": i / 7, "train_loss": 1.0 / (i + 1), "lr": 0.1} for i in range(int(sys.argv[3]))]
members = [compound(base, phi, 1.2, 1.1, 1.15, num_classes=4) for phi in (0, 1, 2)]
rows = [{"name": f"phi{m.phi:g}", "phi": m.phi, "macs": cost(m.arch, num_classes=4).macs,
         "acc": 0.5 + 0.1 * m.phi, "acc_std": 0.01} for m in members]
model = build_model("efficientnet_b0_cifar", num_classes=10)  # 18 MB with its optimiser state
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
for p in model.parameters():
    p.grad = torch.ones_like(p)
opt.step()
state = {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": opt.state_dict()}

def one_round(i):
    write_json_atomic(out / "metrics.json", {"round": i, "history": history})
    save_checkpoint({**state, "epoch": i}, out / "checkpoint.pt")
    plot_trained_family(rows, out, title=f"round {i}")
    write_family(members, out)

print("ready", flush=True)
while True:
    command = sys.stdin.readline().strip()
    if not command:
        break
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            i = 0
            while True:
                i += 1
                one_round(i)
                if command == "once":
                    break
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["MPLBACKEND"] = "Agg"
    return env


def _check_outputs(folder: Path, same: dict[str, bytes], model_keys: set[str]) -> list[str]:
    """Assert every output in ``folder`` parses; return the temporary files there."""
    temporaries = []
    for p in sorted(folder.iterdir()):
        if p.name in OUTPUTS:
            data = p.read_bytes()
            if p.name in same:  # the same text every round: the whole of it, or the old whole
                assert data == same[p.name], f"{p.name} is not what a whole write gives"
            if p.suffix == ".json":
                doc = json.loads(data)
                if p.name == "metrics.json":
                    assert len(doc["history"]) == HISTORY and doc["round"] >= 1
            elif p.suffix == ".pt":
                state = torch.load(p, weights_only=True)
                assert set(state["model"]) == model_keys and state["epoch"] >= 1
            elif p.suffix == ".png":
                with Image.open(p) as im:
                    im.verify()
                with Image.open(p) as im:
                    im.load()  # decodes every row: a truncated file raises here
            elif p.suffix == ".svg":
                assert ET.fromstring(data).tag.endswith("svg")
            elif p.suffix == ".csv":
                rows = list(csv.reader(io.StringIO(data.decode())))
                assert rows[0][:3] == ["phi", "depth_multiplier", "width_multiplier"] and len(rows) == 4
        else:
            # Anything else is a temporary file of an output: a dot-file with its own name.
            assert is_temporary(p), f"unexpected file {p.name}"
            assert p.name.startswith(".") and p.name.endswith(".tmp")
            assert any(p.name.startswith(f".{o}.") for o in OUTPUTS), p.name
            temporaries.append(p.name)
    return temporaries


def test_writers_killed_at_random_moments_leave_every_output_whole(tmp_path):
    kill_writers(tmp_path / "out", WRITER)


def kill_writers(out: Path, writer: str, kills: int = KILLS, seed: int = 11) -> None:
    """Run ``writer`` (see `WRITER`) into ``out``, kill it ``kills`` times, check the outputs."""
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", writer, str(out), BASE, str(HISTORY)], cwd=ROOT, env=_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def fork(command: str) -> int:
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        return int(proc.stdout.readline())

    try:
        assert proc.stdout.readline().strip() == "ready"
        fork("once")
        assert int(proc.stdout.readline()) == 0, "the uninterrupted round failed"
        assert {p.name for p in out.iterdir()} == OUTPUTS
        same = {name: (out / name).read_bytes() for name in ("family.md", "family.csv", "family.json")}
        model_keys = set(torch.load(out / "checkpoint.pt", weights_only=True)["model"])

        rng = random.Random(seed)
        left = {}  # kill number -> temporary files it left
        for k in range(kills):
            pid = fork("loop")
            time.sleep(rng.uniform(0.0, 0.7))  # a round of writes takes about 0.8 s
            os.kill(pid, signal.SIGKILL)
            status = int(proc.stdout.readline())
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                f"kill {k}: the writer ended by itself (wait status {status})")
            temporaries = _check_outputs(out, same, model_keys)
            if temporaries:
                left[k] = temporaries
        # Some kills landed inside a write (most land in one, or in drawing the plot).
        assert left, "no kill landed inside a write"

        fork("once")  # an uninterrupted write removes what killed writers left
        assert int(proc.stdout.readline()) == 0
        assert _check_outputs(out, same, model_keys) == []
        assert {p.name for p in out.iterdir()} == OUTPUTS
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the temporary files ----------------------------------------------------------------


def _dead_writer_leftover(target: Path) -> Path:
    """A temporary file of ``target`` whose writer was SIGKILLed mid-write."""
    code = ("import os, sys, time\nfrom nas.atomic import atomic_write\n"
            "with atomic_write(sys.argv[1], 'w') as f:\n"
            "    f.write('{\"half\": '); f.flush(); print('writing', flush=True); time.sleep(60)\n")
    before = set(target.parent.iterdir())
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait()
    (tmp,) = set(target.parent.iterdir()) - before
    return tmp


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write_and_only_it(tmp_path):
    target = tmp_path / "baseline.json"
    write_json_atomic(target, {"v": 1})
    dead = _dead_writer_leftover(target)
    assert is_temporary(dead) and not is_temporary(target)
    assert json.loads(target.read_text()) == {"v": 1}  # the kill left the old file whole

    # Another output's leftover and a file that only looks alike stay.
    other = tmp_path / ".baseline.json.x.abcdefgh.tmp"  # a leftover of "baseline.json.x"
    other.write_text("")
    user = tmp_path / ".baseline.json.notes.tmp"
    user.write_text("")

    # A live writer of the same target, mid-write in this process, keeps its file.
    with atomic_write(target, "w") as live:
        live.write('{"v": 2}')
        live.flush()
        assert remove_leftovers(target) == [dead]
        assert not dead.exists()
        assert len([p for p in tmp_path.iterdir() if p.name.startswith(".baseline.json.") and
                    is_temporary(p) and p != other]) == 1  # the live one
    assert json.loads(target.read_text()) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["baseline.json", other.name, user.name])

    # The next write after a kill removes it by itself.
    dead = _dead_writer_leftover(target)
    write_json_atomic(target, {"v": 3})
    assert not dead.exists() and json.loads(target.read_text()) == {"v": 3}


def test_permissions_and_a_failed_write(tmp_path):
    target = tmp_path / "t.csv"
    with atomic_write(target, "w") as f:
        f.write("a,b\n")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(RuntimeError), atomic_write(target, "w") as f:
        f.write("half")
        raise RuntimeError
    assert target.read_text() == "a,b\n" and [p.name for p in tmp_path.iterdir()] == ["t.csv"]


# --- end to end: a real `nas train` ------------------------------------------------------

TRAIN_ARCH = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l2-head_c32"


@pytest.mark.slow
def test_nas_train_killed_repeatedly_leaves_outputs_that_parse_and_finishes(tmp_path):
    """``python -m nas train`` SIGKILLed at random moments after its first checkpoint, five
    times; after each kill the files in --out parse; the sixth run finishes the budget."""
    out = tmp_path / "run"
    epochs = 40
    cmd = [sys.executable, "-m", "nas", "train", "--arch", TRAIN_ARCH, "--dataset", "synthetic:400:4:16",
           "--val-size", "80", "--epochs", str(epochs), "--threads", "1", "--out", str(out), "--quiet"]
    rng = random.Random(5)
    epochs_at_kill = []
    for _ in range(5):
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))
        proc.kill()
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL, "nas train finished before it was killed: raise --epochs"
        for p in out.iterdir():
            if p.name == "checkpoint.pt":
                state = torch.load(p, weights_only=True)
                assert 1 <= state["epoch"] <= epochs and len(state["history"]) == state["epoch"]
            elif p.suffix == ".json":
                json.loads(p.read_text())
            else:
                assert is_temporary(p), p.name
        epochs_at_kill.append(torch.load(out / "checkpoint.pt", weights_only=True)["epoch"])
        assert (out / "arch.json").exists()  # written with the first checkpoint
    assert epochs_at_kill == sorted(epochs_at_kill)  # every run went on from the last
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == epochs and len(metrics["history"]) == epochs
    assert metrics["result"]["resumed_epoch"] == epochs_at_kill[-1]
    assert json.loads((out / "arch.json").read_text())["num_classes"] == 4
    assert sorted(p.name for p in out.iterdir()) == ["arch.json", "checkpoint.pt", "metrics.json"]
