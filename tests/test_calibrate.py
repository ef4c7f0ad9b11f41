"""nas calibrate: rank correlation of a cheap fidelity with a longer one, resumable."""

import argparse
import itertools
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from scipy import stats

import nas.train
from nas.calibrate import (Fidelity, add_parser, calibrate, draw_architectures, kendall_rows,
                           parse_fidelity, spearman_rows)
from space.command_line import make_main
from space.errors import UserError
from space.search import SearchSpace

# Tiny networks at 16 px: a run takes a fraction of a second on one thread. Ten classes keep
# the task hard enough that accuracies differ between architectures at these budgets.
SPACE_YAML = """\
name: tiny
base: net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1-mb_k3_s2_e2_c24_l1-head_c32
defaults:
  kernel: [3, 5]
  expand: [1, 2, 4]
  width: [0.5, 1.0, 1.5]
  layers: [0, 1]
"""
DATA = "synthetic:800:10:16"
LOW = "epochs=4,subset=300"
HIGH = "epochs=3,subset=600"
SAMPLES, SEEDS, VAL = 4, 2, 120
COMMON = dict(seeds=SEEDS, val_size=VAL, num_threads=1, progress=False, bootstrap=500)


def cli(argv):
    """The calibrate sub-command on a parser of its own (nas.cli hooks the same add_parser)."""
    def build():
        parser = argparse.ArgumentParser(prog="nas")
        add_parser(parser.add_subparsers(dest="command", required=True))
        return parser
    return make_main(build)(argv)


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "tiny.yaml"
    path.write_text(SPACE_YAML)
    return path


@pytest.fixture(scope="module")
def done(space_file, tmp_path_factory):
    """One finished calibration; tests that change its folder work on a copy."""
    out = tmp_path_factory.mktemp("cal") / "out"
    report = calibrate(str(space_file), DATA, SAMPLES, LOW, HIGH, out=out, **COMMON)
    return out, report


