"""nas search: named budgets, a budget's subset on small data, override flags named as
flags, and latency as an objective, a reward target and a hard budget (tiny networks on
synthetic data)."""

import argparse
import statistics
import time

import optuna
import pytest
import torch
from optuna.trial import TrialState

from nas.search import cli as search_cli
from nas.search.runner import run_search
from nas.search.settings import BUDGETS, SearchSettings, settings_for_budget
from space.errors import UserError

BASE = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l1-head_c32"
SPACE_YAML = f"name: tiny\nbase: {BASE}\ndefaults:\n  kernel: [3, 5]\n  width: [0.5, 1.0]\n"
DATA = "synthetic:240:4:16"  # 40 validation images leave 200 for training


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE_YAML)
    return path


def parse(argv):
    parser = argparse.ArgumentParser(prog="nas")
    search_cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    return search_cli._settings(parser.parse_args(["search", "--space", "s", "--dataset", "d", *argv]))


def test_budgets_fill_only_what_is_not_given():
    full = settings_for_budget("full", space="s", dataset="d")
    assert (full.trials, full.epochs, full.subset) == (100, 10, None)
    mixed = settings_for_budget("full", space="s", dataset="d", epochs=3)
    assert (mixed.trials, mixed.epochs, mixed.subset) == (100, 3, None)
    plain = SearchSettings(space="s", dataset="d")
    assert (plain.trials, plain.epochs, plain.subset) == tuple(BUDGETS["quick"][k] for k in ("trials", "epochs", "subset"))
    with pytest.raises(UserError, match="--budget must be one of quick, full"):
        settings_for_budget("huge", space="s", dataset="d")


def test_budget_flag_and_overrides_on_the_command_line():
    s = parse([])
    assert (s.trials, s.epochs, s.subset) == (16, 4, 2000)
    s = parse(["--budget", "full"])
    assert (s.trials, s.epochs, s.subset) == (100, 10, None)
    s = parse(["--budget", "full", "--trials", "7", "--subset", "500"])
    assert (s.trials, s.epochs, s.subset) == (7, 10, 500)
    s = parse(["--subset", "0"])  # 0: every image
    assert s.subset is None


def test_a_budget_subset_larger_than_the_data_uses_every_image(space_file, tmp_path, monkeypatch):
    import nas.train

    sizes = []
    real = nas.train.train

    def spy(arch, data, *args, **kwargs):
        sizes.append(len(data.train))
        return real(arch, data, *args, **kwargs)

    monkeypatch.setattr(nas.train, "train", spy)
    with pytest.warns(UserWarning, match="subset of 2000 images is more than the 200 training images"):
        run_search(SearchSettings(space=str(space_file), dataset=DATA, val_size=40, trials=1, epochs=1,
                                  num_threads=1, early_stop="none", out=str(tmp_path)), progress=False)
    assert sizes == [200]


def test_an_explicit_subset_larger_than_the_data_is_refused_before_anything_is_written(space_file, tmp_path):
    # DATA holds 240 images; 40 go to validation, so 200 are left to train on.
    with pytest.raises(UserError, match=r"^--subset must be between 1 and 200 .* got 2000$"):
        run_search(SearchSettings(space=str(space_file), dataset=DATA, val_size=40, trials=1, epochs=1, subset=2000,
                                  subset_is_cap=False, num_threads=1, out=str(tmp_path / "out")), progress=False)
    assert not (tmp_path / "out").exists()


def test_recipe_overrides_are_named_as_flags(space_file, tmp_path):
    for overrides, flag in (({"lr": 0.0}, "--lr"), ({"batch_size": 0}, "--batch-size")):
        with pytest.raises(UserError, match=f"^{flag} "):
            run_search(SearchSettings(space=str(space_file), dataset=DATA, val_size=40, subset=160,
                                      train_overrides=overrides, out=str(tmp_path)), progress=False)
    assert not (tmp_path / "runs").exists()


def own_latency(arch_string: str) -> float:
    """Median forward time of one image, timed here with the model built from the string."""
    from space import Arch, build_model

    arch = Arch.from_string(arch_string)
    model = build_model(arch, num_classes=4).eval()
    x = torch.randn(1, 3, arch.resolution, arch.resolution)
    times = []
    with torch.no_grad():
        for _ in range(3):
            model(x)
        for _ in range(15):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def test_latency_as_pareto_objective_and_hard_budget(space_file, tmp_path):
    torch.set_num_threads(1)
    run_search(SearchSettings(space=str(space_file), dataset=DATA, val_size=40, subset=160, epochs=1, trials=2,
                              mode="pareto", objectives=("acc", "latency"), max_latency="10s", num_threads=1,
                              early_stop="none", out=str(tmp_path)), progress=False)
    study = optuna.load_study(study_name="tiny-pareto", storage=f"sqlite:///{tmp_path / 'runs/tiny-pareto/study.db'}")
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert done
    for t in done:
        lat = t.user_attrs["latency"]
        assert t.values[1] == lat
        # Within a generous factor of an independent timing of the same network here.
        mine = own_latency(t.user_attrs["arch"])
        assert mine / 20 < lat < mine * 20
        assert t.constraints == {"max_latency": pytest.approx(lat / 10.0 - 1)}


def test_latency_as_the_mnas_reward_target(space_file, tmp_path):
    run_search(SearchSettings(space=str(space_file), dataset=DATA, val_size=40, subset=160, epochs=1, trials=2,
                              target=("latency", "5ms"), num_threads=1, early_stop="none", out=str(tmp_path)),
               progress=False)
    study = optuna.load_study(study_name="tiny-reward", storage=f"sqlite:///{tmp_path / 'runs/tiny-reward/study.db'}")
    for t in study.get_trials():
        if t.state == TrialState.COMPLETE:
            a = t.user_attrs
            assert a["latency"] > 0
            assert t.value == pytest.approx(a["val_acc"] * (a["latency"] / 0.005) ** -0.07)
