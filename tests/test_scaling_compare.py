"""`scaling compare` (scaling/compare.py, scaling/cli.py): depth-only, width-only,
resolution-only and compound scaling of one base to the same MACs, each trained over seeds
through nas's search runner.

Oracles: MACs are recounted here with `space.cost.cost` at the synthetic dataset's 4 classes;
what each method changed is read off the arch fields (layers, channels, resolution) against
the base's; accuracies are read back from the study storage of each seed's study; mean and
std recomputed with `statistics`."""

import contextlib
import csv
import dataclasses
import io
import json
import statistics

import optuna
import pytest
from optuna.trial import TrialState

import nas.train
from scaling.cli import main as scaling_main
from scaling.compare import COLUMNS, compare_points
from space import Arch
from space.cost import cost

# Its four final points all land within 10% of 4x its MACs.
BASE = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c8_l3_se0.25-fmb_k3_s2_e2_c24_l2-head_c32"
DATA = "synthetic:240:4:16"
TRAIN = ["--dataset", DATA, "--epochs", "1", "--subset", "160", "--val-size", "40", "--threads", "1", "--quiet"]
STUDY = "tiny-compare"
FACTOR, STEPS, SEEDS, TOL = 4, 2, 2, 0.1


def argv(out, *extra):
    return ["compare", "--arch", BASE, "--macs-factor", str(FACTOR), "--steps", str(STEPS), "--seeds", str(SEEDS),
            "--tolerance", str(TOL), *TRAIN, "--study", STUDY, "--out", str(out), *extra]


def load(out, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'runs' / name / 'study.db'}")


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "out"
    capture = {}
    buf_out, buf_err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        code = scaling_main(argv(out, "--json"))
    capture["json"] = json.loads(buf_out.getvalue())
    capture["err"] = buf_err.getvalue()
    buf_out = io.StringIO()
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(io.StringIO()):
        code2 = scaling_main(argv(out))
    capture["text"] = buf_out.getvalue()
    return out, code, code2, capture


def test_final_points_reach_the_macs_target(compared):
    out, code, _, cap = compared
    assert code == 0
    base = Arch.from_string(BASE)
    base_macs = cost(base, num_classes=4).macs
    rows = cap["json"]["rows"]
    assert cap["json"]["base_macs"] == base_macs
    finals = {r["method"]: r for r in rows if r["step"] == STEPS}
    assert set(finals) == {"depth", "width", "resolution", "compound"}
    for r in finals.values():
        macs = cost(Arch.from_string(r["arch"]), num_classes=4).macs
        assert macs == r["macs"]
        assert abs(macs / (FACTOR * base_macs) - 1) <= TOL, r["method"]
        assert r["hit"] is True
    # Intermediate points grow from the base towards the target.
    for method in finals:
        macs = [base_macs] + [r["macs"] for r in sorted(rows, key=lambda r: r["step"]) if r["method"] == method]
        assert macs == sorted(macs) and len(macs) == STEPS + 1


def test_each_single_dimension_changes_only_its_dimension(compared):
    _, _, _, cap = compared
    base = Arch.from_string(BASE)
    for r in cap["json"]["rows"]:
        a = Arch.from_string(r["arch"])
        layers = [s.layers for s in a.stages] != [s.layers for s in base.stages]
        channels = [s.channels for s in a.stages] != [s.channels for s in base.stages]
        resolution = a.resolution != base.resolution
        if r["method"] == "depth":
            assert (layers, channels, resolution) == (True, False, False)
            back = tuple(dataclasses.replace(s, layers=b.layers) for s, b in zip(a.stages, base.stages))
            assert a.replace(stages=back) == base  # nothing but the layers moved
        elif r["method"] == "width":
            assert (layers, channels, resolution) == (False, True, False)
        elif r["method"] == "resolution":
            assert (layers, channels, resolution) == (False, False, True)
            assert a.replace(resolution=base.resolution) == base
        assert a.dropout == base.dropout  # kept at the base's for every method
    # The library agrees with the command's rows.
    points = compare_points(base, FACTOR, steps=STEPS, tolerance=TOL, num_classes=4)
    assert [p.arch.to_string() for p in points] == [r["arch"] for r in cap["json"]["rows"]]


