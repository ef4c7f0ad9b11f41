"""nas report: plots, tables and page of real (tiny) search studies, checked against the
storage read directly with Optuna and against the papers' formulas.

Oracles, independent of the code under test: trial states, archs, costs and rewards from
``optuna.load_study(...).get_trials()``; fronts by brute-force dominance; the hypervolume
by a hand sweep; iso-lines from ACC = R / (X / T)^w with the exponents stored in the study;
PNG validity from the file signature and IHDR header; links parsed from the HTML.
"""

import argparse
import csv
import html.parser
import json
import struct

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from nas.report import make_report
from nas.report.cli import add_parser
from nas.report.data import short_arch
from nas.report.importance_plot import stage_shares
from nas.search.runner import run_search
from nas.search.settings import SearchSettings
from space.command_line import make_main

from conftest import TINY_SPACE_BASE as BASE, TINY_SPACE_YAML as SPACE_YAML  # noqa: E402
# 64 architectures from 91k to 360k MACs; the base has 212k, so it (queued first) is over
# the 200k budget, as are about a third of the others.
MAX_MACS = 200e3
COMMON = dict(dataset="synthetic:240:4:16", epochs=3, subset=160, val_size=40, num_threads=1, max_macs="200k",
              early_stop="asha", min_epochs=1, eta=2, enqueue=(BASE,), target=("macs", "150k"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(tmp, mode, trials, **kw):
    space = tmp / "tiny.yaml"
    space.write_text(SPACE_YAML)
    out = tmp / "out"
    run_search(SearchSettings(space=str(space), out=str(out), mode=mode, trials=trials, **{**COMMON, **kw}),
               progress=False)
    name = f"tiny-{mode}"
    url = f"sqlite:///{out / 'runs' / name / 'study.db'}"
    return out, name, url


@pytest.fixture(scope="module")
def reward_study(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("reward"), "reward", 10)


@pytest.fixture(scope="module")
def pareto_study(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("pareto"), "pareto", 10, objectives=("acc", "macs"))


def _cli(argv):
    def build():
        p = argparse.ArgumentParser(prog="nas")
        add_parser(p.add_subparsers(dest="command", required=True))
        return p

    return make_main(build)(argv)


def _stored(url, name):
    return sorted(optuna.load_study(study_name=name, storage=url).get_trials(), key=lambda t: t.number)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("href", "src")]


def _check_files(plots_dir, report):
    stems = [s for s, _, _ in report.plots]
    for stem in stems:
        png = (plots_dir / f"{stem}.png").read_bytes()
        assert png[:8] == PNG_SIGNATURE and png[12:16] == b"IHDR", stem
        width, height = struct.unpack(">II", png[16:24])
        assert width >= 500 and height >= 300 and len(png) > 15_000, (stem, width, height, len(png))
        svg = (plots_dir / f"{stem}.svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg and svg.rstrip().endswith("</svg>")
    page = (plots_dir / "index.html").read_text()
    parser = _Links()
    parser.feed(page)
    for stem in stems:
        assert f"{stem}.png" in parser.links and f"{stem}.svg" in parser.links, stem
    for link in parser.links:  # a static page: relative links to files that exist
        assert "://" not in link and not link.startswith("/") and (plots_dir / link).is_file(), link
    for name in ("trials.csv", "front.csv", "summary.md"):
        assert name in parser.links
    return page


def _check_trials_csv(plots_dir, trials, mode):
    rows = {int(r["number"]): r for r in _rows(plots_dir / "trials.csv")}
    assert sorted(rows) == [t.number for t in trials]
    for t in trials:
        r, a = rows[t.number], t.user_attrs
        assert r["state"] == t.state.name and r["arch"] == a.get("arch", "")
        assert float(r["macs"]) == pytest.approx(a["macs"]) and float(r["params"]) == pytest.approx(a["params"])
        for p, v in t.params.items():
            assert r[p] == str(v)
        if "infeasible" in a:
            assert r["kind"] == "infeasible" and "budget" in r["reason"] and r["acc"] == ""
            assert a["macs"] > MAX_MACS and r["reason"].startswith("infeasible")
        elif t.state == TrialState.PRUNED and "duplicate_of" not in a:
            assert r["kind"] == "pruned" and r["reason"] == f"pruned at epoch {a['pruned_at']}"
            assert int(r["pruned_at"]) == a["pruned_at"] == len(a["epoch_acc"])
            assert float(r["acc"]) == pytest.approx(a["epoch_acc"][-1])
        elif t.state == TrialState.COMPLETE and "duplicate_of" not in a:
            assert r["kind"] == "complete" and r["reason"] == ""
            assert float(r["acc"]) == pytest.approx(a["val_acc"])
            if mode == "reward":
                assert float(r["reward"]) == pytest.approx(t.value)
            else:
                assert (float(r["acc"]), float(r["macs"])) == pytest.approx(tuple(t.values))
    return rows


def _brute_front(points):
    """Numbers of (number, acc, cost) points no other point dominates."""
    return {n for n, a, c in points
            if not any(a2 >= a and c2 <= c and (a2, c2) != (a, c) for _, a2, c2 in points)}


def _text(v):
    return f"{v:g}" if isinstance(v, float) else str(v)


def _evaluated(trials):
    return [t for t in trials if t.state == TrialState.COMPLETE and "infeasible" not in t.user_attrs
            and "duplicate_of" not in t.user_attrs]


def test_reward_mode_report(reward_study):
    out, name, url = reward_study
    trials = _stored(url, name)
    kinds = {("infeasible" if "infeasible" in t.user_attrs else t.state.name) for t in trials}
    assert {"infeasible", "PRUNED", "COMPLETE"} <= kinds, "the study should have every kind of trial"
    assert _cli(["report", "--study", name, "--out", str(out)]) == 0
    report = make_report(optuna.load_study(study_name=name, storage=url), out)
    plots_dir = out / "runs" / name / "plots"
    assert {s for s, _, _ in report.plots} >= {"acc_vs_macs", "acc_vs_params", "history", "early_stopping",
                                                "stage_choices"}
    page = _check_files(plots_dir, report)
    _check_trials_csv(plots_dir, trials, "reward")

    # Iso-lines are the stored reward's: ACC = R / (X / T)^w, w = alpha at or below T, beta above.
    stored = optuna.load_study(study_name=name, storage=url).user_attrs["search"]["reward"]
    T, alpha, beta = stored["target"], stored["alpha"], stored["beta"]
    plot = report.acc_cost["macs"]
    best = max(t.value for t in _evaluated(trials))
    assert plot.iso_curves and plot.iso_curves[0].reward == pytest.approx(best)
    for curve in plot.iso_curves:
        expected = [curve.reward / (x / T) ** (alpha if x <= T else beta) for x in curve.xs]
        assert list(curve.accs) == pytest.approx(expected, rel=1e-12)
    # ... and they are what the figure draws.
    drawn = {line.get_gid(): line for line in plot.figure.axes[0].get_lines() if line.get_gid()}
    assert len(drawn) == len(plot.iso_curves)
    for i, curve in enumerate(plot.iso_curves):
        assert list(drawn[f"iso-{i}"].get_ydata()) == pytest.approx(list(curve.accs))
    assert not report.acc_cost["params"].iso_curves  # the reward is in MACs

    # Infeasible trials sit in the "not trained" band, pruned ones at the accuracy they stopped with.
    for t in trials:
        cost, acc, kind = plot.points[t.number]
        assert cost == pytest.approx(t.user_attrs["macs"])
        if "infeasible" in t.user_attrs:
            assert acc is None and kind == "infeasible"
        elif t.state == TrialState.PRUNED and "duplicate_of" not in t.user_attrs:
            assert kind == "pruned" and acc == pytest.approx(t.user_attrs["epoch_acc"][-1])

    # The baseline (highest reward) and the queued base architecture are labelled.
    top = max(_evaluated(trials), key=lambda t: (t.value, -t.number))
    assert any(text.startswith(f"baseline #{top.number}\n") for text in plot.labels)
    queued = next(t for t in trials if t.user_attrs.get("enqueued") == BASE)
    assert any(text.endswith(f"#{queued.number}") for text in plot.labels)

    # front.csv: accuracy vs MACs over the evaluated trials, by brute force.
    front = _rows(plots_dir / "front.csv")
    points = [(t.number, t.user_attrs["val_acc"], t.user_attrs["macs"]) for t in _evaluated(trials)]
    assert {int(r["number"]) for r in front} == _brute_front(points)
    assert [r["baseline"] for r in front].count("yes") <= 1
    # History: the best reward so far ends at the best reward.
    assert report.history.values[-1] == pytest.approx(best)
    # Importance: too few evaluated trials for accuracy is a note, not a crash; MACs (one
    # value per architecture, pruned and infeasible trials included) has enough.
    n_eval = len(_evaluated(trials))
    assert ("accuracy" in report.importances) != ("Parameter importance for accuracy skipped" in page)
    if n_eval < 5:
        assert "accuracy" not in report.importances
    macs = report.importances["macs"]
    assert set(macs) == set(trials[0].params) and sum(macs.values()) == pytest.approx(1.0)
    assert "importance.png" in page
    assert "Search report: tiny-reward" in (plots_dir / "summary.md").read_text()


def test_pareto_mode_report(pareto_study, tmp_path):
    out, name, url = pareto_study
    trials = _stored(url, name)
    assert any("infeasible" in t.user_attrs for t in trials)
    assert any(t.state == TrialState.PRUNED and t.user_attrs.get("pruned_at") for t in trials)  # by MO-ASHA
    report = make_report(optuna.load_study(study_name=name, storage=url), out)
    plots_dir = out / "runs" / name / "plots"
    _check_files(plots_dir, report)
    _check_trials_csv(plots_dir, trials, "pareto")

    # front.csv is the Pareto front of (accuracy, MACs) over the evaluated trials.
    points = [(t.number, *t.values) for t in _evaluated(trials)]
    front_numbers = _brute_front(points)
    front = _rows(plots_dir / "front.csv")
    assert {int(r["number"]) for r in front} == front_numbers
    for r in front:
        t = trials[int(r["number"])]
        assert r["arch"] == t.user_attrs["arch"] and float(r["acc"]) == pytest.approx(t.values[0])
    plot = report.acc_cost["macs"]
    assert set(plot.front) == front_numbers

    # Hypervolume by hand, reference (0, the MACs budget): strips from the most accurate down.
    hv, best_cost = 0.0, MAX_MACS
    for _, acc, c in sorted((p for p in points if p[0] in front_numbers), key=lambda p: -p[1]):
        hv += acc * max(best_cost - c, 0.0)
        best_cost = min(best_cost, c)
    assert report.history.values[-1] == pytest.approx(hv)

    # With a target, the iso-lines are the soft EfficientNet reward's at that target.
    T = 150e3
    best = max(t.values[0] * (t.values[1] / T) ** -0.07 for t in _evaluated(trials))
    assert plot.iso_curves[0].reward == pytest.approx(best)
    for curve in plot.iso_curves:
        assert list(curve.accs) == pytest.approx([curve.reward / (x / T) ** -0.07 for x in curve.xs])

    # The per-stage view: each choice's share among the front and among all evaluated trials.
    evaluated = _evaluated(trials)
    members = [t for t in evaluated if t.number in front_numbers]
    shares, n_top, n_all = stage_shares(report.data)
    assert (n_top, n_all) == (len(members), len(evaluated))
    assert {f"s{st}.{fld}" for st, fld in shares} == set(evaluated[0].params)
    for (st, fld), cell in shares.items():
        def share(ts, choice):
            return sum(_text(t.params[f"s{st}.{fld}"]) == choice for t in ts) / len(ts)

        for choice, (top_share, all_share) in cell.items():
            assert top_share == pytest.approx(share(members, choice))
            assert all_share == pytest.approx(share(evaluated, choice))

    # Labels (baseline, queued, front ends, iso-line values) do not overlap one another, as drawn.
    fig = plot.figure
    fig.canvas.draw()
    texts = [t for t in fig.axes[0].texts if t.get_text() != "not trained"]
    assert len(texts) >= len(plot.labels) >= 2
    # The boxes drawn around the texts (an annotation's own extent also covers its arrow).
    boxes = [t.get_bbox_patch().get_window_extent(fig.canvas.get_renderer()) for t in texts]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)


def test_family_overlay_and_unfinished_trials(pareto_study, tmp_path):
    """A copy of the Pareto study with a failed and a running trial and a family.json."""
    out, name, url = pareto_study
    copy_url = f"sqlite:///{tmp_path / 'copy.db'}"
    optuna.copy_study(from_study_name=name, from_storage=url, to_storage=copy_url)
    study = optuna.load_study(study_name=name, storage=copy_url)
    some = next(t for t in study.get_trials() if t.params)
    common = dict(params=some.params, distributions=some.distributions)
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={
        "arch": some.user_attrs["arch"], "macs": some.user_attrs["macs"], "params": some.user_attrs["params"],
        "epoch_acc": [0.3], "error": "training diverged"}, **common))
    study.add_trial(create_trial(state=TrialState.RUNNING, user_attrs={
        "arch": some.user_attrs["arch"], "macs": some.user_attrs["macs"], "params": some.user_attrs["params"],
        "epoch_acc": [0.27, 0.31]}, **common))
    run_dir = tmp_path / "runs" / name
    run_dir.mkdir(parents=True)
    members = [{"name": "b0", "arch": BASE, "macs": 1.0e5, "params": 3e3, "acc": 0.40},
               {"name": "b1", "arch": BASE, "macs": 1.6e5, "params": 5e3, "acc": 0.45},
               {"name": "b2", "arch": BASE, "macs": 2.5e5, "params": 8e3, "acc": None}]
    (run_dir / "family.json").write_text(json.dumps({"family": members}))
    report = make_report(study, tmp_path)
    plots_dir = run_dir / "plots"
    rows = _rows(plots_dir / "trials.csv")
    failed, running = rows[-2], rows[-1]
    assert (failed["state"], failed["kind"], failed["reason"]) == ("FAIL", "failed", "failed: training diverged")
    assert (running["state"], running["kind"], float(running["acc"])) == ("RUNNING", "running", 0.31)
    plot = report.acc_cost["macs"]
    line = next(l for l in plot.figure.axes[0].get_lines() if str(l.get_label()).startswith("scaled family"))
    assert list(line.get_xdata()) == [1.0e5, 1.6e5] and list(line.get_ydata()) == [0.40, 0.45]
    assert "b2" in line.get_label()  # listed as not trained yet
    assert "b0" in plot.labels and "b1" in plot.labels and "b2" not in plot.labels
    # A family file of another format is reported, not drawn.
    (run_dir / "family.json").write_text(json.dumps({"members": []}))
    report = make_report(study, tmp_path)
    assert any("family.json was not drawn" in n for n in report.notes)
    assert "family.json was not drawn" in (plots_dir / "index.html").read_text()


def test_missing_study_is_one_sentence_exit_2(reward_study, tmp_path, capsys):
    out, name, url = reward_study
    assert _cli(["report", "--study", "nothere", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "nothere" in err
    assert _cli(["report", "--study", "nothere", "--storage", url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no study nothere") and name in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_short_arch():
    assert short_arch(BASE) == "k3e2 Fk3e2"
    six = "net_r16_silu-stem_c8_s1" + "-mb_k5_s1_e6_c16_l2" * 6 + "-head_c32"
    assert short_arch(six) == "k5e6x2 k5e6x2 k5e6x2 k5e6x2\nk5e6x2 k5e6x2"
    assert short_arch("efficientnet_b0") == "efficientnet_b0"
