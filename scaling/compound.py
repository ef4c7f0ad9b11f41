"""Compound scaling (Tan & Le 2019, section 3.3): one coefficient, phi, grows depth, width
and resolution together.

A member of the family of a baseline ``arch`` is ``arch`` grown by

* depth ``alpha ** phi`` (each stage ``ceil(layers * alpha ** phi)`` layers),
* width ``beta ** phi`` (every channel count ``make_divisible(c * beta ** phi, 8)``, never
  below 90%),
* resolution ``gamma ** phi`` (the input side ``arch.resolution * gamma ** phi`` rounded to
  the nearest multiple of ``resolution_multiple`` pixels, optionally capped),

with ``alpha, beta, gamma >= 1`` and ``alpha * beta**2 * gamma**2`` close to 2, so that the
ideal MACs grow by ``(alpha * beta**2 * gamma**2) ** phi``, about ``2 ** phi``. The channel and
layer rounding is `Arch.scale`'s (the reference rule); this module adds the resolution
rounding, the optional EfficientNetV2 changes (a resolution cap, extra layers in the later
stages), dropout that grows with phi, the real cost of each member, the phi that meets a
MACs or parameter target (`solve_phi`) and the grid of coefficients meeting the constraint
(`grid_points`).

Conventions and units
---------------------
* ``macs``: multiply-accumulates for one image at the member's resolution, ``params``: a
  count of trainable parameters, both from `space.cost.cost` at ``num_classes`` outputs
  (1000 by default, as the papers count). FLOPs in the strict sense are twice the MACs.
* Ratios (``macs_ratio``, ``ideal_macs_ratio``) are relative to the baseline (phi = 0).
* Tolerance on the coefficient constraint is absolute on the product:
  ``abs(alpha * beta**2 * gamma**2 - 2) <= tolerance``. The paper's (1.2, 1.1, 1.15) has a
  product of 1.92027, so it needs a tolerance of at least 0.08 (the default is 0.1).
* A mistake in what the user asked for raises `ScalingError` (a `space.errors.UserError`)
  with one sentence naming the command-line flag (``--alpha``, ``--phi``, ``--macs``...).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterable

from space.arch import Arch, ArchError, Stage
from space.cost import cost
from space.errors import UserError

__all__ = [
    "DEFAULT_PRODUCT_TOLERANCE",
    "DROPOUT_BY_PHI",
    "GridPoint",
    "Member",
    "ScalingError",
    "Solution",
    "check_coefficients",
    "compound",
    "compound_dropout",
    "grid_points",
    "later_stage_layers",
    "solve_phi",
]

# Absolute tolerance on alpha * beta**2 * gamma**2 around 2 (see the module docstring).
DEFAULT_PRODUCT_TOLERANCE = 0.1

# Dropout before the classifier of the reference B0..B7 (Tan & Le's official code; also
# `space.presets.B_SERIES`), indexed by phi = 0..7.
DROPOUT_BY_PHI = (0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5)

# Beyond this phi a family member is larger than anything trained (B7 is phi = 7) and the
# description's own limits (layers, channels, pixels) are close; `solve_phi` searches no
# further.
MAX_PHI = 30.0


class ScalingError(UserError):
    """Bad coefficients, phi, target or option of compound scaling; one sentence naming the
    command-line flag."""


# --------------------------------------------------------------------------- checks


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    if not _real(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_coefficients(alpha: float, beta: float, gamma: float,
                       tolerance: float | None = DEFAULT_PRODUCT_TOLERANCE) -> float:
    """``alpha * beta**2 * gamma**2`` after checking the coefficients.

    Each coefficient must be a finite real number >= 1 (a coefficient below 1 would shrink
    that dimension as the others grow). When ``tolerance`` is not None the product must lie
    within ``tolerance`` of 2 (absolute); None skips that check, for deliberate budgets
    other than a doubling per unit of phi. Raises `ScalingError` naming the flag.
    """
    for flag, value in (("--alpha", alpha), ("--beta", beta), ("--gamma", gamma)):
        if not _finite(value):
            raise ScalingError(f"{flag} must be a finite number >= 1, got {value!r}")
        if value < 1:
            raise ScalingError(
                f"{flag} must be at least 1 (a coefficient below 1 shrinks that dimension), "
                f"got {value!r}")
    product = float(alpha) * float(beta) ** 2 * float(gamma) ** 2
    if tolerance is not None:
        if not _finite(tolerance) or tolerance < 0:
            raise ScalingError(f"the product tolerance must be a finite number >= 0, got {tolerance!r}")
        # The 1e-9 absorbs float error in the product of decimal coefficients.
        if abs(product - 2.0) > tolerance + 1e-9:
            raise ScalingError(
                f"--alpha/--beta/--gamma: alpha * beta^2 * gamma^2 = {product:.4g} ({alpha:g} * "
                f"{beta:g}^2 * {gamma:g}^2) is not within {tolerance:g} of 2, so one unit of "
                f"--phi would not double the MACs; pick coefficients whose product is about 2")
    return product


def _check_phi(phi: Any) -> float:
    if not _finite(phi):
        raise ScalingError(f"--phi must be a finite number >= 0, got {phi!r}")
    if phi < 0:
        raise ScalingError(f"--phi must be >= 0 (phi = 0 is the baseline itself), got {phi!r}")
    return float(phi)


# --------------------------------------------------------------------------- rules


def compound_dropout(base_dropout: float, phi: float) -> float:
    """Dropout for a member at ``phi``, grown the way the reference B0..B7 table grows.

    The rule: the reference table `DROPOUT_BY_PHI` (0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5
    for phi = 0..7) interpolated linearly between whole phi and held at 0.5 beyond 7; the
    member adds that table's increase over phi = 0 to the base's own dropout, and never
    exceeds 0.5 (or the base's dropout when the base already has more). Phi itself is the
    interpolation variable because, with ``alpha * beta**2 * gamma**2`` about 2, phi counts
    doublings of the ideal MACs, which is what indexes the reference members; with the
    paper's coefficients it reproduces the table exactly at whole phi. Rounded to three
    decimals. A base with
    dropout 0.2 (B0) gets exactly the table; a base with none gets 0, 0, 0.1, 0.1, ... .
    """
    phi = min(max(float(phi), 0.0), float(len(DROPOUT_BY_PHI) - 1))
    low = int(math.floor(phi))
    high = min(low + 1, len(DROPOUT_BY_PHI) - 1)
    t = phi - low
    table = DROPOUT_BY_PHI[low] * (1 - t) + DROPOUT_BY_PHI[high] * t
    grown = base_dropout + (table - DROPOUT_BY_PHI[0])
    # Three decimals: 0.3 and not 0.30000000000000004 in strings and tables, and 0.346 rather
    # than 0.345982 at a solved phi; a thousandth of dropout is below any measurable effect.
    return round(min(grown, max(base_dropout, max(DROPOUT_BY_PHI))), 3)


def later_stage_layers(layers: Iterable[int], depth: float, later_stages: int) -> tuple[int, ...]:
    """Layers per stage when extra depth goes to the last ``later_stages`` stages only.

    EfficientNetV2 (Tan & Le 2021, section 4) adds layers "gradually to later stages" without
    publishing a formula; this is the rule used here. The number of extra layers is what the
    reference rule would add in total, ``sum(ceil(l * depth)) - sum(l)``, so the total depth
    of the member is unchanged; the stages before the last ``later_stages`` keep their base
    layer counts, and the extra layers are shared among the last ``later_stages`` stages in
    proportion to their base layer counts (largest remainder; ties go to the later stage).
    """
    base = [int(n) for n in layers]
    if not 1 <= later_stages <= len(base):
        raise ScalingError(
            f"--later-stage-depth must be a whole number of stages from 1 to {len(base)}, "
            f"got {later_stages!r}")
    extra = sum(Stage.adjust_depth(n, depth) for n in base) - sum(base)
    tail = base[len(base) - later_stages:]
    weight = sum(tail)
    shares = [Fraction(extra * n, weight) for n in tail]
    whole = [int(math.floor(s)) for s in shares]
    left = extra - sum(whole)
    # Largest remainder first; among equal remainders the later stage (larger index) first.
    order = sorted(range(len(tail)), key=lambda i: (shares[i] - whole[i], i), reverse=True)
    for i in order[:left]:
        whole[i] += 1
    return tuple(base[: len(base) - later_stages]) + tuple(n + w for n, w in zip(tail, whole))


def _round_resolution(side: float, multiple: int) -> int:
    # Half up, not Python's round-half-even: 252 * 1 at multiple 8 -> 256 either way, but the
    # rule should not depend on the parity of the quotient.
    return max(multiple, int(math.floor(side / multiple + 0.5)) * multiple)


# --------------------------------------------------------------------------- members


@dataclass(frozen=True)
class Member:
    """One member of a compound-scaled family.

    Attributes:
        phi: the compound coefficient (0 is the base itself).
        alpha, beta, gamma: the coefficients it was grown with.
        depth, width: the multipliers ``alpha ** phi`` and ``beta ** phi`` (before rounding).
        resolution_multiplier: ``gamma ** phi``, the ideal resolution growth; the member's
            real input side is ``arch.resolution`` (rounded, perhaps capped).
        arch: the grown description.
        macs, params: its cost (see the module docstring), at ``num_classes`` outputs.
        base_macs, base_params: the base's cost at the same number of outputs.
        ideal_macs_ratio: ``(alpha * beta**2 * gamma**2) ** phi``.
    """

    phi: float
    alpha: float
    beta: float
    gamma: float
    depth: float
    width: float
    resolution_multiplier: float
    arch: Arch
    macs: int
    params: int
    base_macs: int
    base_params: int
    ideal_macs_ratio: float

    @property
    def resolution(self) -> int:
        """The member's input side in pixels."""
        return self.arch.resolution

    @property
    def macs_ratio(self) -> float:
        """Real MACs over the base's MACs."""
        return self.macs / self.base_macs

    @property
    def params_ratio(self) -> float:
        """Real parameter count over the base's."""
        return self.params / self.base_params

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the fields above, the ratios, the stages' channels and layers
        and ``arch`` as the description's string form."""
        return {
            "phi": self.phi, "alpha": self.alpha, "beta": self.beta, "gamma": self.gamma,
            "depth": self.depth, "width": self.width,
            "resolution_multiplier": self.resolution_multiplier,
            "resolution": self.resolution, "dropout": self.arch.dropout,
            "stages": [{"channels": s.channels, "layers": s.layers} for s in self.arch.stages],
            "params": self.params, "macs": self.macs,
            "macs_ratio": self.macs_ratio, "ideal_macs_ratio": self.ideal_macs_ratio,
            "params_ratio": self.params_ratio,
            "arch": self.arch.to_string(),
        }


def compound(arch: Arch, phi: float, alpha: float, beta: float, gamma: float, *,
             resolution_multiple: int = 8, max_resolution: int | None = None,
             later_stage_depth: int | None = None, dropout: float | None = None,
             tolerance: float | None = DEFAULT_PRODUCT_TOLERANCE,
             num_classes: int = 1000) -> Member:
    """``arch`` grown by compound scaling at ``phi`` (see the module docstring).

    Args:
        arch: the baseline (phi = 0).
        phi: the compound coefficient, any finite real >= 0 (fractions included).
        alpha, beta, gamma: depth, width and resolution coefficients, each >= 1, checked by
            `check_coefficients` with ``tolerance``.
        resolution_multiple: the input side is rounded (half up) to a multiple of this many
            pixels, and is at least this.
        max_resolution: when given, the input side never exceeds it (EfficientNetV2 caps
            inference at 480); it must be at least the base's resolution.
        later_stage_depth: when given, the number of final stages that take all the extra
            layers (EfficientNetV2's second change; the exact rule is `later_stage_layers`).
            None keeps the reference rule, ``ceil(layers * alpha ** phi)`` in every stage.
        dropout: the member's dropout; by default `compound_dropout` of the base's dropout.
        tolerance: absolute tolerance of the product around 2; None skips that check.
        num_classes: classifier outputs for the cost.

    Phi = 0 returns the base unchanged (the same `Arch`, equal and with equal cost), with
    only ``dropout`` replaced when given: the channel and resolution rounding are not applied
    to a base that was never grown. Drop-path, kernels, strides, expansion, SE and the
    activation are kept. Raises `ScalingError` (a `UserError`) naming the flag on bad input.
    """
    if not isinstance(arch, Arch):
        raise TypeError(f"compound needs an Arch, got {type(arch).__name__}")
    product = check_coefficients(alpha, beta, gamma, tolerance)
    phi = _check_phi(phi)
    if not isinstance(resolution_multiple, int) or isinstance(resolution_multiple, bool) \
            or resolution_multiple < 1:
        raise ScalingError(
            f"--resolution-multiple must be a positive whole number of pixels, got {resolution_multiple!r}")
    if max_resolution is not None:
        if not isinstance(max_resolution, int) or isinstance(max_resolution, bool) \
                or max_resolution < arch.resolution:
            raise ScalingError(
                f"--max-resolution must be a whole number of pixels >= the base's resolution "
                f"({arch.resolution}), got {max_resolution!r}")
    if dropout is not None and not (_finite(dropout) and 0 <= dropout < 1):
        raise ScalingError(f"--dropout must be in [0, 1), got {dropout!r}")

    depth, width, res_mult = float(alpha) ** phi, float(beta) ** phi, float(gamma) ** phi
    if phi == 0:
        grown = arch if dropout is None else arch.replace(dropout=float(dropout))
    else:
        side = _round_resolution(arch.resolution * res_mult, resolution_multiple)
        if max_resolution is not None:
            side = min(side, max_resolution)
        rate = compound_dropout(arch.dropout, phi) if dropout is None else float(dropout)
        try:
            grown = arch.scale(depth=depth, width=width, resolution=side, dropout=rate)
            if later_stage_depth is not None:
                if not isinstance(later_stage_depth, int) or isinstance(later_stage_depth, bool):
                    raise ScalingError(
                        f"--later-stage-depth must be a whole number of stages, got {later_stage_depth!r}")
                layers = later_stage_layers((s.layers for s in arch.stages), depth, later_stage_depth)
                grown = grown.replace(stages=tuple(
                    dataclasses.replace(s, layers=n) for s, n in zip(grown.stages, layers)))
        except ArchError as err:
            # A runaway phi: the description's limits (layers, channels, pixels) refuse it.
            raise ScalingError(f"--phi {phi:g} grows the network past what a description "
                               f"allows ({err.reason})") from None
    before, after = cost(arch, num_classes=num_classes), cost(grown, num_classes=num_classes)
    return Member(phi=phi, alpha=float(alpha), beta=float(beta), gamma=float(gamma),
                  depth=depth, width=width, resolution_multiplier=res_mult, arch=grown,
                  macs=after.macs, params=after.params, base_macs=before.macs,
                  base_params=before.params, ideal_macs_ratio=product ** phi)


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Solution:
    """What `solve_phi` found.

    Attributes:
        member: the member whose cost is nearest the target.
        kind: ``"macs"`` or ``"params"``.
        target: the target in that kind's unit (a count).
        gap: relative difference ``member cost / target - 1`` (negative: below the target).
        tolerance: the relative tolerance asked for.
    """

    member: Member
    kind: str
    target: float
    gap: float
    tolerance: float

    @property
    def hit(self) -> bool:
        """True when the member's cost is within ``tolerance`` of the target."""
        return abs(self.gap) <= self.tolerance

    @property
    def phi(self) -> float:
        return self.member.phi

    @property
    def value(self) -> int:
        """The member's cost of ``kind``."""
        return getattr(self.member, self.kind)

    def to_dict(self) -> dict[str, Any]:
        return {**self.member.to_dict(), "target_kind": self.kind, "target": self.target,
                "gap": self.gap, "hit": self.hit, "tolerance": self.tolerance}


def solve_phi(arch: Arch, alpha: float, beta: float, gamma: float, *,
              macs: float | None = None, params: float | None = None,
              tolerance: float = 0.02, scan_width: float = 0.1, scan_points: int = 201,
              max_phi: float = MAX_PHI, **options: Any) -> Solution:
    """The compound member of ``arch`` whose real MACs (or params) are nearest a target.

    Give exactly one of ``macs`` and ``params`` (a count). ``tolerance`` is relative on the
    cost. ``options`` go to `compound` (``resolution_multiple``, ``max_resolution``,
    ``later_stage_depth``, ``dropout``, ``num_classes``), except ``product_tolerance``,
    which is `compound`'s ``tolerance`` on the coefficient product.

    Method: the real cost is a step function of phi (layers, channels and pixels are
    rounded), non-decreasing in practice but not strictly. (1) Double phi from 1 until the
    cost reaches the target (or ``max_phi`` / the description's limits stop it); (2) bisect
    60 times for the smallest phi whose cost reaches the target, which brackets the step
    where the cost crosses it; (3) because the rounding of several dimensions can make the
    steps uneven (and, in principle, not monotone), scan ``scan_points`` evenly spaced phi
    across ``scan_width`` either side of the crossing, plus both bracket ends, and keep the
    member with the smallest ``abs(cost / target - 1)`` (ties: the smaller phi). The
    returned phi is shortened to 3 decimals (then 6) when that gives the same member.

    Returns a `Solution` whose ``hit`` says whether the member is within ``tolerance``
    (relative) of the target; when no member is, it is the nearest one and ``gap`` says how
    far. A target that even the base exceeds by more than ``tolerance`` raises
    `ScalingError` naming ``--macs`` / ``--params``.
    """
    if (macs is None) == (params is None):
        raise ScalingError("give exactly one target, --macs or --params")
    kind, target = ("macs", macs) if macs is not None else ("params", params)
    flag = f"--{kind}"
    if not _finite(target) or target <= 0:
        raise ScalingError(f"{flag} must be a finite positive count, got {target!r}")
    if not _finite(tolerance) or not 0 <= tolerance < 1:
        raise ScalingError(f"--tolerance must be a fraction in [0, 1), got {tolerance!r}")
    target = float(target)
    product_tolerance = options.pop("product_tolerance", DEFAULT_PRODUCT_TOLERANCE)

    def member(phi: float) -> Member | None:
        try:
            return compound(arch, phi, alpha, beta, gamma, tolerance=product_tolerance, **options)
        except ScalingError:
            if phi == 0:
                raise
            return None  # past the description's limits: treated as "too large"

    def value(m: Member | None) -> float:
        return math.inf if m is None else float(getattr(m, kind))

    base = member(0.0)
    assert base is not None
    if target < value(base) * (1 - tolerance):
        raise ScalingError(
            f"{flag} {target:,.0f} is below the base's own {kind} ({value(base):,.0f}); compound "
            f"scaling only grows a network, so give a target of at least that")

    # (1) bracket: lo's cost is below the target, hi's reaches it (or hi is the limit).
    lo, hi = 0.0, 1.0
    while value(member(hi)) < target and hi < max_phi:
        lo, hi = hi, min(hi * 2, max_phi)
    # (2) bisect for the crossing.
    if value(member(hi)) >= target and value(base) < target:
        for _ in range(60):
            mid = (lo + hi) / 2
            if mid in (lo, hi):
                break
            if value(member(mid)) >= target:
                hi = mid
            else:
                lo = mid
    # (3) scan around the crossing.
    crossing = hi if value(base) < target else 0.0
    candidates = {lo, hi, crossing}
    for i in range(scan_points):
        phi = crossing - scan_width + 2 * scan_width * i / max(1, scan_points - 1)
        if 0 <= phi <= max_phi:
            candidates.add(phi)
    best: Member | None = None
    best_gap = math.inf
    for phi in sorted(candidates):
        m = member(phi)
        if m is None:
            continue
        gap = abs(value(m) / target - 1)
        if gap < best_gap:
            best, best_gap = m, gap
    assert best is not None
    best = _shorter_phi(best, member)
    return Solution(member=best, kind=kind, target=target, gap=value(best) / target - 1,
                    tolerance=float(tolerance))


def _shorter_phi(found: Member, member: Any) -> Member:
    """The same member at a phi with fewer decimals, when one gives the same network:
    a phi of 2.347 reads better than 2.3470458984375. "The same" ignores dropout, which
    follows phi continuously (`compound_dropout`) and costs nothing; the member returned is
    computed at the shorter phi, so its dropout matches its phi."""
    for digits in (3, 6):
        for phi in sorted({round(found.phi, digits), math.floor(found.phi * 10**digits) / 10**digits,
                           math.ceil(found.phi * 10**digits) / 10**digits}):
            if phi < 0:
                continue
            other = member(phi)
            if other is not None and other.arch.replace(dropout=found.arch.dropout) == found.arch:
                return other
    return found


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class GridPoint:
    """One (alpha, beta, gamma) meeting the constraint, with ``product`` =
    ``alpha * beta**2 * gamma**2`` and ``macs_ratio``, the real MACs of the base grown at
    phi = 1 over the base's (None when no base was given)."""

    alpha: float
    beta: float
    gamma: float
    product: float
    macs_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def grid_points(arch: Arch | None = None, *, step: float = 0.05,
                tolerance: float = DEFAULT_PRODUCT_TOLERANCE, max_coefficient: float = 2.0,
                **options: Any) -> list[GridPoint]:
    """Every (alpha, beta, gamma) on the grid ``1, 1 + step, 1 + 2 * step, ...,
    <= max_coefficient`` (each coordinate separately) with
    ``abs(alpha * beta**2 * gamma**2 - 2) <= tolerance`` (absolute on the product; the
    defaults include the paper's (1.2, 1.1, 1.15), product 1.92).

    Grid values are ``round(1 + i * step, 10)``, so 1.15 is 1.15 and not 1.1500000000000001;
    the comparison allows 1e-9 of float error, so points exactly on the boundary are in.
    With ``arch``, each point carries the real MACs ratio of ``compound(arch, 1, ...)``
    (``options`` go to `compound`). Ordered by alpha, then beta, then gamma.
    """
    if not _finite(step) or step <= 0:
        raise ScalingError(f"--step must be a finite number > 0, got {step!r}")
    if not _finite(tolerance) or tolerance < 0:
        raise ScalingError(f"--tolerance must be a finite number >= 0, got {tolerance!r}")
    if not _finite(max_coefficient) or max_coefficient < 1:
        raise ScalingError(f"--max-coefficient must be a finite number >= 1, got {max_coefficient!r}")
    count = int(math.floor((max_coefficient - 1) / step + 1e-9)) + 1
    if count > 2000:
        raise ScalingError(f"--step {step:g} gives {count} values per coefficient; use a coarser step")
    values = [round(1 + i * step, 10) for i in range(count)]
    points = []
    for a in values:
        for b in values:
            if a * b * b > 2 + tolerance + 1e-9:
                break  # the product only grows with b and g from here
            for g in values:
                product = a * b * b * g * g
                if product > 2 + tolerance + 1e-9:
                    break
                if abs(product - 2) <= tolerance + 1e-9:
                    points.append((a, b, g, product))
    out = []
    for a, b, g, product in points:
        ratio = None
        if arch is not None:
            ratio = compound(arch, 1.0, a, b, g, tolerance=None, **options).macs_ratio
        out.append(GridPoint(alpha=a, beta=b, gamma=g, product=product, macs_ratio=ratio))
    return out
