"""nas pick: choosing a study's baseline by a budget, the knee or a trial, and keeping it.

The studies are built by hand (no training), so the expected choices are known in advance:
the front, the members under each budget and the knee are worked out below from the
numbers alone (the knee by the geometry of the normalised front, written out here rather
than through `pick_knee`).
"""

import argparse
import json
import math

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from nas.search.cli import add_parsers
from nas.search.study import STUDY_ATTR
from space.command_line import make_main

ARCH = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c{c}_l1_se0.25-head_c32"

# (acc, MACs): 0, 1, 2 and 4 are the front; 3 is dominated by 1 (less accurate, costlier).
PARETO = {0: (0.60, 10e6), 1: (0.70, 15e6), 2: (0.72, 30e6), 3: (0.65, 20e6), 4: (0.80, 60e6)}


def main_of():
    def build():
        parser = argparse.ArgumentParser(prog="nas")
        add_parsers(parser.add_subparsers(dest="command", required=True))
        return parser

    return make_main(build)


def url_for(out, name):
    path = out / "runs" / name / "study.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def trial(number, values, *, state=TrialState.COMPLETE, **attrs):
    user_attrs = {"arch": ARCH.format(c=8 + 2 * number), "params": 1000 + number, "epoch_acc": [0.5, 0.6],
                  **attrs}
    return create_trial(state=state, values=values if state == TrialState.COMPLETE else None,
                        params={"x": number}, distributions={"x": IntDistribution(0, 1000)},
                        user_attrs=user_attrs)


def pareto_study(out, name="hand-pareto"):
    study = optuna.create_study(storage=url_for(out, name), study_name=name, directions=["maximize", "minimize"])
    study.set_user_attr(STUDY_ATTR, {"mode": "pareto", "objectives": ["acc", "macs"],
                                     "directions": ["maximize", "minimize"], "epochs": 2, "budgets": {},
                                     "hv_reference": {"macs": 100e6}, "target": None, "num_classes": 4})
    for n, (acc, macs) in PARETO.items():
        study.add_trial(trial(n, [acc, macs], val_acc=acc, macs=macs))
    # 5: infeasible (worst-case values, never trained); 6: pruned; 7: a duplicate of 1.
    study.add_trial(trial(5, [0.0, 5e6], macs=5e6, infeasible="over --max-params", epoch_acc=[]))
    study.add_trial(trial(6, None, state=TrialState.PRUNED, macs=12e6, pruned_at=1))
    study.add_trial(trial(7, [0.70, 15e6], val_acc=0.70, macs=15e6, duplicate_of=1, epoch_acc=[]))
    return study


def baseline(out, name="hand-pareto"):
    return json.loads((out / "runs" / name / "baseline.json").read_text())


def expected_under(budget):
    """The most accurate front member at or under ``budget`` MACs, by brute force."""
    front = [n for n, (a, c) in PARETO.items()
             if not any(a2 >= a and c2 <= c and (a2, c2) != (a, c) for a2, c2 in PARETO.values())]
    under = [n for n in front if PARETO[n][1] <= budget]
    return max(under, key=lambda n: (PARETO[n][0], -n)) if under else None


def expected_knee():
    """The front member farthest from the line joining the front's extremes (normalised,
    accuracy turned into a cost), on the side of the ideal corner."""
    front = [0, 1, 2, 4]
    accs = [PARETO[n][0] for n in front]
    costs = [PARETO[n][1] for n in front]
    x = [(max(accs) - a) / (max(accs) - min(accs)) for a in accs]  # 0 = most accurate
    y = [(c - min(costs)) / (max(costs) - min(costs)) for c in costs]  # 0 = cheapest
    # Extremes (0, 1) (most accurate) and (1, 0) (cheapest): the line x + y = 1; the ideal
    # corner (0, 0) lies on the side where 1 - x - y > 0.
    dist = [(1 - xi - yi) / math.sqrt(2) for xi, yi in zip(x, y)]
    return front[max(range(len(front)), key=lambda i: dist[i])]


@pytest.mark.parametrize("budget, text", [("20M", 20e6), ("40M", 40e6), ("100M", 100e6), ("15M", 15e6)])
def test_budget_picks_the_most_accurate_front_member_under_it(tmp_path, capsys, budget, text):
    out = tmp_path / "out"
    pareto_study(out)
    expected = expected_under(text)
    assert main_of()(["pick", "--study", "hand-pareto", "--out", str(out), "--max-macs", budget]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"picked trial {expected} (acc {PARETO[expected][0]:.4g}, ")
    assert f"--max-macs {budget}" in printed[0] and "most accurate front member" in printed[0]
    doc = baseline(out)
    assert doc["trial"] == expected and doc["arch"] == ARCH.format(c=8 + 2 * expected)
    assert doc["objectives"] == {"acc": PARETO[expected][0], "macs": PARETO[expected][1]}


