"""What a search maximises: cost kinds and their units, the MnasNet / EfficientNet and
EfficientNetV2 rewards, and the Pareto helpers (dominance, fronts, hypervolume).

Conventions and units
---------------------
* accuracy: a fraction in [0, 1] (never a percentage);
* ``macs``: multiply-accumulates for one image, as `space.cost` counts them (FLOPs in the
  strict sense are twice that; the EfficientNet papers' "FLOPS" are these MACs);
* ``params``: a count of trainable parameters;
* ``latency`` and ``step_time``: seconds (latency of one forward pass as the caller measures
  it; step time of one training step at the study's batch size and precision).

Functions that read what a user typed (`parse_quantity`) or what a user asked for (a reward's
target and exponents, a stored reward dict) raise `space.errors.UserError` with one sentence
naming the value. Values computed by the program (an accuracy, a cost, a point) that are out of
range raise a plain `ValueError`: they are bugs, not mistakes in a command line.

The module itself imports only numpy and `space.errors` (neither torch nor optuna); importing
it through the ``nas`` package still runs ``nas/__init__``.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Union

import numpy as np

from space.errors import UserError

__all__ = [
    "COST_KINDS",
    "CostKind",
    "Direction",
    "MnasReward",
    "V2Reward",
    "Reward",
    "cost_kind",
    "dominates",
    "format_quantity",
    "hypervolume",
    "pareto_directions",
    "pareto_front",
    "parse_quantity",
    "reward_from_dict",
]


# --------------------------------------------------------------------------- cost kinds


@dataclass(frozen=True)
class CostKind:
    """One kind of cost an architecture has.

    ``name`` is the key used in code, command lines and trial user attributes; ``unit`` is
    what `format_quantity` writes after the number (``"s"`` marks a duration); ``label`` is
    how a sentence or an axis names the quantity.
    """

    name: str
    unit: str
    label: str

    @property
    def is_duration(self) -> bool:
        """True for costs measured in seconds (latency, step time), False for counts."""
        return self.unit == "s"


COST_KINDS: Mapping[str, CostKind] = MappingProxyType(
    {
        "macs": CostKind("macs", "MACs", "MACs"),
        "params": CostKind("params", "params", "parameters"),
        "latency": CostKind("latency", "s", "latency"),
        "step_time": CostKind("step_time", "s", "training step time"),
    }
)


def cost_kind(kind: str | CostKind) -> CostKind:
    """The `CostKind` called ``kind`` (a `CostKind` is returned as it is); `UserError` if unknown."""
    if isinstance(kind, CostKind):
        return kind
    found = COST_KINDS.get(kind) if isinstance(kind, str) else None
    if found is None:
        raise UserError(f"unknown cost kind {kind!r}; known: {', '.join(COST_KINDS)}")
    return found


# --------------------------------------------------------------------------- quantities

# Counts take SI-style multipliers. Upper and lower case both work for k, G, T and B
# (billion, as in "0.39B FLOPS" and "7B params"), but a lower-case "m" is refused: in SI it
# is milli, and silently reading "400m" as 400 million (or as 0.4) would set a target a
# million times off. Binary prefixes (Mi, Gi) are not counts of operations and are refused.
_COUNT_MULTIPLIERS = {
    "": 1.0,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "g": 1e9,
    "B": 1e9,
    "b": 1e9,
    "T": 1e12,
    "t": 1e12,
}
# Durations must carry a unit: a bare "5" is as likely meant in milliseconds as in seconds.
# Both the micro sign (U+00B5) and the Greek mu (U+03BC) are accepted, since keyboards
# produce either. Stored as divisors: 200 / 1e6 is exactly the double nearest 0.0002, while
# 200 * 1e-6 is not.
_DURATION_DIVISORS = {"s": 1.0, "ms": 1e3, "us": 1e6, "\u00b5s": 1e6, "\u03bcs": 1e6, "ns": 1e9}

_NUMBER = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(.*?)\s*$", re.DOTALL)


def parse_quantity(text: str, kind: str | CostKind) -> float:
    """The value of a user-typed quantity of ``kind``, in the module's units (counts, seconds).

    Counts (``macs``, ``params``): a number with an optional multiplier, ``k``/``K`` (1e3),
    ``M`` (1e6), ``G``/``g`` or ``B``/``b`` (1e9), ``T``/``t`` (1e12), and optionally the unit
    word after it (``400M``, ``0.4G``, ``5.3e8``, ``20k``, ``400M MACs``, ``5.3M params``).
    A lower-case ``m`` is refused as ambiguous (milli or mega); write ``M``.

    Durations (``latency``, ``step_time``): a number with a unit, ``s``, ``ms``, ``us`` /
    ``µs``, ``ns`` (``5ms``, ``0.5 s``, ``200us``); a bare number is refused because its unit
    would be a guess.

    Zero, negative and non-finite values, unknown suffixes and anything that is not a number
    raise `UserError` with one sentence naming ``text``.
    """
    k = cost_kind(kind)
    if not isinstance(text, str):
        raise UserError(f"{k.label} must be given as text such as {_example(k)}, got {text!r}")
    match = _NUMBER.fullmatch(text)
    if match is None:
        raise UserError(f"{k.label} {text!r} is not a number with a unit, such as {_example(k)}")
    number, suffix = float(match.group(1)), match.group(2)

    if k.is_duration:
        if suffix == "":
            raise UserError(
                f"{k.label} {text!r} has no unit; write it with s, ms, us or ns, such as {_example(k)}"
            )
        divisor = _DURATION_DIVISORS.get(suffix)
        if divisor is None:
            raise UserError(
                f"{k.label} {text!r} has an unknown unit {suffix!r}; use s, ms, us (or \u00b5s) or ns"
            )
        value = number / divisor
    else:
        # The unit word is optional and may follow the multiplier with or without a space.
        word = k.unit.lower()
        if suffix.lower().endswith(word):
            suffix = suffix[: len(suffix) - len(word)].rstrip()
        if suffix == "m":
            raise UserError(
                f"{k.label} {text!r} is ambiguous: 'm' is milli in SI; write 'M' for millions"
            )
        scale = _COUNT_MULTIPLIERS.get(suffix)
        if scale is None:
            raise UserError(
                f"{k.label} {text!r} has an unknown multiplier {suffix!r}; use k, M, G (or B) or T"
            )
        value = number * scale

    if not math.isfinite(value):
        raise UserError(f"{k.label} {text!r} is not a finite number")
    if value <= 0:
        raise UserError(f"{k.label} {text!r} must be positive")
    return value


def _example(k: CostKind) -> str:
    return "'5ms'" if k.is_duration else "'400M'"


_COUNT_STEPS = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))
_DURATION_STEPS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns"))


def format_quantity(value: float, kind: str | CostKind) -> str:
    """Short human text for ``value`` of ``kind``, three significant digits.

    Counts: ``"400M MACs"``, ``"5.29M params"``, ``"950 MACs"``. Durations: ``"5.0 ms"``,
    ``"12.5 ms"``, ``"250 ms"``, ``"1.25 s"``, ``"200 us"`` (ASCII ``us``, which
    `parse_quantity` reads back). Zero, negative and non-finite values are written plainly.
    """
    k = cost_kind(kind)
    value = float(value)
    steps = _DURATION_STEPS if k.is_duration else _COUNT_STEPS
    if not math.isfinite(value) or value <= 0:
        unit = "s" if k.is_duration else k.unit
        return f"{value:g} {unit}"
    # Round before choosing the multiplier, so 999.7M is written 1G and not 1e+03M.
    rounded = float(f"{value:.3g}")
    scale, prefix = next(((s, p) for s, p in steps if rounded >= s), steps[-1])
    number = f"{rounded / scale:.3g}"
    if k.is_duration:
        # Durations keep one decimal below 100 ("5.0 ms"): it reads as a measurement.
        if "." not in number and "e" not in number and rounded / scale < 100:
            number += ".0"
        return f"{number} {prefix}"
    return f"{number}{prefix} {k.unit}"


# --------------------------------------------------------------------------- rewards


def _user_number(where: str, name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise UserError(f"{where}: {name} must be finite, got {value!r}")
    return number


def _accuracy(acc: float) -> float:
    a = float(acc)
    if not 0.0 <= a <= 1.0:  # also false for NaN
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {acc!r}")
    return a


def _positive(name: str, value: float) -> float:
    x = float(value)
    if not (x > 0 and math.isfinite(x)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return x


def _check_dict(d: Any, reward: str, keys: Sequence[str], required: Sequence[str]) -> None:
    if not isinstance(d, Mapping):
        raise UserError(f"stored reward must be a mapping, got {type(d).__name__}")
    if d.get("reward") != reward:
        raise UserError(f"stored reward {dict(d)!r} is not a {reward!r} reward")
    missing = [k for k in required if k not in d]
    unknown = [k for k in d if k not in keys and k != "reward"]
    if missing:
        raise UserError(f"stored reward {dict(d)!r} lacks {', '.join(missing)}")
    if unknown:
        raise UserError(f"stored reward {dict(d)!r} has unknown keys {', '.join(map(str, unknown))}")


@dataclass(frozen=True)
class MnasReward:
    """The MnasNet / EfficientNet reward ``ACC * (X / T) ** w``, to be maximised.

    ``w = alpha`` when ``X <= T`` and ``beta`` otherwise; ``X`` is the architecture's cost of
    kind ``cost`` (see `COST_KINDS`) and ``target`` is ``T`` in the same unit (MACs per image,
    a parameter count, or seconds). `soft` is the EfficientNet search's setting
    (``alpha = beta = -0.07``: a cost twice the target costs about 4.7% of the accuracy, a cost
    half the target earns as much); `hard` is MnasNet's hard constraint (``alpha = 0``,
    ``beta = -1``: no credit below the target, accuracy scaled by ``T / X`` above it).

    Construction validates (``UserError``): ``target`` positive and finite, ``cost`` known,
    ``alpha`` and ``beta`` finite and <= 0 (a positive exponent would reward cost).
    """

    target: float
    cost: str = "macs"
    alpha: float = -0.07
    beta: float = -0.07

    def __post_init__(self) -> None:
        where = "reward"
        target = _user_number(where, "target", self.target)
        if target <= 0:
            raise UserError(f"{where}: target must be positive, got {self.target!r}")
        cost_kind(self.cost)
        alpha = _user_number(where, "alpha", self.alpha)
        beta = _user_number(where, "beta", self.beta)
        for name, e in (("alpha", alpha), ("beta", beta)):
            if e > 0:
                raise UserError(f"{where}: {name} must be <= 0 (a positive exponent rewards cost), got {e!r}")
        # Stored as plain floats so equality and to_dict do not depend on what was passed.
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "beta", beta)

    @classmethod
    def soft(cls, target: float, cost: str = "macs") -> MnasReward:
        """EfficientNet's soft constraint: ``alpha = beta = -0.07``."""
        return cls(target, cost, -0.07, -0.07)

    @classmethod
    def hard(cls, target: float, cost: str = "macs") -> MnasReward:
        """MnasNet's hard constraint: ``alpha = 0``, ``beta = -1``."""
        return cls(target, cost, 0.0, -1.0)

    def exponent(self, x: float) -> float:
        """``w`` at cost ``x``: ``alpha`` at or below the target, ``beta`` above it."""
        return self.alpha if x <= self.target else self.beta

    def __call__(self, acc: float, x: float) -> float:
        """The reward of accuracy ``acc`` (in [0, 1]) at cost ``x`` (> 0, the unit of ``cost``)."""
        a = _accuracy(acc)
        x = _positive(cost_kind(self.cost).label, x)
        return a * (x / self.target) ** self.exponent(x)

    def iso_curve(self, reward_value: float, xs: Iterable[float] | np.ndarray) -> np.ndarray:
        """The accuracy that earns ``reward_value`` at each cost in ``xs``: ``R / (x / T) ** w``.

        The curves of equal reward drawn over a front. Values are not clipped to [0, 1]: where
        the curve needs more than 100% accuracy, a plot simply leaves its frame.
        """
        r = float(reward_value)
        if not (r >= 0 and math.isfinite(r)):
            raise ValueError(f"reward value must be a finite number >= 0, got {reward_value!r}")
        x = np.asarray(xs if isinstance(xs, np.ndarray) else list(xs), dtype=float)
        if not np.all(np.isfinite(x) & (x > 0)):
            raise ValueError("iso_curve: every cost must be positive and finite")
        w = np.where(x <= self.target, self.alpha, self.beta)
        return r / (x / self.target) ** w

    def describe(self) -> str:
        """One line for reports and logs, e.g. ``ACC * (MACs / 400M MACs)^w, w = -0.07 / -0.07``."""
        k = cost_kind(self.cost)
        return (
            f"ACC * ({k.label} / {format_quantity(self.target, k)})^w, "
            f"w = {self.alpha:g} at or below the target / {self.beta:g} above"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for a study's user attributes); `from_dict` reads it back."""
        return {
            "reward": "mnas", "target": self.target, "cost": self.cost, "alpha": self.alpha, "beta": self.beta,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MnasReward:
        """The reward `to_dict` wrote; `UserError` on anything else."""
        _check_dict(d, "mnas", ("target", "cost", "alpha", "beta"), ("target",))
        return cls(d["target"], d.get("cost", "macs"), d.get("alpha", -0.07), d.get("beta", -0.07))


@dataclass(frozen=True)
class V2Reward:
    """EfficientNetV2's training-aware reward ``A * (S / S_ref) ** w * (P / P_ref) ** v``.

    ``S`` is the measured training step time in seconds and ``P`` the parameter count. The
    paper leaves their normalisation open; here both are divided by the values of a reference
    architecture, which the caller measures and passes in: ``ref_step_time`` must be measured
    on the same device, batch size and precision as the candidates' step times (the natural
    reference is ``efficientnet_b0_cifar`` for CIFAR-sized spaces, ``efficientnet_b0`` at
    224), and ``ref_params`` is that architecture's parameter count at the study's number of
    classes. The reference therefore scores exactly its accuracy, and the exponents keep the
    paper's meaning (``w = -0.07``, ``v = -0.05``: twice the step time costs about 4.7%,
    twice the parameters about 3.4%).

    Construction validates (``UserError``): references positive and finite, ``w`` and ``v``
    finite and <= 0.
    """

    ref_step_time: float
    ref_params: float
    w: float = -0.07
    v: float = -0.05

    def __post_init__(self) -> None:
        where = "V2 reward"
        for name in ("ref_step_time", "ref_params"):
            value = _user_number(where, name, getattr(self, name))
            if value <= 0:
                raise UserError(f"{where}: {name} must be positive, got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        for name in ("w", "v"):
            value = _user_number(where, name, getattr(self, name))
            if value > 0:
                raise UserError(
                    f"{where}: {name} must be <= 0 (a positive exponent rewards cost), got {value!r}"
                )
            object.__setattr__(self, name, value)

    def __call__(self, acc: float, step_time: float, params: float) -> float:
        """The reward of accuracy ``acc`` (in [0, 1]) at ``step_time`` seconds and ``params``."""
        a = _accuracy(acc)
        s = _positive("training step time", step_time)
        p = _positive("parameters", params)
        return a * (s / self.ref_step_time) ** self.w * (p / self.ref_params) ** self.v

    def describe(self) -> str:
        """One line for reports and logs."""
        return (
            f"A * (S / {format_quantity(self.ref_step_time, 'step_time')})^{self.w:g}"
            f" * (P / {format_quantity(self.ref_params, 'params')})^{self.v:g}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for a study's user attributes); `from_dict` reads it back."""
        return {
            "reward": "v2", "ref_step_time": self.ref_step_time, "ref_params": self.ref_params,
            "w": self.w, "v": self.v,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> V2Reward:
        """The reward `to_dict` wrote; `UserError` on anything else."""
        _check_dict(d, "v2", ("ref_step_time", "ref_params", "w", "v"), ("ref_step_time", "ref_params"))
        return cls(d["ref_step_time"], d["ref_params"], d.get("w", -0.07), d.get("v", -0.05))


Reward = Union[MnasReward, V2Reward]


def reward_from_dict(d: Mapping[str, Any]) -> Reward:
    """Rebuild whichever reward `MnasReward.to_dict` or `V2Reward.to_dict` stored."""
    kind = d.get("reward") if isinstance(d, Mapping) else None
    if kind == "mnas":
        return MnasReward.from_dict(d)
    if kind == "v2":
        return V2Reward.from_dict(d)
    raise UserError(f"stored reward {d!r} is neither a 'mnas' nor a 'v2' reward")


# --------------------------------------------------------------------------- Pareto


class Direction(str, enum.Enum):
    """Which way an objective is better. Plain strings ``"maximize"`` / ``"minimize"`` and
    Optuna's ``StudyDirection`` are accepted wherever a `Direction` is."""

    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


DirectionLike = Union[Direction, str, Any]


def _sign(direction: DirectionLike) -> float:
    # Read Optuna's StudyDirection by name so this module need not import optuna.
    name = direction.value if isinstance(direction, Direction) else direction
    if not isinstance(name, str):
        name = getattr(direction, "name", "")
    name = name.lower()
    if name == "minimize":
        return 1.0
    if name == "maximize":
        return -1.0
    raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")


def _signs(directions: Sequence[DirectionLike], n: int) -> np.ndarray:
    if len(directions) != n:
        raise ValueError(f"{len(directions)} directions for points of {n} objectives")
    return np.array([_sign(d) for d in directions])


def _as_minimisation(points: Sequence[Sequence[float]], directions: Sequence[DirectionLike]) -> np.ndarray:
    """Points as an (n, d) array with every objective turned into one to minimise."""
    p = np.asarray(points, dtype=float)
    if p.size == 0:
        return np.zeros((0, len(directions)))
    if p.ndim != 2:
        raise ValueError("points must be a sequence of equal-length tuples")
    if np.isnan(p).any():
        raise ValueError("points must not contain NaN")
    return p * _signs(directions, p.shape[1])


def pareto_directions(costs: Sequence[str]) -> tuple[Direction, ...]:
    """The directions of a Pareto study's objectives ``(accuracy, *costs)``: maximise
    accuracy, minimise each cost. ``costs`` are distinct `COST_KINDS` names (`UserError` else)."""
    if not costs:
        raise UserError("a Pareto search needs at least one cost besides accuracy")
    for c in costs:
        cost_kind(c)
    if len(set(costs)) != len(costs):
        raise UserError(f"costs must be distinct, got {', '.join(costs)}")
    return (Direction.MAXIMIZE,) + (Direction.MINIMIZE,) * len(costs)


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[DirectionLike]) -> bool:
    """True if ``a`` is at least as good as ``b`` in every objective and better in one."""
    if len(a) != len(b):
        raise ValueError(f"points of different lengths: {len(a)} and {len(b)}")
    signs = _signs(directions, len(a))
    strictly = False
    for s, x, y in zip(signs, a, b):
        x, y = s * float(x), s * float(y)
        if x > y:
            return False
        strictly = strictly or x < y
    return strictly


def _non_dominated_mask(p: np.ndarray) -> np.ndarray:
    """Mask of the rows of minimisation array ``p`` that no other row dominates."""
    # One row at a time keeps memory at O(n * d); an (n, n, d) comparison would need
    # gigabytes for the few thousand trials of a long study.
    keep = np.ones(len(p), dtype=bool)
    for i, row in enumerate(p):
        keep[i] = not np.any(np.all(p <= row, axis=1) & np.any(p < row, axis=1))
    return keep


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[DirectionLike]) -> list[int]:
    """Indices (ascending) of the points no other point dominates.

    Equal points do not dominate one another, so duplicates on the front are all kept.
    ``points`` is a sequence of tuples, one value per objective in the order of ``directions``.
    """
    p = _as_minimisation(points, directions)
    return [int(i) for i in np.flatnonzero(_non_dominated_mask(p))]


def _hv_2d(p: np.ndarray, r: np.ndarray) -> float:
    # Sweep in x; each point adds the strip between its y and the lowest y seen so far.
    order = np.lexsort((p[:, 1], p[:, 0]))
    x, y = p[order, 0], p[order, 1]
    lowest = np.minimum.accumulate(y)
    previous = np.concatenate(([r[1]], lowest[:-1]))
    return float(np.sum((r[0] - x) * np.maximum(previous - y, 0.0)))


def _hv(p: np.ndarray, r: np.ndarray) -> float:
    """Exact hypervolume of minimisation points ``p``, all strictly better than ``r``."""
    n, d = p.shape
    if n == 0:
        return 0.0
    if d == 1:
        return float(r[0] - p[:, 0].min())
    if d == 2:
        return _hv_2d(p, r)
    # Slice along the last objective: between two consecutive levels the dominated region is
    # the (d-1)-dimensional region of the points at or below the lower level.
    order = np.argsort(p[:, -1], kind="stable")
    p = p[order]
    levels = np.concatenate((p[:, -1], r[-1:]))
    volume = 0.0
    for i in range(n):
        thickness = levels[i + 1] - levels[i]
        if thickness > 0:
            slab = p[: i + 1, :-1]
            if d > 3:
                slab = slab[_non_dominated_mask(slab)]
            volume += _hv(slab, r[:-1]) * thickness
    return volume


def hypervolume(
    points: Sequence[Sequence[float]],
    reference: Sequence[float],
    directions: Sequence[DirectionLike],
) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``reference``.

    Each objective is turned into one to minimise internally (maximised ones are negated);
    ``points`` and ``reference`` are given in the original units and directions, e.g. for
    (accuracy, MACs) with ``("maximize", "minimize")`` a reference ``(0.0, 1e9)``. Points that
    do not strictly dominate the reference in every objective contribute nothing. Computed by
    a sort and sweep in 2D and by slicing along the last objective above (the 3D case sums
    2D areas); meant for 2 and 3 objectives, exact for any number but slow beyond 4. The
    result's unit is the product of the objectives' units, so compare hypervolumes only
    under one reference point.
    """
    ref = np.asarray(reference, dtype=float)
    if ref.ndim != 1 or not np.all(np.isfinite(ref)):
        raise ValueError(f"reference must be a finite point, got {reference!r}")
    r = ref * _signs(directions, len(ref))
    p = _as_minimisation(points, directions)
    if len(p) == 0:
        return 0.0
    if p.shape[1] != len(r):
        raise ValueError(f"points have {p.shape[1]} objectives, the reference {len(r)}")
    p = p[np.all(p < r, axis=1)]
    p = p[_non_dominated_mask(p)]
    return _hv(p, r)
