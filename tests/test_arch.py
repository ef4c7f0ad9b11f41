import json

import pytest
from hypothesis import given, settings, strategies as st

from space import Arch, ArchError, Stage, make_divisible
from space.errors import UserError
from space.presets import get_preset, preset_names, resolve_arch


@pytest.mark.parametrize("name", preset_names())
def test_string_and_json_round_trip_every_preset(name):
    arch = get_preset(name).arch()
    text = arch.to_string()
    assert Arch.from_string(text) == arch
    assert Arch.from_string(text).to_string() == text
    assert Arch.from_json(arch.to_json()) == arch
    assert Arch.from_dict(json.loads(arch.to_json(indent=2))) == arch


def test_string_form_is_one_token_per_stage():
    arch = get_preset("efficientnet_b0").arch()
    tokens = arch.to_string().split("-")
    assert tokens[0] == "net_r224_silu_dp0.2_eps0.00001_mom0.1"
    assert tokens[1] == "stem_c32_s2"
    assert tokens[2] == "mb_k3_s1_e1_c16_l1_se0.25"
    assert tokens[3] == "mb_k3_s2_e6_c24_l2_se0.25"
    assert tokens[-1] == "head_c1280_do0.2"
    assert len(tokens) == len(arch.stages) + 3


def test_short_string_takes_defaults():
    arch = Arch.from_string("net_r64-stem_c16-fmb_k3_c24_l2-mb_k5_s2_e4_c32_l1_se0.25-head_c64")
    assert arch.stem_stride == 2 and arch.activation == "silu" and arch.dropout == 0.0
    assert arch.stages[0] == Stage("fused_mbconv", 3, 1, 1, 24, 2, 0.0)
    assert arch.stages[1] == Stage("mbconv", 5, 2, 4, 32, 1, 0.25)
    assert Arch.from_string(arch.to_string()) == arch


def test_fractional_expand_round_trips():
    arch = Arch.from_string("net_r32-stem_c16_s1-mb_k3_s2_e2.5_c24_l1_se0.125-head_c64")
    assert arch.stages[0].expand == 2.5 and arch.stages[0].se == 0.125
    assert "e2.5" in arch.to_string()
    assert Arch.from_string(arch.to_string()) == arch
    assert Arch.from_json(arch.to_json()) == arch


def test_int_and_float_expand_are_the_same_description():
    a = Stage("mbconv", 3, 1, 6, 16, 1, 0.25)
    b = Stage("mbconv", 3, 1, 6.0, 16, 1, 0.25)
    assert a == b and hash(a) == hash(b)
    assert a.to_dict()["expand"] == 6 and isinstance(a.to_dict()["expand"], int)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(block="conv"), ["block", "'conv'"]),
        (dict(kernel=4), ["kernel", "4"]),
        (dict(kernel=-3), ["kernel", "-3"]),
        (dict(kernel=0), ["kernel", "0"]),
        (dict(stride=3), ["stride", "3"]),
        (dict(channels=0), ["channels", "0"]),
        (dict(layers=0), ["layers", "0"]),
        (dict(se=1.0), ["se", "1.0"]),
        (dict(se=-0.1), ["se", "-0.1"]),
        (dict(expand=0.5), ["expand", "0.5"]),
    ],
)
def test_stage_validation_names_field_and_value(kwargs, words):
    base = dict(block="mbconv", kernel=3, stride=1, expand=6, channels=16, layers=1, se=0.25)
    with pytest.raises(ArchError) as err:
        Stage(**{**base, **kwargs})
    message = str(err.value)
    for word in words:
        assert word in message
    assert "\n" not in message
    assert isinstance(err.value, UserError)


