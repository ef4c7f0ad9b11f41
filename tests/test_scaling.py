"""Compound scaling: `Arch.scale`, `scaling.scale` and the `scaling scale` command."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from space import Arch, ArchError
from space.errors import UserError
from space.presets import get_preset
from scaling import scale
from scaling.cli import main as scaling_main

ROOT = Path(__file__).resolve().parents[1]

# EfficientNet-B3 written out by hand from B0 (Tan & Le 2019, Table 1) and B3's reference
# multipliers (width 1.2, depth 1.4, 300 px, dropout 0.3): channels make_divisible(c * 1.2, 8)
# with the 90% rule (16 -> 19.2 -> 16 is < 90% -> 24; 112 -> 134.4 -> 136; 192 -> 230.4 -> 232),
# layers ceil(l * 1.4) (1, 2, 2, 3, 3, 4, 1 -> 2, 3, 3, 5, 5, 6, 2). These are timm's and
# torchvision's efficientnet_b3 stage widths and depths.
B3 = ("net_r300_silu_dp0.2_eps0.00001_mom0.1-stem_c40_s2-mb_k3_s1_e1_c24_l2_se0.25-"
      "mb_k3_s2_e6_c32_l3_se0.25-mb_k5_s2_e6_c48_l3_se0.25-mb_k3_s2_e6_c96_l5_se0.25-"
      "mb_k5_s1_e6_c136_l5_se0.25-mb_k5_s2_e6_c232_l6_se0.25-mb_k3_s1_e6_c384_l2_se0.25-"
      "head_c1536_do0.3")
# Published parameter count of efficientnet_b3 at 1000 classes (torchvision's weights meta
# "num_params": 12233232; timm's efficientnet_b3 the same).
B3_PARAMS = 12_233_232


def b0() -> Arch:
    return get_preset("efficientnet_b0").arch()


def test_arch_scale_gives_b3_from_b0():
    assert b0().scale(width=1.2, depth=1.4, resolution=300, dropout=0.3).to_string() == B3


def test_scaling_scale_is_the_same_rule():
    assert scale(b0(), width=1.2, depth=1.4, resolution=300, dropout=0.3).to_string() == B3
    assert get_preset("efficientnet_b3").arch().to_string() == B3


def test_scale_keeps_what_it_is_not_asked_to_change():
    v2 = get_preset("efficientnet_v2_s").arch()
    bigger = v2.scale(depth=1.1)
    assert bigger.bn_eps == 1e-3 and bigger.resolution == 384 and bigger.dropout == 0.2
    assert [s.layers for s in bigger.stages] == [3, 5, 5, 7, 10, 17]  # ceil(l * 1.1)
    assert v2.scale(drop_path=0.3).drop_path == 0.3


@pytest.mark.parametrize("kwargs, needle", [
    (dict(depth=math.inf), "depth"), (dict(depth=math.nan), "depth"),
    (dict(width=-math.inf), "width"), (dict(width=0), "width"), (dict(depth=-1.0), "depth"),
    (dict(width=True), "width"), (dict(depth="1.2"), "depth"), (dict(depth=None), "depth"),
    (dict(resolution=224.9), "whole number"), (dict(resolution=math.inf), "resolution"),
    (dict(resolution=True), "resolution"), (dict(resolution="300"), "resolution"),
    (dict(resolution=0), "resolution"), (dict(dropout=1.0), "dropout"),
    (dict(drop_path=math.nan), "drop_path"),
])
def test_bad_scaling_inputs_are_one_sentence_user_errors(kwargs, needle):
    with pytest.raises(ArchError) as err:
        b0().scale(**kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)
    with pytest.raises(ArchError):
        scale(b0(), **kwargs)


def test_integral_float_resolution_is_accepted():
    assert b0().scale(resolution=300.0).resolution == 300
    assert isinstance(b0().scale(resolution=300.0).resolution, int)


def test_cli_reproduces_b3_from_b0(capsys):
    assert scaling_main(["scale", "efficientnet_b0", "--width", "1.2", "--depth", "1.4",
                         "--resolution", "300", "--dropout", "0.3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["params"] == B3_PARAMS
    assert doc["arch"] == B3


def test_cli_drop_path(capsys):
    assert scaling_main(["scale", "efficientnet_b0", "--drop-path", "0.3", "--json"]) == 0
    assert Arch.from_string(json.loads(capsys.readouterr().out)["arch"]).drop_path == 0.3


@pytest.mark.parametrize("args, needle", [
    (["--depth", "inf"], "depth"), (["--depth", "nan"], "depth"),
    (["--resolution", "224.9"], "whole number"), (["--width", "abc"], "--width"),
    (["--dropout", "1.5"], "dropout"),
])
def test_cli_bad_numbers_exit_2_with_one_sentence(capsys, args, needle):
    assert scaling_main(["scale", "efficientnet_b0", *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert needle in captured.err and captured.out == ""


def test_cli_depth_inf_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "scaling", "scale", "efficientnet_b0",
                           "--depth", "inf"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_b1_to_b7_exist_in_a_bare_checkout():
    # -S: no site-packages, so no installed package metadata (entry points) can help.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from space.presets import get_preset; "
            "print(get_preset('efficientnet_b7').arch().to_string())")
    proc = subprocess.run([sys.executable, "-S", "-c", code, str(ROOT)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr
    b7 = Arch.from_string(proc.stdout.strip())
    # B7: width 2.0, depth 3.1 at 600 px: stem 64, layers ceil(l * 3.1), head 2560.
    assert b7.resolution == 600 and b7.stem_channels == 64 and b7.head_channels == 2560
    assert [s.layers for s in b7.stages] == [4, 7, 7, 10, 10, 13, 4]


@pytest.mark.parametrize("flag, value, needle", [
    ("--depth", "1e300", "layers must be an integer from 1 to 1000, got about 1e+300"),
    ("--width", "1e9", "channels must be an integer from 1 to 65536"),
    ("--resolution", "100000", "resolution must be an integer from 1 to 16384"),
])
def test_runaway_multipliers_are_refused_at_once(flag, value, needle):
    """A description with 10^300 layers used to pass validation and never finish unrolling."""
    proc = subprocess.run([sys.executable, "-m", "scaling", "scale", "efficientnet_b0", flag, value],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert needle in proc.stderr and proc.stderr.count("\n") == 1
