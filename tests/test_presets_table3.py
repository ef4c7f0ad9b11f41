"""The EfficientNet paper's other baselines (Table 3): MobileNetV1, MobileNetV2, ResNet-50.

Oracles: the reference implementations' parameter counts (Keras MobileNet 1.0-224,
torchvision mobilenet_v2 and resnet50), counted on the built torch model; thop's counts of
the built model's Conv2d and Linear modules; the published multiply-adds; and small
hand-written PyTorch replicas of the references (below, written from the papers and
torchvision's code, not from `space.plan`) that must compute the same outputs.
"""

import json
import random

import pytest
import torch
from torch import nn

from space import Arch, ArchError, SearchSpace, SpaceError, Stage, build_model, cost
from space.blocks import Block, StochasticDepth
from space.presets import get_preset, preset_names
from space.thop_reference import thop_conv_linear_macs

REFERENCE_PARAMS = {"mobilenet_v1": 4_231_976, "mobilenet_v2": 3_504_872, "resnet50": 25_557_032}
PUBLISHED_MACS = {"mobilenet_v1": 569e6, "mobilenet_v2": 300e6, "resnet50": 4.1e9}
# What the cost model (and thop) count at 224 with the 1000-class classifier.
OUR_MACS = {"mobilenet_v1": 568_740_352, "mobilenet_v2": 300_774_272, "resnet50": 4_089_184_256}
NAMES = sorted(REFERENCE_PARAMS)


def params_of(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_built_parameter_count_equals_the_reference_and_cost(name):
    arch = get_preset(name).arch()
    with torch.device("meta"):
        model = build_model(arch, num_classes=1000)
    assert params_of(model) == REFERENCE_PARAMS[name]
    assert cost(arch).params == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name", NAMES)
def test_macs_equal_thop_and_are_within_one_percent_of_published(name):
    arch = get_preset(name).arch()
    with torch.device("meta"):
        model = build_model(arch)
    macs = cost(arch).macs
    assert macs == thop_conv_linear_macs(model, arch.resolution) == OUR_MACS[name]
    assert macs == pytest.approx(PUBLISHED_MACS[name], rel=0.01)


@pytest.mark.parametrize("name", NAMES)
def test_presets_carry_their_metadata(name):
    preset = get_preset(name)
    assert name in preset_names()
    assert preset.meta["resolution"] == 224 == preset.arch().resolution
    assert preset.meta["reference_params"] == REFERENCE_PARAMS[name]
    assert preset.meta["reference_macs"] == PUBLISHED_MACS[name]
    assert preset.meta["source"] and preset.description


@pytest.mark.parametrize("name, features", [("mobilenet_v1", 1024), ("mobilenet_v2", 1280),
                                            ("resnet50", 2048)])
def test_forward_at_a_small_resolution(name, features):
    model = build_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)  # total stride 32: a 2x2 map at the end
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, features, 2, 2)
        y = model(x)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    assert model.num_features == features


# --- independent replicas of the reference networks ---------------------------------------

def _cbr(cin, cout, k, s=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act()] if act else []))


class _TVBottleneck(nn.Module):
    # torchvision.models.resnet.Bottleneck (v1.5): stride on conv2, ReLU after the add.
    def __init__(self, cin, planes, stride):
        super().__init__()
        out = planes * 4
        self.body = nn.Sequential(_cbr(cin, planes, 1), _cbr(planes, planes, 3, stride),
                                  _cbr(planes, out, 1, act=None))
        self.down = _cbr(cin, out, 1, stride, act=None) if stride != 1 or cin != out else None

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        return torch.relu(self.body(x) + identity)


def _reference_resnet50():
    layers, cin = [_cbr(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)], 64
    for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(_TVBottleneck(cin, planes, stride if i == 0 else 1))
            cin = planes * 4
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000))