def test_arch_validation():
    stage = Stage("mbconv", 3, 2, 6, 16, 1)
    ok = dict(stem_channels=8, stem_stride=2, stages=(stage,), head_channels=32, resolution=8)
    Arch(**ok)
    cases = [
        (dict(resolution=2), "too small for the total stride 4"),
        (dict(stages=()), "stages must not be empty"),
        (dict(activation="tanh"), "activation 'tanh'"),
        (dict(dropout=1.0), "dropout"),
        (dict(drop_path=-0.1), "drop_path"),
        (dict(stem_stride=4), "stem_stride"),
        (dict(head_channels=0), "head_channels"),
    ]
    for change, needle in cases:
        with pytest.raises(ArchError, match=needle.replace("(", r"\(")):
            Arch(**{**ok, **change})


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "empty"),
        ("net_r224-stem_c32-xx_k3-head_c10", "unknown token 'xx_k3'"),
        ("net_r224-stem_c32-mb_k3_q2_c16_l1-head_c10", "unknown field 'q2'"),
        ("net_r224-stem_c32-mb_k3_c16-head_c10", "missing l"),
        ("net_r224-stem_c32-mb_k3_kx_c16_l1-head_c10", "unknown field 'kx'"),
        ("net_r224-stem_c32-mb_k3.5_c16_l1-head_c10", "'k' needs a number"),
        ("net_r224-stem_c32-mb_k3_c16_l1", "missing head"),
        ("net_r224-mb_k3_c16_l1-head_c10", "missing stem"),
        ("stem_c32-mb_k3_c16_l1-head_c10", "missing resolution"),
        ("net_r224-stem_c32-mb_k3_k5_c16_l1-head_c10", "given twice"),
        ("net_r224-stem_c32-mb_k4_c16_l1-head_c10", "kernel must be a positive odd integer, got 4"),
    ],
)
def test_bad_strings_give_one_sentence(text, needle):
    with pytest.raises(ArchError) as err:
        Arch.from_string(text)
    assert needle in str(err.value)


def test_bad_json():
    with pytest.raises(ArchError, match="not valid JSON"):
        Arch.from_json("{")
    good = get_preset("efficientnet_b0").arch().to_dict()
    with pytest.raises(ArchError, match="unknown field 'colour'"):
        Arch.from_dict({**good, "colour": 1})
    with pytest.raises(ArchError, match="missing field 'resolution'"):
        Arch.from_dict({k: v for k, v in good.items() if k != "resolution"})
    bad_stage = dict(good["stages"][0], kernel=2)
    with pytest.raises(ArchError, match="stage 1: kernel"):
        Arch.from_dict({**good, "stages": [bad_stage]})


def test_info_json_document_reads_back_as_arch():
    arch = get_preset("efficientnet_b2").arch()
    assert Arch.from_dict({"arch": arch.to_string(), "params": 1}) == arch


def test_blocks_unroll_channels_strides_and_drop_path():
    arch = get_preset("efficientnet_b0").arch()
    blocks = list(arch.blocks())
    assert len(blocks) == 16 == arch.num_blocks
    assert blocks[0].in_channels == 32 and blocks[0].expanded_channels == 32
    assert blocks[1].stride == 2 and blocks[2].stride == 1 and blocks[2].in_channels == 24
    assert blocks[1].se_channels == 4  # int(16 * 0.25): SE width follows the block *input*
    assert [b.drop_path for b in blocks] == pytest.approx([0.2 * i / 16 for i in range(16)])
    assert not blocks[0].residual and not blocks[1].residual and blocks[2].residual


def test_make_divisible_90_percent_rule():
    assert make_divisible(32 * 1.4) == 48
    assert make_divisible(24 * 1.1) == 24  # 26.4 -> 24 keeps >= 90%
    assert make_divisible(12) == 16  # 8 would be < 90% of 12
    assert make_divisible(3) == 8


# EfficientNet-B1 by hand: B0's channels (all multiples of 8, so width 1.0 keeps them) and
# layers ceil(l * 1.1) = 2, 3, 3, 4, 4, 5, 2 at 240 px.
B1 = ("net_r240_silu_dp0.2_eps0.00001_mom0.1-stem_c32_s2-mb_k3_s1_e1_c16_l2_se0.25-"
      "mb_k3_s2_e6_c24_l3_se0.25-mb_k5_s2_e6_c40_l3_se0.25-mb_k3_s2_e6_c80_l4_se0.25-"
      "mb_k5_s1_e6_c112_l4_se0.25-mb_k5_s2_e6_c192_l5_se0.25-mb_k3_s1_e6_c320_l2_se0.25-"
      "head_c1280_do0.2")


def test_resolve_arch_accepts_preset_string_and_file(tmp_path):
    arch = resolve_arch("efficientnet_b1")
    assert arch.to_string() == B1
    assert resolve_arch(B1) == arch
    path = tmp_path / "a.json"
    path.write_text(arch.to_json())
    assert resolve_arch(str(path)) == arch
    with pytest.raises(ArchError, match="arch file not found"):
        resolve_arch(str(tmp_path / "missing.json"))
    with pytest.raises(ArchError, match="unknown architecture 'efficientnet_b9'"):
        resolve_arch("efficientnet_b9")


# --- the string form round-trips every valid description --------------------------------

_unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True, allow_nan=False)
_tiny = st.sampled_from([5e-5, 1e-7, 1e-12, 5e-324, 2.5e-300, 0.1 + 0.2, 1 / 3])


@st.composite
def stages(draw):
    return Stage(
        block=draw(st.sampled_from(["mbconv", "fused_mbconv"])),
        kernel=draw(st.integers(0, 5)) * 2 + 1,
        stride=draw(st.sampled_from([1, 2])),
        expand=draw(st.one_of(
            st.floats(min_value=1.0, max_value=1e6, allow_nan=False),
            st.sampled_from([1.0000001, 3.3333333333333335, 1e22, 1.7976931348623157e308]),
            st.integers(1, 12))),
        channels=draw(st.integers(1, 4096)),
        layers=draw(st.integers(1, 20)),
        se=draw(st.one_of(_unit, _tiny)),
    )


@st.composite
def archs(draw):
    chosen = tuple(draw(st.lists(stages(), min_size=1, max_size=4)))
    stem_stride = draw(st.sampled_from([1, 2]))
    total = stem_stride * 2 ** sum(s.stride == 2 for s in chosen)
    return Arch(
        stem_channels=draw(st.integers(1, 256)), stem_stride=stem_stride, stages=chosen,
        head_channels=draw(st.integers(1, 4096)),
        resolution=total * draw(st.integers(1, 64)),
        dropout=draw(st.one_of(_unit, _tiny)), drop_path=draw(st.one_of(_unit, _tiny)),
        activation=draw(st.sampled_from(["silu", "relu", "relu6", "hardswish", "gelu"])),
    )


@settings(max_examples=300, deadline=None, database=None)
@given(archs())
def test_every_valid_arch_round_trips_through_its_string(arch):
    text = arch.to_string()
    assert Arch.from_string(text) == arch
    # Exponent notation would put '-' (the token separator) or 'e' into a number.
    for token in text.split("-"):
        for field in token.split("_")[1:]:
            assert "e-" not in field and "e+" not in field
    assert Arch.from_json(arch.to_json()) == arch


@pytest.mark.parametrize("field, value, text", [
    ("drop_path", 5e-5, "dp0.00005"),
    ("dropout", 1e-7, "do0.0000001"),
    ("drop_path", 0.1 + 0.2, "dp0.30000000000000004"),
])
def test_small_rates_are_written_positionally(field, value, text):
    arch = Arch.from_string("net_r32-stem_c16_s1-mb_k3_s2_e4_c24_l1-head_c64").replace(**{field: value})
    assert text in arch.to_string().split("-")[0] + arch.to_string().split("-")[-1]
    assert Arch.from_string(arch.to_string()) == arch


def test_tiny_se_and_odd_expand_round_trip():
    stage = Stage("mbconv", 3, 1, 1.0000001, 16, 1, 1e-7)
    assert stage.to_token() == "mb_k3_s1_e1.0000001_c16_l1_se0.0000001"
    arch = Arch(stem_channels=8, stem_stride=1, stages=(stage,), head_channels=8, resolution=8)
    assert Arch.from_string(arch.to_string()).stages[0] == stage


def test_batch_norm_settings_in_string_and_json():
    arch = Arch.from_string("net_r32_eps0.001_mom0.01-stem_c16_s1-mb_k3_s2_e4_c24_l1-head_c64")
    assert (arch.bn_eps, arch.bn_momentum) == (0.001, 0.01)
    assert arch.to_string().split("-")[0] == "net_r32_silu_dp0_eps0.001_mom0.01"
    assert Arch.from_dict(arch.to_dict()) == arch
    assert arch.to_dict()["bn_eps"] == 0.001 and arch.to_dict()["bn_momentum"] == 0.01
    # Omitted: PyTorch's BatchNorm2d defaults, so strings and arch.json files written before
    # the fields existed read back as what they built.
    short = Arch.from_string("net_r32-stem_c16_s1-mb_k3_s2_e4_c24_l1-head_c64")
    assert (short.bn_eps, short.bn_momentum) == (1e-5, 0.1)
    old_json = {k: v for k, v in short.to_dict().items() if not k.startswith("bn_")}
    assert Arch.from_dict(old_json) == short


@pytest.mark.parametrize("change, needle", [
    (dict(bn_eps=0.0), "bn_eps"), (dict(bn_eps=-1e-5), "bn_eps"),
    (dict(bn_eps=float("nan")), "bn_eps"), (dict(bn_eps=float("inf")), "bn_eps"),
    (dict(bn_eps=True), "bn_eps"), (dict(bn_momentum=0.0), "bn_momentum"),
    (dict(bn_momentum=1.5), "bn_momentum"), (dict(bn_momentum=None), "bn_momentum"),
])
def test_batch_norm_settings_are_validated(change, needle):
    base = Arch.from_string("net_r32-stem_c16_s1-mb_k3_s2_e4_c24_l1-head_c64")
    with pytest.raises(ArchError, match=needle):
        base.replace(**change)


def test_expand_too_large_for_a_float_is_an_arch_error():
    with pytest.raises(ArchError, match="expand must be a number >= 1"):
        Stage("mbconv", 3, 1, 10**400, 16, 1)


def test_negative_zero_rates_are_stored_as_zero():
    import math

    stage = Stage("mbconv", 3, 1, 1, 16, 1, -0.0)
    arch = Arch(stem_channels=8, stem_stride=1, stages=(stage,), head_channels=8, resolution=8,
                dropout=-0.0, drop_path=-0.0)
    assert math.copysign(1.0, stage.se) == 1.0
    assert '"-0.0"' not in arch.to_json() and "-0.0" not in arch.to_json()


def test_arch_json_from_nas_train_carries_ignorable_metadata():
    data = {**get_preset("efficientnet_b0_cifar").arch().to_dict(),
            "num_classes": 10, "class_names": [f"c{i}" for i in range(10)]}
    arch = Arch.from_dict(data)
    assert arch.resolution == 32 and arch.stem_stride == 1
    with pytest.raises(ArchError, match="unknown field 'colour'"):
        Arch.from_dict({**data, "colour": 1})
    with pytest.raises(ArchError, match="num_classes"):
        Arch.from_dict({**data, "num_classes": "ten"})
    with pytest.raises(ArchError, match="class_names"):
        Arch.from_dict({**data, "class_names": [1, 2]})


def test_short_label_reads_like_the_papers_tables():
    # EfficientNetV2-S, Table 4 of the V2 paper: three Fused-MBConv stages, then MBConv.
    from space.presets import get_preset

    v2s = get_preset("efficientnet_v2_s").arch()
    assert v2s.short_label(channels=True) == \
        "Fk3e1c24x2 Fk3e4c48x4 Fk3e4c64x4 k3e4c128x6 k3e6c160x9 k3e6c256x15"
    # EfficientNet-B0, Table 1: kernels 3,3,5,3,5,5,3; expansion 1 then 6; layers 1,2,2,3,3,4,1.
    assert get_preset("efficientnet_b0").arch().short_label() == \
        "k3e1 k3e6x2 k5e6x2 k3e6x3 k5e6x3 k5e6x4 k3e6"
