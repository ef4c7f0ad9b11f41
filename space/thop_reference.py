"""What thop attributes to Conv2d and Linear modules: the independent reference that the
analytic cost model (`space.cost`) must equal, used by the tests and benchmarks/cost_model.py.

Imports torch and thop, so `space` never imports this module itself."""

from __future__ import annotations

import thop
import torch
from torch import nn

__all__ = ["thop_conv_linear_macs"]


def thop_conv_linear_macs(model: nn.Module, resolution: int, device: str = "meta") -> int:
    """Sum of thop's per-module counts over the model's Conv2d and Linear modules.

    On the ``meta`` device the forward pass only propagates shapes, which is all thop's
    convolution and linear rules read, so big models profile in milliseconds.
    """
    x = torch.empty(1, 3, resolution, resolution, device=device)
    _, _, tree = thop.profile(model, inputs=(x,), verbose=False, ret_layer_info=True)
    modules = dict(model.named_modules())

    def walk(prefix: str, children: dict) -> float:
        total = 0.0
        for name, (ops, _params, grandchildren) in children.items():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(modules[full], (nn.Conv2d, nn.Linear)):
                total += ops
            total += walk(full, grandchildren)
        return total

    return int(walk("", tree))
