"""The presets equal the reference PyTorch implementation exactly."""

import pytest
import torch

from space import build_model, cost
from space.presets import get_preset

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


def test_b4_channels_and_layers_by_hand():
    # B0 x width 1.4, depth 1.8 at 380 px, dropout 0.4. Channels make_divisible(c * 1.4, 8)
    # with the 90% rule: 32 -> 44.8 -> 48; 16 -> 22.4 -> 24; 24 -> 33.6 -> 32; 112 -> 156.8 ->
    # 160; 192 -> 268.8 -> 272; head 1280 -> 1792. Layers ceil(l * 1.8).
    b4 = get_preset("efficientnet_b4").arch()
    assert b4.resolution == 380 and b4.dropout == 0.4 and b4.drop_path == 0.2
    assert b4.stem_channels == 48 and b4.head_channels == 1792
    assert [s.channels for s in b4.stages] == [24, 32, 56, 112, 160, 272, 448]
    assert [s.layers for s in b4.stages] == [2, 4, 4, 6, 6, 8, 2]
    assert [s.kernel for s in b4.stages] == [3, 3, 5, 3, 5, 5, 3]


@pytest.mark.parametrize("member, width, depth, resolution, dropout", [
    # Tan & Le 2019 / the official code's (width, depth, resolution, dropout) per member.
    ("b1", 1.0, 1.1, 240, 0.2), ("b2", 1.1, 1.2, 260, 0.3), ("b3", 1.2, 1.4, 300, 0.3),
    ("b4", 1.4, 1.8, 380, 0.4), ("b5", 1.6, 2.2, 456, 0.4), ("b6", 1.8, 2.6, 528, 0.5),
    ("b7", 2.0, 3.1, 600, 0.5),
])
def test_b_series_metadata_matches_the_reference_table(member, width, depth, resolution, dropout):
    preset = get_preset(f"efficientnet_{member}")
    assert (preset.meta["width"], preset.meta["depth"]) == (width, depth)
    arch = preset.arch()
    assert (arch.resolution, arch.dropout) == (resolution, dropout)
    # The last stage has one layer in B0, so its depth is ceil(depth) here.
    assert arch.stages[-1].layers == -(-int(depth * 10) // 10)


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


@pytest.mark.parametrize("typed, meant", [
    ("efficientnet-b0", "efficientnet_b0"), ("EfficientNet_B3", "efficientnet_b3"),
    ("efficentnet_b2", "efficientnet_b2"), ("efficientnet-v2-s", "efficientnet_v2_s"),
])
def test_unknown_preset_names_get_a_did_you_mean(typed, meant):
    from space import ArchError
    from space.presets import resolve_arch

    with pytest.raises(ArchError) as err:
        resolve_arch(typed)
    message = str(err.value)
    assert f"did you mean '{meant}'?" in message and "\n" not in message
    with pytest.raises(KeyError, match=f"did you mean '{meant}'"):
        get_preset(typed)


def test_search_space_name_is_not_an_arch():
    from space import ArchError
    from space.presets import resolve_arch

    with pytest.raises(ArchError, match=r"'mnasnet_cifar' is a search space.*space sample mnasnet_cifar -n 5"):
        resolve_arch("mnasnet_cifar")
