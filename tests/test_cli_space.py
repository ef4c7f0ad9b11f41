import json
import subprocess
import sys

import pytest

import torch

from space import Arch, SearchSpace, build_model
from space.thop_reference import thop_conv_linear_macs
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
    # By hand at 64 px: stem 64*64*16*27; block 1 expand 64*64*64*16, depthwise (stride 2)
    # 32*32*64*9, SE 2*64*4, project 32*32*24*64; block 2 expand 32*32*96*24, depthwise
    # 32*32*96*9, SE 2*96*6, project 32*32*24*96; head 32*32*64*24; classifier 64*10.
    assert info["macs"] == (1_769_472 + 4_194_304 + 589_824 + 512 + 1_572_864 + 2_359_296
                            + 884_736 + 1_152 + 2_359_296 + 1_572_864 + 640) == 15_304_960
    assert space_main(["info", "efficientnet_b0", "--num-classes", "0"]) == 2
    assert "--num-classes" in capsys.readouterr().err


def test_sample_json_lines(capsys):
    assert space_main(["sample", "mnasnet_cifar", "-n", "4", "--seed", "3", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    docs = [json.loads(line) for line in lines]
    space = SearchSpace.load("mnasnet_cifar")
    for doc in docs:
        arch = Arch.from_string(doc["arch"])
        assert space.decode(doc["choices"]) == arch  # the printed choices make the printed arch
        with torch.device("meta"):
            model = build_model(arch, num_classes=1000)
        assert doc["macs"] == thop_conv_linear_macs(model, 32)
        assert doc["params"] == sum(p.numel() for p in model.parameters())
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


def test_preset_typo_gets_did_you_mean_on_the_command_line(capsys):
    assert space_main(["info", "efficientnet-b0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "did you mean 'efficientnet_b0'?" in err


def test_info_on_a_search_space_says_how_to_sample_it(capsys, tmp_path):
    assert space_main(["info", "mnasnet_cifar"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "search space" in err
    assert "space sample mnasnet_cifar -n 5" in err
    path = tmp_path / "mine.yaml"
    path.write_text("base: efficientnet_b0\ndefaults: {kernel: [3, 5]}\n")
    assert space_main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a search-space file" in err and f"space sample {path} -n 5" in err
    as_json = tmp_path / "mine.json"
    as_json.write_text(json.dumps({"base": "efficientnet_b0", "defaults": {"kernel": [3, 5]}}))
    assert space_main(["info", str(as_json)]) == 2
    assert f"space sample {as_json} -n 5" in capsys.readouterr().err


def test_list_prints_whole_descriptions(capsys):
    from space.search import SearchSpace

    assert space_main(["list"]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    for name in SearchSpace.names():
        description = " ".join(SearchSpace.load(name).description.split())
        assert description in flat, name
    # The one that used to be cut inside its parenthesis:
    assert "(preset efficientnet_b0_cifar: stride-1 stem, 2x2 map at the head)" in flat


# "net_r32-stem_c16_s1-mb_k3_s2_e4_c24_l2_se0.25-head_c64" at 32 px, by hand: stem 3->16
# 3x3 at 32x32: 32*32*16*27 = 442,368 MACs, 3*16*9 + 2*16 = 464 params. Block 1 (16 -> 64
# -> 24, stride 2, SE 4): expand 32*32*64*16 = 1,048,576; depthwise 16*16*64*9 = 147,456;
# SE 2*64*4 = 512; project 16*16*24*64 = 393,216. Block 2 (24 -> 96 -> 24 at 16x16, SE 6):
# 589,824 + 221,184 + 1,152 + 589,824. Head 24 -> 64 at 16x16: 393,216. Classifier 64*n.
TINY_JSON_ARCH = "net_r32-stem_c16_s1-mb_k3_s2_e4_c24_l2_se0.25-head_c64"
TINY_MACS_WITHOUT_CLASSIFIER = (442_368 + 1_048_576 + 147_456 + 512 + 393_216
                                + 589_824 + 221_184 + 1_152 + 589_824 + 393_216)


def test_info_takes_num_classes_from_an_arch_json_written_by_nas_train(capsys, tmp_path):
    path = tmp_path / "arch.json"
    doc = {**Arch.from_string(TINY_JSON_ARCH).to_dict(), "num_classes": 10,
           "class_names": [f"class{i}" for i in range(10)]}
    path.write_text(json.dumps(doc))
    assert space_main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_classes"] == 10
    assert info["macs"] == TINY_MACS_WITHOUT_CLASSIFIER + 64 * 10
    assert space_main(["info", str(path), "--json", "--num-classes", "100"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_classes"] == 100 and info["macs"] == TINY_MACS_WITHOUT_CLASSIFIER + 64 * 100
