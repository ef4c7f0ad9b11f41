"""Compound scaling: `compound`, `solve_phi` and `grid_points` (scaling/compound.py).

The oracles are independent of the code under test: members written out by hand from the
reference rounding, costs from `space.cost.cost` of the returned description, a brute-force
enumeration of the grid in exact rational arithmetic, and a fine scan of phi for targets.
"""

import itertools
import math
from fractions import Fraction

import pytest

from space import Arch
from space.cost import cost
from space.errors import UserError
from space.presets import get_preset
from scaling import (GridPoint, ScalingError, compound, compound_dropout, grid_points,
                     later_stage_layers, solve_phi)

PAPER = (1.2, 1.1, 1.15)


def b0() -> Arch:
    return get_preset("efficientnet_b0").arch()


# B0 at phi = 1 with (1.2, 1.1, 1.15), written out by hand:
# layers ceil(l * 1.2): 1, 2, 2, 3, 3, 4, 1 -> 2, 3, 3, 4, 4, 5, 2;
# channels make_divisible(c * 1.1, 8) with the 90% rule: 32 -> 35.2 -> 32 (>= 31.68),
# 16 -> 16, 24 -> 24, 40 -> 48, 80 -> 88, 112 -> 123.2 -> 120, 192 -> 211.2 -> 208,
# 320 -> 352, head 1280 -> 1408; resolution 224 * 1.15 = 257.6 -> 256 (multiple of 8);
# dropout 0.2 (B1's), drop-path kept at 0.2.
B0_PHI1 = ("net_r256_silu_dp0.2_eps0.00001_mom0.1-stem_c32_s2-mb_k3_s1_e1_c16_l2_se0.25-"
           "mb_k3_s2_e6_c24_l3_se0.25-mb_k5_s2_e6_c48_l3_se0.25-mb_k3_s2_e6_c88_l4_se0.25-"
           "mb_k5_s1_e6_c120_l4_se0.25-mb_k5_s2_e6_c208_l5_se0.25-mb_k3_s1_e6_c352_l2_se0.25-"
           "head_c1408_do0.2")


# --------------------------------------------------------------------------- compound


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b0_cifar", "efficientnet_v2_s"])
def test_phi_zero_is_the_identity(name):
    base = get_preset(name).arch()
    m = compound(base, 0, *PAPER)
    assert m.arch == base and m.arch.to_string() == base.to_string()
    assert (m.macs, m.params) == (cost(base).macs, cost(base).params)
    assert m.macs_ratio == 1.0 and m.ideal_macs_ratio == 1.0 and m.phi == 0.0


def test_phi_zero_keeps_a_base_the_rounding_would_change():
    # 12 channels and 30 pixels are not multiples of 8: growing them would round them, but
    # phi = 0 is not growing.
    odd = Arch.from_string("net_r30_silu-stem_c12_s2-mb_k3_s2_e3_c20_l1_se0.25-head_c36_do0.1")
    assert compound(odd, 0.0, *PAPER).arch == odd
    assert compound(odd, 0, *PAPER, dropout=0.3).arch == odd.replace(dropout=0.3)


def test_b0_at_phi_one_matches_the_hand_written_member():
    m = compound(b0(), 1, *PAPER)
    assert m.arch.to_string() == B0_PHI1
    assert m.resolution == 256 and m.depth == pytest.approx(1.2) and m.width == pytest.approx(1.1)
    assert m.ideal_macs_ratio == pytest.approx(1.92027)  # 1.2 * 1.21 * 1.3225


@pytest.mark.parametrize("phi", [1, 3])
def test_b0_macs_ratio_is_within_15_percent_of_two_to_the_phi(phi):
    m = compound(b0(), phi, *PAPER)
    ratio = cost(m.arch).macs / cost(b0()).macs  # the cost model, not the member's own field
    assert ratio == pytest.approx(m.macs_ratio)
    assert abs(ratio / 2**phi - 1) <= 0.15, ratio


@pytest.mark.xfail(strict=True, reason=(
    "measured 4.69x, 17% above 4: the reference depth rounding ceil(l * 1.44) gives 26 layers "
    "where 16 * 1.44 = 23.04, so depth alone costs 1.66x instead of 1.44x"))
def test_b0_macs_ratio_at_phi_two_is_within_15_percent_of_four():
    m = compound(b0(), 2, *PAPER)
    assert abs(cost(m.arch).macs / cost(b0()).macs / 4 - 1) <= 0.15


def test_why_phi_two_overshoots_is_the_depth_ceiling():
    m = compound(b0(), 2, *PAPER)
    assert [s.layers for s in m.arch.stages] == [2, 3, 3, 5, 5, 6, 2]  # ceil(l * 1.44)
    assert sum(s.layers for s in m.arch.stages) == 26
    assert 0.15 < cost(m.arch).macs / cost(b0()).macs / 4 - 1 < 0.20


def test_fractional_phi():
    m = compound(b0(), 0.5, *PAPER)
    # 224 * sqrt(1.15) = 240.2 -> 240; depth sqrt(1.2) = 1.095: every stage ceil -> +1 layer.
    assert m.resolution == 240
    assert [s.layers for s in m.arch.stages] == [2, 3, 3, 4, 4, 5, 2]
    assert m.ideal_macs_ratio == pytest.approx(math.sqrt(1.92027))


@pytest.mark.parametrize("multiple, side", [(8, 256), (16, 256), (32, 256), (1, 258), (100, 300)])
def test_resolution_rounds_half_up_to_the_multiple(multiple, side):
    # 224 * 1.15 = 257.6.
    assert compound(b0(), 1, *PAPER, resolution_multiple=multiple).resolution == side


def test_resolution_cap():
    assert compound(b0(), 7, *PAPER, max_resolution=480).resolution == 480
    assert compound(b0(), 1, *PAPER, max_resolution=480).resolution == 256  # below the cap
    v2 = get_preset("efficientnet_v2_s").arch()
    assert compound(v2, 3, *PAPER, max_resolution=480).resolution == 480
    with pytest.raises(ScalingError, match="--max-resolution"):
        compound(v2, 1, *PAPER, max_resolution=300)  # below the base's 384


def test_later_stage_depth_puts_the_extra_layers_last():
    # phi = 2, depth 1.44: the reference rule adds 26 - 16 = 10 layers in total.
    # Last 2 stages (4 and 1 layers): 10 * 4/5 = 8 and 10 * 1/5 = 2.
    m = compound(b0(), 2, *PAPER, later_stage_depth=2)
    assert [s.layers for s in m.arch.stages] == [1, 2, 2, 3, 3, 12, 3]
    # Last 3 stages (3, 4, 1): 3.75, 5, 1.25 -> 3, 5, 1 and the one left to the largest
    # remainder (0.75, the first of them).
    m3 = compound(b0(), 2, *PAPER, later_stage_depth=3)
    assert [s.layers for s in m3.arch.stages] == [1, 2, 2, 3, 7, 9, 2]
    # Only the layers move: channels and resolution are the uniform member's.
    uniform = compound(b0(), 2, *PAPER)
    assert [s.channels for s in m.arch.stages] == [s.channels for s in uniform.arch.stages]
    assert m.resolution == uniform.resolution


def test_later_stage_layers_keeps_the_total_of_the_reference_rule():
    for depth in (1.05, 1.3, 2.7):
        for k in range(1, 8):
            layers = later_stage_layers([1, 2, 2, 3, 3, 4, 1], depth, k)
            assert sum(layers) == sum(math.ceil(n * depth) for n in [1, 2, 2, 3, 3, 4, 1])
            assert list(layers[: 7 - k]) == [1, 2, 2, 3, 3, 4, 1][: 7 - k]
    with pytest.raises(ScalingError, match="--later-stage-depth"):
        compound(b0(), 1, *PAPER, later_stage_depth=0)


def test_dropout_follows_the_reference_table():
    # The official B0..B7 dropouts (Tan & Le's code).
    official = [0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5]
    assert [compound(b0(), phi, *PAPER).arch.dropout for phi in range(8)] == official
    assert [get_preset(f"efficientnet_b{i}").arch().dropout for i in range(1, 8)] == official[1:]
    assert compound(b0(), 1.5, *PAPER).arch.dropout == 0.25
    assert compound(b0(), 9, *PAPER).arch.dropout == 0.5
    assert compound_dropout(0.0, 2) == 0.1  # a base without dropout gets the increase only
    assert compound_dropout(0.45, 7) == 0.5  # capped at 0.5
    assert compound(b0(), 3, *PAPER, dropout=0.05).arch.dropout == 0.05