def test_accuracies_are_the_trials_over_seeds(compared):
    out, _, _, cap = compared
    studies = [load(out, STUDY), load(out, f"{STUDY}-s1")]
    labels = {r["label"] for r in cap["json"]["rows"]}
    for s, st in enumerate(studies):
        trials = st.get_trials()
        assert {t.params["candidate"] for t in trials} == labels
        assert all(t.state == TrialState.COMPLETE and t.user_attrs["seed"] == s for t in trials)
    for r in cap["json"]["rows"]:
        accs = []
        for st in studies:
            t = next(t for t in st.get_trials() if t.params["candidate"] == r["label"])
            acc = t.user_attrs.get("val_acc")
            if acc is None:  # a duplicate: its original's accuracy
                acc = st.trials[t.user_attrs["duplicate_of"]].user_attrs["val_acc"]
            accs.append(acc)
        assert r["accs"] == accs and r["n"] == SEEDS
        assert r["acc_mean"] == pytest.approx(statistics.mean(accs))
        assert r["acc_std"] == pytest.approx(statistics.stdev(accs))


def test_table_csv_json_plot_and_caveat(compared):
    out, _, code2, cap = compared
    assert code2 == 0
    run = out / "runs" / STUDY
    header = cap["text"].splitlines()
    table = next(l for l in header if l.startswith("| method"))
    for col in ("method", "multiplier(s)", "MACs", "params", "accuracy (mean ± std)", "n"):
        assert f"| {col} |" in table or f" {col} |" in table
    # The caveat: 16-pixel images grown to a 32-pixel input.
    assert "only upsamples the same pixels" in cap["text"]
    assert "image folder with larger images" in cap["text"]
    assert "only upsamples the same pixels" in cap["err"]  # --json: on stderr
    assert "only upsamples" in (run / "compare.md").read_text()
    assert cap["json"]["caveat"] and "upsamples" in cap["json"]["caveat"]
    rows = list(csv.DictReader(io.StringIO((run / "compare.csv").read_text())))
    assert list(rows[0]) == COLUMNS and len(rows) == 1 + 4 * STEPS
    assert json.loads((run / "compare.json").read_text())["rows"] == cap["json"]["rows"]
    assert set(COLUMNS) <= set(cap["json"]["rows"][0])
    assert (run / "compare_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (run / "compare_accuracy.svg").read_text()
    for method in ("depth-only", "width-only", "resolution-only", "compound"):
        assert method in svg


def test_resume_trains_nothing(compared, monkeypatch, capsys):
    out, _, _, _ = compared
    calls = []
    real = nas.train.train
    monkeypatch.setattr(nas.train, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert scaling_main(argv(out, "--json")) == 0
    assert calls == []


def test_no_caveat_when_resolution_stays_within_the_images():
    base = Arch.from_string(BASE)
    points = compare_points(base, 1.5, steps=1, num_classes=4)
    assert all(p.member.resolution <= 24 for p in points)


@pytest.mark.parametrize("extra, words", [
    (["--macs-factor", "1"], "--macs-factor"),
    (["--macs-factor", "0.5"], "--macs-factor"),
    (["--seeds", "0"], "--seeds"),
    (["--steps", "0"], "--steps"),
    (["--alpha", "0.9", "--beta", "1.1", "--gamma", "1.15"], "alpha"),
])
def test_bad_input_exits_2_with_one_sentence(tmp_path, capsys, extra, words):
    code = scaling_main([*argv(tmp_path / "out"), *extra])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
    assert not (tmp_path / "out").exists()