class _TVInvertedResidual(nn.Module):
    # torchvision.models.mobilenetv2.InvertedResidual.
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = cin * t
        layers = [] if t == 1 else [_cbr(cin, hidden, 1, act=nn.ReLU6)]
        layers += [_cbr(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   _cbr(hidden, cout, 1, act=None)]
        self.conv = nn.Sequential(*layers)
        self.res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.res else self.conv(x)


def _reference_mobilenet_v2():
    layers, cin = [_cbr(3, 32, 3, 2, act=nn.ReLU6)], 32
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            layers.append(_TVInvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    return nn.Sequential(*layers, _cbr(320, 1280, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(1280, 1000))


def _reference_mobilenet_v1():
    # Keras MobileNet: conv 3x3/2 to 32, then (depthwise 3x3 -> BN -> ReLU6, pointwise ->
    # BN -> ReLU6) x 13, global pool, classifier (a biased 1x1 conv there, a Linear here).
    layers, cin = [_cbr(3, 32, 3, 2, act=nn.ReLU6)], 32
    for cout, s in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5,
                    (1024, 2), (1024, 1)):
        layers += [_cbr(cin, cin, 3, s, groups=cin, act=nn.ReLU6), _cbr(cin, cout, 1, act=nn.ReLU6)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, 1000))


REPLICAS = {"resnet50": _reference_resnet50, "mobilenet_v2": _reference_mobilenet_v2,
            "mobilenet_v1": _reference_mobilenet_v1}


@pytest.mark.parametrize("name", NAMES)
def test_same_function_as_an_independent_replica(name):
    """Same tensors in the same order, same outputs: checks the layer order, the stride
    placement, the shortcuts and where the activations sit, which counts cannot."""
    torch.manual_seed(0)
    ours = build_model(name).eval()
    reference = REPLICAS[name]().eval()
    ours_state, ref_state = ours.state_dict(), reference.state_dict()
    assert [v.shape for v in ours_state.values()] == [v.shape for v in ref_state.values()]
    generator = torch.Generator().manual_seed(1)
    for (key, ours_value), ref_key in zip(ours_state.items(), ref_state):
        if ours_value.is_floating_point():
            value = torch.randn(ours_value.shape, generator=generator) * 0.1
            if key.endswith("running_var"):
                value = value.abs() + 0.5
            ours_value.copy_(value)
            ref_state[ref_key].copy_(value)
    bn_eps = get_preset(name).arch().bn_eps
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = bn_eps
    x = torch.randn(2, 3, 64, 64, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)


def test_resnet_structure():
    model = build_model("resnet50")
    assert isinstance(model.stem[3], nn.MaxPool2d) and model.stem[0].kernel_size == (7, 7)
    assert isinstance(model.head, nn.Identity)
    first, second = model.stages[1][0], model.stages[1][1]
    convs = [m for m in first.layers.modules() if isinstance(m, nn.Conv2d)]
    # v1.5: the stride sits on the 3x3; the projection carries it too.
    assert [(c.kernel_size, c.stride) for c in convs] == [((1, 1), (1, 1)), ((3, 3), (2, 2)),
                                                           ((1, 1), (1, 1))]
    assert [c.out_channels for c in convs] == [128, 128, 512]
    assert first.shortcut[0].stride == (2, 2) and first.shortcut[0].out_channels == 512
    assert second.shortcut is None and second.residual
    assert isinstance(first.post_act, nn.ReLU)
    # Stage 1's first block changes channels at stride 1: a projection, no identity.
    assert model.stages[0][0].shortcut is not None and not model.stages[0][0].residual


def test_mobilenet_structure():
    v2 = build_model("mobilenet_v2")
    first = v2.stages[0][0]
    assert [m.groups for m in first.layers.modules() if isinstance(m, nn.Conv2d)] == [32, 1]
    assert not any(isinstance(m, (nn.SiLU, nn.ReLU)) for m in v2.modules())
    assert sum(isinstance(m, nn.ReLU6) for m in v2.modules()) > 30
    v1 = build_model("mobilenet_v1")
    blocks = [m for m in v1.modules() if isinstance(m, Block)]
    assert len(blocks) == 13 and not any(b.residual or b.shortcut is not None for b in blocks)
    assert all(len(b.layers) == 2 and isinstance(b.layers[1][2], nn.ReLU6) for b in blocks)
    assert {m.eps for m in v1.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}


# --- the description: string, JSON, validation ------------------------------------------------

B0 = ("net_r224_silu_dp0.2_eps0.00001_mom0.1-stem_c32_s2-mb_k3_s1_e1_c16_l1_se0.25-"
      "mb_k3_s2_e6_c24_l2_se0.25-mb_k5_s2_e6_c40_l2_se0.25-mb_k3_s2_e6_c80_l3_se0.25-"
      "mb_k5_s1_e6_c112_l3_se0.25-mb_k5_s2_e6_c192_l4_se0.25-mb_k3_s1_e6_c320_l1_se0.25-"
      "head_c1280_do0.2")
B0_CIFAR = B0.replace("net_r224", "net_r32").replace("stem_c32_s2", "stem_c32_s1")


def test_existing_strings_and_json_are_unchanged():
    b0 = get_preset("efficientnet_b0").arch()
    assert b0.to_string() == B0
    assert get_preset("efficientnet_b0_cifar").arch().to_string() == B0_CIFAR
    assert (b0.stem_kernel, b0.stem_pool) == (3, False)
    assert sorted(b0.to_dict()) == ["activation", "bn_eps", "bn_momentum", "drop_path", "dropout",
                                    "head_channels", "resolution", "stages", "stem_channels",
                                    "stem_stride"]
    assert Arch.from_string(B0) == b0


def test_new_fields_in_the_string_form():
    resnet = get_preset("resnet50").arch()
    tokens = resnet.to_string().split("-")
    assert tokens[:3] == ["net_r224_relu_dp0_eps0.00001_mom0.1", "stem_c64_s2_k7_pool",
                          "bot_k3_s1_e4_c256_l3_se0"]
    assert tokens[-1] == "head_none_do0"
    v1 = get_preset("mobilenet_v1").arch()
    assert v1.to_string().split("-")[2] == "ds_k3_s1_e1_c64_l1_se0"
    assert v1.to_string().split("-")[-1] == "head_none_do0.001"
    for name in NAMES:
        arch = get_preset(name).arch()
        assert Arch.from_string(arch.to_string()) == arch
        assert Arch.from_string(arch.to_string()).to_string() == arch.to_string()
    short = Arch.from_string("net_r64_relu-stem_c16_k5_pool-bot_k3_s2_e4_c32_l2-ds_k3_c48_l1-head_none")
    assert (short.stem_kernel, short.stem_pool, short.head_channels) == (5, True, None)
    assert short.stages[0] == Stage("bottleneck", 3, 2, 4, 32, 2, 0.0)
    assert short.stages[1] == Stage("dwsep", 3, 1, 1, 48, 1, 0.0)
    assert short.num_features == 48 and short.total_stride == 8
    assert short.to_string() == ("net_r64_relu_dp0_eps0.00001_mom0.1-stem_c16_s2_k5_pool-"
                                 "bot_k3_s2_e4_c32_l2_se0-ds_k3_s1_e1_c48_l1_se0-head_none_do0")
    assert short.short_label() == "Bk3e4x2 Dk3e1"


def test_new_fields_in_json():
    resnet = get_preset("resnet50").arch()
    d = json.loads(resnet.to_json())
    assert (d["stem_kernel"], d["stem_pool"], d["head_channels"]) == (7, True, None)
    assert d["stages"][0]["block"] == "bottleneck"
    for name in NAMES:
        arch = get_preset(name).arch()
        assert Arch.from_json(arch.to_json(indent=2)) == arch
    # A JSON document without the new keys reads with their defaults.
    old = {k: v for k, v in d.items() if k not in ("stem_kernel", "stem_pool")}
    assert Arch.from_dict(old) == resnet.replace(stem_kernel=3, stem_pool=False)


@pytest.mark.parametrize("change, needle", [
    (dict(stem_kernel=4), "stem_kernel must be a positive odd integer, got 4"),
    (dict(stem_kernel=0), "stem_kernel"), (dict(stem_kernel=True), "stem_kernel"),
    (dict(stem_pool="yes"), "stem_pool must be true or false"), (dict(stem_pool=1), "stem_pool"),
    (dict(head_channels=0), "head_channels must be an integer from 1"),
    (dict(resolution=16), "too small for the total stride 32"),
])
def test_invalid_arch_fields(change, needle):
    base = get_preset("resnet50").arch()
    with pytest.raises(ArchError) as err:
        base.replace(**change)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(block="dwsep", expand=6), "expand must be 1 for a dwsep block"),
    (dict(block="bottleneck", expand=4, se=0.25), "se must be 0 for a bottleneck block"),
])
def test_invalid_stage_combinations(kwargs, needle):
    base = dict(block="mbconv", kernel=3, stride=1, expand=1, channels=16, layers=1, se=0.0)
    with pytest.raises(ArchError) as err:
        Stage(**{**base, **kwargs})
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text, needle", [
    ("net_r64-stem_c16-mb_k3_c16_l1-head_do0", "needs either channels c<n> or the word 'none'"),
    ("net_r64-stem_c16-mb_k3_c16_l1-head_c8_none", "needs either channels c<n> or the word 'none'"),
    ("net_r64-stem_c16_k4-mb_k3_c16_l1-head_c8", "stem_kernel must be a positive odd integer"),
    ("net_r64-stem_s2_pool-mb_k3_c16_l1-head_c8", "stem token 'stem_s2_pool' is missing c<n>"),
    ("net_r64-stem_c16_maxpool-mb_k3_c16_l1-head_c8", "unknown field 'maxpool'"),
    ("net_r64-stem_c16-ds_k3_e6_c16_l1-head_c8", "expand must be 1 for a dwsep block"),
    ("net_r64-stem_c16-bot_k3_e4_c16_l1_se0.25-head_c8", "se must be 0 for a bottleneck"),
])
def test_invalid_strings(text, needle):
    with pytest.raises(ArchError) as err:
        Arch.from_string(text)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_invalid_json_fields():
    d = get_preset("resnet50").arch().to_dict()
    with pytest.raises(ArchError, match="stem_pool must be true or false"):
        Arch.from_dict({**d, "stem_pool": "yes"})
    with pytest.raises(ArchError, match="stage 1: se must be 0 for a bottleneck"):
        Arch.from_dict({**d, "stages": [dict(d["stages"][0], se=0.25)]})


