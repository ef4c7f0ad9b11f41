"""`scaling grid` without --dry-run (scaling/grid.py): every grid point's phi = 1 member trained
as a resumable study through nas's search runner, the best point's coefficients written.

Oracles: the grid is recomputed here from its definition (products of the step values), the
members from `compound`; the reward is recomputed from each trial's stored val_acc and MACs
with EfficientNet's formula written out, T = 2 x the base's MACs counted by `space.cost` at the
synthetic dataset's 4 classes; trial counts come from the storage; the PNG is checked by its
signature and header."""

import itertools
import json
import struct

import optuna
import pytest
from optuna.trial import TrialState

from scaling import compound
from scaling.cli import main as scaling_main
from space import Arch
from space.cost import cost

BASE = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l1-head_c32"
DATA = "synthetic:240:4:16"
# Values 1.0, 1.2, 1.4; |a * b^2 * g^2 - 2| <= 0.05 keeps four points.
GRID = ["--step", "0.2", "--max-coefficient", "1.4", "--tolerance", "0.05"]
TRAIN = ["--dataset", DATA, "--epochs", "1", "--subset", "160", "--val-size", "40", "--threads", "1", "--quiet"]
STUDY = "tiny-grid"


def argv(tmp_path, *extra, grid=GRID):
    return ["grid", "--arch", BASE, *grid, *TRAIN, "--study", STUDY, "--out", str(tmp_path / "out"), *extra]


def expected_points():
    values = [1.0, 1.2, 1.4]
    return [(a, b, g) for a, b, g in itertools.product(values, repeat=3) if abs(a * b * b * g * g - 2) <= 0.05]


def load_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'out' / 'runs' / STUDY / 'study.db'}"
    return optuna.load_study(study_name=STUDY, storage=url)


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("grid")
    code = scaling_main(argv(tmp_path, "--json"))
    return tmp_path, code


def test_every_point_is_trained_once_and_the_best_reward_wins(grid_run, capsys):
    tmp_path, code = grid_run
    assert code == 0
    points = expected_points()
    assert len(points) == 4
    labels = {f"a{a:.2f}_b{b:.2f}_g{g:.2f}": (a, b, g) for a, b, g in points}
    study = load_study(tmp_path)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.params["candidate"] for t in trials) == sorted(labels)
    base = Arch.from_string(BASE)
    for t in trials:
        member = compound(base, 1, *labels[t.params["candidate"]], tolerance=None).arch
        assert t.user_attrs["arch"] == member.to_string()
    # EfficientNet's reward, ACC * (MACs / T) ** -0.07, T = twice the base's MACs at 4 classes.
    target = 2 * cost(base, num_classes=4).macs
    rewards = {t.params["candidate"]: t.user_attrs["val_acc"] * (t.user_attrs["macs"] / target) ** -0.07
               for t in trials}
    best = max(rewards.values())
    winners = [label for label in sorted(labels, key=lambda k: labels[k]) if rewards[label] == pytest.approx(best)]
    run = tmp_path / "out" / "runs" / STUDY
    chosen = json.loads((run / "coefficients.json").read_text())
    assert chosen["label"] == winners[0]
    assert (chosen["alpha"], chosen["beta"], chosen["gamma"]) == labels[winners[0]]
    winner = next(t for t in trials if t.params["candidate"] == winners[0])
    assert chosen["trial"] == winner.number and chosen["study"] == STUDY
    assert chosen["accuracy"] == winner.user_attrs["val_acc"] and chosen["macs"] == winner.user_attrs["macs"]
    assert chosen["macs_ratio"] == pytest.approx(winner.user_attrs["macs"] / cost(base, num_classes=4).macs)
    assert chosen["reward"] == pytest.approx(best)
    # The space file the study ran on, and nas search's own outputs.
    for name in ("grid_space.yaml", "study.db", "search.log", "trials.csv", "summary.txt", "baseline.json"):
        assert (run / name).is_file(), name


def test_json_output_has_the_choice_and_a_row_per_point(tmp_path, capsys):
    code = scaling_main(argv(tmp_path, "--json"))
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"alpha", "beta", "gamma", "accuracy", "macs", "macs_ratio", "trial", "study"} <= set(doc)
    assert len(doc["points"]) == 4
    assert {(p["alpha"], p["beta"], p["gamma"]) for p in doc["points"]} == set(expected_points())
    assert all(p["val_acc"] is not None and p["trial"] is not None for p in doc["points"])
    on_disk = json.loads((tmp_path / "out" / "runs" / STUDY / "coefficients.json").read_text())
    assert {k: doc[k] for k in on_disk} == on_disk


def test_the_plot_is_a_real_png_and_svg(grid_run):
    tmp_path, _ = grid_run
    run = tmp_path / "out" / "runs" / STUDY
    data = (run / "grid_accuracy.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 300 and height > 200 and len(data) > 10_000
    assert (run / "grid_accuracy.svg").read_text().lstrip().startswith("<?xml")


def test_rerunning_the_same_command_resumes_without_training(grid_run, capsys, monkeypatch):
    import nas.train

    tmp_path, _ = grid_run
    calls = []
    monkeypatch.setattr(nas.train, "train", lambda *a, **k: calls.append(a) or pytest.fail("trained again"))
    before = json.loads((tmp_path / "out" / "runs" / STUDY / "coefficients.json").read_text())
    capsys.readouterr()
    assert scaling_main(argv(tmp_path)) == 0
    out = capsys.readouterr().out
    assert len(load_study(tmp_path).get_trials()) == 4 and not calls
    assert f"chose alpha {before['alpha']:g}, beta {before['beta']:g}, gamma {before['gamma']:g}" in out
    assert "T = 2 x the base's MACs" in out


def test_a_different_grid_under_the_same_study_is_refused(grid_run, capsys):
    tmp_path, _ = grid_run
    space_file = tmp_path / "out" / "runs" / STUDY / "grid_space.yaml"
    text = space_file.read_text()
    capsys.readouterr()
    code = scaling_main(argv(tmp_path, grid=["--step", "0.2", "--max-coefficient", "1.4", "--tolerance", "0.1"]))
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "another grid" in err
    assert space_file.read_text() == text and len(load_study(tmp_path).get_trials()) == 4


@pytest.mark.parametrize("extra, needle", [
    ([], "--dataset"),
    (["--dataset", DATA, "--epochs", "x"], "--epochs"),
    (["--dataset", DATA, "--epochs", "0"], "--epochs"),
    (["--dataset", DATA, "--study", "a/b"], "--study"),
    (["--dataset", DATA, "--tolerance", "0.001", "--step", "0.3", "--max-coefficient", "1.3"], "no grid point"),
    (["--dataset", "no_such_dataset"], "no_such_dataset"),
])
def test_bad_input_is_one_sentence_and_exit_2(tmp_path, capsys, extra, needle):
    code = scaling_main(["grid", "--arch", BASE, "--out", str(tmp_path / "out"), *extra])
    out, err = capsys.readouterr()
    assert code == 2 and out == "", err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    # Nothing was left behind.
    assert not (tmp_path / "out").exists()


def test_quick_budget_help_matches_the_search_budget():
    from nas.search.settings import BUDGETS
    from scaling.cli import _QUICK

    assert _QUICK == {k: BUDGETS["quick"][k] for k in ("epochs", "subset")}
