"""nas.search.objectives: rewards, quantities, Pareto fronts and hypervolume.

The expected numbers are computed by hand (the literals below), not with the module's formulas:
2 ** -0.07 = exp(-0.07 ln 2) = exp(-0.0485203) = 0.9526380 and 2 ** -0.12 = exp(-0.0831777)
= 0.9201877, from the series 1 - u + u^2/2 - u^3/6 + u^4/24.
"""

import itertools
import json

import numpy as np
import pytest

from nas.search.objectives import (
    COST_KINDS,
    CostKind,
    Direction,
    MnasReward,
    V2Reward,
    dominates,
    format_quantity,
    hypervolume,
    pareto_directions,
    pareto_front,
    parse_quantity,
    reward_from_dict,
)
from space.errors import UserError

TWO_POW_M007 = 0.9526380  # 2 ** -0.07, by hand
TWO_POW_M012 = 0.9201877  # 2 ** -0.12, by hand
T = 400e6


# ------------------------------------------------------------------ cost kinds and quantities


def test_cost_kinds_table():
    assert list(COST_KINDS) == ["macs", "params", "latency", "step_time"]
    assert all(isinstance(k, CostKind) and k.name == name for name, k in COST_KINDS.items())
    assert [k.is_duration for k in COST_KINDS.values()] == [False, False, True, True]


@pytest.mark.parametrize(
    "text, kind, value",
    [
        ("400M", "macs", 400e6),
        ("0.4G", "macs", 400e6),
        ("5.3e8", "macs", 530e6),
        ("20k", "params", 20e3),
        ("20K", "params", 20e3),
        ("0.39B", "macs", 390e6),
        ("1T", "macs", 1e12),
        ("  400M MACs ", "macs", 400e6),
        ("5.3M params", "params", 5.3e6),
        ("385814752", "macs", 385814752),
        ("5ms", "latency", 0.005),
        ("5 ms", "latency", 0.005),
        ("0.5s", "step_time", 0.5),
        ("200us", "latency", 0.0002),
        ("200\u00b5s", "latency", 0.0002),
        ("200\u03bcs", "latency", 0.0002),
        ("1500ns", "latency", 1.5e-6),
    ],
)
def test_parse_quantity_good(text, kind, value):
    assert parse_quantity(text, kind) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize(
    "text, kind, words",
    [
        ("400m", "macs", "ambiguous"),
        ("400m MACs", "macs", "ambiguous"),
        ("5", "latency", "no unit"),
        ("5x", "params", "unknown multiplier"),
        ("4Mi", "params", "unknown multiplier"),
        ("5 min", "latency", "unknown unit"),
        ("5MS", "latency", "unknown unit"),
        ("0", "macs", "positive"),
        ("-5ms", "latency", "positive"),
        ("1e999", "macs", "finite"),
        ("inf", "macs", "not a number"),
        ("nan", "params", "not a number"),
        ("", "macs", "not a number"),
        ("abc", "latency", "not a number"),
    ],
)
def test_parse_quantity_bad_names_the_input(text, kind, words):
    with pytest.raises(UserError) as err:
        parse_quantity(text, kind)
    message = str(err.value)
    assert repr(text) in message and words in message
    assert "\n" not in message


def test_parse_quantity_unknown_kind():
    with pytest.raises(UserError, match="flops"):
        parse_quantity("400M", "flops")


@pytest.mark.parametrize(
    "value, kind, text",
    [
        (400e6, "macs", "400M MACs"),
        (385814752, "macs", "386M MACs"),
        (5288548, "params", "5.29M params"),
        (999.7e6, "macs", "1G MACs"),
        (950, "macs", "950 MACs"),
        (0.005, "latency", "5.0 ms"),
        (0.0125, "latency", "12.5 ms"),
        (0.25, "step_time", "250 ms"),
        (1.25, "step_time", "1.25 s"),
        (0.0002, "latency", "200 us"),
    ],
)
def test_format_quantity(value, kind, text):
    assert format_quantity(value, kind) == text
    assert parse_quantity(text, kind) == pytest.approx(value, rel=5e-3)


# ------------------------------------------------------------------ MnasNet / EfficientNet reward


def test_soft_reward_literals():
    r = MnasReward.soft(T)
    assert (r.alpha, r.beta, r.cost) == (-0.07, -0.07, "macs")
    assert r(0.5, T) == pytest.approx(0.5, abs=1e-12)
    assert r(1.0, 2 * T) == pytest.approx(0.9526380, abs=1e-6)
    assert r(0.5, 2 * T) == pytest.approx(0.4763190, abs=1e-6)
    # half the target earns what twice the target costs: 1 / 0.9526380 = 1.0497166
    assert r(0.5, T / 2) == pytest.approx(0.5248583, abs=1e-6)


def test_hard_reward_literals():
    r = MnasReward.hard(T)
    assert (r.alpha, r.beta) == (0.0, -1.0)
    assert r(0.7, T / 10) == pytest.approx(0.7, abs=1e-12)
    assert r(0.7, T) == pytest.approx(0.7, abs=1e-12)
    assert r(0.6, 2 * T) == pytest.approx(0.3, abs=1e-12)
    assert r(0.8, 4 * T) == pytest.approx(0.2, abs=1e-12)


def test_reward_on_latency():
    r = MnasReward.soft(parse_quantity("5ms", "latency"), cost="latency")
    assert r(0.9, 0.005) == pytest.approx(0.9, abs=1e-12)
    assert r(0.9, 0.010) == pytest.approx(0.9 * 0.9526380, abs=1e-6)


def test_iso_curve_literals_and_round_trip():
    xs = [T / 4, T / 2, T, 2 * T, 4 * T]
    soft, hard = MnasReward.soft(T), MnasReward.hard(T)
    np.testing.assert_allclose(hard.iso_curve(0.2, xs), [0.2, 0.2, 0.2, 0.4, 0.8], atol=1e-12)
    assert soft.iso_curve(0.5, [2 * T])[0] == pytest.approx(0.5 / 0.9526380, abs=1e-6)
    for reward, value in ((soft, 0.6), (hard, 0.2)):
        accs = reward.iso_curve(value, np.array(xs))
        assert [reward(a, x) for a, x in zip(accs, xs)] == pytest.approx([value] * len(xs), abs=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(target=0),
        dict(target=-1),
        dict(target=float("nan")),
        dict(target=float("inf")),
        dict(target="big"),
        dict(target=T, cost="flops"),
        dict(target=T, alpha=0.1),
        dict(target=T, beta=float("-inf")),
    ],
)
def test_mnas_reward_validation(kwargs):
    with pytest.raises(UserError):
        MnasReward(**kwargs)


@pytest.mark.parametrize(
    "acc, x", [(1.2, T), (-0.1, T), (float("nan"), T), (0.5, 0), (0.5, -T), (0.5, float("inf"))]
)
def test_mnas_reward_refuses_bad_inputs(acc, x):
    with pytest.raises(ValueError):
        MnasReward.soft(T)(acc, x)


# ------------------------------------------------------------------ EfficientNetV2 reward


def test_v2_reward_literals():
    r = V2Reward(ref_step_time=0.12, ref_params=4.0e6)
    assert r(0.8, 0.12, 4.0e6) == pytest.approx(0.8, abs=1e-12)
    assert r(0.8, 0.24, 4.0e6) == pytest.approx(0.8 * 0.9526380, abs=1e-6)
    assert r(0.8, 0.24, 8.0e6) == pytest.approx(0.7361502, abs=1e-6)  # 0.8 * 2 ** -0.12


def test_v2_reward_validation():
    for kwargs in (
        dict(ref_step_time=0, ref_params=1),
        dict(ref_step_time=1, ref_params=-1),
        dict(ref_step_time=1, ref_params=1, w=0.5),
    ):
        with pytest.raises(UserError):
            V2Reward(**kwargs)
    with pytest.raises(ValueError):
        V2Reward(1, 1)(0.5, 0.0, 1)


def test_rewards_round_trip_through_json():
    rewards = (MnasReward.soft(T), MnasReward.hard(0.005, cost="latency"), V2Reward(0.12, 4e6, w=-0.1, v=-0.02))
    for reward in rewards:
        stored = json.loads(json.dumps(reward.to_dict()))
        assert type(reward).from_dict(stored) == reward
        assert reward_from_dict(stored) == reward


@pytest.mark.parametrize(
    "d",
    [
        {"reward": "mnas"},
        {"reward": "mnas", "target": 4e8, "gamma": 1},
        {"reward": "v2", "target": 4e8},
        {"reward": "other"},
        {"target": 4e8},
        [1, 2],
    ],
)
def test_reward_from_dict_refuses(d):
    with pytest.raises(UserError):
        reward_from_dict(d)


# ------------------------------------------------------------------ Pareto


MAX_MIN = ("maximize", "minimize")


def test_dominates():
    assert dominates((0.9, 300), (0.8, 300), MAX_MIN)
    assert dominates((0.9, 300), (0.9, 400), MAX_MIN)
    assert not dominates((0.9, 300), (0.9, 300), MAX_MIN)
    assert not dominates((0.9, 400), (0.8, 300), MAX_MIN)
    assert dominates((1, 5), (2, 5), ("minimize", "maximize"))
    assert dominates((0.9, 300), (0.8, 300), (Direction.MAXIMIZE, Direction.MINIMIZE))


def test_dominates_accepts_optuna_directions():
    from optuna.study import StudyDirection

    assert dominates((0.9, 300), (0.8, 300), (StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE))
    with pytest.raises(ValueError):
        dominates((0.9,), (0.8,), (StudyDirection.NOT_SET,))


def test_pareto_front_hand_built():
    points = [
        (0.90, 400),  # 0 front
        (0.85, 300),  # 1 front
        (0.80, 350),  # 2 dominated by 1
        (0.90, 400),  # 3 duplicate of 0: kept
        (0.90, 450),  # 4 dominated by 0 (same accuracy, more MACs)
        (0.95, 900),  # 5 front
        (0.70, 100),  # 6 front
        (0.60, 100),  # 7 dominated by 6
    ]
    assert pareto_front(points, MAX_MIN) == [0, 1, 3, 5, 6]
    # the same set with both objectives minimised: lowest accuracy wins at equal MACs
    assert pareto_front(points, ("minimize", "minimize")) == [7]
    assert pareto_front([], MAX_MIN) == []


