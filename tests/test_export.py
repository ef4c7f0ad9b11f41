"""nas export: ONNX and TorchScript files that run without effnas and match PyTorch.

The oracles are independent of the exporter: the reference logits come from a network
built here with `space.build_model` and loaded here from the checkpoint with
``torch.load``; the exported files are run by ONNX Runtime and ``torch.jit.load``
directly, on inputs (and a batch size) the exporter never saw.
"""

import argparse
import json
import sys
import warnings

import numpy as np
import pytest
import torch

import nas.cli
from nas.evaluation.cli import add_parser as add_eval_parser
from nas.export.cli import add_parser as add_export_parser
from space import Arch, build_model
from space.command_line import make_main

ARCH = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l1-head_c32"
OTHER = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-head_c32"
DATA = "synthetic:240:4:16"
NEEDS_ORT = "ONNX export needs the optional extra: pip install 'effnas[export]'"


def main(argv):
    def build():
        parser = argparse.ArgumentParser(prog="nas")
        sub = parser.add_subparsers(dest="command", required=True)
        add_export_parser(sub)
        add_eval_parser(sub)
        return parser

    return make_main(build)(argv)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 1-epoch `nas train` run of ARCH on synthetic data."""
    folder = tmp_path_factory.mktemp("export") / "run"
    threads = torch.get_num_threads()
    try:
        assert nas.cli.main(["train", "--arch", ARCH, "--dataset", DATA, "--epochs", "1", "--subset", "160",
                             "--val-size", "40", "--threads", "1", "--out", str(folder), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    return folder


def trained_reference(checkpoint):
    """The checkpoint's network, rebuilt and loaded here (not through nas.evaluation)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    arch = Arch.from_string(state["meta"]["arch"])
    model = build_model(arch, num_classes=state["meta"]["num_classes"])
    model.load_state_dict(state["ema"] if state["ema"] is not None else state["model"])
    return model.eval(), arch


def fresh_model(arch, num_classes):
    """The network as `nas train` initialised it (seed 0), before any training step."""
    torch.manual_seed(0)
    return build_model(arch, num_classes=num_classes).eval()


def images(n, side=16, seed=123):
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def close(got, expected):
    """Largest absolute difference, and whether it is within 1e-4 of the logits' scale."""
    diff = float(np.abs(np.asarray(got) - np.asarray(expected)).max())
    return diff, diff <= 1e-4 * float(np.abs(np.asarray(expected)).max())


def printed_difference(out):
    line = next(line for line in out.splitlines() if line.startswith("checked with"))
    return float(line.split("difference from PyTorch ")[1].split(",")[0])


