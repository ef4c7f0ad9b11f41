"""The analytic cost model against thop's counts on built models."""

import random

import pytest
import torch
from torch import nn

from space import Arch, Stage, build_model, cost, measure_latency
from space.presets import get_preset
from space.thop_reference import thop_conv_linear_macs


def random_arch(rng: random.Random) -> Arch:
    stages = []
    for _ in range(rng.randint(1, 5)):
        stages.append(Stage(
            block=rng.choice(["mbconv", "fused_mbconv"]), kernel=rng.choice([1, 3, 5, 7]),
            stride=rng.choice([1, 2]), expand=rng.choice([1, 2.5, 4, 6]),
            channels=rng.choice([8, 12, 16, 20, 24, 40]), layers=rng.randint(1, 3),
            se=rng.choice([0, 0.125, 0.25, 0.5])))
    stem_stride = rng.choice([1, 2])
    total_stride = stem_stride * 2 ** sum(s.stride == 2 for s in stages)
    return Arch(stem_channels=rng.choice([8, 16, 24]), stem_stride=stem_stride,
                stages=tuple(stages), head_channels=rng.choice([32, 64]),
                # odd sizes too: padding k // 2 gives ceil(n / s), which both sides must agree on
                resolution=total_stride * rng.randint(1, 3) + rng.choice([0, 1]),
                activation=rng.choice(["silu", "relu"]))


def params_of(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_random_descriptions_match_thop_and_parameter_count():
    rng = random.Random(0)
    for _ in range(40):
        arch = random_arch(rng)
        classes = rng.choice([10, 100])
        model = build_model(arch, num_classes=classes)
        c = cost(arch, num_classes=classes)
        assert c.params == params_of(model), arch.to_string()
        assert c.macs == thop_conv_linear_macs(model, arch.resolution, device="cpu"), arch.to_string()


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_v2_s", "efficientnet_b0_cifar"])
def test_presets_match_thop(name):
    arch = get_preset(name).arch()
    with torch.device("meta"):
        model = build_model(arch)
    assert cost(arch).macs == thop_conv_linear_macs(model, arch.resolution)


def test_meta_profiling_equals_real_profiling():
    # The space-wide agreement tests profile on the meta device; it must count the same.
    arch = get_preset("efficientnet_b0_cifar").arch()
    real = thop_conv_linear_macs(build_model(arch), 32, device="cpu")
    with torch.device("meta"):
        meta = thop_conv_linear_macs(build_model(arch), 32)
    assert real == meta == cost(arch).macs


def test_per_part_costs_add_up():
    arch = get_preset("efficientnet_b0").arch()
    c = cost(arch)
    assert [p.name for p in c.parts] == ["stem", *(f"s{i}" for i in range(1, 8)), "head"]
    assert sum(p.macs for p in c.parts) == c.macs
    assert sum(p.params for p in c.parts) == c.params
    assert [p.out_resolution for p in c.parts] == [112, 112, 56, 28, 14, 14, 7, 7, 7]
    # By hand: stem 3 -> 32, 3x3, stride 2 at 224: 112*112*32*27 MACs, 32*27 + 2*32 params;
    # head 320 -> 1280 1x1 at 7x7 plus the 1280 x 1000 classifier.
    stem, head = c.parts[0], c.parts[-1]
    assert (stem.macs, stem.params) == (10_838_016, 928)
    assert head.macs == 7 * 7 * 1280 * 320 + 1280 * 1000 == 21_350_400
    assert head.params == 320 * 1280 + 2 * 1280 + 1281 * 1000


def test_resolution_and_classes_change_macs_as_expected():
    arch = get_preset("efficientnet_b0").arch()
    base = cost(arch)
    assert cost(arch, resolution=448).macs == pytest.approx(4 * base.macs, rel=0.02)
    assert cost(arch, num_classes=10).macs == base.macs - 1280 * 990
    assert cost(arch, num_classes=10).params == base.params - 1281 * 990


def test_activation_memory_estimates_bracket_the_real_tensors():
    arch = get_preset("efficientnet_b0_cifar").arch()
    model = build_model(arch, num_classes=10).eval()
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.numel() * 4))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    c = cost(arch, num_classes=10)
    assert max(sizes) <= c.peak_activation_bytes <= 3 * max(sizes)
    assert c.peak_activation_bytes < c.train_activation_bytes
    assert c.train_activation_bytes >= sum(sizes)
    assert cost(arch, batch=8).train_activation_bytes == 8 * c.train_activation_bytes
    assert cost(arch, bytes_per_element=2).peak_activation_bytes * 2 == c.peak_activation_bytes


def test_measure_latency_returns_a_median(tiny_arch):
    seconds = measure_latency(tiny_arch, "cpu", batch=2, warmup=1, repeats=3)
    assert 0 < seconds < 5


def assert_space_samples_match_thop(space_name: str, samples: int, seed: int, num_classes: int) -> None:
    import numpy as np

    from space import SearchSpace

    space = SearchSpace.load(space_name)
    rng = np.random.default_rng(seed)
    for _ in range(samples):
        arch = space.sample(rng)
        with torch.device("meta"):
            model = build_model(arch, num_classes=num_classes)
        c = cost(arch, num_classes=num_classes)
        assert c.macs == thop_conv_linear_macs(model, arch.resolution), arch.to_string()
        assert c.params == params_of(model), arch.to_string()


@pytest.mark.parametrize("space_name, samples", [
    ("mnasnet_cifar", 40), ("v2_cifar", 40), ("mnasnet", 10), ("v2", 8)])
def test_cost_equals_thop_on_space_samples(space_name, samples):
    """A draw from each shipped space; the slow test below and benchmarks/cost_model.py
    run 200 of every space."""
    assert_space_samples_match_thop(space_name, samples, seed=1, num_classes=10)


@pytest.mark.slow
@pytest.mark.parametrize("space_name", ["mnasnet", "v2", "mnasnet_cifar", "v2_cifar"])
def test_cost_equals_thop_on_200_samples(space_name):
    assert_space_samples_match_thop(space_name, 200, seed=2, num_classes=1000)