@pytest.mark.parametrize("args, needle", [
    ((1, 0.9, 1.1, 1.3), "--alpha"), ((1, 1.2, 0.99, 1.15), "--beta"),
    ((1, 1.2, 1.1, math.nan), "--gamma"), ((1, math.inf, 1.1, 1.15), "--alpha"),
    ((1, True, 1.1, 1.15), "--alpha"),
    ((1, 1.2, 1.1, 1.3), "2.454"),  # 1.2 * 1.21 * 1.69 = 2.45388
    ((1, 1.0, 1.0, 1.0), "= 1 "),
    ((-1, *PAPER), "--phi"), ((math.nan, *PAPER), "--phi"), ((math.inf, *PAPER), "--phi"),
])
def test_bad_inputs_are_one_sentence_user_errors(args, needle):
    with pytest.raises(ScalingError) as err:
        compound(b0(), *args)
    message = str(err.value)
    assert needle in message and "\n" not in message
    assert isinstance(err.value, UserError)


def test_product_message_names_the_flags_and_tolerance_is_adjustable():
    with pytest.raises(ScalingError, match=r"--alpha/--beta/--gamma.*within 0.1 of 2"):
        compound(b0(), 1, 1.2, 1.1, 1.3)
    assert compound(b0(), 1, 1.2, 1.1, 1.3, tolerance=0.5).ideal_macs_ratio == pytest.approx(2.45388)
    assert compound(b0(), 1, 2.0, 1.5, 1.5, tolerance=None).ideal_macs_ratio == pytest.approx(10.125)
    with pytest.raises(ScalingError):
        compound(b0(), 1, 1.2, 1.1, 1.15, tolerance=0.05)  # 1.92 is 0.08 from 2


def test_a_runaway_phi_is_a_user_error():
    with pytest.raises(ScalingError, match="--phi"):
        compound(b0(), 200, *PAPER)


# --------------------------------------------------------------------------- solve_phi


def _check_hit(solution, kind, target):
    value = getattr(cost(solution.member.arch), kind)  # the cost model on the returned arch
    assert abs(value / target - 1) <= 0.02, (kind, target, value)
    assert solution.hit and solution.gap == pytest.approx(value / target - 1)
    again = compound(b0(), solution.phi, *PAPER)  # the reported phi gives that network
    assert again.arch == solution.member.arch


@pytest.mark.parametrize("kind, target", [
    ("macs", 1e9), ("macs", 3e9), ("macs", 4e9), ("macs", 30e9),
    ("params", 8e6), ("params", 12e6), ("params", 30e6),
])
def test_solve_phi_lands_within_two_percent(kind, target):
    _check_hit(solve_phi(b0(), *PAPER, **{kind: target}), kind, target)


def test_solve_phi_on_another_base():
    v2 = get_preset("efficientnet_v2_s").arch()
    s = solve_phi(v2, *PAPER, macs=20e9, max_resolution=480)
    assert s.hit and abs(cost(s.member.arch).macs / 20e9 - 1) <= 0.02
    assert s.member.resolution <= 480


def test_solve_phi_reports_the_nearest_member_when_none_is_within_tolerance():
    # 2G MACs sits in a step of the cost: a scan of phi every 0.0005 from 1.5 to 3 finds
    # members at 1.877G and 2.081G and nothing between.
    target = 2e9
    seen = {compound(b0(), 1.5 + i * 0.0005, *PAPER).macs for i in range(3001)}
    nearest = min(seen, key=lambda v: abs(v / target - 1))
    assert all(abs(v / target - 1) > 0.02 for v in seen)
    s = solve_phi(b0(), *PAPER, macs=target)
    assert not s.hit and s.member.macs == nearest
    assert s.gap == pytest.approx(nearest / target - 1) and abs(s.gap) > 0.02


