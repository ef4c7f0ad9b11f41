"""Tests of `space.search.SearchSpace`: loading, decoding, sampling, Optuna, size, errors."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import optuna
import pytest
import torch
import yaml

import space
from space.arch import Arch, Stage
from space.presets import get_preset
from space.search import FIELDS, SearchSpace, SpaceError

SHIPPED = ["mnasnet", "mnasnet_cifar", "v2", "v2_cifar"]

# EfficientNet-B0 as Tan & Le (2019) Table 1 gives it, written out by hand.
B0 = ("net_r224_silu_dp0.2_eps0.00001_mom0.1-stem_c32_s2-mb_k3_s1_e1_c16_l1_se0.25-"
      "mb_k3_s2_e6_c24_l2_se0.25-mb_k5_s2_e6_c40_l2_se0.25-mb_k3_s2_e6_c80_l3_se0.25-"
      "mb_k5_s1_e6_c112_l3_se0.25-mb_k5_s2_e6_c192_l4_se0.25-mb_k3_s1_e6_c320_l1_se0.25-"
      "head_c1280_do0.2")

# A tiny space for brute-force checks: 2 stages, clamping (layers -1 on a 1-layer stage)
# and rounding (width 0.75 / 1.0 on 16 channels both give 16) make choices collide.
TINY = {
    "name": "tiny",
    "base": "net_r32_silu-stem_c16_s1-mb_k3_s1_e1_c16_l1_se0.25-mb_k3_s2_e6_c24_l2_se0.25-head_c64",
    "defaults": {"kernel": [3, 5], "layers": [-1, 0, 1], "width": [0.75, 1.0, 1.25]},
    "stages": {1: {"expand": 1, "se": [0, 0.25]}, 2: {"expand": [4, 6], "block": ["mbconv", "fused_mbconv"]}},
}


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_names_lists_shipped_spaces():
    assert set(SHIPPED) <= set(SearchSpace.names())


@pytest.mark.parametrize("name", SHIPPED)
def test_load_shipped(name):
    s = SearchSpace.load(name)
    assert s.name == name
    assert s.description
    assert isinstance(s.base, Arch)
    dims = s.dimensions()
    assert dims, "a shipped space must have something to search"
    for pname, choices in dims.items():
        stage, field = pname.split(".")
        assert stage.startswith("s") and 1 <= int(stage[1:]) <= len(s.base.stages)
        assert field in FIELDS and len(choices) > 1
    assert s.size() > 1
    # Round trip through the dict form.
    assert SearchSpace.from_dict(s.to_dict()) == s


def test_shipped_bases():
    assert SearchSpace.load("mnasnet").base.to_string() == B0
    # B0 for CIFAR: the same stages and head at 32 px with a stride-1 stem.
    cifar = B0.replace("net_r224", "net_r32").replace("stem_c32_s2", "stem_c32_s1")
    assert SearchSpace.load("mnasnet_cifar").base.to_string() == cifar
    v2s = SearchSpace.load("v2").base
    # EfficientNetV2-S (Tan & Le 2021, Table 4): 384 px, BN eps 1e-3, layers 2,4,4,6,9,15.
    assert (v2s.resolution, v2s.bn_eps, v2s.stem_channels) == (384, 1e-3, 24)
    assert [(s.block, s.channels, s.layers) for s in v2s.stages] == [
        ("fused_mbconv", 24, 2), ("fused_mbconv", 48, 4), ("fused_mbconv", 64, 4),
        ("mbconv", 128, 6), ("mbconv", 160, 9), ("mbconv", 256, 15)]
    v2c = SearchSpace.load("v2_cifar").base
    assert v2c.resolution == 32 and v2c.stem_stride == 1
    assert v2c.final_resolution() >= 2
    assert v2c.num_blocks < v2s.num_blocks
    assert [st.stride for st in v2c.stages] == [st.stride for st in v2s.stages]
    assert all(a.channels <= b.channels for a, b in zip(v2c.stages, v2s.stages))


@pytest.mark.parametrize("name", SHIPPED)
def test_decode_is_deterministic(name):
    s = SearchSpace.load(name)
    params = s.sample_params(7)
    first = s.decode(params)
    assert s.decode(dict(params)) == first
    assert s.decode(dict(reversed(list(params.items())))) == first
    assert SearchSpace.load(name).decode(params) == first
    assert s.decode(params).to_string() == first.to_string()


def test_decode_applies_fields():
    s = SearchSpace.from_dict(TINY)
    params = {"s1.kernel": 5, "s1.se": 0, "s1.layers": 1, "s1.width": 1.25,
              "s2.block": "fused_mbconv", "s2.kernel": 3, "s2.expand": 4, "s2.layers": -1,
              "s2.width": 0.75}
    arch = s.decode(params)
    s1, s2 = arch.stages
    # 16 * 1.25 = 20 rounds to 24; 24 * 0.75 = 18 would round to 16, below 90% of 18: 24.
    assert s1 == Stage("mbconv", 5, 1, 1, 24, 2, 0.0)
    assert s2 == Stage("fused_mbconv", 3, 2, 4, 24, 1, 0.25)
    # Layers are clamped to >= 1.
    assert s.decode({**params, "s1.layers": -1}).stages[0].layers == 1
    # Everything outside the stages comes from the base.
    assert arch.replace(stages=s.base.stages) == s.base


def test_suggest_asks_the_trial_and_builds_the_hand_written_arch():
    s = SearchSpace.from_dict(TINY)
    params = {"s1.kernel": 5, "s1.se": 0, "s1.layers": 1, "s1.width": 1.25,
              "s2.block": "fused_mbconv", "s2.kernel": 3, "s2.expand": 4, "s2.layers": -1,
              "s2.width": 0.75}
    trial = optuna.trial.FixedTrial(params)
    arch = s.suggest(trial)
    assert trial.params == params
    assert arch.to_string() == (
        "net_r32_silu_dp0_eps0.00001_mom0.1-stem_c16_s1-mb_k5_s1_e1_c24_l2_se0-"
        "fmb_k3_s2_e4_c24_l1_se0.25-head_c64_do0")


def test_suggest_on_a_shipped_space():
    s = SearchSpace.load("mnasnet_cifar")
    params = {}
    for i in range(1, 8):
        params.update({f"s{i}.kernel": 5, f"s{i}.se": 0, f"s{i}.width": 1.25})
        if i > 1:
            params[f"s{i}.expand"] = 4
        if i > 1:
            params[f"s{i}.layers"] = 1
    arch = s.suggest(optuna.trial.FixedTrial(params))
    # B0-cifar with kernel 5, no SE, expansion 4 (stage 1 keeps 1), one more layer (stage 1
    # fixed) and channels x1.25: 16, 24, 40, 80, 112, 192, 320 -> 20, 30, 50, 100, 140,
    # 240, 400 -> rounded to multiples of 8: 24, 32, 48, 104, 144, 240, 400.
    assert arch.to_string() == (
        "net_r32_silu_dp0.2_eps0.00001_mom0.1-stem_c32_s1-mb_k5_s1_e1_c24_l1_se0-"
        "mb_k5_s2_e4_c32_l3_se0-mb_k5_s2_e4_c48_l3_se0-mb_k5_s2_e4_c104_l4_se0-"
        "mb_k5_s1_e4_c144_l4_se0-mb_k5_s2_e4_c240_l5_se0-mb_k5_s1_e4_c400_l2_se0-"
        "head_c1280_do0.2")


# TINY's decoded values by hand: layers max(1, base + delta) with base 1 and 2; channels
# make_divisible(c * w, 8) on 16 and 24 channels.
TINY_LAYERS = ({-1: 1, 0: 1, 1: 2}, {-1: 1, 0: 2, 1: 3})
TINY_CHANNELS = ({0.75: 16, 1.0: 16, 1.25: 24}, {0.75: 24, 1.0: 24, 1.25: 32})


def test_suggest_inside_optimize_and_distributions():
    s = SearchSpace.from_dict(TINY)
    seen = []

    def objective(trial):
        arch = s.suggest(trial)
        seen.append((dict(trial.params), arch))
        return arch.num_blocks

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(objective, n_trials=8)
    for params, arch in seen:
        for i, stage in enumerate(arch.stages):
            p = f"s{i + 1}."
            assert stage.kernel == params[p + "kernel"]
            assert stage.layers == TINY_LAYERS[i][params[p + "layers"]]
            assert stage.channels == TINY_CHANNELS[i][params[p + "width"]]
        assert arch.stages[0].se == params["s1.se"] and arch.stages[0].expand == 1
        assert arch.stages[1].block == params["s2.block"]
        assert arch.stages[1].expand == params["s2.expand"] and arch.stages[1].se == 0.25
    # Ask-and-tell with fixed distributions gives the same parameter names.
    trial = study.ask(s.distributions())
    assert set(trial.params) == {"s1.kernel", "s1.se", "s1.layers", "s1.width", "s2.block",
                                 "s2.kernel", "s2.expand", "s2.layers", "s2.width"}


@pytest.mark.parametrize("name", SHIPPED)
def test_sample_reproducible_and_within_choices(name):
    s = SearchSpace.load(name)
    a = [s.sample(np.random.default_rng(3)) for _ in range(2)]
    assert a[0] == a[1]
    assert s.sample(11) == s.sample(11)
    assert s.sample(random.Random(5)) == s.sample(random.Random(5))
    assert s.sample_params(11) == s.sample_params(11)
    rng = np.random.default_rng(0)
    dims = s.dimensions()
    archs = set()
    for _ in range(30):
        params = s.sample_params(rng)
        assert set(params) == set(dims)
        for pname, value in params.items():
            assert value in dims[pname]
        arch = s.decode(params)
        assert isinstance(arch, Arch)
        assert len(arch.stages) == len(s.base.stages)
        for base_stage, stage in zip(s.base.stages, arch.stages):
            assert stage.stride == base_stage.stride
        archs.add(arch)
    assert len(archs) > 1


def test_sample_rng_types():
    s = SearchSpace.from_dict(TINY)
    for rng in (None, 0, np.random.default_rng(0), np.random.RandomState(0), random.Random(0)):
        assert isinstance(s.sample(rng), Arch)
    # Documented: an int seed is fed to numpy.random.default_rng.
    assert s.sample_params(5) == s.sample_params(np.random.default_rng(5))
    # Each kind of generator draws choice k as index k: RandomState(0).randint(2) etc.
    expected = np.random.RandomState(3)
    draws = s.sample_params(np.random.RandomState(3))
    for name, choices in s.dimensions().items():
        assert draws[name] == choices[expected.randint(len(choices))]
    with pytest.raises(TypeError):
        s.sample("seed")


def test_mnasnet_spaces_are_mbconv_only():
    for name in ("mnasnet", "mnasnet_cifar"):
        s = SearchSpace.load(name)
        assert not any(p.endswith(".block") for p in s.dimensions())
        rng = np.random.default_rng(0)
        for _ in range(50):
            assert {st.block for st in s.sample(rng).stages} == {"mbconv"}


def test_v2_spaces_search_the_block_kind():
    for name in ("v2", "v2_cifar"):
        dims = SearchSpace.load(name).dimensions()
        assert dims["s1.block"] == ("mbconv", "fused_mbconv")


def test_size_equals_brute_force_count():
    s = SearchSpace.from_dict(TINY)
    dims = s.dimensions()
    archs = {s.decode(dict(zip(dims, values))) for values in itertools.product(*dims.values())}
    assert s.size() == len(archs)
    # By hand: stage 1 kernel 2 x se 2 x layers {1, 2} x channels {16, 24} = 16; stage 2
    # kernel 2 x layers {1, 2, 3} x channels {24, 32} x expand 2 x block 2 = 48.
    assert s.size() == 16 * 48 == 768
    # Collisions really happen here, so the product of choice counts is larger.
    assert s.size() < int(np.prod([len(c) for c in dims.values()]))


def test_size_of_fixed_space_is_one():
    s = SearchSpace.from_dict({"base": "efficientnet_b0", "defaults": {"kernel": 3}})
    assert s.dimensions() == {}
    assert s.size() == 1
    assert s.decode({}).stages[2].kernel == 3


def test_params_of_inverts_decode():
    s = SearchSpace.load("v2_cifar")
    rng = np.random.default_rng(4)
    for _ in range(10):
        arch = s.sample(rng)
        assert s.decode(s.params_of(arch)) == arch
    params = s.params_of(s.base)
    assert all(params[p] == 0 for p in params if p.endswith(".layers"))
    other = get_preset("efficientnet_b0").arch()
    with pytest.raises(SpaceError):
        s.params_of(other)


def _write_toml(path, d):
    def value(v):
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    lines = [f"{k} = {value(d[k])}" for k in ("name", "description", "base") if k in d]
    lines.append("[defaults]")
    lines += [f"{k} = {value(v)}" for k, v in d["defaults"].items()]
    for number, fields in d["stages"].items():
        lines.append(f"[stages.{number}]")
        lines += [f"{k} = {value(v)}" for k, v in fields.items()]
    path.write_text("\n".join(lines) + "\n")


def test_yaml_json_toml_load_the_same_space(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "tiny.yml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    _write_toml(tmp_path / "tiny.toml", TINY)
    ref = SearchSpace.from_dict(TINY)
    for suffix in ("yaml", "yml", "json", "toml"):
        loaded = SearchSpace.load(tmp_path / f"tiny.{suffix}")
        assert loaded == ref, suffix
        assert loaded.dimensions() == ref.dimensions()
        assert str(tmp_path / f"tiny.{suffix}") in loaded.source
    # A path given as a string works too, and the name defaults to the file name.
    no_name = {k: v for k, v in TINY.items() if k != "name"}
    (tmp_path / "anon.json").write_text(json.dumps(no_name))
    assert SearchSpace.load(str(tmp_path / "anon.json")).name == "anon"


def test_to_dict_round_trips_through_files(tmp_path):
    s = SearchSpace.load("v2_cifar")
    (tmp_path / "copy.json").write_text(json.dumps(s.to_dict()))
    (tmp_path / "copy.yaml").write_text(yaml.safe_dump(s.to_dict()))
    assert SearchSpace.load(tmp_path / "copy.json") == s
    assert SearchSpace.load(tmp_path / "copy.yaml") == s


def _with(**changes):
    d = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        d[key] = value
    return d


MALFORMED = [
    ("unknown top-level key", _with(colour="red"), ["colour"]),
    ("unknown field", _with(defaults={"kernal": [3, 5]}), ["kernal"]),
    ("bad kernel", _with(defaults={"kernel": [3, 4]}), ["kernel", "4"]),
    ("bad se", _with(stages={"1": {"se": [0, 1.5]}}), ["stages.1.se", "1.5"]),
    ("bad expand", _with(defaults={"expand": 0.5}), ["expand", "0.5"]),
    ("bad block", _with(defaults={"block": ["mbconv", "conv"]}), ["block", "conv"]),
    ("bad width", _with(defaults={"width": [1.0, -0.5]}), ["width", "-0.5"]),
    ("fractional layers", _with(defaults={"layers": [0, 0.5]}), ["layers", "0.5"]),
    ("empty choice list", _with(defaults={"kernel": []}), ["kernel", "empty"]),
    ("duplicate choice", _with(defaults={"kernel": [3, 3]}), ["kernel", "3"]),
    ("stage out of range", _with(stages={"3": {"kernel": 3}}), ["stage", "3"]),
    ("stage zero", _with(stages={0: {"kernel": 3}}), ["stage", "0"]),
    ("stage not a number", _with(stages={"first": {"kernel": 3}}), ["stage", "first"]),
    ("base not found", _with(base="efficientnet_b99"), ["base", "efficientnet_b99"]),
    ("bad base string", _with(base="net_r32-stem_c8-mb_k4_c8_l1-head_c8"), ["base", "mb_k4_c8_l1"]),
    ("missing base", {"name": "x"}, ["base"]),
]


@pytest.mark.parametrize("case,data,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_space_raises(tmp_path, case, data, words):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpaceError) as info:
        SearchSpace.load(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message, (word, message)
    assert isinstance(info.value, ValueError)
    # The same data as a dict fails the same way.
    with pytest.raises(SpaceError):
        SearchSpace.from_dict(data)


def test_unparsable_and_missing_files(tmp_path):
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("base: [efficientnet_b0\ndefaults: {kernel: [3, 5]\n")
    bad_json = tmp_path / "broken.json"
    bad_json.write_text('{"base": "efficientnet_b0",}')
    bad_toml = tmp_path / "broken.toml"
    bad_toml.write_text('base = "efficientnet_b0\n')
    for path, kind in ((bad_yaml, "YAML"), (bad_json, "JSON"), (bad_toml, "TOML")):
        with pytest.raises(SpaceError, match=kind) as info:
            SearchSpace.load(path)
        assert str(path) in str(info.value)
    missing = tmp_path / "absent.yaml"
    with pytest.raises(SpaceError, match="does not exist") as info:
        SearchSpace.load(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(SpaceError, match="unknown search space 'nosuchspace'"):
        SearchSpace.load("nosuchspace")
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n- 2\n")
    with pytest.raises(SpaceError, match="mapping"):
        SearchSpace.load(not_mapping)


def test_decode_rejects_bad_params():
    s = SearchSpace.from_dict(TINY)
    good = s.sample_params(0)
    missing = dict(good)
    del missing["s2.expand"]
    with pytest.raises(SpaceError, match=r"missing parameter 's2\.expand'"):
        s.decode(missing)
    with pytest.raises(SpaceError, match=r"unknown parameter 's9\.kernel'"):
        s.decode({**good, "s9.kernel": 3})
    with pytest.raises(SpaceError, match=r"'s1\.kernel' = 7 is not among the choices \[3, 5\]"):
        s.decode({**good, "s1.kernel": 7})
    with pytest.raises(SpaceError, match=r"'s2\.block'"):
        s.decode({**good, "s2.block": "conv"})
    with pytest.raises(SpaceError, match=r"'s1\.se' = True"):
        s.decode({**good, "s1.se": True})
    # A fixed field is not a parameter.
    with pytest.raises(SpaceError, match=r"unknown parameter 's1\.expand'"):
        s.decode({**good, "s1.expand": 1})


@pytest.mark.parametrize("name", ["mnasnet_cifar", "v2_cifar"])
def test_cifar_samples_build_and_run(name):
    s = SearchSpace.load(name)
    assert s.base.resolution == 32
    assert s.base.final_resolution() >= 2
    rng = np.random.default_rng(0)
    x = torch.randn(2, 3, 32, 32)
    for arch in (s.base, s.sample(rng), s.sample(rng)):
        assert arch.final_resolution() >= 2
        model = space.build_model(arch, num_classes=10).eval()
        with torch.no_grad():
            assert model(x).shape == (2, 10)


def test_misspelt_base_name_gets_a_did_you_mean():
    with pytest.raises(SpaceError, match=r"did you mean 'efficientnet_b0'\?"):
        SearchSpace.from_dict({"base": "efficientnet-b0", "defaults": {"kernel": [3, 5]}})
