"""The presets equal the reference PyTorch implementation exactly."""

import pytest
import torch

from space import build_model, cost
from space.presets import get_preset
from scaling.presets import B_SERIES, efficientnet_b

REFERENCE_PARAMS = {
    "efficientnet_b0": 5_288_548, "efficientnet_b1": 7_794_184, "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232, "efficientnet_b4": 19_341_616, "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704, "efficientnet_b7": 66_347_960,
    "efficientnet_v2_s": 21_458_488, "efficientnet_v2_m": 54_139_356, "efficientnet_v2_l": 118_515_272,
}
# Reference multiply-adds (G) at each model's own resolution.
REFERENCE_GMACS = {
    "efficientnet_b0": (0.386, 224), "efficientnet_b1": (0.687, 240), "efficientnet_b3": (1.827, 300),
    "efficientnet_b7": (37.746, 600), "efficientnet_v2_s": (8.366, 384),
    "efficientnet_v2_m": (24.582, 480), "efficientnet_v2_l": (56.08, 480),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_built_parameter_count_is_exact(name):
    arch = get_preset(name).arch()
    with torch.device("meta"):  # counts need shapes only; no memory for 118 M weights
        model = build_model(arch, num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMS[name]
    assert cost(arch).params == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name", sorted(REFERENCE_GMACS))
def test_macs_within_one_percent(name):
    gmacs, resolution = REFERENCE_GMACS[name]
    arch = get_preset(name).arch()
    assert arch.resolution == resolution
    assert cost(arch).gmacs == pytest.approx(gmacs, rel=0.01)


def test_b_series_multipliers_and_rounding():
    b0 = get_preset("efficientnet_b0").arch()
    b4 = efficientnet_b("b4")
    assert b4 == get_preset("efficientnet_b4").arch()
    assert b4.resolution == 380 and b4.dropout == 0.4
    assert b4.stem_channels == 48  # make_divisible(32 * 1.4) = 48
    assert [s.layers for s in b4.stages] == [2, 4, 4, 6, 6, 8, 2]  # ceil(l * 1.8)
    assert b4.head_channels == 1792
    assert b0.stages == efficientnet_b("b0").stages
    assert list(B_SERIES) == [f"b{i}" for i in range(8)]


def test_preset_metadata_travels_with_the_preset():
    preset = get_preset("efficientnet_b3")
    assert preset.meta["width"] == 1.2 and preset.meta["depth"] == 1.4
    assert preset.meta["resolution"] == preset.arch().resolution == 300


# Batch-norm settings of the reference implementations: torchvision's efficientnet_v2_s/m/l
# build with ``partial(nn.BatchNorm2d, eps=1e-03)`` (as the TF reference, BATCH_NORM_EPSILON
# 0.001), its efficientnet_b0 with the PyTorch default eps 1e-5; both keep momentum 0.1.
@pytest.mark.parametrize("name, eps", [
    ("efficientnet_b0", 1e-5), ("efficientnet_v2_s", 1e-3),
    ("efficientnet_v2_m", 1e-3), ("efficientnet_v2_l", 1e-3),
])
def test_batch_norm_settings_follow_the_reference(name, eps):
    arch = get_preset(name).arch()
    assert arch.bn_eps == eps and arch.bn_momentum == 0.1
    with torch.device("meta"):
        model = build_model(arch)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and {m.eps for m in norms} == {eps} and {m.momentum for m in norms} == {0.1}


def test_v2_s_string_carries_its_epsilon():
    net = get_preset("efficientnet_v2_s").arch().to_string().split("-")[0]
    assert net == "net_r384_silu_dp0.2_eps0.001_mom0.1"