def test_a_target_at_the_base_gives_phi_zero():
    s = solve_phi(b0(), *PAPER, macs=cost(b0()).macs)
    assert s.phi == 0 and s.hit and s.member.arch == b0()


@pytest.mark.parametrize("kwargs, needle", [
    (dict(macs=300e6), "--macs"), (dict(params=4e6), "--params"),
    (dict(), "exactly one"), (dict(macs=1e9, params=1e7), "exactly one"),
    (dict(macs=-5.0), "--macs"), (dict(macs=math.nan), "--macs"),
])
def test_solve_phi_bad_targets(kwargs, needle):
    with pytest.raises(ScalingError) as err:
        solve_phi(b0(), *PAPER, **kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- grid


def _brute_force(step: str, tolerance: str, top: str) -> set[tuple[Fraction, Fraction, Fraction]]:
    """Every grid point meeting the constraint, in exact rational arithmetic."""
    s, tol, hi = Fraction(step), Fraction(tolerance), Fraction(top)
    values = []
    v = Fraction(1)
    while v <= hi:
        values.append(v)
        v += s
    return {(a, b, g) for a, b, g in itertools.product(values, repeat=3)
            if abs(a * b * b * g * g - 2) <= tol}


def _exact(point: GridPoint) -> tuple[Fraction, Fraction, Fraction]:
    # Grid values are decimals of the step; their shortest repr is the exact decimal.
    return tuple(Fraction(repr(v)) for v in (point.alpha, point.beta, point.gamma))


@pytest.mark.parametrize("step, tolerance, top", [
    ("0.05", "0.1", "2"), ("0.1", "0.05", "2"), ("0.05", "0.02", "1.6"), ("0.25", "0.5", "3"),
])
def test_grid_agrees_with_a_brute_force_enumeration(step, tolerance, top):
    points = grid_points(step=float(step), tolerance=float(tolerance), max_coefficient=float(top))
    listed = [_exact(p) for p in points]
    assert len(listed) == len(set(listed))
    assert set(listed) == _brute_force(step, tolerance, top)
    for p, (a, b, g) in zip(points, listed):
        assert a >= 1 and b >= 1 and g >= 1
        assert abs(a * b * b * g * g - 2) <= Fraction(tolerance)
        assert p.product == pytest.approx(float(a * b * b * g * g))


def test_grid_includes_the_papers_point_at_the_defaults():
    points = grid_points()
    assert (1.2, 1.1, 1.15) in {(p.alpha, p.beta, p.gamma) for p in points}
    assert all(p.macs_ratio is None for p in points)


def test_grid_macs_ratio_is_the_real_ratio_at_phi_one():
    points = {(p.alpha, p.beta, p.gamma): p for p in grid_points(b0(), step=0.1, tolerance=0.05)}
    # (1, 1, 1.4): resolution only, 224 * 1.4 = 313.6 -> 312 px.
    assert points[(1.0, 1.0, 1.4)].macs_ratio == pytest.approx(
        cost(b0().replace(resolution=312)).macs / cost(b0()).macs)
    # (1.4, 1.2, 1.0) at tolerance 0.05: product 2.016; layers ceil(l * 1.4), width 1.2.
    assert points[(1.4, 1.2, 1.0)].macs_ratio == pytest.approx(
        cost(Arch.from_string(
            "net_r224_silu_dp0.2-stem_c40_s2-mb_k3_s1_e1_c24_l2_se0.25-mb_k3_s2_e6_c32_l3_se0.25-"
            "mb_k5_s2_e6_c48_l3_se0.25-mb_k3_s2_e6_c96_l5_se0.25-mb_k5_s1_e6_c136_l5_se0.25-"
            "mb_k5_s2_e6_c232_l6_se0.25-mb_k3_s1_e6_c384_l2_se0.25-head_c1536_do0.2")).macs
        / cost(b0()).macs)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(step=0), "--step"), (dict(step=math.nan), "--step"), (dict(tolerance=-0.1), "--tolerance"),
    (dict(max_coefficient=0.5), "--max-coefficient"), (dict(step=1e-6), "--step"),
])
def test_grid_bad_inputs(kwargs, needle):
    with pytest.raises(ScalingError, match=needle):
        grid_points(**kwargs)