def test_onnx_export_of_a_trained_checkpoint_matches_pytorch(run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime", reason=NEEDS_ORT)
    onnx = pytest.importorskip("onnx", reason=NEEDS_ORT)
    target = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(run / "checkpoint.pt"), "--format", "onnx", "--out", str(target),
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {target} (ONNX opset 18")
    assert printed_difference(out) < 1e-4

    onnx.checker.check_model(str(target))
    model = onnx.load(str(target))
    assert model.opset_import[0].version >= 17
    meta = {p.key: p.value for p in model.metadata_props}
    reference, arch = trained_reference(run / "checkpoint.pt")
    assert Arch.from_string(meta["arch"]).to_string() == arch.to_string() and meta["num_classes"] == "4"
    assert json.loads(meta["class_names"]) == ["class0", "class1", "class2", "class3"]

    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    [inp], [outp] = session.get_inputs(), session.get_outputs()
    assert inp.shape[1:] == [3, 16, 16] and isinstance(inp.shape[0], str)  # a free batch axis
    for batch in (1, 5):  # batch sizes the exporter did not use
        x = images(batch, seed=batch)
        got = session.run([outp.name], {inp.name: x.numpy()})[0]
        with torch.no_grad():
            expected = reference(x).numpy()
            untrained = fresh_model(arch, 4)(x).numpy()
        assert got.shape == (batch, 4)
        diff, ok = close(got, expected)
        assert ok, diff
        # The weights are the checkpoint's, not the initial ones.
        assert np.abs(got - untrained).max() > 100 * 1e-4 * np.abs(expected).max()


def test_torchscript_export_of_a_trained_checkpoint_matches_pytorch(run, tmp_path, capsys):
    target = tmp_path / "model.pt"  # the format from the suffix
    assert main(["export", "--checkpoint", str(run / "checkpoint.pt"), "--arch", str(run / "arch.json"),
                 "--out", str(target), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {target} (TorchScript") and printed_difference(out) < 1e-4
    reference, arch = trained_reference(run / "checkpoint.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still supported
        extra = {"effnas.json": ""}
        loaded = torch.jit.load(str(target), map_location="cpu", _extra_files=extra)
    assert json.loads(extra["effnas.json"])["arch"] == arch.to_string()
    x = images(6)
    with torch.no_grad():
        got, expected, untrained = loaded(x), reference(x), fresh_model(arch, 4)(x)
    diff, ok = close(got, expected)
    assert got.shape == (6, 4) and ok, diff
    assert (got - untrained).abs().max() > 100 * 1e-4 * expected.abs().max()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_model_of_an_untrained_tiny_arch(tmp_path, fmt):
    """The library call on a network built here: the file's logits are this network's."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason=NEEDS_ORT)
    from nas.export import export_model

    torch.manual_seed(7)
    model = build_model(ARCH, num_classes=3).eval()
    x = images(4)
    with torch.no_grad():
        expected = model(x).numpy()
    report = export_model(model, tmp_path / "m.bin", fmt, resolution=16, metadata={"note": "tiny"})
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(tmp_path / "m.bin"), providers=["CPUExecutionProvider"])
        got = session.run(None, {"images": x.numpy()})[0]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            got = torch.jit.load(str(tmp_path / "m.bin"))(x).detach().numpy()
    diff, ok = close(got, expected)
    assert ok, diff
    assert report.size == (tmp_path / "m.bin").stat().st_size and report.max_abs_diff <= report.tolerance
    assert report.tolerance == pytest.approx(1e-4 * report.logit_scale) and report.logit_scale > 0


def test_onnx_without_the_extra_is_one_sentence_naming_the_install(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    target = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(run / "checkpoint.pt"), "--format", "onnx", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --format onnx needs") and err.count("\n") == 1
    assert "onnxruntime" in err and "pip install 'effnas[export]'" in err
    assert not target.exists()


def test_refusals_are_one_sentence_and_write_nothing(run, tmp_path, capsys):
    target = tmp_path / "model.pt"
    cases = [
        (["--checkpoint", str(run / "checkpoint.pt"), "--arch", OTHER], ["holds another architecture", "--arch"]),
        (["--checkpoint", str(run / "checkpoint.pt"), "--num-classes", "10"], ["--num-classes 10", "4 classes"]),
        (["--checkpoint", str(run / "missing.pt")], ["--checkpoint", "no such file"]),
        (["--checkpoint", str(run / "metrics.json")], ["--checkpoint", "cannot be read as a checkpoint"]),
        ([], ["give --arch or --checkpoint"]),
    ]
    for flags, words in cases:
        assert main(["export", *flags, "--out", str(target)]) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        for w in words:
            assert w in err, (w, err)
    assert main(["export", "--arch", ARCH, "--out", str(tmp_path / "model.bin")]) == 2
    assert "give --format" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_does_not_match_is_not_written_and_the_old_one_stays(run, tmp_path, capsys, monkeypatch):
    import nas.export.export as exporter

    target = tmp_path / "model.pt"
    target.write_bytes(b"the previous export")
    monkeypatch.setattr(exporter, "RELATIVE_TOLERANCE", -1.0)  # no file can match now
    assert main(["export", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "outputs differ from PyTorch's" in err and "nothing was written" in err
    assert target.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind
