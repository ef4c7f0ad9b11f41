"""Layer plans: what layers each block kind is made of, as pure descriptions.

A plan is the one place where a block kind's structure is written down. The model
builder (`space.builder`) turns each layer of a plan into a module and the cost model
(`space.cost`) counts the same layers, so the two cannot disagree. Adding a block kind
means adding its name to `space.arch.BLOCK_KINDS` and a plan function to `PLANS`.

A block is its main branch (`block_plan`), an optional shortcut (`BlockSpec.residual`:
identity; `shortcut_plan`: a projection conv) added to the branch's output, and for
kinds in `ACTIVATE_AFTER_ADD` the activation applied to that sum (ResNet), which is why
such a branch ends in a conv without activation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

from .arch import Arch, BlockSpec

__all__ = ["Conv", "SqueezeExcite", "MaxPool", "Layer", "PLANS", "ACTIVATE_AFTER_ADD",
           "block_plan", "shortcut_plan", "stem_plan", "stem_layers", "head_plan"]


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


@dataclass(frozen=True)
class MaxPool:
    """Max-pool over ``kernel`` x ``kernel`` windows with padding ``kernel // 2``: the output
    side is ``ceil(input_side / stride)`` for odd kernels with ``stride <= kernel``. No
    MACs, no parameters, channels unchanged."""

    kernel: int = 3
    stride: int = 2


Layer = Union[Conv, SqueezeExcite, MaxPool]


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


def _dwsep(b: BlockSpec) -> tuple[Layer, ...]:
    # MobileNetV1: depthwise kxk -> BN -> act, [SE], pointwise 1x1 -> BN -> act (the
    # pointwise conv keeps its activation, unlike MBConv's linear projection).
    layers: list[Layer] = [Conv(b.in_channels, b.in_channels, b.kernel, b.stride, groups=b.in_channels)]
    if b.se_channels:
        layers.append(SqueezeExcite(b.in_channels, b.se_channels))
    layers.append(Conv(b.in_channels, b.out_channels, 1))
    return tuple(layers)


def _bottleneck(b: BlockSpec) -> tuple[Layer, ...]:
    # ResNet v1.5 (torchvision): the stride sits on the kxk conv, not the first 1x1. The
    # last conv has no activation of its own: it comes after the shortcut is added.
    inner = b.expanded_channels
    return (
        Conv(b.in_channels, inner, 1),
        Conv(inner, inner, b.kernel, b.stride),
        Conv(inner, b.out_channels, 1, act=False),
    )


PLANS: dict[str, Callable[[BlockSpec], tuple[Layer, ...]]] = {
    "mbconv": _mbconv,
    "fused_mbconv": _fused_mbconv,
    "dwsep": _dwsep,
    "bottleneck": _bottleneck,
}

#: Block kinds whose activation follows the sum of branch and shortcut (ResNet).
ACTIVATE_AFTER_ADD = frozenset({"bottleneck"})


def block_plan(block: BlockSpec) -> tuple[Layer, ...]:
    """The layers of one block's main branch, in order (shortcuts are not listed here;
    see `shortcut_plan`)."""
    return PLANS[block.block](block)


def shortcut_plan(block: BlockSpec) -> Conv | None:
    """The projection shortcut of a block (1x1 conv with the block's stride, then BN, no
    activation), or None for an identity shortcut or none."""
    if not block.projection:
        return None
    return Conv(block.in_channels, block.out_channels, 1, block.stride, act=False)


def stem_plan(arch: Arch, in_channels: int = 3) -> Conv:
    """The stem convolution (``arch.stem_kernel``, ``arch.stem_stride``), BN and activation."""
    return Conv(in_channels, arch.stem_channels, arch.stem_kernel, arch.stem_stride)


def stem_layers(arch: Arch, in_channels: int = 3) -> tuple[Layer, ...]:
    """The stem conv, then the 3x3 stride-2 max-pool when ``arch.stem_pool``."""
    conv = stem_plan(arch, in_channels)
    return (conv, MaxPool(3, 2)) if arch.stem_pool else (conv,)


def head_plan(arch: Arch) -> Conv | None:
    """The 1x1 head conv to ``arch.head_channels``, or None when the arch has none."""
    if arch.head_channels is None:
        return None
    return Conv(arch.stages[-1].channels, arch.head_channels, 1)
