"""nas search / nas best: the study around the trainer (tiny networks on synthetic data).

Oracles are independent of the code under test where it matters: rewards recomputed from
the paper's formulas on the stored numbers, parameter counts from the built PyTorch model,
the smallest reachable MACs by brute force over the space, trial counts from the storage.
"""

import argparse
import csv
import itertools
import json

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

from conftest import TINY_SPACE_BASE as BASE, spy_train  # noqa: E402
DATA = "synthetic:240:4:16"
COMMON = dict(dataset=DATA, epochs=2, subset=160, val_size=40, num_threads=1)


def settings(space_file, tmp_path, **kw):
    return SearchSettings(space=str(space_file), out=str(tmp_path / "out"), **{**COMMON, **kw})


def load(tmp_path, name):
    url = f"sqlite:///{tmp_path / 'out' / 'runs' / name / 'study.db'}"
    return optuna.load_study(study_name=name, storage=url)


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


def test_reward_mode_mnas_hard_completes_with_the_hard_reward(space_file, tmp_path):
    # Each candidate is checked against the branch of the rule its MACs fall in.
    run_search(settings(space_file, tmp_path, trials=4, target=("macs", "150k"), hard=True, early_stop="none"),
               progress=False)
    done = [t for t in load(tmp_path, "tiny-reward").get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) == 4
    for t in done:
        a = t.user_attrs
        # MnasNet's hard constraint: the accuracy itself at or under T, ACC * (T / MACs) over it.
        expected = a["val_acc"] if a["macs"] <= 150e3 else a["val_acc"] * 150e3 / a["macs"]
        assert t.value == pytest.approx(expected)


def test_reward_mode_v2_reward_from_measured_step_time_and_params(space_file, tmp_path):
    from space import Arch, build_model

    run_search(settings(space_file, tmp_path, trials=2, reward="v2", early_stop="none"), progress=False)
    study = load(tmp_path, "tiny-reward")
    ref = study.user_attrs["search"]["reward"]
    assert ref["reward"] == "v2"
    # The reference is the space's base architecture: its parameters, counted on the model.
    model = build_model(Arch.from_string(BASE), num_classes=4)
    assert ref["ref_params"] == sum(p.numel() for p in model.parameters())
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) == 2
    for t in done:
        a = t.user_attrs
        assert a["step_time"] > 0
        expected = a["val_acc"] * (a["step_time"] / ref["ref_step_time"]) ** -0.07 * (a["params"] / ref["ref_params"]) ** -0.05
        assert t.value == pytest.approx(expected)


def test_pareto_mode_values_front_and_hypervolume(space_file, tmp_path):
    from space import Arch, build_model

    summary = run_search(settings(space_file, tmp_path, trials=4, mode="pareto", objectives=("acc", "params"),
                                  early_stop="none"), progress=False)
    study = load(tmp_path, "tiny-pareto")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert len(done) >= 1
    for t in done:
        model = build_model(Arch.from_string(t.user_attrs["arch"]), num_classes=4)
        assert t.values == [t.user_attrs["val_acc"], sum(p.numel() for p in model.parameters())]
    # Front and hypervolume by hand: (acc, params), reference (0, the space's largest params,
    # by brute force over its architectures).
    from space.search import SearchSpace

    space = SearchSpace.load(space_file)
    pts = [tuple(t.values) for t in done]
    front = {p for p in pts if not any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in pts)}
    assert {(r["acc"], r["params"]) for r in summary.front} == front
    ref_cost = max(sum(p.numel() for p in build_model(space.decode(dict(zip(space.dimensions(), combo))),
                                                      num_classes=4).parameters())
                   for combo in itertools.product(*space.dimensions().values()))
    hv, best_cost = 0.0, ref_cost
    for acc, c in sorted(front, key=lambda p: -p[0]):  # most accurate first: each adds a strip
        hv += acc * (best_cost - c) if c < best_cost else 0.0
        best_cost = min(best_cost, c)
    assert summary.reference == (0.0, ref_cost)
    assert summary.hypervolume == pytest.approx(hv)
    doc = json.loads((tmp_path / "out" / "runs" / "tiny-pareto" / "baseline.json").read_text())
    assert (doc["objectives"]["acc"], doc["objectives"]["params"]) in front


