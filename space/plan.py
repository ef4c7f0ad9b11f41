"""Layer plans: what layers each block kind is made of, as pure descriptions.

A plan is the one place where a block kind's structure is written down. The model
builder (`space.builder`) turns each layer of a plan into a module and the cost model
(`space.cost`) counts the same layers, so the two cannot disagree. Adding a block kind
means adding its name to `space.arch.BLOCK_KINDS` and a plan function to `PLANS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

from .arch import Arch, BlockSpec

__all__ = ["Conv", "SqueezeExcite", "Layer", "PLANS", "block_plan", "stem_plan", "head_plan"]


@dataclass(frozen=True)
class Conv:
    """A bias-free ``kernel`` x ``kernel`` convolution, batch norm, then the activation if ``act``.

    Padding is ``kernel // 2``, so the output side is ``ceil(input_side / stride)``.
    """

    in_channels: int
    out_channels: int
    kernel: int
    stride: int = 1
    groups: int = 1
    act: bool = True


@dataclass(frozen=True)
class SqueezeExcite:
    """Global average pool, 1x1 conv (with bias) to ``squeeze``, activation, 1x1 conv back
    to ``channels`` (with bias), sigmoid gate multiplied onto the input."""

    channels: int
    squeeze: int


Layer = Union[Conv, SqueezeExcite]


def _mbconv(b: BlockSpec) -> tuple[Layer, ...]:
    layers: list[Layer] = []
    if b.expanded_channels != b.in_channels:
        layers.append(Conv(b.in_channels, b.expanded_channels, 1))
    layers.append(
        Conv(b.expanded_channels, b.expanded_channels, b.kernel, b.stride, groups=b.expanded_channels)
    )
    if b.se_channels:
        layers.append(SqueezeExcite(b.expanded_channels, b.se_channels))
    layers.append(Conv(b.expanded_channels, b.out_channels, 1, act=False))
    return tuple(layers)


def _fused_mbconv(b: BlockSpec) -> tuple[Layer, ...]:
    if b.expanded_channels == b.in_channels:
        # No expansion: a single kxk convolution straight to the output, with activation.
        layers: list[Layer] = [Conv(b.in_channels, b.out_channels, b.kernel, b.stride)]
        if b.se_channels:
            layers.append(SqueezeExcite(b.out_channels, b.se_channels))
        return tuple(layers)
    layers = [Conv(b.in_channels, b.expanded_channels, b.kernel, b.stride)]
    if b.se_channels:
        layers.append(SqueezeExcite(b.expanded_channels, b.se_channels))
    layers.append(Conv(b.expanded_channels, b.out_channels, 1, act=False))
    return tuple(layers)


PLANS: dict[str, Callable[[BlockSpec], tuple[Layer, ...]]] = {
    "mbconv": _mbconv,
    "fused_mbconv": _fused_mbconv,
}


def block_plan(block: BlockSpec) -> tuple[Layer, ...]:
    """The layers of one block, in order (the residual connection is not a layer)."""
    return PLANS[block.block](block)


def stem_plan(arch: Arch, in_channels: int = 3) -> Conv:
    return Conv(in_channels, arch.stem_channels, 3, arch.stem_stride)


def head_plan(arch: Arch) -> Conv:
    return Conv(arch.stages[-1].channels, arch.head_channels, 1)
