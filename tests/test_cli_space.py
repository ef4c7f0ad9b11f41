import json
import subprocess
import sys

import pytest

from space import Arch, cost
from space.cli import main as space_main
from scaling.cli import main as scaling_main


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120)


def test_python_m_space_info_json():
    proc = run_module("space", "info", "efficientnet_b3", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["params"] == 12_233_232
    assert info["resolution"] == 300
    assert info["macs"] == pytest.approx(1.827e9, rel=0.01)
    assert Arch.from_string(info["arch"]).resolution == 300
    assert len([p for p in info["parts"] if p["part"][1:].isdigit()]) == 7


def test_user_error_is_one_line_exit_2_no_traceback():
    proc = run_module("space", "info", "net_r224-stem_c32-mb_k4_c16_l1-head_c10")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "kernel" in proc.stderr and "4" in proc.stderr
    assert proc.stdout == ""


def test_info_table_has_a_row_per_stage(capsys):
    assert space_main(["info", "efficientnet_b0"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("s") and line[1].isdigit()]
    assert len(rows) == 7
    assert "5,288,548" in out and "385,814,752" in out


def test_info_options(capsys, tmp_path):
    path = tmp_path / "arch.json"
    path.write_text(Arch.from_string("net_r32-stem_c16_s1-mb_k3_s2_e4_c24_l2_se0.25-head_c64").to_json())
    assert space_main(["info", str(path), "--json", "--num-classes", "10", "--resolution", "64"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["resolution"] == 64 and info["num_classes"] == 10
    assert info["macs"] == cost(Arch.from_string(info["arch"]), num_classes=10).macs
    assert space_main(["info", "efficientnet_b0", "--num-classes", "0"]) == 2
    assert "--num-classes" in capsys.readouterr().err


def test_sample_json_lines(capsys):
    assert space_main(["sample", "mnasnet_cifar", "-n", "4", "--seed", "3", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    docs = [json.loads(line) for line in lines]
    for doc in docs:
        assert cost(Arch.from_string(doc["arch"])).macs == doc["macs"]
    assert space_main(["sample", "mnasnet_cifar", "-n", "4", "--seed", "3", "--json"]) == 0
    assert capsys.readouterr().out.splitlines() == lines


def test_sample_unknown_space_exits_2(capsys):
    assert space_main(["sample", "no_such_space", "-n", "1"]) == 2
    err = capsys.readouterr().err
    assert "no_such_space" in err and err.count("\n") == 1


def test_list(capsys):
    assert space_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_b7" in out and "v2_cifar" in out


def test_scaling_scale(capsys):
    assert scaling_main(["scale", "efficientnet_b0", "--depth", "1.2", "--width", "1.1",
                         "--resolution", "260", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["params"] == 9_109_994  # B2's multipliers give B2's parameters
    assert scaling_main(["scale", "efficientnet_b0", "--width", "-1"]) == 2
    assert scaling_main(["scale", "efficientnet_b0", "--resolution", "16"]) == 2
    assert "too small" in capsys.readouterr().err


def test_info_json_shows_batch_norm_settings(capsys):
    assert space_main(["info", "efficientnet_v2_s", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["spec"]["bn_eps"] == 0.001 and info["spec"]["bn_momentum"] == 0.1
    assert "_eps0.001_" in info["arch"]