def test_resume_adds_only_missing_trials(space_file, tmp_path, monkeypatch):
    calls = spy_train(monkeypatch)
    run_search(settings(space_file, tmp_path, trials=2, early_stop="none"), progress=False)
    first = len(calls)
    run_search(settings(space_file, tmp_path, trials=2, early_stop="none"), progress=False)
    assert len(calls) == first  # nothing missing, nothing trained
    run_search(settings(space_file, tmp_path, trials=4, early_stop="none"), progress=False)
    trials = load(tmp_path, "tiny-reward").get_trials()
    numbers = [t.number for t in trials]
    assert len(trials) == 4 and sorted(numbers) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    trained = [t for t in trials if "duplicate_of" not in t.user_attrs]
    assert len(calls) == len(trained)
    # Other settings on the same study are refused, naming the flag.
    with pytest.raises(UserError, match="--epochs 3 here, 2 there"):
        run_search(settings(space_file, tmp_path, trials=4, early_stop="none", epochs=3), progress=False)


def test_failed_and_over_budget_candidates_leave_the_study_going(space_file, tmp_path, monkeypatch):
    from nas.train import Diverged
    from space.cost import cost
    from space.search import SearchSpace

    space = SearchSpace.load(space_file)
    all_macs = sorted({cost(space.decode(dict(zip(space.dimensions(), combo))), num_classes=4).macs
                       for combo in itertools.product(*space.dimensions().values())})
    limit = all_macs[len(all_macs) // 2]  # about half the space is over it
    real = nas.train.train
    state = {"calls": 0}

    def first_diverges(arch, *args, **kwargs):
        state["calls"] += 1
        if state["calls"] == 1:
            raise Diverged("training diverged: non-finite loss (nan) at epoch 1 (test)")
        return real(arch, *args, **kwargs)

    monkeypatch.setattr(nas.train, "train", first_diverges)
    summary = run_search(settings(space_file, tmp_path, trials=8, max_macs=limit, early_stop="none"), progress=False)
    trials = load(tmp_path, "tiny-reward").get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and "diverged" in failed[0].user_attrs["error"]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 8  # the failure did not count
    over = [t for t in trials if t.user_attrs.get("macs", 0) > limit]
    assert over, "the sampler proposed nothing over the budget; the test needs one"
    for t in over:
        assert t.state == TrialState.COMPLETE and "infeasible" in t.user_attrs
        assert EPOCH_ACC_ATTR not in t.user_attrs and "val_acc" not in t.user_attrs  # never trained
        assert t.constraints["max_macs"] == pytest.approx(t.user_attrs["macs"] / limit - 1) and t.constraints["max_macs"] > 0
        assert t.value == 0.0
    for t in trials:
        if t.state == TrialState.COMPLETE and t.user_attrs["macs"] <= limit:
            assert t.constraints["max_macs"] <= 0
    assert summary.counts["infeasible"] == len(over) and summary.counts["FAIL"] == 1
    assert summary.baseline["macs"] <= limit


def test_every_candidate_diverging_stops_with_a_warning(space_file, tmp_path):
    with pytest.warns(UserWarning, match="2 trials failed"):
        summary = run_search(settings(space_file, tmp_path, trials=3, max_failures=2, early_stop="none",
                                      train_overrides={"lr": 1e6}), progress=False)
    trials = load(tmp_path, "tiny-reward").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("diverged" in t.user_attrs["error"] for t in trials)
    assert summary.baseline is None


def test_duplicate_architecture_is_not_retrained(tmp_path, monkeypatch):
    # Widths 0.99 and 1.0 both round 16 and 24 channels to themselves: two parameter sets,
    # one architecture per kernel choice.
    path = tmp_path / "dup.yaml"
    path.write_text(f"name: dup\nbase: {BASE}\ndefaults:\n  width: [0.99, 1.0]\nstages:\n  1: {{kernel: [3, 5]}}\n")
    calls = spy_train(monkeypatch)
    run_search(settings(path, tmp_path, trials=6, early_stop="none", sampler="random"), progress=False)
    trials = sorted(load(tmp_path, "dup-reward").get_trials(), key=lambda t: t.number)
    assert len(trials) == 6
    first_of = {}
    for t in trials:
        arch = t.user_attrs["arch"]
        if arch in first_of:
            assert t.user_attrs["duplicate_of"] == first_of[arch].number
            assert t.value == first_of[arch].value and EPOCH_ACC_ATTR not in t.user_attrs
        else:
            first_of[arch] = t
            assert "duplicate_of" not in t.user_attrs
    assert sorted(calls) == sorted(first_of)  # one training per distinct architecture
    assert len(first_of) <= 2 and sum("duplicate_of" in t.user_attrs for t in trials) >= 4


def test_mo_asha_prunes_a_dominated_trial_and_keeps_its_accuracy(space_file, tmp_path):
    s = settings(space_file, tmp_path, trials=1, mode="pareto", early_stop="asha", min_epochs=1, eta=2)
    run_search(s, progress=False)
    study = load(tmp_path, "tiny-pareto")
    # Hand-built competitors that dominate anything at the first rung: near-perfect accuracy
    # at one epoch with almost no MACs.
    for i in range(4):
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, values=[0.99, 10.0 + i],
            distributions=study.trials[0].distributions, params=study.trials[0].params,
            user_attrs={"arch": f"hand-{i}", "macs": 10.0 + i, EPOCH_ACC_ATTR: [0.99, 0.99]}))
    run_search(SearchSettings(**{**s.__dict__, "trials": 7}), progress=False)
    new = [t for t in load(tmp_path, "tiny-pareto").get_trials() if t.number > 4]
    pruned = [t for t in new if t.state == TrialState.PRUNED]
    assert pruned, [t.state for t in new]
    for t in pruned:
        if "duplicate_of" in t.user_attrs:
            continue
        assert t.user_attrs["pruned_at"] == 1
        assert len(t.user_attrs[EPOCH_ACC_ATTR]) == 1 and 0 <= t.user_attrs[EPOCH_ACC_ATTR][0] <= 1


