"""nas eval: a `nas train` checkpoint measured on its own validation split (or the test split).

Oracles: the accuracy `nas train` itself reported for the same weights (metrics.json), and
the network run here by hand: weights read with ``torch.load``, the split remade with
`make_splits` from the training call's arguments, images normalised by the formula
(``(x / 255 - mean) / std``), top-1 / top-5 / confusion counted with numpy.
"""

import argparse
import json
import os

import numpy as np
import pytest
import torch

import nas.cli
from nas.data import make_splits
from nas.evaluation.cli import add_parser as add_eval_parser
from space import Arch, build_model
from space.command_line import make_main

ARCH = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l1-head_c32"
OTHER = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-head_c32"
DATA = "synthetic:400:10:16"
SPLIT = dict(val_size=100, subset=300, split_seed=3)


def main(argv):
    def build():
        parser = argparse.ArgumentParser(prog="nas")
        add_eval_parser(parser.add_subparsers(dest="command", required=True))
        return parser

    return make_main(build)(argv)


def train(folder, *extra):
    threads = torch.get_num_threads()
    try:
        assert nas.cli.main(["train", "--arch", ARCH, "--dataset", DATA, "--subset", str(SPLIT["subset"]),
                             "--val-size", str(SPLIT["val_size"]), "--split-seed", str(SPLIT["split_seed"]),
                             "--threads", "1", "--out", str(folder), "--quiet", *extra]) == 0
    finally:
        torch.set_num_threads(threads)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """8 epochs: enough to be clearly above chance on 10 classes, so the numbers mean something."""
    return train(tmp_path_factory.mktemp("eval") / "run", "--epochs", "8")


def by_hand(checkpoint, data, weights=None):
    """top-1, top-5, confusion counts and mean cross entropy of the checkpoint's network on
    ``data``, computed here; ``weights``: "model" or "ema" (default: EMA when present)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = build_model(Arch.from_string(state["meta"]["arch"]), num_classes=state["meta"]["num_classes"])
    weights = weights or ("ema" if state["ema"] is not None else "model")
    model.load_state_dict(state[weights])
    model.eval()
    mean = torch.tensor(data.mean or (0.5, 0.5, 0.5)).view(1, 3, 1, 1)
    std = torch.tensor(data.std or (0.5, 0.5, 0.5)).view(1, 3, 1, 1)
    x = (data.images.float() / 255 - mean) / std
    with torch.no_grad():
        logits = model(x).numpy()
    labels = data.labels.numpy()
    order = np.argsort(-logits, axis=1)
    top1 = float(np.mean(order[:, 0] == labels))
    top5 = float(np.mean([label in row[:5] for label, row in zip(labels, order)]))
    n = logits.shape[1]
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (labels, order[:, 0]), 1)
    shifted = logits - logits.max(axis=1, keepdims=True)
    loss = float(np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(labels)), labels]))
    return top1, top5, confusion, loss


def check_png(path):
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    assert rgb.shape[0] >= 500 and rgb.shape[1] >= 500
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    assert len(colours) > 50  # shaded cells, text, axes: not a blank picture


def test_validation_top1_matches_training_and_a_hand_computation(run, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--dataset", DATA, "--out", str(out),
                 "--batch-size", "37", "--threads", "1", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    val = make_splits(DATA, **SPLIT).val
    top1, top5, confusion, loss = by_hand(run / "checkpoint.pt", val)
    assert summary["split"] == "val" and summary["images"] == len(val) == 100
    assert summary["top1"] == pytest.approx(top1, abs=1e-12)
    assert summary["top5"] == pytest.approx(top5, abs=1e-12)
    assert summary["loss"] == pytest.approx(loss, rel=1e-4)
    assert summary["images_per_s"] > 0
    # What nas train reported for the same weights on the same split.
    assert summary["top1"] == pytest.approx(json.loads((run / "metrics.json").read_text())["val_acc"], abs=1e-12)
    assert 0.2 < top1 < 1.0 and top5 > top1  # above chance (0.1), and top-5 says more than top-1

    record = json.loads((out / "eval_val.json").read_text())
    assert np.array_equal(np.array(record["confusion"]), confusion)
    assert record["class_names"] == [f"class{i}" for i in range(10)]
    assert record["top1"] == summary["top1"] and record["train_val_acc"] == summary["top1"]
    assert record["per_class_acc"]["class3"] == pytest.approx(confusion[3, 3] / confusion[3].sum())
    check_png(out / "confusion_val.png")
    assert sorted(os.listdir(out)) == ["confusion_val.png", "eval_val.json"]  # no temporary files


def test_test_split_and_default_dataset_and_out(run, capsys):
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--test", "--threads", "1", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    test = make_splits(DATA, **SPLIT, with_test=True).test
    top1, top5, _, _ = by_hand(run / "checkpoint.pt", test)
    assert summary["split"] == "test" and summary["images"] == len(test)
    assert summary["top1"] == pytest.approx(top1, abs=1e-12) and summary["top5"] == pytest.approx(top5, abs=1e-12)
    assert (run / "eval_test.json").is_file()  # --out defaults to the checkpoint's folder
    check_png(run / "confusion_test.png")


def test_ema_weights_are_the_ones_evaluated(tmp_path, capsys):
    folder = train(tmp_path / "ema", "--epochs", "2", "--ema", "0.5")
    state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["ema"] is not None
    capsys.readouterr()  # nas train's line
    assert main(["eval", "--checkpoint", str(folder / "checkpoint.pt"), "--threads", "1", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    val = make_splits(DATA, **SPLIT).val
    top1, _, _, loss = by_hand(folder / "checkpoint.pt", val)
    _, _, _, raw_loss = by_hand(folder / "checkpoint.pt", val, weights="model")
    assert summary["top1"] == pytest.approx(top1, abs=1e-12)
    record = json.loads((folder / "eval_val.json").read_text())
    # The EMA's loss, not the raw weights' (which differ from it by much more than rounding).
    assert record["loss"] == pytest.approx(loss, abs=1e-5) and abs(loss - raw_loss) > 1e-4
    assert summary["top1"] == pytest.approx(json.loads((folder / "metrics.json").read_text())["val_acc"], abs=1e-12)
    assert record["weights"] == "ema"


@pytest.mark.parametrize("flags, words", [
    (["--dataset", "synthetic:500:10:16"], ["--dataset synthetic:500:10:16 does not hold the images", "--test"]),
    (["--dataset", "synthetic:400:4:16"], ["has 4 classes", "trained for 10"]),
    (["--arch", OTHER], ["holds another architecture than --arch"]),
])
def test_refusals_are_one_sentence(run, tmp_path, capsys, flags, words):
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(out), "--quiet", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)
    assert not out.exists()
