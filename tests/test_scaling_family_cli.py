"""Families and their tables (scaling/family.py) and the ``scaling family / target / grid``
commands (scaling/cli.py)."""

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from space import Arch
from space.cost import cost
from space.presets import get_preset
from scaling import (ScalingError, family, family_columns, official_comparison, to_csv, to_json,
                     to_markdown, write_family)
from scaling.cli import main as scaling_main, parse_phis

PAPER = (1.2, 1.1, 1.15)
COEFFS = ["--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15"]


def b0() -> Arch:
    return get_preset("efficientnet_b0").arch()


@pytest.fixture(scope="module")
def b0_family():
    return family(b0(), *PAPER, range(0, 8))


# --------------------------------------------------------------------------- library


def test_family_members_in_order(b0_family):
    assert [m.phi for m in b0_family] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert b0_family[0].arch == b0()
    assert [m.macs for m in b0_family] == sorted(m.macs for m in b0_family)
    with pytest.raises(ScalingError, match="--phi"):
        family(b0(), *PAPER, [])


def test_csv_has_its_columns_and_exact_counts(b0_family):
    columns = family_columns(b0_family)
    expected = ["phi", "depth_multiplier", "width_multiplier", "resolution_multiplier",
                "resolution", "dropout"]
    for i in range(1, 8):
        expected += [f"stage{i}_channels", f"stage{i}_layers"]
    expected += ["params", "macs", "macs_ratio", "ideal_macs_ratio"]
    assert columns == expected
    rows = list(csv.DictReader(io.StringIO(to_csv(b0_family))))
    assert list(rows[0]) == expected and len(rows) == 8
    for row, m in zip(rows, b0_family):
        c = cost(m.arch)
        assert int(row["macs"]) == c.macs and int(row["params"]) == c.params
        assert [int(row[f"stage{i}_layers"]) for i in range(1, 8)] == [s.layers for s in m.arch.stages]
        assert int(row["resolution"]) == m.arch.resolution
    # B0 itself in the first row, the hand-checked phi = 1 member in the second.
    assert rows[0]["stage1_channels"] == "16" and rows[0]["macs"] == "385814752"
    assert rows[1]["resolution"] == "256" and rows[1]["stage3_channels"] == "48"
    assert "latency_ms" in family_columns(b0_family, latency=True)


def test_markdown_has_its_columns(b0_family):
    lines = to_markdown(b0_family).splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:6] == ["phi", "depth ×", "width ×", "resolution ×", "resolution", "dropout"]
    assert header[6:13] == [f"s{i} c×l" for i in range(1, 8)]
    assert header[13:] == ["params", "MACs", "MACs ratio", "ideal ratio"]
    assert len(lines) == 2 + 8
    assert "| 16×1 | 24×2 | 40×2 |" in lines[2] and "386M" in lines[2]


def test_latency_column_uses_given_latencies(b0_family):
    text = to_markdown(b0_family[:2], latency=True, latencies=[0.0123, 0.02])
    assert "latency (ms)" in text and "12.3" in text
    assert to_json(b0_family[:1], latencies=[0.5])[0]["latency_ms"] == 500.0


def test_json_members(b0_family):
    docs = json.loads(json.dumps(to_json(b0_family)))
    for doc, m in zip(docs, b0_family):
        assert {"phi", "arch", "params", "macs", "resolution"} <= set(doc)
        arch = Arch.from_string(doc["arch"])
        assert arch == m.arch and doc["resolution"] == arch.resolution
        assert (doc["macs"], doc["params"]) == (cost(arch).macs, cost(arch).params)


