"""PyTorch modules for the layers of a plan: conv-BN-act, squeeze-excite, max-pool,
stochastic depth, and the block wrapper with its shortcut."""

from __future__ import annotations

import torch
from torch import nn

from .plan import Conv, Layer, MaxPool, SqueezeExcite

__all__ = ["ConvBNAct", "SqueezeExciteModule", "StochasticDepth", "Block", "activation_layer", "layer_module"]


def activation_layer(name: str) -> nn.Module:
    """A fresh activation module by name (see `space.arch.ACTIVATIONS`)."""
    factories = {
        "silu": lambda: nn.SiLU(inplace=True),
        "relu": lambda: nn.ReLU(inplace=True),
        "relu6": lambda: nn.ReLU6(inplace=True),
        "hardswish": lambda: nn.Hardswish(inplace=True),
        "gelu": nn.GELU,
    }
    return factories[name]()


class ConvBNAct(nn.Sequential):
    """Bias-free conv, batch norm and (optionally) the activation."""

    def __init__(self, spec: Conv, activation: str, bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        layers: list[nn.Module] = [
            nn.Conv2d(
                spec.in_channels,
                spec.out_channels,
                spec.kernel,
                stride=spec.stride,
                padding=spec.kernel // 2,
                groups=spec.groups,
                bias=False,
            ),
            nn.BatchNorm2d(spec.out_channels, eps=bn_eps, momentum=bn_momentum),
        ]
        if spec.act:
            layers.append(activation_layer(activation))
        super().__init__(*layers)


class SqueezeExciteModule(nn.Module):
    """Channel gate: ``x * sigmoid(fc2(act(fc1(mean_hw(x)))))``."""

    def __init__(self, spec: SqueezeExcite, activation: str):
        super().__init__()
        self.fc1 = nn.Conv2d(spec.channels, spec.squeeze, 1)
        self.act = activation_layer(activation)
        self.fc2 = nn.Conv2d(spec.squeeze, spec.channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.fc2(self.act(self.fc1(scale)))
        return x * torch.sigmoid(scale)


class StochasticDepth(nn.Module):
    """Drop the whole residual branch per sample with probability ``p`` while training,
    scaling the kept branches by ``1 / (1 - p)`` (Huang et al., 2016)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def layer_module(layer: Layer, activation: str, **bn: float) -> nn.Module:
    if isinstance(layer, Conv):
        return ConvBNAct(layer, activation, **bn)
    if isinstance(layer, SqueezeExcite):
        return SqueezeExciteModule(layer, activation)
    if isinstance(layer, MaxPool):
        return nn.MaxPool2d(layer.kernel, layer.stride, padding=layer.kernel // 2)
    raise TypeError(f"no module for plan layer {layer!r}")


class Block(nn.Module):
    """The layers of one block, with its shortcut and stochastic depth on the branch.

    ``residual``: add the input (identity shortcut). ``shortcut``: a projection module
    whose output is added instead (ResNet's 1x1 conv + BN when the shape changes).
    ``post_act``: an activation applied to the sum (ResNet); None for MBConv-style blocks,
    whose branch ends linear. Stochastic depth drops the branch whenever a shortcut exists.
    Blocks without a projection or post-activation register no extra modules, so their
    parameter names are those of the plain residual block.
    """

    def __init__(self, layers: nn.Sequential, residual: bool, drop_path: float,
                 shortcut: nn.Module | None = None, post_act: nn.Module | None = None):
        super().__init__()
        self.layers = layers
        self.residual = residual
        self.shortcut = shortcut
        has_shortcut = residual or shortcut is not None
        self.drop_path = StochasticDepth(drop_path) if has_shortcut else nn.Identity()
        self.post_act = post_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        if self.shortcut is not None:
            out = self.shortcut(x) + self.drop_path(out)
        elif self.residual:
            out = x + self.drop_path(out)
        if self.post_act is not None:
            out = self.post_act(out)
        return out