def copy_of(done, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(done[0], dest)
    return dest


def read_runs(out):
    return [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]


def count_training(monkeypatch):
    calls = []
    real = nas.train.train

    def spy(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(nas.train, "train", spy)
    return calls


# --- end to end ---------------------------------------------------------------------------


def test_report_matches_an_independent_recomputation_from_the_run_log(done):
    out, report = done
    data = json.loads((out / "calibration.json").read_text())
    assert data == report.to_dict()
    runs = read_runs(out)
    assert len(runs) == SAMPLES * (SEEDS + 1)
    by_key = {(r["arch"], r["fidelity"], r["seed"]): r for r in runs}
    assert len(by_key) == len(runs)

    archs = [row["arch"] for row in data["rows"]]
    assert len(set(archs)) == SAMPLES == data["archs"]
    low = np.array([[by_key[(a, "low", s)]["val_acc"] for s in range(SEEDS)] for a in archs])
    high = np.array([by_key[(a, "high", 0)]["val_acc"] for a in archs])
    assert ((0 <= low) & (low <= 1)).all() and ((0 <= high) & (high <= 1)).all()
    for row, lows, h in zip(data["rows"], low, high):
        assert row["low_accs"] == list(lows) and row["high_acc"] == h
        assert row["macs"] > 0 and row["params"] > 0
    low_mean = low.mean(axis=1)
    assert len(set(low_mean)) > 1 and len(set(high)) > 1, "budgets too small to separate the archs"
    assert data["spearman"] == pytest.approx(stats.spearmanr(low_mean, high).statistic, abs=1e-12)
    assert data["kendall"] == pytest.approx(stats.kendalltau(low_mean, high).statistic, abs=1e-12)
    assert data["low_seed_std"] == pytest.approx(low.std(axis=1, ddof=1).mean())
    assert data["low_seed_spearman"] == pytest.approx(stats.spearmanr(low[:, 0], low[:, 1]).statistic)
    high_s = sum(by_key[(a, "high", 0)]["seconds"] for a in archs)
    low_s = sum(by_key[(a, "low", s)]["seconds"] for a in archs for s in range(SEEDS)) / SEEDS
    assert data["cost_ratio"] == pytest.approx(high_s / low_s)
    # One validation split for every run, whatever the fidelity's subset.
    assert {r["val_size"] for r in runs} == {VAL} == {data["val_size"]}
    assert {r["train_size"] for r in runs} == {300, 600}
    assert data["low"] == LOW and data["high"] == HIGH and data["seeds"] == SEEDS


def test_bootstrap_intervals_hold_the_estimate_within_minus_one_to_one(done):
    _, report = done
    for value, (lo, hi) in ((report.spearman, report.spearman_ci), (report.kendall, report.kendall_ci)):
        assert -1 <= lo <= value <= hi <= 1
    assert 0 < report.bootstrap_valid <= report.bootstrap == 500


def test_plot_is_a_png_of_a_readable_size(done):
    out, _ = done
    path = out / "calibration.png"
    assert path.stat().st_size > 5_000
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode in ("RGB", "RGBA")
        assert img.width >= 600 and img.height >= 450
    assert not list(out.glob("*.tmp")) and not (out / "checkpoints").exists()


# --- resuming -----------------------------------------------------------------------------


def test_rerun_trains_nothing_and_rewrites_the_report(done, space_file, tmp_path, monkeypatch):
    out = copy_of(done, tmp_path)
    (out / "calibration.json").unlink()
    (out / "calibration.png").unlink()
    calls = count_training(monkeypatch)
    report = calibrate(str(space_file), DATA, SAMPLES, LOW, HIGH, out=out, **COMMON)
    assert calls == []
    assert json.loads((out / "calibration.json").read_text())["spearman"] == done[1].spearman
    assert (out / "calibration.png").is_file()
    assert report.rows == done[1].rows


def test_a_cut_short_last_line_is_ignored_and_only_that_run_trains_again(done, space_file, tmp_path,
                                                                         monkeypatch, capsys):
    out = copy_of(done, tmp_path)
    text = (out / "runs.jsonl").read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    (out / "runs.jsonl").write_text(text[: len(text) - len(last) // 2 - 1])  # a kill mid-write
    calls = count_training(monkeypatch)
    code = cli(["calibrate", "--space", str(space_file), "--dataset", DATA, "--samples", str(SAMPLES),
                "--low", LOW, "--high", HIGH, "--seeds", str(SEEDS), "--val-size", str(VAL),
                "--threads", "1", "--bootstrap", "500", "--out", str(out)])
    assert code == 0 and len(calls) == 1
    captured = capsys.readouterr()
    total = SAMPLES * (SEEDS + 1)
    assert f"resuming: {total - 1} of {total} runs finished earlier" in captured.err
    assert f"run {total}/{total}: high seed 0, arch {SAMPLES}/{SAMPLES} ... val 0." in captured.err
    assert "Spearman rho" in captured.out and "Kendall tau" in captured.out
    runs = read_runs(out)  # every line parses: the partial one was cut off before appending
    assert len(runs) == total
    # Training is deterministic on the CPU: the run trained again gives the same accuracy.
    def without_seconds(rows):
        return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in rows]
    rows = json.loads((out / "calibration.json").read_text())["rows"]
    assert without_seconds(rows) == without_seconds(done[1].to_dict()["rows"])


def test_cli_json_prints_the_report(done, space_file, tmp_path, capsys):
    out = copy_of(done, tmp_path)
    code = cli(["calibrate", "--space", str(space_file), "--dataset", DATA, "--samples", str(SAMPLES),
                "--low", LOW, "--high", HIGH, "--seeds", str(SEEDS), "--val-size", str(VAL),
                "--threads", "1", "--bootstrap", "500", "--out", str(out), "--json", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    assert json.loads(captured.out) == json.loads((out / "calibration.json").read_text())


@pytest.mark.parametrize("change, needle", [
    (["--seeds", "3"], "--seeds 3 here, 2 there"),
    (["--high", "epochs=4,subset=600"], "--high 'epochs=4,subset=600' here"),
    (["--val-size", "100"], "--val-size 100 here, 120 there"),
])
def test_other_arguments_on_an_existing_out_are_refused(done, space_file, tmp_path, capsys, monkeypatch,
                                                        change, needle):
    out = copy_of(done, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = count_training(monkeypatch)
    args = {"--space": str(space_file), "--dataset": DATA, "--samples": str(SAMPLES), "--low": LOW,
            "--high": HIGH, "--seeds": str(SEEDS), "--val-size": str(VAL), "--out": str(out)}
    args.update(dict(zip(change[::2], change[1::2])))
    code = cli(["calibrate", *itertools.chain(*args.items()), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and calls == []
    assert err.startswith("error: --out ") and needle in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_runs_without_their_arguments_file_are_refused(done, space_file, tmp_path):
    out = copy_of(done, tmp_path)
    (out / "calibration.args.json").unlink()
    with pytest.raises(UserError, match="without calibration.args.json"):
        calibrate(str(space_file), DATA, SAMPLES, LOW, HIGH, out=out, **COMMON)


# --- arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("epochs=2,subset=4500", Fidelity(epochs=2, subset=4500)),
    (" epochs = 0.5 , lr=0.05 ", Fidelity(epochs=0.5, lr=0.05)),
    ("images=1e4,batch_size=64", Fidelity(images=10000, batch_size=64)),
    ("seconds=30", Fidelity(seconds=30.0)),
])
def test_parse_fidelity_reads_specs_and_writes_them_back(text, expected):
    fid = parse_fidelity(text)
    assert fid == expected
    assert parse_fidelity(str(fid)) == fid
    assert str(parse_fidelity("subset=4500,epochs=2.0")) == "epochs=2,subset=4500"
    assert fid.budget.epochs == fid.epochs and fid.budget.images == fid.images


@pytest.mark.parametrize("text, needle", [
    ("", "is empty"),
    ("subset=100", "has no budget"),
    ("epochs=2,batch_size=32", None),
    ("epochs=2,foo=1", "unknown key 'foo'"),
    ("epochs=2,epochs=3", "gives epochs twice"),
    ("epochs", "is not key=value"),
    ("epochs=", "is not key=value"),
    ("epochs=2,,subset=10", "empty item"),
    ("epochs=two", "epochs must be a number"),
    ("epochs=-1", "epochs must be a finite number > 0"),
    ("epochs=nan", "epochs must be a finite number > 0"),
    ("epochs=inf", "epochs must be a finite number > 0"),
    ("epochs=1,subset=10.5", "subset must be a whole number"),
    ("images=0", "images must be a finite number > 0"),
])
def test_parse_fidelity_names_the_flag_and_the_problem(text, needle):
    if needle is None:
        assert parse_fidelity(text, "--low").batch_size == 32
        return
    with pytest.raises(UserError) as err:
        parse_fidelity(text, "--low")
    message = str(err.value)
    assert message.startswith("--low") and needle in message and "\n" not in message


@pytest.mark.parametrize("kwargs, needle", [
    (dict(samples=2), "samples must be a whole number >= 3"),
    (dict(seeds=0), "seeds must be a whole number >= 1"),
    (dict(recipe="long"), "recipe must be one of proxy, paper"),
    (dict(val_size=0), "val_size must be a whole number >= 1"),
    (dict(low="epochs=1,foo=2"), "low 'epochs=1,foo=2' has an unknown key"),
])
def test_calibrate_refuses_bad_arguments_before_training(space_file, tmp_path, monkeypatch, kwargs, needle):
    calls = count_training(monkeypatch)
    args = dict(samples=3, low="epochs=1", high="epochs=2", out=tmp_path / "o")
    args.update(kwargs)
    with pytest.raises(UserError, match=needle):
        calibrate(str(space_file), DATA, args.pop("samples"), args.pop("low"), args.pop("high"), **args)
    assert calls == [] and not (tmp_path / "o").exists()


def test_a_low_fidelity_costlier_than_the_high_one_warns_but_runs(space_file, monkeypatch):
    calls = count_training(monkeypatch)
    with pytest.warns(UserWarning) as caught:
        report = calibrate(str(space_file), DATA, 3, "images=64", "images=32", val_size=VAL,
                           num_threads=1, progress=False, bootstrap=100)
    messages = [str(w.message) for w in caught]
    assert any("allows more training than the high one" in m for m in messages)
    assert len(calls) == 6 and report.out is None and report.archs == 3
    # One or two steps learn nothing: every accuracy is chance, the correlation undefined.
    assert any("rank correlation is undefined" in m for m in messages)
    assert report.to_dict()["spearman"] is None and report.to_dict()["spearman_ci"] == [None, None]


def fake_training(monkeypatch, fail_index=None):
    """Replace training by accuracies that rank architectures by parameter count at both
    fidelities (a perfect proxy); the architecture at ``fail_index`` of the draw diverges."""
    from space.cost import cost

    seen = []

    def fake(arch, splits, budget, config, **kwargs):
        if arch.to_string() not in seen:
            seen.append(arch.to_string())
        if seen.index(arch.to_string()) == fail_index:
            raise nas.train.Diverged("loss is nan at epoch 1, step 3", step=3)
        size = cost(arch).params / 1e5
        acc = size / 2 if budget.epochs < 2 else size ** 0.5 / 2
        return SimpleNamespace(val_acc=acc, val_acc_se=0.01, seconds=budget.epochs, train_seconds=0.5,
                               macs=cost(arch).macs, params=cost(arch).params, epochs=budget.epochs,
                               steps=1, images_seen=32, batch_size=32, recipe=config.recipe)

    monkeypatch.setattr(nas.train, "train", fake)


def test_a_perfect_proxy_has_correlation_one_and_a_failed_arch_is_left_out(space_file, tmp_path,
                                                                        monkeypatch):
    fake_training(monkeypatch, fail_index=0)
    out = tmp_path / "o"
    with pytest.warns(UserWarning, match="1 of 6 architectures had a failed run"):
        report = calibrate(str(space_file), DATA, 6, "epochs=1", "epochs=4", out=out, val_size=VAL,
                           progress=False, bootstrap=200)
    assert report.archs == 5 and len(report.failed) == 1
    assert report.spearman == pytest.approx(1) and report.kendall == pytest.approx(1)
    assert report.spearman_ci == pytest.approx((1, 1)) and report.kendall_ci == pytest.approx((1, 1))
    assert report.cost_ratio == pytest.approx(4) and report.low_seed_std is None
    failed = [r for r in read_runs(out) if "failed" in r]
    assert {(r["fidelity"], r["arch"]) for r in failed} == {("low", report.failed[0]), ("high", report.failed[0])}
    assert all("loss is nan" in r["failed"] for r in failed)
    assert report.failed[0] not in [row.arch for row in report.rows]
    # The failure is a result too: a re-run does not try it again.
    calls = count_training(monkeypatch)
    with pytest.warns(UserWarning, match="failed run"):
        calibrate(str(space_file), DATA, 6, "epochs=1", "epochs=4", out=out, val_size=VAL,
                  progress=False, bootstrap=200)
    assert calls == []


def test_draw_architectures_skips_duplicates_and_refuses_a_space_too_small():
    space = SearchSpace.from_dict({"base": "net_r16-stem_c8_s1-mb_k3_s2_e2_c16_l1-head_c32",
                                   "defaults": {"kernel": [3, 5], "expand": [1, 2]}})
    archs = draw_architectures(space, 4, seed=0)
    assert len({a.to_string() for a in archs}) == 4 == space.size()
    assert [a.to_string() for a in draw_architectures(space, 4, seed=0)] == [a.to_string() for a in archs]
    with pytest.raises(UserError, match="more architectures than the 4"):
        draw_architectures(space, 5, seed=0, name="--samples")


# --- statistics ---------------------------------------------------------------------------


def test_row_statistics_match_scipy_with_ties_and_constant_rows():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=(40, 7)).astype(float)  # small integers: many ties
    y = rng.integers(0, 4, size=(40, 7)).astype(float)
    x[0] = 2.0  # constant: undefined
    rho, tau = spearman_rows(x, y), kendall_rows(x, y)
    assert np.isnan(rho[0]) and np.isnan(tau[0])
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want_rho = [stats.spearmanr(a, b).statistic for a, b in zip(x, y)]
            want_tau = [stats.kendalltau(a, b).statistic for a, b in zip(x, y)]
    np.testing.assert_allclose(rho[1:], want_rho[1:], atol=1e-12)
    np.testing.assert_allclose(tau[1:], want_tau[1:], atol=1e-12)


def test_a_fidelity_that_mostly_ties_is_called_unreliable():
    from nas.calibrate.summarise import _tied_share

    # 4 of 6 values share one accuracy (chance), 2 are distinct: 4/6 are tied
    assert _tied_share(np.array([0.25, 0.25, 0.25, 0.25, 0.3, 0.4])) == pytest.approx(4 / 6)
    assert _tied_share(np.array([0.1, 0.2, 0.3])) == 0.0