def test_official_comparison_for_b0_with_the_papers_coefficients(b0_family):
    rows = official_comparison(b0(), b0_family)
    assert [r.name for r in rows] == [f"efficientnet_b{i}" for i in range(1, 8)]
    for r in rows:
        official = cost(get_preset(r.name).arch())
        assert (r.official_macs, r.official_params) == (official.macs, official.params)
        assert r.macs_difference == pytest.approx(r.member.macs / official.macs - 1)
    # B7 (phi = 7) comes within 5% of the official MACs and params.
    assert abs(rows[-1].macs_difference) < 0.05 and abs(rows[-1].params_difference) < 0.05
    # Other coefficients or another base have no official family.
    assert official_comparison(b0(), family(b0(), 1.2, 1.2, 1.1, [1, 2])) == []
    v2 = get_preset("efficientnet_v2_s").arch()
    assert official_comparison(v2, family(v2, *PAPER, [1])) == []
    # Fractional phi has no official counterpart.
    assert official_comparison(b0(), family(b0(), *PAPER, [1.5])) == []


def test_write_family_writes_whole_files(tmp_path, b0_family):
    written = write_family(b0_family, tmp_path / "out", base=b0())
    names = sorted(p.name for p in written)
    assert names == ["family.csv", "family.json", "family.md", "official.json"]
    assert sorted(os.listdir(tmp_path / "out")) == names  # no temporary file left
    doc = json.loads((tmp_path / "out" / "family.json").read_text())
    assert [m["name"] for m in doc["family"]] == [f"phi{i}" for i in range(8)]
    # The same format nas report overlays on a study (untrained: no accuracy).
    from nas.report.data import load_family

    members, why = load_family(tmp_path / "out")
    assert why is None and len(members) == 8 and all(m.acc is None for m in members)
    assert len(json.loads((tmp_path / "out" / "official.json").read_text())) == 7
    assert "efficientnet_b7" in (tmp_path / "out" / "family.md").read_text()
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    with pytest.raises(ScalingError, match="--out"):
        write_family(b0_family, blocker)
    assert blocker.read_text() == "keep"


@pytest.mark.parametrize("spec, values", [
    ("1..7", [1, 2, 3, 4, 5, 6, 7]), ("1,2,3", [1, 2, 3]), ("3,1,2,1", [1, 2, 3]),
    ("0.5", [0.5]), ("3/2", [1.5]), ("0..1:0.25", [0, 0.25, 0.5, 0.75, 1]),
    ("0.5..3", [0.5, 1.5, 2.5]), ("0..1:0.1", [i / 10 for i in range(11)]),
    ("1..2, 4.5", [1, 2, 4.5]),
])
def test_parse_phis(spec, values):
    assert parse_phis(spec) == values


# --------------------------------------------------------------------------- command line


def _run(capsys, *argv):
    code = scaling_main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_family_json(capsys):
    code, out, err = _run(capsys, "family", "--arch", "efficientnet_b0", *COEFFS, "--phi", "1..3", "--json")
    assert code == 0 and err == ""
    docs = json.loads(out)
    assert [d["phi"] for d in docs] == [1, 2, 3]
    assert docs[0]["arch"] == compound_string(1)
    for d in docs:
        assert {"phi", "arch", "params", "macs", "resolution"} <= set(d)
        assert cost(Arch.from_string(d["arch"])).macs == d["macs"]


def compound_string(phi):
    from scaling import compound

    return compound(b0(), phi, *PAPER).arch.to_string()


def test_cli_family_table_with_official_comparison(capsys):
    code, out, _ = _run(capsys, "family", "--arch", "efficientnet_b0", *COEFFS, "--phi", "0..7")
    assert code == 0
    assert out.startswith("| phi | depth × |") and "official" in out
    assert all(f"efficientnet_b{i}" in out for i in range(1, 8))


def test_cli_family_from_a_coefficients_file(tmp_path, capsys):
    path = tmp_path / "coefficients.json"
    path.write_text(json.dumps({"alpha": 1.2, "beta": 1.1, "gamma": 1.15, "accuracy": 0.71,
                                "note": "extra keys are ignored"}))
    code, from_file, _ = _run(capsys, "family", "--arch", "efficientnet_b0", "--coefficients",
                              str(path), "--phi", "1,2.5", "--json")
    assert code == 0
    code, from_flags, _ = _run(capsys, "family", "--arch", "efficientnet_b0", *COEFFS,
                               "--phi", "1,2.5", "--json")
    assert json.loads(from_file) == json.loads(from_flags)