def test_nas_search_and_nas_best_json_prints_baseline_json(space_file, tmp_path, capsys):
    def build():
        parser = argparse.ArgumentParser(prog="nas")
        add_parsers(parser.add_subparsers(dest="command", required=True))
        return parser

    main = make_main(build)
    out = str(tmp_path / "out")
    assert main(["search", "--space", str(space_file), "--dataset", DATA, "--subset", "160", "--val-size", "40",
                 "--threads", "1", "--trials", "2", "--early-stop", "none", "--out", out, "--quiet"]) == 0
    assert "baseline: trial" in capsys.readouterr().out
    assert main(["search", "--space", str(space_file), "--dataset", DATA, "--max-macs", "400m", "--out", out]) == 2
    assert "error: --max-macs" in capsys.readouterr().err
    assert main(["best", "--study", "tiny-reward", "--out", str(tmp_path / "out"), "--json"]) == 0
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "out" / "runs" / "tiny-reward" / "baseline.json").read_text()
    assert json.loads(printed)["mode"] == "reward"
    assert main(["best", "--study", "nope", "--out", str(tmp_path / "out")]) == 2
    assert "no study database" in capsys.readouterr().err


def test_budget_below_every_architecture_is_refused_naming_the_smallest(space_file, tmp_path):
    from nas.search.objectives import format_quantity
    from space.cost import cost
    from space.search import SearchSpace

    space = SearchSpace.load(space_file)
    least = min(cost(space.decode(dict(zip(space.dimensions(), combo))), num_classes=4).macs
                for combo in itertools.product(*space.dimensions().values()))
    with pytest.raises(UserError, match=f"smallest reachable is {format_quantity(least, 'macs')}"):
        run_search(settings(space_file, tmp_path, trials=2, max_macs=least - 1), progress=False)
    assert not (tmp_path / "out" / "runs").exists()  # refused before anything was written


