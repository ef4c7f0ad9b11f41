"""nas search / nas best: the study around the trainer (tiny networks on synthetic data).

Oracles are independent of the code under test where it matters: rewards recomputed from
the paper's formulas on the stored numbers, parameter counts from the built PyTorch model,
the smallest reachable MACs by brute force over the space, trial counts from the storage.
"""

import argparse
import csv
import itertools
import json
import math
import warnings

import optuna
import pytest
from optuna.trial import TrialState

import nas.train
from nas.search.cli import add_parsers
from nas.search.early_stop import EPOCH_ACC_ATTR
from nas.search.results import pick_knee
from nas.search.runner import run_search
from nas.search.settings import SearchSettings
from space.command_line import make_main
from space.errors import UserError

BASE = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l1-head_c32"
SPACE_YAML = f"""\
name: tiny
base: {BASE}
defaults:
  kernel: [3, 5]
  expand: [1, 2]
  width: [0.5, 1.0]
"""
DATA = "synthetic:240:4:16"
COMMON = dict(dataset=DATA, epochs=2, subset=160, val_size=40, num_threads=1)


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE_YAML)
    return path


def settings(space_file, tmp_path, **kw):
    return SearchSettings(space=str(space_file), out=str(tmp_path / "out"), **{**COMMON, **kw})


def load(tmp_path, name):
    url = f"sqlite:///{tmp_path / 'out' / 'runs' / name / 'study.db'}"
    return optuna.load_study(study_name=name, storage=url)


def spy_train(monkeypatch):
    calls = []
    real = nas.train.train

    def spy(arch, *args, **kwargs):
        calls.append(arch.to_string())
        return real(arch, *args, **kwargs)

    monkeypatch.setattr(nas.train, "train", spy)
    return calls


def test_reward_mode_mnas_soft_completes_and_writes_outputs(space_file, tmp_path):
    summary = run_search(settings(space_file, tmp_path, trials=4, target=("macs", "150k")), progress=False)
    study = load(tmp_path, "tiny-reward")
    trials = study.get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 4
    for t in trials:
        assert t.user_attrs["arch"] and t.user_attrs["macs"] > 0
        if t.state == TrialState.COMPLETE:
            a = t.user_attrs
            # EfficientNet's soft reward, ACC * (MACs / T) ** -0.07, from the stored numbers.
            assert t.value == pytest.approx(a["val_acc"] * (a["macs"] / 150e3) ** -0.07)
            assert a["reward"] == pytest.approx(t.value)
            assert len(a[EPOCH_ACC_ATTR]) == 2 and a[EPOCH_ACC_ATTR][-1] == a["val_acc"]
            assert a["recipe"] == "proxy" and a["seed"] == 0 and a["epochs"] == 2
    run = tmp_path / "out" / "runs" / "tiny-reward"
    baseline = json.loads((run / "baseline.json").read_text())
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert baseline["trial"] == best.number and baseline["arch"] == best.user_attrs["arch"]
    assert summary.best["number"] == best.number
    rows = list(csv.DictReader((run / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == sorted(t.number for t in trials)
    assert {"number", "state", "arch", "reward", "macs", "params", "epochs", "seconds", "reason"} <= set(rows[0])
    assert "trial 0" in (run / "search.log").read_text()
    # baseline.json is an architecture file the other commands read.
    from space.presets import resolve_arch

    assert resolve_arch(str(run / "baseline.json")).to_string() == best.user_attrs["arch"]