# --- scaling ----------------------------------------------------------------------------------

def test_scale_works_on_the_new_families():
    resnet = get_preset("resnet50").arch()
    wide = resnet.scale(width=2.0, depth=1.5, resolution=256)
    assert wide.stem_channels == 128 and wide.stem_kernel == 7 and wide.stem_pool
    assert [s.channels for s in wide.stages] == [512, 1024, 2048, 4096]
    assert [s.layers for s in wide.stages] == [5, 6, 9, 5]  # ceil(3, 4, 6, 3 x 1.5)
    assert wide.head_channels is None
    # The inner width follows the output channels: expansion 4 is kept.
    assert [b.expanded_channels for b in wide.blocks()][:1] == [128]
    # An uneven width: 256 x 1.1 -> 280 outputs, inner make_divisible(70, 8) = 72.
    odd = resnet.scale(width=1.1)
    assert odd.stages[0].channels == 280 and next(odd.blocks()).expanded_channels == 72
    v2 = get_preset("mobilenet_v2").arch().scale(width=1.4)
    assert v2.head_channels == 1792 and v2.stem_channels == 48 and v2.activation == "relu6"
    v1 = get_preset("mobilenet_v1").arch().scale(depth=1.2, resolution=256)
    assert [s.layers for s in v1.stages] == [2, 3, 3, 8, 3] and v1.head_channels is None
    assert all(s.block == "dwsep" for s in v1.stages)
    assert get_preset("resnet50").arch().scale() == resnet  # the identity


