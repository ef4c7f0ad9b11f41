"""Listed search spaces (space/listed.py): a file of named candidates, loaded by
SearchSpace.load, and `nas search --sampler grid` over one (every candidate once).

Oracles: the arch strings written in the files (parsed independently by Arch.from_string),
trial parameters read back from the storage."""

import json

import optuna
import pytest
from optuna.trial import TrialState

from nas.search.runner import run_search
from nas.search.settings import SearchSettings
from space import Arch
from space.listed import ListedSpace
from space.presets import get_preset
from space.search import SearchSpace, SpaceError

BASE = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l1-head_c32"
K5 = BASE.replace("mb_k3", "mb_k5", 1)
WIDE = BASE.replace("c16", "c24", 1)
DATA = "synthetic:240:4:16"


def write(tmp_path, text, name="short.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def listed(tmp_path):
    return write(tmp_path, f"""\
name: short
description: a shortlist
base: {BASE}
candidates:
  small: {BASE}
  k5: {K5}
  wide: {WIDE}
  again: {BASE}
  preset: efficientnet_b0_cifar
""")


def test_load_decode_and_params_of_round_trip(listed):
    space = SearchSpace.load(listed)
    assert isinstance(space, ListedSpace)
    assert space.name == "short" and space.description == "a shortlist"
    assert space.base == Arch.from_string(BASE)
    assert space.dimensions() == {"candidate": ("small", "k5", "wide", "again", "preset")}
    assert list(space.distributions()["candidate"].choices) == ["small", "k5", "wide", "again", "preset"]
    expected = {"small": Arch.from_string(BASE), "k5": Arch.from_string(K5), "wide": Arch.from_string(WIDE),
                "again": Arch.from_string(BASE), "preset": get_preset("efficientnet_b0_cifar").arch()}
    for label, arch in expected.items():
        assert space.decode({"candidate": label}) == arch
    # Four distinct architectures: "again" repeats "small".
    assert space.size() == 4
    # params_of gives the first label naming the architecture; decode inverts it.
    assert space.params_of(Arch.from_string(BASE)) == {"candidate": "small"}
    for label in ("k5", "wide", "preset"):
        assert space.params_of(space.decode({"candidate": label})) == {"candidate": label}
    with pytest.raises(SpaceError, match="not one of its"):
        space.params_of(Arch.from_string(BASE.replace("head_c32", "head_c40")))
    with pytest.raises(SpaceError, match="not one of its labels"):
        space.decode({"candidate": "missing"})
    with pytest.raises(SpaceError, match="unknown parameter"):
        space.decode({"s1.kernel": 3})
    assert space.sample(0) in expected.values()
    again = ListedSpace.from_dict(space.to_dict())
    assert again.dimensions() == space.dimensions()
    assert [again.decode({"candidate": c}) for c in again.labels] == list(expected.values())


def test_base_defaults_to_the_first_candidate_and_json_works(tmp_path):
    path = write(tmp_path, json.dumps({"candidates": {"one": K5, "two": BASE}}), "pair.json")
    space = SearchSpace.load(path)
    assert space.name == "pair" and space.base == Arch.from_string(K5)


@pytest.mark.parametrize("text, needle", [
    ("candidates: {}\n", "candidates is empty"),
    ("candidates: [a, b]\n", "candidates must be a mapping"),
    (f"candidates:\n  1.5: {BASE}\n", "must be a non-empty string"),
    (f"candidates:\n  a: {BASE}\n  a: {K5}\n", "'a' is given twice"),
    ("candidates:\n  a: net_r16-stem_c8_s9-head_c32\n", "candidate 'a' is not a valid arch string"),
    ("candidates:\n  bad: no_such_preset\n", "candidate 'bad'"),
    (f"candidates:\n  a: {BASE}\nstages: {{}}\n", "unknown top-level key 'stages'"),
    (f"base: nope_preset\ncandidates:\n  a: {BASE}\n", "base 'nope_preset'"),
    ("candidates:\n  a: [1, 2\n", "not valid YAML"),
])
def test_bad_files_are_refused_with_one_sentence(tmp_path, text, needle):
    path = write(tmp_path, text, "bad.yaml")
    with pytest.raises(SpaceError) as err:
        SearchSpace.load(path)
    message = str(err.value)
    assert needle in message and "bad.yaml" in message and "\n" not in message


def test_duplicate_label_in_json_is_refused(tmp_path):
    path = write(tmp_path, '{"candidates": {"a": "%s", "a": "%s"}}' % (BASE, K5), "dup.json")
    with pytest.raises(SpaceError, match="'a' is given twice"):
        SearchSpace.load(path)


def test_nas_search_grid_evaluates_every_candidate_once(tmp_path):
    path = write(tmp_path, f"""\
name: trio
base: {BASE}
candidates:
  small: {BASE}
  k5: {K5}
  wide: {WIDE}
""", "trio.yaml")
    from nas.cli import main as nas_main

    argv = ["search", "--space", str(path), "--sampler", "grid", "--dataset", DATA, "--epochs", "1",
            "--subset", "160", "--val-size", "40", "--threads", "1", "--early-stop", "none",
            "--out", str(tmp_path / "out"), "--quiet"]
    assert nas_main(argv) == 0
    url = f"sqlite:///{tmp_path / 'out' / 'runs' / 'trio-reward' / 'study.db'}"
    study = optuna.load_study(study_name="trio-reward", storage=url)
    trials = study.get_trials()
    # --trials was not given: the grid's three points, each once.
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.params["candidate"] for t in trials) == ["k5", "small", "wide"]
    for t in trials:
        written = {"small": BASE, "k5": K5, "wide": WIDE}[t.params["candidate"]]
        assert t.user_attrs["arch"] == Arch.from_string(written).to_string()
    # Again with more trials than points: capped, nothing new is trained.
    assert nas_main(argv + ["--trials", "10"]) == 0
    assert len(study.get_trials()) == 3