def test_knee_and_trial_and_nas_best_shows_the_stored_choice(tmp_path, capsys):
    out = tmp_path / "out"
    study = pareto_study(out)
    main = main_of()
    knee = expected_knee()
    assert knee == 1  # worked by hand: distances 0.4/sqrt(2) (trial 1) and 0.2/sqrt(2) (trial 2)
    assert main(["pick", "--study", "hand-pareto", "--out", str(out), "--knee"]) == 0
    assert capsys.readouterr().out.startswith(f"picked trial {knee} ")
    assert baseline(out)["trial"] == knee

    assert main(["pick", "--study", "hand-pareto", "--out", str(out), "--trial", "3"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("picked trial 3 ") and "not on the front" in line
    assert baseline(out)["trial"] == 3

    assert main(["pick", "--study", "hand-pareto", "--out", str(out), "--max-macs", "40M"]) == 0
    capsys.readouterr()
    # nas best rewrites baseline.json from the study alone and shows the same choice.
    (out / "runs" / "hand-pareto" / "baseline.json").unlink()
    assert main(["best", "--study", "hand-pareto", "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["trial"] == 2 and "nas pick --max-macs 40M" in doc["rule"]
    assert main(["best", "--study", "hand-pareto", "--out", str(out)]) == 0
    assert "baseline: trial 2, the most accurate front member at or under 40M MACs" in capsys.readouterr().out

    # The rule, not the trial, is kept: a new member under the budget that beats trial 2 wins.
    study.add_trial(trial(8, [0.75, 25e6], val_acc=0.75, macs=25e6))
    assert main(["best", "--study", "hand-pareto", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trial"] == 8

    # --reset: the search's own rule (no target, no budget: the knee) applies again.
    assert main(["pick", "--study", "hand-pareto", "--out", str(out), "--reset"]) == 0
    assert capsys.readouterr().out.startswith("reset to the search's rule: trial ")
    doc = baseline(out)
    assert "nas pick" not in doc["rule"] and doc["rule"].startswith("the knee")


@pytest.mark.parametrize("flags, words", [
    (["--max-macs", "5M"], ["--max-macs 5M: no front member is at or under 5M MACs",
                            "the cheapest front member is trial 0 at 10M MACs"]),
    (["--trial", "5"], ["--trial 5 is infeasible", "over --max-params"]),
    (["--trial", "6"], ["--trial 6 was pruned at epoch 1"]),
    (["--trial", "7"], ["--trial 7 is a duplicate of trial 1", "--trial 1"]),
    (["--trial", "99"], ["--trial 99", "no trial 99", "0 to 7"]),
    (["--max-latency", "5ms"], ["--max-latency", "no latency measured"]),
    (["--max-macs", "20M", "--knee"], ["give one rule, not --max-macs and --knee"]),
    ([], ["needs one rule"]),
    (["--max-macs", "20q"], ["--max-macs", "20q"]),
])
def test_errors_are_one_sentence_naming_the_flag_and_change_nothing(tmp_path, capsys, flags, words):
    out = tmp_path / "out"
    study = pareto_study(out)
    assert main_of()(["pick", "--study", "hand-pareto", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    for w in words:
        assert w in err
    assert "pick" not in study.user_attrs
    assert not (out / "runs" / "hand-pareto" / "baseline.json").exists()


def test_reward_mode_budget_and_trial(tmp_path, capsys):
    out = tmp_path / "out"
    name = "hand-reward"
    study = optuna.create_study(storage=url_for(out, name), study_name=name, directions=["maximize"])
    study.set_user_attr(STUDY_ATTR, {"mode": "reward", "objectives": ["reward"], "directions": ["maximize"],
                                     "epochs": 2, "budgets": {}, "target": ["macs", 20e6]})
    # (reward, params): the best reward overall is trial 2; under 2M params it is trial 1.
    rows = {0: (0.50, 1.0e6), 1: (0.62, 1.8e6), 2: (0.70, 3.0e6), 3: (0.55, 2.0e6)}
    for n, (reward, params) in rows.items():
        study.add_trial(trial(n, [reward], reward=reward, val_acc=reward, macs=10e6, params=params))
    main = main_of()
    assert main(["best", "--study", name, "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trial"] == 2
    assert main(["pick", "--study", name, "--out", str(out), "--max-params", "2M"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("picked trial 1 (reward 0.62") and "highest reward at or under 2M params" in line
    assert baseline(out, name)["trial"] == 1
    assert main(["pick", "--study", name, "--out", str(out), "--trial", "3"]) == 0
    assert "reward rank 3 of 4" in capsys.readouterr().out
    assert main(["best", "--study", name, "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trial"] == 3
    assert main(["pick", "--study", name, "--out", str(out), "--knee"]) == 2
    assert "--knee needs a pareto-mode study" in capsys.readouterr().err
    assert main(["pick", "--study", name, "--out", str(out), "--max-params", "0.5M"]) == 2
    err = capsys.readouterr().err
    assert "--max-params 0.5M: no evaluated trial is at or under 500k params" in err
    assert "the cheapest evaluated trial is trial 0 at 1M params" in err


def test_a_stored_pick_that_chooses_nothing_falls_back_and_says_why(tmp_path):
    from nas.search.results import summarize

    study = pareto_study(tmp_path / "out")
    default = summarize(study)
    study.set_user_attr("pick", {"rule": "trial", "number": 99})  # as if the storage were edited
    s = summarize(study)
    assert s.baseline["number"] == default.baseline["number"]
    assert s.rule.startswith(default.rule) and "the stored nas pick --trial 99 chooses nothing" in s.rule
