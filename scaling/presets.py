"""EfficientNet B1..B7: B0 compound-scaled by the reference multipliers.

Registered into `space`'s preset registry through the ``effnas.presets`` entry point.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from space.arch import Arch
from space.presets import efficientnet_b0, register_preset

from .scale import scale

__all__ = ["B_SERIES", "BSeriesScale", "efficientnet_b", "register"]


@dataclass(frozen=True)
class BSeriesScale:
    """Reference multipliers of one B-series member (Tan & Le 2019; the official code)."""

    width: float
    depth: float
    resolution: int
    dropout: float


B_SERIES: dict[str, BSeriesScale] = {
    "b0": BSeriesScale(1.0, 1.0, 224, 0.2),
    "b1": BSeriesScale(1.0, 1.1, 240, 0.2),
    "b2": BSeriesScale(1.1, 1.2, 260, 0.3),
    "b3": BSeriesScale(1.2, 1.4, 300, 0.3),
    "b4": BSeriesScale(1.4, 1.8, 380, 0.4),
    "b5": BSeriesScale(1.6, 2.2, 456, 0.4),
    "b6": BSeriesScale(1.8, 2.6, 528, 0.5),
    "b7": BSeriesScale(2.0, 3.1, 600, 0.5),
}


def efficientnet_b(member: str) -> Arch:
    """``efficientnet_b(\"b3\")``: B0 scaled by B3's multipliers."""
    m = B_SERIES[member]
    return scale(efficientnet_b0(), depth=m.depth, width=m.width, resolution=m.resolution,
                 dropout=m.dropout)


def register() -> None:
    for member, m in B_SERIES.items():
        if member == "b0":
            continue
        register_preset(
            f"efficientnet_{member}", partial(efficientnet_b, member),
            f"EfficientNet-{member.upper()}: B0 x width {m.width}, depth {m.depth}, at {m.resolution}px",
            width=m.width, depth=m.depth, resolution=m.resolution, dropout=m.dropout,
            source="Tan & Le 2019; reference multipliers",
        )