def test_grid_sampler_retries_a_failed_point_on_resume(tmp_path, monkeypatch):
    import nas.train
    from nas.train import TrainingFailed

    path = write(tmp_path, f"candidates:\n  small: {BASE}\n  k5: {K5}\n", "pair.yaml")
    real = nas.train.train
    fail = {"k5": True}

    def flaky(arch, *args, **kwargs):
        if fail["k5"] and arch.to_string() == Arch.from_string(K5).to_string():
            raise TrainingFailed("diverged (test)")
        return real(arch, *args, **kwargs)

    monkeypatch.setattr(nas.train, "train", flaky)
    s = SearchSettings(space=str(path), dataset=DATA, epochs=1, subset=160, val_size=40, num_threads=1,
                       sampler="grid", trials=None, early_stop="none", out=str(tmp_path / "out"), max_failures=1)
    with pytest.warns(UserWarning):
        run_search(s, progress=False)
    fail["k5"] = False
    run_search(s, progress=False)
    url = f"sqlite:///{tmp_path / 'out' / 'runs' / 'pair-reward' / 'study.db'}"
    trials = optuna.load_study(study_name="pair-reward", storage=url).get_trials()
    complete = sorted(t.params["candidate"] for t in trials if t.state == TrialState.COMPLETE)
    assert complete == ["k5", "small"]


def test_grid_sampler_refuses_a_huge_space():
    from space.errors import UserError
    from nas.search.settings import resolve_settings

    with pytest.raises(UserError, match="--sampler grid"):
        resolve_settings(SearchSettings(space="mnasnet", dataset=DATA, sampler="grid"))
    with pytest.raises(UserError, match="--trials"):
        resolve_settings(SearchSettings(space="mnasnet", dataset=DATA, trials=None))


def test_report_skips_the_per_stage_view_for_a_listed_space(tmp_path):
    from nas.report import make_report

    path = write(tmp_path, f"candidates:\n  small: {BASE}\n  k5: {K5}\n", "pair.yaml")
    run_search(SearchSettings(space=str(path), dataset=DATA, epochs=1, subset=160, val_size=40, num_threads=1,
                              sampler="grid", trials=None, early_stop="none", out=str(tmp_path / "out")),
               progress=False)
    url = f"sqlite:///{tmp_path / 'out' / 'runs' / 'pair-reward' / 'study.db'}"
    report = make_report(optuna.load_study(study_name="pair-reward", storage=url), tmp_path / "out")
    assert "stage_choices" not in [stem for stem, _, _ in report.plots]
    assert any("not per-stage choices" in n for n in report.notes)
    assert (report.plots_dir / "index.html").is_file()