def test_smallest_and_largest_reachable_match_brute_force_with_block_choices(tmp_path):
    from nas.search.budgets import largest_reachable, smallest_reachable
    from space.cost import cost
    from space.search import SearchSpace

    # Block kind is the one field whose cost is not monotone: fused beats MBConv at expansion
    # 1 on a small input, loses at larger expansions.
    space = SearchSpace.from_dict({"base": BASE, "defaults": {"block": ["mbconv", "fused_mbconv"],
                                                              "expand": [1, 3], "kernel": [3, 5],
                                                              "width": [0.5, 1.5], "layers": [0, 1]}})
    for kind in ("macs", "params"):
        every = [getattr(cost(space.decode(dict(zip(space.dimensions(), combo))), num_classes=10), kind)
                 for combo in itertools.product(*space.dimensions().values())]
        value, arch = smallest_reachable(space, kind, 10)
        assert value == min(every) and getattr(cost(arch, num_classes=10), kind) == min(every)
        value, arch = largest_reachable(space, kind, 10)
        assert value == max(every) and getattr(cost(arch, num_classes=10), kind) == max(every)


def test_enqueue_seeds_the_study_and_refuses_what_the_space_cannot_express(space_file, tmp_path):
    from space.search import SearchSpace

    with pytest.raises(UserError, match="--enqueue efficientnet_b0_cifar is not in search space tiny"):
        run_search(settings(space_file, tmp_path, trials=1, enqueue=("efficientnet_b0_cifar",)), progress=False)
    run_search(settings(space_file, tmp_path, trials=1, enqueue=(BASE,), early_stop="none"), progress=False)
    t = load(tmp_path, "tiny-reward").get_trials()[0]
    assert t.user_attrs["enqueued"] == BASE
    assert SearchSpace.load(space_file).decode(t.params).to_string() == t.user_attrs["arch"]
    from space import Arch

    assert Arch.from_string(t.user_attrs["arch"]) == Arch.from_string(BASE)


@pytest.mark.parametrize("points, expected", [
    # (acc, MACs): the middle point bulges toward the ideal corner.
    ([(0.50, 1.0), (0.80, 2.0), (0.85, 10.0)], 1),
    ([(0.50, 1.0), (0.60, 5.0), (0.85, 10.0)], 2),  # on the far side: the most accurate
    ([(0.7, 3.0)], 0),
    ([(0.5, 1.0), (0.6, 2.0), (0.8, 3.0), (0.81, 9.0)], 2),
])
def test_pick_knee(points, expected):
    assert pick_knee(points, ["maximize", "minimize"]) == expected


def test_bad_settings_name_the_flag(space_file, tmp_path):
    for kw, flag in ((dict(trials=0), "--trials"), (dict(mode="pareto", objectives=("macs", "params")), "--objectives"),
                     (dict(max_macs="400m"), "--max-macs"), (dict(sampler="cmaes"), "--sampler"),
                     (dict(mode="pareto", early_stop="median"), "--early-stop"),
                     (dict(reward="v2", target=("macs", "1M")), "--target-macs"), (dict(study="a/b"), "--study")):
        with pytest.raises(UserError, match=flag.replace("-", r"\-")):
            run_search(settings(space_file, tmp_path, **kw), progress=False)


def test_two_workers_finish_the_count_without_lost_or_duplicated_trials(space_file, tmp_path):
    summary = run_search(settings(space_file, tmp_path, trials=5, workers=2, epochs=1, early_stop="none"),
                         progress=False)
    trials = load(tmp_path, "tiny-reward").get_trials()
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == 5 and summary.counts["counted"] == 5
    assert len({t.number for t in trials}) == len(trials)
    # Anything else is a worker that lost the race for the last trial: never trained.
    for t in trials:
        if t not in counted:
            assert t.state == TrialState.FAIL and t.user_attrs.get("surplus") and "arch" not in t.user_attrs
    log = (tmp_path / "out" / "runs" / "tiny-reward" / "search.log").read_text()
    assert sum(" COMPLETE " in line for line in log.splitlines()) == 5


def test_a_proxy_too_short_to_rank_anything_warns(space_file, tmp_path):
    """1 epoch of a 160-image subset in batches of 32 (the adaptive batch's smallest) is 5
    steps: far below the few hundred the proxy recipe needs."""
    with pytest.warns(UserWarning, match=r"each candidate trains only 5 steps \(1 epoch of 160 images in batches of 32\)"):
        run_search(settings(space_file, tmp_path, trials=1, epochs=1, early_stop="none"), progress=False)
