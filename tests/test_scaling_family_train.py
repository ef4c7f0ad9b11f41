"""`scaling family --train` (scaling/family.py `train_family`, scaling/cli.py): every member
trained once per seed through nas's search runner, family.json in the format ``nas report``
reads, the family plot, resume, seeds, and the overlay on a searched study's report.

Oracles: the members are recomputed here with `compound`; accuracies are read back from
the study storage (each trial's stored ``val_acc``) and compared with family.json as parsed
by `nas.report.data.load_family`; training calls are counted by wrapping `nas.train.train`;
the report is checked in the files `nas report` writes (its page's caption and the plot's
legend text)."""

import json
import statistics

import optuna
import pytest
from optuna.trial import TrialState

from conftest import spy_train
from nas.cli import main as nas_main
from nas.report.data import load_family
from nas.search.runner import run_search
from nas.search.settings import SearchSettings
from scaling import compound
from scaling.cli import main as scaling_main
from space import Arch
from space.cost import cost

BASE = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l1-head_c32"
DATA = "synthetic:240:4:16"
COEFFS = ["--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15"]
TRAIN = ["--dataset", DATA, "--epochs", "1", "--subset", "160", "--val-size", "40", "--threads", "1", "--quiet"]
STUDY = "tiny-family"
SEARCHED = "tiny-searched"


def argv(out, *extra):
    return ["family", "--arch", BASE, *COEFFS, "--phi", "0..2", "--train", *TRAIN, "--study", STUDY,
            "--out", str(out), *extra]


def load(out, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'runs' / name / 'study.db'}")


def searched_study(out):
    """A tiny searched study (two listed candidates) to overlay the family on."""
    space = out / "searched.yaml"
    space.write_text(f"name: searched\nbase: {BASE}\ncandidates:\n  base: {BASE}\n"
                     f"  wide: {BASE.replace('c24', 'c32')}\n")
    run_search(SearchSettings(space=str(space), dataset=DATA, sampler="grid", trials=2, study=SEARCHED,
                              out=str(out), epochs=1, subset=160, val_size=40, num_threads=1,
                              early_stop="none"), progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("family") / "out"
    out.mkdir()
    searched_study(out)
    code = scaling_main(argv(out, "--into-study", SEARCHED, "--json"))
    return out, code


def test_every_member_trained_once_and_family_json_matches_the_trials(trained):
    out, code = trained
    assert code == 0
    base = Arch.from_string(BASE)
    members = {f"phi{phi}": compound(base, phi, 1.2, 1.1, 1.15) for phi in (0, 1, 2)}
    study = load(out, STUDY)
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    by_label = {t.params["candidate"]: t for t in trials}
    assert set(by_label) == set(members)
    for label, m in members.items():
        assert by_label[label].user_attrs["arch"] == m.arch.to_string()
    run = out / "runs" / STUDY
    family, why = load_family(run)
    assert why is None and len(family) == 3
    for f in family:
        t = by_label[f.name]
        assert f.acc == t.user_attrs["val_acc"]
        assert f.arch == members[f.name].arch.to_string()
        c = cost(members[f.name].arch, num_classes=4)
        assert (f.macs, f.params) == (c.macs, c.params) == (t.user_attrs["macs"], t.user_attrs["params"])
    doc = json.loads((run / "family.json").read_text())
    assert [m["n"] for m in doc["family"]] == [1, 1, 1]
    for stem in ("family_accuracy.png", "family_accuracy.svg"):
        assert (run / stem).stat().st_size > 0
    assert (run / "family_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (run / "family_accuracy.svg").read_text()
    assert all(f"φ{phi}" in svg for phi in (0, 1, 2))  # each point labelled with its phi
    # --into-study: the same document in the searched study's run folder.
    assert (out / "runs" / SEARCHED / "family.json").read_text() == (run / "family.json").read_text()


def test_nas_report_overlays_the_family(trained, capsys):
    out, _ = trained
    capsys.readouterr()
    assert nas_main(["report", "--study", SEARCHED, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "family.json was not drawn" not in text
    plots = out / "runs" / SEARCHED / "plots"
    assert "Cyan: the scaled family from family.json." in (plots / "index.html").read_text()
    assert "scaled family" in (plots / "acc_vs_macs.svg").read_text()


def test_resume_trains_nothing(trained, monkeypatch):
    out, _ = trained
    before = json.loads((out / "runs" / STUDY / "family.json").read_text())
    calls = spy_train(monkeypatch)
    assert scaling_main(argv(out, "--json")) == 0
    assert calls == []
    assert len(load(out, STUDY).get_trials()) == 3
    after = json.loads((out / "runs" / STUDY / "family.json").read_text())
    assert [m["acc"] for m in after["family"]] == [m["acc"] for m in before["family"]]


def test_other_members_under_the_same_study_are_refused(trained, capsys):
    out, _ = trained
    code = scaling_main(["family", "--arch", BASE, *COEFFS, "--phi", "0..3", "--train", *TRAIN,
                         "--study", STUDY, "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds other candidates" in err


def test_seeds_train_each_member_per_seed_and_report_mean_and_std(trained, monkeypatch):
    out, _ = trained
    calls = spy_train(monkeypatch)
    # Seed 0 is the study already trained: only seeds 1 and 2 train (3 members each).
    assert scaling_main(argv(out, "--seeds", "3", "--json")) == 0
    assert len(calls) == 6
    doc = json.loads((out / "runs" / STUDY / "family.json").read_text())
    studies = [load(out, STUDY), load(out, f"{STUDY}-s1"), load(out, f"{STUDY}-s2")]
    for s, st in enumerate(studies):
        assert all(t.user_attrs["seed"] == s for t in st.get_trials())
    for m in doc["family"]:
        accs = [next(t for t in st.get_trials() if t.params["candidate"] == m["name"]).user_attrs["val_acc"]
                for st in studies]
        assert m["n"] == 3 and m["accs"] == accs
        assert m["acc"] == pytest.approx(statistics.mean(accs))
        assert m["acc_std"] == pytest.approx(statistics.stdev(accs))


@pytest.mark.parametrize("extra, words", [
    (["--seeds", "0"], "--seeds"),
    (["--into-study", "no-such-study"], "--into-study"),
])
def test_bad_training_flags_exit_2(tmp_path, capsys, extra, words):
    code = scaling_main(argv(tmp_path / "out", *extra))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err


def test_training_flags_need_train(capsys):
    code = scaling_main(["family", "--arch", BASE, *COEFFS, "--phi", "1", "--dataset", DATA])
    assert code == 2
    assert "--dataset needs --train" in capsys.readouterr().err


def test_train_needs_a_dataset(capsys, tmp_path):
    code = scaling_main(["family", "--arch", BASE, *COEFFS, "--phi", "1", "--train", "--out", str(tmp_path)])
    assert code == 2
    assert "--dataset" in capsys.readouterr().err