def test_cli_family_out(tmp_path, capsys):
    out_dir = tmp_path / "fam"
    code, out, _ = _run(capsys, "family", "--arch", "efficientnet_v2_s", *COEFFS, "--phi", "0..2:0.5",
                        "--max-resolution", "480", "--later-stage-depth", "2", "--out", str(out_dir))
    assert code == 0 and "| 2 |" in out
    rows = list(csv.DictReader(io.StringIO((out_dir / "family.csv").read_text())))
    assert [float(r["phi"]) for r in rows] == [0, 0.5, 1, 1.5, 2]
    assert max(int(r["resolution"]) for r in rows) == 480
    assert not (out_dir / "official.json").exists()


def test_cli_target_json(capsys):
    code, out, _ = _run(capsys, "target", "--arch", "efficientnet_b0", *COEFFS, "--macs", "4G", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["hit"] is True and doc["target"] == 4e9
    assert abs(cost(Arch.from_string(doc["arch"])).macs / 4e9 - 1) <= 0.02
    code, out, _ = _run(capsys, "target", "--arch", "efficientnet_b0", *COEFFS, "--params", "12M")
    assert code == 0 and "within 2% of the target" in out


def test_cli_target_miss_says_so(capsys):
    code, out, _ = _run(capsys, "target", "--arch", "efficientnet_b0", *COEFFS, "--macs", "2G")
    assert code == 0 and "NOT within 2%" in out and "nearest" in out


def test_cli_grid_dry_run_json(capsys):
    code, out, _ = _run(capsys, "grid", "--arch", "efficientnet_b0", "--dry-run", "--json")
    assert code == 0
    docs = json.loads(out)
    assert all(set(d) == {"alpha", "beta", "gamma", "product", "macs_ratio"} for d in docs)
    assert {"alpha": 1.2, "beta": 1.1, "gamma": 1.15} in [
        {k: d[k] for k in ("alpha", "beta", "gamma")} for d in docs]
    assert all(abs(d["product"] - 2) <= 0.1 + 1e-9 and d["macs_ratio"] > 1 for d in docs)


def test_cli_grid_dry_run_table(capsys):
    code, out, _ = _run(capsys, "grid", "--arch", "efficientnet_b0", "--dry-run", "--step", "0.1")
    assert code == 0 and out.startswith("| alpha | beta | gamma | product | MACs ratio |")
    assert "| 1.2 | 1.1 | 1.2 |" in out


@pytest.fixture
def coefficient_files(tmp_path):
    files = {"bad_json": "{alpha: 1.2", "list": "[1.2, 1.1, 1.15]",
             "missing": json.dumps({"alpha": 1.2, "beta": 1.1}),
             "text": json.dumps({"alpha": "1.2", "beta": 1.1, "gamma": 1.15}),
             "far": json.dumps({"alpha": 1.2, "beta": 1.1, "gamma": 1.3}),
             "below": json.dumps({"alpha": 0.8, "beta": 1.2, "gamma": 1.2})}
    for name, text in files.items():
        (tmp_path / f"{name}.json").write_text(text)
    return tmp_path


B0 = ["--arch", "efficientnet_b0"]


@pytest.mark.parametrize("argv, needle", [
    (["family", *B0, "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.3", "--phi", "1"], "2.454"),
    (["family", *B0, "--alpha", "0.9", "--beta", "1.1", "--gamma", "1.3", "--phi", "1"], "--alpha"),
    (["family", *B0, "--alpha", "x", "--beta", "1.1", "--gamma", "1.3", "--phi", "1"], "--alpha"),
    (["family", *B0, *COEFFS, "--phi", "-1"], "--phi"),
    (["family", *B0, *COEFFS, "--phi", "nan"], "--phi"),
    (["family", *B0, *COEFFS, "--phi", "inf"], "--phi"),
    (["family", *B0, *COEFFS, "--phi", "3..1"], "--phi"),
    (["family", *B0, *COEFFS, "--phi", "1,,2"], "--phi"),
    (["family", *B0, *COEFFS, "--phi", "0..100000:0.001"], "--phi"),
    (["family", *B0, *COEFFS], "--phi"),
    (["family", *COEFFS, "--phi", "1"], "--arch"),
    (["family", *B0, "--alpha", "1.2", "--phi", "1"], "--beta, --gamma"),
    (["family", *B0, *COEFFS, "--phi", "1", "--later-stage-depth", "0"], "--later-stage-depth"),
    (["family", *B0, *COEFFS, "--phi", "1", "--max-resolution", "100"], "--max-resolution"),
    (["family", *B0, *COEFFS, "--phi", "1", "--product-tolerance", "-1"], "--product-tolerance"),
    (["family", *B0, *COEFFS, "--phi", "500"], "--phi"),
    (["family", *B0, "--coefficients", "{d}/nope.json", "--phi", "1"], "no such file"),
    (["family", *B0, "--coefficients", "{d}/bad_json.json", "--phi", "1"], "not valid JSON"),
    (["family", *B0, "--coefficients", "{d}/list.json", "--phi", "1"], "JSON object"),
    (["family", *B0, "--coefficients", "{d}/missing.json", "--phi", "1"], "'gamma'"),
    (["family", *B0, "--coefficients", "{d}/text.json", "--phi", "1"], "'alpha' must be a number"),
    (["family", *B0, "--coefficients", "{d}/far.json", "--phi", "1"], "far.json: alpha * beta^2"),
    (["family", *B0, "--coefficients", "{d}/below.json", "--phi", "1"], "below.json: alpha must be at least 1"),
    (["family", *B0, "--coefficients", "{d}/far.json", "--alpha", "1.2", "--phi", "1"], "not both"),
    (["target", *B0, *COEFFS, "--macs", "300M"], "--macs"),
    (["target", *B0, *COEFFS, "--params", "1M"], "--params"),
    (["target", *B0, *COEFFS, "--macs", "400m"], "--macs"),
    (["target", *B0, *COEFFS, "--macs=-2G"], "--macs"),
    (["target", *B0, *COEFFS], "exactly one"),
    (["target", *B0, *COEFFS, "--macs", "2G", "--params", "10M"], "exactly one"),
    (["target", *B0, "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.3", "--macs", "2G"], "2.454"),
    (["target", *B0, *COEFFS, "--macs", "2G", "--tolerance", "2"], "--tolerance"),
    (["grid", *B0], "--dry-run"),
    (["grid", *B0, "--dry-run", "--step", "0"], "--step"),
    (["grid", *B0, "--dry-run", "--tolerance", "-0.1"], "--tolerance"),
    (["grid", *B0, "--dry-run", "--step", "abc"], "--step"),
    (["grid", "--dry-run"], "--arch"),
])
def test_cli_bad_inputs_exit_2_with_one_sentence(capsys, coefficient_files, argv, needle):
    argv = [a.replace("{d}", str(coefficient_files)) for a in argv]
    code, out, err = _run(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err and out == ""


def test_cli_bad_out_writes_nothing(tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("keep")
    code, out, err = _run(capsys, "family", *B0, *COEFFS, "--phi", "1", "--out", str(blocker))
    assert code == 2 and "--out" in err and err.count("\n") == 1
    assert blocker.read_text() == "keep" and sorted(os.listdir(tmp_path)) == ["taken"]
    # A bad phi fails before the folder is made.
    code, _, _ = _run(capsys, "family", *B0, *COEFFS, "--phi", "-1", "--out", str(tmp_path / "new"))
    assert code == 2 and not (tmp_path / "new").exists()


def test_cli_bad_input_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "scaling", "family", *B0, "--alpha", "0.5",
                           "--beta", "1.1", "--gamma", "1.15", "--phi", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "--alpha" in proc.stderr


def test_cli_scale_still_works(capsys):
    code, out, _ = _run(capsys, "scale", "efficientnet_b0", "--width", "1.2", "--depth", "1.4",
                        "--resolution", "300", "--json")
    assert code == 0 and json.loads(out)["params"] == cost(get_preset("efficientnet_b3").arch()).params