def test_pareto_front_three_mixed_directions():
    dirs = ("maximize", "minimize", "minimize")  # accuracy, MACs, latency
    points = [(0.9, 400, 0.01), (0.9, 300, 0.02), (0.8, 300, 0.02), (0.95, 500, 0.005), (0.9, 400, 0.011)]
    assert pareto_front(points, dirs) == [0, 1, 3]


def test_pareto_directions():
    expected = (Direction.MAXIMIZE, Direction.MINIMIZE, Direction.MINIMIZE)
    assert pareto_directions(["macs", "latency"]) == expected
    for bad in ([], ["macs", "macs"], ["flops"]):
        with pytest.raises(UserError):
            pareto_directions(bad)


# ------------------------------------------------------------------ hypervolume


def test_hypervolume_2d_staircase():
    # staircase (1,3), (2,2), (3,1) under (4,4): columns of height 1, 2, 3, each 1 wide
    mm = ("minimize", "minimize")
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4), mm) == pytest.approx(6.0)
    # a dominated point, one beyond the reference, one on its edge: nothing added
    extra = [(1, 3), (2, 2), (3, 1), (2.5, 2.5), (5, 0.5), (0.5, 4)]
    assert hypervolume(extra, (4, 4), mm) == pytest.approx(6.0)
    assert hypervolume([], (4, 4), mm) == 0.0
    assert hypervolume([(5, 5)], (4, 4), mm) == 0.0


def test_hypervolume_2d_accuracy_and_macs():
    # boxes 0.4 x 200 = 80 and 0.3 x 400 = 120 overlapping in 0.3 x 200 = 60: 140
    hv = hypervolume([(0.9, 400), (0.8, 200)], (0.5, 600), MAX_MIN)
    assert hv == pytest.approx(140.0)


def test_hypervolume_3d_two_overlapping_boxes():
    # boxes 3*2*2 = 12 and 2*3*1 = 6 meeting in 2*2*1 = 4: 14; (3,3,3) lies inside the first
    mmm = ("minimize",) * 3
    assert hypervolume([(1, 2, 2), (2, 1, 3)], (4, 4, 4), mmm) == pytest.approx(14.0)
    assert hypervolume([(1, 2, 2), (2, 1, 3), (3, 3, 3)], (4, 4, 4), mmm) == pytest.approx(14.0)
    # the same boxes with the first objective maximised (negate it)
    max_min_min = ("maximize", "minimize", "minimize")
    assert hypervolume([(-1, 2, 2), (-2, 1, 3)], (-4, 4, 4), max_min_min) == pytest.approx(14.0)


def _grid_count(points, ref):
    """Unit cells of the integer grid below ``ref`` that some point dominates."""
    ranges = [range(int(r)) for r in ref]
    return sum(
        any(all(p_i <= c_i for p_i, c_i in zip(p, cell)) for p in points) for cell in itertools.product(*ranges)
    )


def test_hypervolume_3d_against_grid_count():
    rng = np.random.default_rng(0)
    mmm = ("minimize",) * 3
    for _ in range(5):
        points = [tuple(int(v) for v in row) for row in rng.integers(0, 8, size=(12, 3))]
        assert hypervolume(points, (8, 8, 8), mmm) == pytest.approx(_grid_count(points, (8, 8, 8)))


@pytest.mark.parametrize("d", [2, 3, 4])
def test_hypervolume_agrees_with_optuna(d):
    hv_module = pytest.importorskip("optuna._hypervolume")
    compute = getattr(hv_module, "compute_hypervolume", None)
    if compute is None:
        pytest.skip("optuna._hypervolume.compute_hypervolume is gone")
    rng = np.random.default_rng(d)
    directions = ["maximize"] + ["minimize"] * (d - 1)
    signs = np.array([-1.0] + [1.0] * (d - 1))
    for n in (1, 5, 40):
        points = rng.random((n, d))
        reference = np.array([0.1] + [0.9] * (d - 1))
        ours = hypervolume([tuple(p) for p in points], tuple(reference), directions)
        # Optuna minimises and refuses points beyond the reference; those add nothing anyway.
        loss = points * signs
        ref = reference * signs
        loss = loss[np.all(loss <= ref, axis=1)]
        theirs = compute(loss, ref) if len(loss) else 0.0
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)


def test_hypervolume_refuses_bad_input():
    with pytest.raises(ValueError):
        hypervolume([(1, 2)], (4, float("inf")), ("minimize", "minimize"))
    with pytest.raises(ValueError):
        hypervolume([(1, 2, 3)], (4, 4), ("minimize", "minimize"))
    with pytest.raises(ValueError):
        hypervolume([(1, float("nan"))], (4, 4), ("minimize", "minimize"))