@pytest.mark.parametrize("name, width, depth, resolution", [
    ("resnet50", 0.5, 1.2, 96), ("mobilenet_v2", 1.2, 1.1, 80), ("mobilenet_v1", 0.75, 1.3, 72)])
def test_scaled_members_cost_equals_the_built_model(name, width, depth, resolution):
    arch = get_preset(name).arch().scale(width=width, depth=depth, resolution=resolution)
    with torch.device("meta"):
        model = build_model(arch, num_classes=10)
    c = cost(arch, num_classes=10)
    assert c.params == params_of(model)
    assert c.macs == thop_conv_linear_macs(model, resolution)


# --- random descriptions over every block kind ----------------------------------------------

def _random_arch(rng: random.Random) -> Arch:
    stages = []
    for _ in range(rng.randint(1, 4)):
        block = rng.choice(["mbconv", "fused_mbconv", "dwsep", "bottleneck"])
        stages.append(Stage(
            block=block, kernel=rng.choice([1, 3, 5]), stride=rng.choice([1, 2]),
            expand=1 if block == "dwsep" else rng.choice([1, 2.5, 4]),
            channels=rng.choice([8, 12, 16, 24, 40]), layers=rng.randint(1, 3),
            se=0.0 if block == "bottleneck" else rng.choice([0, 0.25])))
    stem_stride, pool = rng.choice([1, 2]), rng.choice([False, True])
    total = stem_stride * (2 if pool else 1) * 2 ** sum(s.stride == 2 for s in stages)
    return Arch(stem_channels=rng.choice([8, 16]), stem_stride=stem_stride,
                stem_kernel=rng.choice([3, 5, 7]), stem_pool=pool, stages=tuple(stages),
                head_channels=rng.choice([None, 32]),
                resolution=total * rng.randint(1, 3) + rng.choice([0, 1]),
                activation=rng.choice(["relu", "relu6", "silu"]), drop_path=0.1)


