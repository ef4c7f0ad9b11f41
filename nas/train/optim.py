"""Optimiser, learning-rate schedule and weight averaging: `RMSpropTF` (the paper's
RMSProp with TensorFlow semantics), `Schedule` (warm-up times cosine or the paper's
staircase) and `EMA` (exponential moving average of the weights)."""

from __future__ import annotations

import copy
import math
from typing import Callable, Iterable

import torch
from torch import nn

from space.errors import UserError

__all__ = ["RMSpropTF", "Schedule", "EMA", "RMSPROP_DECAY", "RMSPROP_MOMENTUM", "RMSPROP_EPS",
           "SGD_MOMENTUM", "EXP_DECAY_RATE", "EXP_DECAY_EPOCHS"]

# RMSProp as in the EfficientNet paper (TensorFlow semantics): decay 0.9, momentum 0.9,
# epsilon 1e-3 under the square root.
RMSPROP_DECAY = 0.9
RMSPROP_MOMENTUM = 0.9
RMSPROP_EPS = 1e-3
SGD_MOMENTUM = 0.9
# The paper's exponential schedule: multiply the learning rate by 0.97 every 2.4 epochs.
EXP_DECAY_RATE = 0.97
EXP_DECAY_EPOCHS = 2.4


class RMSpropTF(torch.optim.Optimizer):
    """RMSProp with TensorFlow's semantics, as used to train EfficientNet.

    Per parameter ``p`` with gradient ``g`` (plus ``weight_decay * p``)::

        ms  = alpha * ms + (1 - alpha) * g**2          # ms starts at 1, not 0
        mom = momentum * mom + lr * g / sqrt(ms + eps)  # eps inside the square root
        p  -= mom

    Starting the mean square at one and putting epsilon (1e-3) under the root keep the
    first steps small; with PyTorch's `torch.optim.RMSprop` (zero start, epsilon outside)
    the paper's learning rate of 0.016 takes steps of about ``3 * lr`` per weight at once.
    """

    def __init__(self, params: Iterable, lr: float, alpha: float = RMSPROP_DECAY,
                 eps: float = RMSPROP_EPS, momentum: float = RMSPROP_MOMENTUM,
                 weight_decay: float = 0.0):
        if lr <= 0 or not 0 <= alpha < 1 or eps <= 0 or momentum < 0 or weight_decay < 0:
            raise UserError("RMSpropTF: need lr > 0, 0 <= alpha < 1, eps > 0, momentum >= 0, weight_decay >= 0")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                                      weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, squares, moms = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("RMSpropTF does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p, memory_format=torch.preserve_format)
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                squares.append(state["square_avg"])
                moms.append(state["momentum_buffer"])
            if not params:
                continue
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            torch._foreach_mul_(squares, group["alpha"])
            torch._foreach_addcmul_(squares, grads, grads, value=1 - group["alpha"])
            denom = torch._foreach_add(squares, group["eps"])
            torch._foreach_sqrt_(denom)
            if group["momentum"] > 0:
                torch._foreach_mul_(moms, group["momentum"])
                torch._foreach_addcdiv_(moms, grads, denom, value=group["lr"])
                torch._foreach_sub_(params, moms)
            else:
                torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])
        return loss


class Schedule:
    """Learning rate for a step, given the fraction of the budget used before it."""

    def __init__(self, kind: str, base_lr: float, warmup_steps: int, steps_per_epoch: int):
        self.kind = kind
        self.base_lr = base_lr
        self.warmup_steps = warmup_steps
        self.steps_per_epoch = steps_per_epoch

    def __call__(self, step: int, progress: float) -> float:
        """``step``: 0-based index of the step about to be taken; ``progress`` in [0, 1]."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        if self.kind == "cosine":
            main = 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
        elif self.kind == "linear":
            main = 1.0 - min(1.0, max(0.0, progress))
        else:
            main = EXP_DECAY_RATE ** math.floor(step / (EXP_DECAY_EPOCHS * self.steps_per_epoch))
        return self.base_lr * warm * main


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers."""

    def __init__(self, net: nn.Module, decay: float):
        self.module = copy.deepcopy(net).eval()
        self.module.requires_grad_(False)
        self.decay = decay
        self.updates = 0
        self._bind(net)

    def _bind(self, net: nn.Module) -> None:
        # Detached views share storage with the live tensors, which the optimiser, batch
        # norm and `load_state_dict` all update in place, so they are made once.
        mine = self.module.state_dict(keep_vars=True)
        theirs = net.state_dict(keep_vars=True)
        floating = [k for k in mine if mine[k].is_floating_point()]
        others = [k for k in mine if not mine[k].is_floating_point()]
        self._avg = [mine[k].detach() for k in floating]
        self._src = [theirs[k].detach() for k in floating]
        self._copies = [(mine[k].detach(), theirs[k].detach()) for k in others]

    def decay_now(self) -> float:
        n = self.updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.decay_now()
        self.updates += 1
        if self._avg:
            torch._foreach_lerp_(self._avg, self._src, weight)
        for a, b in self._copies:
            a.copy_(b)