def test_random_descriptions_with_new_kinds_match_thop_and_parameters():
    rng = random.Random(3)
    for _ in range(25):
        arch = _random_arch(rng)
        assert Arch.from_string(arch.to_string()) == arch and Arch.from_json(arch.to_json()) == arch
        model = build_model(arch, num_classes=10)
        c = cost(arch, num_classes=10)
        assert c.params == params_of(model), arch.to_string()
        assert c.macs == thop_conv_linear_macs(model, arch.resolution, device="cpu"), arch.to_string()
        side = arch.final_resolution()
        with torch.no_grad():
            assert model.eval().forward_features(torch.randn(1, 3, arch.resolution, arch.resolution)
                                                 ).shape == (1, arch.num_features, side, side)


def test_stochastic_depth_on_bottleneck_branches():
    arch = Arch.from_string("net_r32_relu_dp0.4-stem_c16-bot_k3_s2_e4_c32_l2-head_none")
    blocks = [m for m in build_model(arch).modules() if isinstance(m, Block)]
    # Both blocks have a shortcut (projection, then identity), so both drop their branch.
    assert [isinstance(b.drop_path, StochasticDepth) for b in blocks] == [True, True]
    assert blocks[1].drop_path.p == pytest.approx(0.2)


# --- search spaces --------------------------------------------------------------------------

def test_new_kinds_do_not_leak_into_search_spaces():
    import numpy as np

    rng = np.random.default_rng(0)
    for name in SearchSpace.names():
        space = SearchSpace.load(name)
        for _ in range(10):
            assert {s.block for s in space.sample(rng).stages} <= {"mbconv", "fused_mbconv"}
    with pytest.raises(SpaceError, match="block 'bottleneck' cannot be a search choice"):
        SearchSpace.from_dict({"base": "efficientnet_b0", "defaults": {"block": ["mbconv", "bottleneck"]}})


def test_a_space_around_resnet50_keeps_its_bottlenecks():
    import numpy as np

    space = SearchSpace.from_dict({"base": "resnet50",
                                   "defaults": {"kernel": [3, 5], "layers": [-1, 0], "width": [0.5, 1.0]}})
    arch = space.sample(np.random.default_rng(0))
    assert all(s.block == "bottleneck" for s in arch.stages) and arch.stem_pool
    with pytest.raises(SpaceError, match="se must be 0 for a bottleneck"):
        SearchSpace.from_dict({"base": "resnet50", "defaults": {"se": [0, 0.25]}})
