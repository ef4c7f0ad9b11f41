"""The candidate trainer: train an architecture briefly and read its validation accuracy.

Both the search (`nas`) and the scaling judge (`scaling`) rank architectures by the
result of `train`. It is built to be fast (device-resident data, mixed precision,
channels-last and cuDNN autotuning on CUDA, optional ``torch.compile``), honest (the
reported accuracy is the last epoch's on held-out data, EMA weights are evaluated when
EMA is on and `Result` says so) and robust (divergence and out-of-memory become typed
exceptions a search can count as failed candidates; checkpoints are atomic and resume
exactly).

Conventions
-----------
* Accuracies are fractions in [0, 1]; losses are mean cross entropy in nats per image.
  The training loss is label-smoothed (``TrainConfig.label_smoothing``), the validation
  and test losses are not.
* ``batch_size`` is the *global* batch: under DistributedDataParallel each of ``W``
  processes takes ``batch_size / W`` images per step, so the optimisation (and the
  default learning rate, which scales with ``batch_size``) does not depend on ``W``.
* Epochs are counted from 1. An epoch is one pass over the (sharded) training loader,
  which drops the last partial batch (``N // batch_size`` steps); a budget that ends
  mid-epoch ends with a shorter final epoch, which is evaluated and reported like the
  others.
* Seconds are wall-clock seconds. ``Budget.seconds`` and ``EpochStats.seconds`` count
  training steps only (not evaluation or checkpoint writing); ``Result.seconds`` is the
  whole time spent in `train`, over all resumed calls.
* Images are training images consumed (``steps * batch_size`` up to a short last batch),
  summed over all processes.

Determinism
-----------
For a given ``seed`` a CPU run is bit-reproducible: the model is initialised after
``torch.manual_seed(seed)``, the loader's shuffling and augmentation are drawn from
generators seeded by ``(seed, epoch)``, and the global generator (dropout, stochastic
depth) is re-seeded at the start of every epoch from ``(seed, epoch, rank)``. Because
every random stream is a function of the epoch, a run resumed from a checkpoint follows
the uninterrupted run exactly, and the checkpoint needs no generator states. A
``seconds`` budget makes the run depend on timing (the learning-rate schedule follows
the fraction of the budget used, and the stopping step depends on speed). CUDA kernels
are not forced to be deterministic (``cudnn_benchmark`` chooses algorithms by speed).
`train` seeds the global torch generators; reseed afterwards if the caller relies on them.

Distributed training
--------------------
Launched with ``torchrun --nproc_per_node G script.py`` (or on several machines),
`train` joins the process group (see `nas.distributed`), wraps the model in
DistributedDataParallel, gives each rank a disjoint, equal shard of every epoch's
shuffled training images (``DeviceLoader(shard=(rank, world))``) and ``batch_size / G``
images per step, evaluates a shard of the validation (and test) split per rank and sums
the counts over ranks, so the accuracy is exact. Batch-norm statistics are per rank
while training (no SyncBatchNorm) and rank 0's are broadcast before every evaluation.
Decisions that end the run (budget, divergence, callback) are agreed over all ranks.
Only rank 0 shows progress and writes the checkpoint; every rank reads it on resume, so
on several machines it must be on a shared file system. An out-of-memory error on one
rank cannot be recovered by the others (they wait in the next collective until the
launcher stops them).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import math
import numbers
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from space.arch import Arch
from space.builder import build_model
from space.cost import cost as arch_cost
from space.errors import UserError

from . import distributed as ddp
from .atomic import atomic_write
from .data import DeviceLoader, ImageData, Splits

__all__ = [
    "Budget",
    "TrainConfig",
    "EpochStats",
    "Result",
    "TrainingFailed",
    "Diverged",
    "OutOfMemory",
    "RMSpropTF",
    "train",
    "evaluate",
]

CHECKPOINT_FORMAT = 1

# RMSProp as in the EfficientNet paper (TensorFlow semantics): decay 0.9, momentum 0.9,
# epsilon 1e-3 under the square root.
RMSPROP_DECAY = 0.9
RMSPROP_MOMENTUM = 0.9
RMSPROP_EPS = 1e-3
SGD_MOMENTUM = 0.9
# The paper's exponential schedule: multiply the learning rate by 0.97 every 2.4 epochs.
EXP_DECAY_RATE = 0.97
EXP_DECAY_EPOCHS = 2.4

# Steps between reads of the training losses (each read waits for the device).
_CPU_CHECK_EVERY = 1
_DEVICE_CHECK_EVERY = 16

_OOM_TYPES: tuple[type[BaseException], ...] = tuple(
    {t for t in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError) if t}
)
_OOM_TEXT = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


# --------------------------------------------------------------------------------------
# Public descriptions


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Budget:
    """How long to train: stop at whichever limit is reached first.

    Attributes:
        epochs: passes over the training set; may be fractional (``0.5`` trains half an
            epoch, rounded up to whole steps).
        seconds: wall-clock seconds of training steps (evaluation excluded). Checked after
            each step (every few steps on CUDA), so a run may overshoot by about one step.
        images: training images (summed over processes); checked after each step, so
            rounded up to whole batches.

    At least one must be given; each must be positive (else `UserError`, a ValueError).
    """

    epochs: float | None = None
    seconds: float | None = None
    images: int | None = None

    def __post_init__(self) -> None:
        if self.epochs is None and self.seconds is None and self.images is None:
            raise UserError(
                "Budget needs at least one limit: epochs, seconds or images "
                "(e.g. Budget(epochs=5) or Budget(seconds=600))"
            )
        if self.epochs is not None:
            object.__setattr__(self, "epochs", _positive_number("Budget.epochs", self.epochs))
        if self.seconds is not None:
            object.__setattr__(self, "seconds", _positive_number("Budget.seconds", self.seconds))
        if self.images is not None:
            object.__setattr__(self, "images", _positive_int("Budget.images", self.images))

    def __str__(self) -> str:
        parts = [f"{name}={getattr(self, name):g}" for name in ("epochs", "seconds", "images")
                 if getattr(self, name) is not None]
        return "Budget(" + ", ".join(parts) + ")"


_OPTIMIZERS = ("rmsprop", "sgd")
_SCHEDULES = ("cosine", "exponential")
_AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass(frozen=True)
class TrainConfig:
    """How to train (everything but the budget and the data).

    Attributes:
        batch_size: global images per step (split evenly over distributed processes).
        optimizer: ``"rmsprop"`` (the EfficientNet paper's: TensorFlow-style RMSProp,
            decay 0.9, momentum 0.9, epsilon 1e-3, see `RMSpropTF`) or ``"sgd"`` (Nesterov
            momentum 0.9).
        lr: peak learning rate; ``None`` scales with the batch size: rmsprop
            ``0.016 * batch_size / 256`` (the paper), sgd ``0.1 * batch_size / 256``.
        weight_decay: L2 penalty on convolution and linear weights (batch-norm parameters
            and biases are not decayed); ``None`` means 1e-5 for rmsprop (the paper) and
            5e-5 for sgd (the usual value for mobile-size networks trained with SGD; CIFAR
            ResNet recipes use 5e-4, which over-regularises these small nets on short runs).
        schedule: ``"cosine"`` decays to 0 over the budget: the fraction of the budget used
            is the largest of the epochs, images and seconds fractions, so it anneals
            fully whichever limit ends the run. ``"exponential"`` is the paper's
            ``0.97 ** floor(epoch / 2.4)`` (staircase).
        warmup_epochs: linear warm-up from ``lr / warmup_steps`` to ``lr`` over this many
            epochs, multiplied onto the schedule (0 disables it). One epoch by default:
            enough to keep the first steps at the batch-scaled rate stable, short next to
            proxy runs of several epochs.
        label_smoothing: for the training loss.
        ema_decay: exponential moving average of the weights (and batch-norm statistics)
            updated every step with decay ``min(ema_decay, (1 + n) / (10 + n))`` after ``n``
            updates, so that a short proxy run averages roughly its last tenth of steps
            rather than its initialisation.
            Evaluation then uses the EMA weights (``Result.ema`` is True). ``None`` disables
            EMA. Default 0.9999 as in the paper.
        grad_clip: clip the global gradient norm to this value; ``None`` disables it.
        amp: ``"auto"`` is bf16 autocast on CUDA GPUs with native bf16 (Ampere or newer,
            ROCm), else fp16 with a gradient scaler; off on other devices. ``"bf16"``
            works on CUDA and CPU, ``"fp16"`` needs CUDA, ``"off"`` trains in fp32.
        channels_last: NHWC memory format; ``None`` means True on CUDA and CPU (on this
            project's 2-core Xeon, B0-cifar trains about 1.5-1.8x faster in NHWC than in
            NCHW: benchmarks/train_throughput.py), False on other devices.
        compile: wrap the model in ``torch.compile`` (the first steps pay for compiling).
        cudnn_benchmark: let cuDNN choose convolution algorithms by timing (CUDA only;
            restored when `train` returns).
        augment: random-crop (4-pixel padding) and horizontal-flip augmentation of the
            training images.
        eval_batch_size: images per evaluation batch (global); ``None`` means
            ``2 * batch_size``.
        seed: seeds initialisation, data order, augmentation, dropout and stochastic depth.
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``...; ``None`` picks CUDA when available.
            Under distributed training the GPU is ``cuda:LOCAL_RANK``.
        num_threads: CPU threads for intra-op parallelism during `train` (restored after);
            ``None`` leaves the setting alone.
    """

    batch_size: int = 128
    optimizer: str = "rmsprop"
    lr: float | None = None
    weight_decay: float | None = None
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    ema_decay: float | None = 0.9999
    grad_clip: float | None = None
    amp: str = "auto"
    channels_last: bool | None = None
    compile: bool = False
    cudnn_benchmark: bool = True
    augment: bool = True
    eval_batch_size: int | None = None
    seed: int = 0
    device: str | None = None
    num_threads: int | None = None

    def __post_init__(self) -> None:
        _positive_int("TrainConfig.batch_size", self.batch_size)
        if self.optimizer not in _OPTIMIZERS:
            raise UserError(f"TrainConfig.optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in _SCHEDULES:
            raise UserError(f"TrainConfig.schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
        if self.amp not in _AMP_MODES:
            raise UserError(f"TrainConfig.amp must be one of {_AMP_MODES}, got {self.amp!r}")
        if self.lr is not None:
            _positive_number("TrainConfig.lr", self.lr)
        if self.weight_decay is not None and (
            isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, numbers.Real)
            or not math.isfinite(self.weight_decay) or self.weight_decay < 0
        ):
            raise UserError(f"TrainConfig.weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if (isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, numbers.Real)
                or not math.isfinite(self.warmup_epochs) or self.warmup_epochs < 0):
            raise UserError(f"TrainConfig.warmup_epochs must be a number >= 0, got {self.warmup_epochs!r}")
        if not isinstance(self.label_smoothing, numbers.Real) or not 0 <= self.label_smoothing < 1:
            raise UserError(f"TrainConfig.label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.ema_decay is not None and (
            isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, numbers.Real)
            or not 0 < self.ema_decay < 1
        ):
            raise UserError(f"TrainConfig.ema_decay must be in (0, 1) or None, got {self.ema_decay!r}")
        if self.grad_clip is not None:
            _positive_number("TrainConfig.grad_clip", self.grad_clip)
        if self.eval_batch_size is not None:
            _positive_int("TrainConfig.eval_batch_size", self.eval_batch_size)
        if self.num_threads is not None:
            _positive_int("TrainConfig.num_threads", self.num_threads)
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise UserError(f"TrainConfig.seed must be an integer >= 0, got {self.seed!r}")

    def resolved_lr(self) -> float:
        """The peak learning rate: ``lr``, or the batch-size-scaled default."""
        if self.lr is not None:
            return float(self.lr)
        base = 0.016 if self.optimizer == "rmsprop" else 0.1
        return base * self.batch_size / 256

    def resolved_weight_decay(self) -> float:
        """``weight_decay``, or the optimiser's default (1e-5 rmsprop, 5e-5 sgd)."""
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return 1e-5 if self.optimizer == "rmsprop" else 5e-5


@dataclass
class EpochStats:
    """What one epoch did (passed to the ``callback`` of `train`).

    Attributes:
        epoch: 1-based epoch number.
        train_loss: mean label-smoothed training loss over the epoch's steps (nats).
        val_acc: top-1 validation accuracy (fraction) after the epoch, with the EMA
            weights when EMA is on.
        val_loss: mean validation cross entropy (nats, no smoothing).
        images_per_s: training images per second over the epoch (all processes).
        seconds: wall-clock seconds of the epoch's training steps (evaluation excluded).
        lr: learning rate of the epoch's last step.
        images_seen: training images consumed since the start of the run.
        eval_seconds: wall-clock seconds of the epoch's evaluation.
    """

    epoch: int
    train_loss: float
    val_acc: float
    val_loss: float
    images_per_s: float
    seconds: float
    lr: float
    images_seen: int = 0
    eval_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Result:
    """The outcome of `train`.

    Attributes:
        val_acc: validation accuracy (fraction) after the *last* epoch: the honest proxy
            score (no selection on the validation set).
        best_val_acc: the highest per-epoch validation accuracy (optimistic: selected on
            the validation set), reached at ``best_epoch``.
        best_epoch: 1-based epoch of ``best_val_acc``.
        val_loss: validation loss after the last epoch (nats).
        epochs: epochs trained, ``steps / steps_per_epoch`` (fractional when the budget
            ended mid-epoch).
        steps: optimiser steps taken.
        seconds: wall-clock seconds spent in `train` (training, evaluation, checkpoints),
            summed over resumed calls.
        train_seconds: wall-clock seconds of training steps only.
        images_seen: training images consumed (all processes).
        images_per_s: ``images_seen / train_seconds``.
        history: one `EpochStats` per epoch.
        ema: True when the reported accuracies are those of the EMA weights.
        device: the device trained on (rank 0's under distributed training).
        stopped_by: ``"epochs"``, ``"images"``, ``"seconds"`` (the budget) or ``"callback"``.
        test_acc, test_loss: on ``data.test`` with the final weights, when
            ``evaluate_test`` was asked for; else None.
        params: trainable parameters of the model.
        macs: multiply-accumulates per image at the training resolution from
            `space.cost.cost`, when the architecture is known; else None.
        arch: the architecture string, when known.
        resolution: training image side in pixels.
        batch_size, lr, weight_decay, amp: the resolved settings (global batch, peak
            learning rate, L2 penalty, autocast mode ``"bf16"``/``"fp16"``/``"off"``).
        world_size: number of processes.
        resumed_epoch: epochs restored from a checkpoint at the start (0 for a fresh run).
        model: the trained network, only when `train` was called with
            ``keep_model=True``: the network trained (for a module argument, that module)
            or, when EMA is on, the EMA copy, whose parameters do not require gradients.
            Unwrapped (no DDP, no ``torch.compile``), in eval mode, on the training device.
    """

    val_acc: float
    best_val_acc: float
    best_epoch: int
    val_loss: float
    epochs: float
    steps: int
    seconds: float
    train_seconds: float
    images_seen: int
    images_per_s: float
    history: list[EpochStats]
    ema: bool
    device: str
    stopped_by: str
    test_acc: float | None = None
    test_loss: float | None = None
    params: int | None = None
    macs: int | None = None
    arch: str | None = None
    resolution: int | None = None
    batch_size: int = 0
    lr: float = 0.0
    weight_decay: float = 0.0
    amp: str = "off"
    world_size: int = 1
    resumed_epoch: int = 0
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the model is left out)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        out["history"] = [h.to_dict() for h in self.history]
        return out


class TrainingFailed(RuntimeError):
    """A candidate could not be trained; the search counts it as a failed trial.

    Attributes:
        arch: the architecture string (or the model's class name).
        batch_size: the global batch size.
        epoch: the 1-based epoch in which it failed (0 before training started).
    """

    def __init__(self, message: str, *, arch: str = "", batch_size: int = 0, epoch: int = 0):
        super().__init__(message)
        self.arch = arch
        self.batch_size = batch_size
        self.epoch = epoch


class Diverged(TrainingFailed):
    """The training loss became NaN or infinite; ``epoch`` and ``step`` say where
    (``step`` is the global 1-based optimiser step)."""

    def __init__(self, message: str, *, step: int = 0, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.step = step


class OutOfMemory(TrainingFailed):
    """The device ran out of memory (CUDA OOM); memory was released before raising."""


# --------------------------------------------------------------------------------------
# Optimiser, schedule, EMA


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


class _Schedule:
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
        else:
            main = EXP_DECAY_RATE ** math.floor(step / (EXP_DECAY_EPOCHS * self.steps_per_epoch))
        return self.base_lr * warm * main


class _EMA:
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


# --------------------------------------------------------------------------------------
# Helpers


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, TrainingFailed):
        return False
    if isinstance(err, _OOM_TYPES):
        return True
    return isinstance(err, RuntimeError) and any(t in str(err) for t in _OOM_TEXT)


def _resolve_device(name: str | None) -> torch.device:
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available")
    return dev


def _default_channels_last(dev: torch.device) -> bool:
    # oneDNN (CPU) and cuDNN both run depthwise and 1x1 convolutions faster in NHWC.
    return dev.type in ("cuda", "cpu")


def _native_bf16(dev: torch.device) -> bool:
    """bf16 in hardware (Ampere or newer, or ROCm), not emulated through fp32."""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_properties(dev).major >= 8


def _resolve_amp(amp: str, dev: torch.device) -> str:
    if amp == "auto":
        if dev.type == "cuda":
            return "bf16" if _native_bf16(dev) else "fp16"
        return "off"
    if amp == "fp16" and dev.type != "cuda":
        raise UserError(f"amp='fp16' needs a CUDA device (got {dev}); use 'bf16' or 'off'")
    return amp


def _autocast(amp: str, dev: torch.device) -> contextlib.AbstractContextManager:
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=dev.type, dtype=dtype)


def _grad_scaler(dev: torch.device) -> Any:
    scaler_cls = getattr(torch.amp, "GradScaler", None)
    if scaler_cls is not None:
        return scaler_cls(dev.type)
    return torch.cuda.amp.GradScaler()  # pragma: no cover - torch < 2.3


def _describe(arch: Arch | None, net: nn.Module) -> str:
    return arch.to_string() if arch is not None else type(net).__name__


def _model_arch(net: nn.Module) -> Arch | None:
    arch = getattr(net, "arch", None)
    return arch if isinstance(arch, Arch) else None


def _image_side(data: ImageData) -> int:
    return int(data.images.shape[-1])


def _shard(data: ImageData, rank: int, world: int) -> ImageData:
    """Every ``world``-th image from ``rank`` (exact, no padding): for evaluation shards."""
    if world <= 1:
        return data
    return data.subset(torch.arange(rank, len(data), world))


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank * 7_919 + 12_345) % (2**63 - 1)


def _atomic_save(obj: Any, path: Path) -> None:
    """`torch.save` ``obj`` to ``path`` atomically (readers see the old or the new
    checkpoint, never a partial one)."""
    with atomic_write(path) as f:
        torch.save(obj, f)


@torch.no_grad()
def _evaluate(module: nn.Module, loader: Iterable, dev: torch.device, amp: str,
              info: ddp.DistInfo | None) -> tuple[float, float, int]:
    """Accuracy, mean loss and image count over ``loader`` (summed over processes)."""
    module.eval()
    correct = torch.zeros((), dtype=torch.float64, device=dev)
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    count = 0
    with _autocast(amp, dev):
        for images, labels in loader:
            logits = module(images).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
            correct += (logits.argmax(1) == labels).sum().double()
            count += int(labels.shape[0])
    totals = torch.stack([correct, loss_sum, torch.tensor(float(count), dtype=torch.float64, device=dev)])
    if info is not None:
        dist.all_reduce(totals)
    correct_n, loss_total, n = totals.tolist()
    if n == 0:
        return float("nan"), float("nan"), 0
    return correct_n / n, loss_total / n, int(n)


def evaluate(model: nn.Module, data: ImageData, *, batch_size: int = 256,
             device: str | torch.device | None = None, resolution: int | None = None,
             amp: str = "off", channels_last: bool | None = None) -> tuple[float, float]:
    """Top-1 accuracy (fraction) and mean cross entropy (nats per image) of ``model`` on
    ``data``, in eval mode without gradients, in this process alone.

    Images are prepared as `train` prepares validation images (`nas.data.DeviceLoader`
    with ``train=False``, so the same normalisation). ``device`` defaults to the model's,
    ``resolution`` to the model's ``arch.resolution`` when it has one, else the images'
    size; ``channels_last`` defaults to True on CUDA and CPU. The model is left in eval mode.
    """
    _positive_int("batch_size", batch_size)
    if device is None:
        first = next(iter(model.parameters()), None)
        dev = first.device if first is not None else torch.device("cpu")
    else:
        dev = torch.device(device)
    amp_mode = _resolve_amp(amp, dev) if amp in _AMP_MODES else None
    if amp_mode is None:
        raise UserError(f"amp must be one of {_AMP_MODES}, got {amp!r}")
    if resolution is None:
        arch = _model_arch(model)
        resolution = arch.resolution if arch is not None else _image_side(data)
    cl = _default_channels_last(dev) if channels_last is None else bool(channels_last)
    loader = DeviceLoader(data, batch_size, device=dev, train=False, resolution=resolution,
                          channels_last=cl)
    acc, loss, _ = _evaluate(model, loader, dev, amp_mode, None)
    return acc, loss


# --------------------------------------------------------------------------------------
# Training


@dataclass
class _Where:
    """Where the run is, for failure messages."""

    phase: str = "setting up"
    epoch: int = 0
    step: int = 0


def train(arch_or_model: Arch | nn.Module, data: Splits, budget: Budget,
          config: TrainConfig = TrainConfig(), *,
          callback: Callable[[EpochStats], bool | None] | None = None,
          checkpoint: str | os.PathLike | None = None, resume: bool = True,
          progress: bool = False, evaluate_test: bool = False,
          keep_model: bool = False) -> Result:
    """Train an architecture (or a module) on ``data.train`` and measure it on ``data.val``.

    Args:
        arch_or_model: an `Arch` (built with `space.build_model` after seeding, at
            ``arch.resolution``) or an ``nn.Module`` taking ``(N, 3, H, W)`` images and
            returning ``(N, num_classes)`` logits, trained in place (at its
            ``arch.resolution`` when it has an ``arch`` attribute, else the data's size).
        data: train / validation (/ test) splits of uint8 images.
        budget: when to stop (whichever limit comes first).
        config: optimisation, precision and device settings.
        callback: called after every epoch's evaluation with its `EpochStats`. Returning
            True stops training after that epoch (``stopped_by="callback"``); an exception
            it raises (such as ``optuna.TrialPruned``) propagates, after the epoch's
            checkpoint is written. Under distributed training it runs on every process
            (training stops when any returns True; an exception on one process leaves
            the others waiting, so raise on all or none).
        checkpoint: file written atomically at the end of every epoch (by rank 0); with
            ``resume=True`` an existing file is loaded first and training continues from
            it to the same result as an uninterrupted run. A checkpoint of a different
            run (architecture, data size, batch size, optimiser, schedule, seed) is
            refused with `UserError` (a ValueError). Loaded with ``torch.load(weights_only=True)``.
        resume: continue from ``checkpoint`` when it exists (False starts afresh and
            overwrites it).
        progress: show a per-epoch progress bar on stderr (rank 0) with the loss and
            images per second.
        evaluate_test: also measure ``data.test`` once with the final weights.
        keep_model: return the trained network in ``Result.model``.

    Raises:
        Diverged: the training loss became NaN or infinite (names the epoch and step).
        OutOfMemory: the device ran out of memory (names batch size and architecture).
        UserError: (a ValueError) inconsistent arguments: empty splits, ``evaluate_test``
            without a test split, fp16 off CUDA, a model whose ``num_classes`` differs from
            the data's, a checkpoint of another run.
    """
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a Budget, got {type(budget).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if isinstance(arch_or_model, Arch):
        arch, desc = arch_or_model, arch_or_model.to_string()
    elif isinstance(arch_or_model, nn.Module):
        arch = _model_arch(arch_or_model)
        desc = _describe(arch, arch_or_model)
    else:
        raise TypeError(f"arch_or_model must be an Arch or a torch.nn.Module, got {type(arch_or_model).__name__}")

    where = _Where()
    prev_threads = torch.get_num_threads()
    prev_benchmark = torch.backends.cudnn.benchmark
    oom_text: str | None = None
    device_text = str(config.device or "")
    run: _Run | None = None
    try:
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        run = _Run(arch_or_model, arch, desc, data, budget, config, callback,
                   checkpoint, resume, progress, evaluate_test, keep_model, where)
        device_text = str(run.dev)
        return run.run()
    except Exception as err:  # noqa: BLE001 - re-raised unless it is an OOM
        if not _is_oom(err):
            raise
        oom_text = _first_line(err)
        run = None  # drop the model, optimiser and data held by the run
    finally:
        if torch.get_num_threads() != prev_threads:
            torch.set_num_threads(prev_threads)
        torch.backends.cudnn.benchmark = prev_benchmark
    # The OOM exception (and with it the frames holding the model, optimiser and
    # activations) is gone here, so the memory can actually be released.
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    on = f" on {device_text}" if device_text else ""
    raise OutOfMemory(
        f"out of memory{on} while {where.phase} (epoch {where.epoch}, step {where.step}) with "
        f"batch size {config.batch_size}: {desc}; try a smaller batch size or resolution "
        f"[{oom_text}]",
        arch=desc, batch_size=config.batch_size, epoch=where.epoch,
    )


class _Run:
    """One call of `train`: set-up, the epoch loop, checkpoints."""

    def __init__(self, arch_or_model: Arch | nn.Module, arch: Arch | None, desc: str,
                 data: Splits, budget: Budget, config: TrainConfig,
                 callback: Callable[[EpochStats], bool | None] | None,
                 checkpoint: str | os.PathLike | None, resume: bool, progress: bool,
                 evaluate_test: bool, keep_model: bool, where: _Where):
        self.t_start = time.perf_counter()
        self.budget, self.config, self.callback = budget, config, callback
        self.arch, self.desc, self.where = arch, desc, where
        self.progress, self.evaluate_test, self.keep_model = progress, evaluate_test, keep_model
        self.path = Path(checkpoint) if checkpoint is not None else None
        self.resume = resume

        for name in ("train", "val"):
            split = getattr(data, name, None)
            if split is None or int(split.labels.shape[0]) == 0:
                raise UserError(f"data.{name} is empty; train needs training and validation images")
        if evaluate_test and (data.test is None or int(data.test.labels.shape[0]) == 0):
            raise UserError("evaluate_test=True but data.test is empty or None "
                             "(make the splits with with_test=True)")
        self.data = data
        self.num_classes = int(data.num_classes)

        # --- device, process group, precision ---
        dev = _resolve_device(config.device)
        self.info = ddp.setup(dev.type)
        if dev.type == "cuda":
            index = self.info.local_rank if self.info is not None else (
                dev.index if dev.index is not None else torch.cuda.current_device())
            dev = torch.device("cuda", index)
            torch.backends.cudnn.benchmark = bool(config.cudnn_benchmark)
        self.dev = dev
        self.world = self.info.world_size if self.info is not None else 1
        self.rank = self.info.rank if self.info is not None else 0
        self.is_main = self.rank == 0
        if config.batch_size % self.world:
            raise UserError(f"batch_size {config.batch_size} is not divisible by the world size {self.world}")
        self.local_batch = config.batch_size // self.world
        self.amp = _resolve_amp(config.amp, dev)
        self.channels_last = (_default_channels_last(dev) if config.channels_last is None
                              else bool(config.channels_last))

        # --- model ---
        torch.manual_seed(config.seed)
        if isinstance(arch_or_model, Arch):
            net = build_model(arch_or_model, num_classes=self.num_classes)
        else:
            net = arch_or_model
            declared = getattr(net, "num_classes", None)
            if isinstance(declared, int) and declared != self.num_classes:
                raise UserError(f"the model has {declared} outputs but the data has {self.num_classes} classes")
        net = net.to(dev)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.resolution = arch.resolution if arch is not None else _image_side(data.train)
        self.params = sum(p.numel() for p in net.parameters() if p.requires_grad)
        self.macs = arch_cost(arch, num_classes=self.num_classes).macs if arch is not None else None

        # --- optimiser, EMA, scaler ---
        self.lr = config.resolved_lr()
        self.weight_decay = config.resolved_weight_decay()
        decay = [p for p in net.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in net.parameters() if p.requires_grad and p.ndim <= 1]
        groups = [g for g in ({"params": decay, "weight_decay": self.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
        if not groups:
            raise UserError("the model has no trainable parameters")
        if config.optimizer == "rmsprop":
            self.opt: torch.optim.Optimizer = RMSpropTF(groups, lr=self.lr)
        else:
            self.opt = torch.optim.SGD(groups, lr=self.lr, momentum=SGD_MOMENTUM, nesterov=True)
        self.scaler = _grad_scaler(dev) if self.amp == "fp16" else None

        # --- the module that trains: DDP (which copies rank 0's weights to all), then compile ---
        model: nn.Module = net
        if self.info is not None:
            model = nn.parallel.DistributedDataParallel(
                net, device_ids=[dev.index] if dev.type == "cuda" else None,
                gradient_as_bucket_view=True)
        self.ema = _EMA(net, config.ema_decay) if config.ema_decay is not None else None
        if config.compile:
            model = torch.compile(model)
        self.model = model
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

        # --- data ---
        shard = (self.rank, self.world) if self.world > 1 else None
        common = dict(device=dev, resolution=self.resolution, channels_last=self.channels_last)
        self.train_loader = DeviceLoader(
            data.train, self.local_batch, train=True, seed=config.seed, shard=shard,
            pad=4 if config.augment else 0, flip=config.augment, **common)
        self.steps_per_epoch = len(self.train_loader)
        per_rank = len(data.train) // self.world
        if self.steps_per_epoch == 0:
            raise UserError(f"the training split has {len(data.train)} images, too few for "
                            f"{self.world} processes")
        if per_rank < self.local_batch:
            warnings.warn(
                f"the training split has {per_rank} images per process, fewer than a batch of "
                f"{self.local_batch}: every step uses all of them (the learning rate is still the "
                f"one for batch size {config.batch_size})", stacklevel=3)
        eval_batch = config.eval_batch_size or 2 * config.batch_size
        self.eval_batch = max(1, eval_batch // self.world)
        self.val_loader = DeviceLoader(_shard(data.val, self.rank, self.world), self.eval_batch,
                                       train=False, **common)

        # --- schedule and budget in steps ---
        self.schedule = _Schedule(config.schedule, self.lr,
                                  round(config.warmup_epochs * self.steps_per_epoch), self.steps_per_epoch)
        self.max_steps = (math.ceil(budget.epochs * self.steps_per_epoch - 1e-9)
                          if budget.epochs is not None else None)
        # Read the losses (non-finite check, clock, progress bar) every step on the CPU,
        # every few steps on accelerators, where reading a value waits for the device.
        self.check_every = _CPU_CHECK_EVERY if dev.type == "cpu" else _DEVICE_CHECK_EVERY

        # --- counters (restored by a checkpoint) ---
        self.epoch = 0
        self.step = 0
        self.images_seen = 0
        self.train_seconds = 0.0
        self.prior_seconds = 0.0
        self.history: list[EpochStats] = []
        self.stopped_by = ""
        self.resumed_epoch = 0
        self.last_lr = 0.0
        if self.path is not None and resume and self.path.exists():
            self._load()

    # --- checkpoints ---------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        c = self.config
        return {
            "arch": self.desc,
            "num_classes": self.num_classes,
            "num_train": int(self.data.train.labels.shape[0]),
            "num_val": int(self.data.val.labels.shape[0]),
            "resolution": self.resolution,
            "batch_size": c.batch_size,
            "optimizer": c.optimizer,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "schedule": c.schedule,
            "warmup_epochs": float(c.warmup_epochs),
            "label_smoothing": float(c.label_smoothing),
            "ema_decay": c.ema_decay,
            "augment": c.augment,
            "seed": c.seed,
        }

    def _save(self) -> None:
        if self.path is None or not self.is_main:
            return
        self.where.phase = "writing the checkpoint"
        state = {
            "format": CHECKPOINT_FORMAT,
            "meta": self._meta(),
            "budget": dataclasses.asdict(self.budget),
            "model": self.net.state_dict(),
            "optimizer": self.opt.state_dict(),
            "schedule": {"step": self.step, "last_lr": self.last_lr},
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "step": self.step,
            "images_seen": self.images_seen,
            "train_seconds": self.train_seconds,
            "seconds": self.prior_seconds + (time.perf_counter() - self.t_start),
            "history": [h.to_dict() for h in self.history],
            "stopped_by": self.stopped_by,
            "world_size": self.world,
            "amp": self.amp,
        }
        _atomic_save(state, self.path)

    def _load(self) -> None:
        assert self.path is not None
        state = torch.load(self.path, map_location=self.dev, weights_only=True)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"{self.path} is not a checkpoint of nas.train (format {CHECKPOINT_FORMAT})")
        saved, now = state["meta"], self._meta()
        diffs = [f"{k}: {saved.get(k)!r} in the checkpoint, {now[k]!r} now"
                 for k in now if saved.get(k) != now[k]]
        if diffs:
            raise UserError(f"checkpoint {self.path} belongs to a different run ("
                             + "; ".join(diffs) + "); delete it or pass resume=False")
        self.net.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.module.load_state_dict(state["ema"])
            self.ema.updates = int(state["ema_updates"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.images_seen = int(state["images_seen"])
        self.train_seconds = float(state["train_seconds"])
        self.prior_seconds = float(state["seconds"])
        self.history = [EpochStats(**h) for h in state["history"]]
        self.stopped_by = str(state["stopped_by"])
        self.last_lr = float(state["schedule"]["last_lr"])
        self.resumed_epoch = self.epoch

    # --- budget ----------------------------------------------------------------------------

    def _progress(self, elapsed: float) -> float:
        fractions = [0.0]
        if self.max_steps is not None:
            fractions.append(self.step / self.max_steps)
        if self.budget.images is not None:
            fractions.append(self.images_seen / self.budget.images)
        if self.budget.seconds is not None:
            fractions.append(elapsed / self.budget.seconds)
        return max(fractions)

    def _counted_stop(self) -> str:
        if self.max_steps is not None and self.step >= self.max_steps:
            return "epochs"
        if self.budget.images is not None and self.images_seen >= self.budget.images:
            return "images"
        return ""

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> Result:
        self.elapsed = self.train_seconds
        if self.stopped_by != "callback":  # a budget may have been raised since the checkpoint
            self.stopped_by = self._counted_stop()
            if self.budget.seconds is not None and self.train_seconds >= self.budget.seconds:
                self.stopped_by = self.stopped_by or "seconds"
        while not self.stopped_by:
            self._train_epoch()
        return self._result()

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with _autocast(self.amp, self.dev):
            logits = self.model(images)
        loss = self.criterion(logits.float(), labels)
        self.opt.zero_grad(set_to_none=True)
        clip = self.config.grad_clip
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if clip is not None:
                self.scaler.unscale_(self.opt)
                nn.utils.clip_grad_norm_(self.net.parameters(), clip)
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(self.net.parameters(), clip)
            self.opt.step()
        if self.ema is not None:
            self.ema.update()
        return loss.detach()

    def _train_epoch(self) -> None:
        self.epoch += 1
        epoch = self.epoch
        steps_left = self.steps_per_epoch
        if self.max_steps is not None:
            steps_left = min(steps_left, self.max_steps - self.step)
        if self.budget.images is not None:
            steps_left = min(steps_left, -(-(self.budget.images - self.images_seen) // self.config.batch_size))
        bar = None
        if self.progress and self.is_main:
            from tqdm import tqdm

            bar = tqdm(total=steps_left, desc=f"epoch {epoch}", unit="step", file=sys.stderr,
                       leave=True, dynamic_ncols=True)
        try:
            stats = self._run_epoch(epoch, bar)
        finally:
            if bar is not None:
                bar.close()
        self.history.append(stats)
        self._save()
        if self.callback is not None:
            self.where.phase = "running the callback"
            verdict = bool(self.callback(stats))
            if self.info is not None:  # stop on every rank if any rank's callback says so
                flag = torch.tensor([1.0 if verdict else 0.0], device=self.dev)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                verdict = bool(flag.item() > 0)
            if verdict and not self.stopped_by:
                self.stopped_by = "callback"
                self._save()  # remember that the run is over

    def _run_epoch(self, epoch: int, bar: Any) -> EpochStats:
        """Train one epoch (or what the budget leaves of it) and evaluate."""
        cfg = self.config
        self.where.phase, self.where.epoch = "training", epoch
        self.train_loader.set_epoch(epoch - 1)
        torch.manual_seed(_epoch_seed(cfg.seed, epoch, self.rank))
        self.model.train()

        losses = torch.zeros(self.check_every, dtype=torch.float32, device=self.dev)
        pending = 0  # steps whose loss is in `losses` but not yet read
        loss_sum, loss_count, epoch_steps, epoch_images = 0.0, 0, 0, 0
        t0 = time.perf_counter()

        def check() -> None:
            """Read the pending losses; raise on a non-finite one; read the clock."""
            nonlocal pending, loss_sum, loss_count
            values = losses[:pending].tolist()
            bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
            first_bad = self.step - pending + bad + 1 if bad is not None else math.inf
            elapsed = self.train_seconds + (time.perf_counter() - t0)
            if self.info is not None:  # agree on the first bad step and the slowest clock
                control = torch.tensor([first_bad, -elapsed], dtype=torch.float64, device=self.dev)
                dist.all_reduce(control, op=dist.ReduceOp.MIN)
                first_bad, elapsed = control[0].item(), -control[1].item()
            if math.isfinite(first_bad):
                bad_step = int(first_bad)
                in_epoch = bad_step - (self.step - epoch_steps)
                value = values[bad] if bad is not None else float("nan")
                raise Diverged(
                    f"training diverged: non-finite loss ({value}) at epoch {epoch}, step {in_epoch} "
                    f"of the epoch (global step {bad_step}); {self.desc}, batch size {cfg.batch_size}, "
                    f"lr {self.last_lr:.4g}",
                    arch=self.desc, batch_size=cfg.batch_size, epoch=epoch, step=bad_step)
            loss_sum += sum(values)
            loss_count += len(values)
            self.elapsed = elapsed
            if bar is not None and pending:
                dt = time.perf_counter() - t0
                bar.set_postfix(loss=f"{loss_sum / max(1, loss_count):.4f}",
                                img_s=f"{epoch_images * self.world / max(dt, 1e-9):.0f}", refresh=False)
                bar.update(pending)
            pending = 0

        for images, labels in self.train_loader:
            lr = self.schedule(self.step, self._progress(self.elapsed))
            for group in self.opt.param_groups:
                group["lr"] = lr
            self.last_lr = lr
            losses[pending] = self._train_step(images, labels)
            pending += 1
            n = int(labels.shape[0])
            self.step += 1
            epoch_steps += 1
            epoch_images += n
            self.images_seen += n * self.world
            self.where.step = self.step
            stop = self._counted_stop()
            if pending == self.check_every or stop:
                check()
                if not stop and self.budget.seconds is not None and self.elapsed >= self.budget.seconds:
                    stop = "seconds"
            if stop:
                self.stopped_by = stop
                break
        if pending:
            check()
        if not self.stopped_by and self.budget.seconds is not None and self.elapsed >= self.budget.seconds:
            self.stopped_by = "seconds"
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        seconds = time.perf_counter() - t0
        self.train_seconds += seconds
        self.elapsed = self.train_seconds

        if self.info is not None:  # mean training loss over all processes
            totals = torch.tensor([loss_sum, float(loss_count)], dtype=torch.float64, device=self.dev)
            dist.all_reduce(totals)
            loss_sum, loss_count = totals.tolist()
        train_loss = loss_sum / loss_count if loss_count else float("nan")

        self.where.phase = "evaluating"
        t1 = time.perf_counter()
        val_acc, val_loss = self._validate()
        eval_seconds = time.perf_counter() - t1
        stats = EpochStats(
            epoch=epoch, train_loss=train_loss, val_acc=val_acc, val_loss=val_loss,
            images_per_s=epoch_images * self.world / seconds if seconds > 0 else float("nan"),
            seconds=seconds, lr=self.last_lr, images_seen=self.images_seen, eval_seconds=eval_seconds)
        if bar is not None:
            bar.set_postfix(loss=f"{train_loss:.4f}", val_acc=f"{val_acc:.4f}",
                            img_s=f"{stats.images_per_s:.0f}")
        return stats

    def _eval_module(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.net

    def _validate(self) -> tuple[float, float]:
        module = self._eval_module()
        if self.info is not None:
            ddp.broadcast_buffers(module)
        acc, loss, _ = _evaluate(module, self.val_loader, self.dev, self.amp, self.info)
        return acc, loss

    def _result(self) -> Result:
        test_acc = test_loss = None
        if self.evaluate_test:
            self.where.phase = "testing"
            assert self.data.test is not None
            module = self._eval_module()
            if self.info is not None:
                ddp.broadcast_buffers(module)
            loader = DeviceLoader(_shard(self.data.test, self.rank, self.world), self.eval_batch,
                                  device=self.dev, train=False, resolution=self.resolution,
                                  channels_last=self.channels_last)
            test_acc, test_loss, _ = _evaluate(module, loader, self.dev, self.amp, self.info)
        self._eval_module().eval()
        if self.history:
            last = self.history[-1]
            best = max(self.history, key=lambda h: (h.val_acc, -h.epoch))
            val_acc, val_loss, best_acc, best_epoch = last.val_acc, last.val_loss, best.val_acc, best.epoch
        else:  # pragma: no cover - a budget always allows one step
            val_acc = val_loss = best_acc = float("nan")
            best_epoch = 0
        return Result(
            val_acc=val_acc, best_val_acc=best_acc, best_epoch=best_epoch, val_loss=val_loss,
            epochs=self.step / self.steps_per_epoch, steps=self.step,
            seconds=self.prior_seconds + (time.perf_counter() - self.t_start),
            train_seconds=self.train_seconds, images_seen=self.images_seen,
            images_per_s=self.images_seen / self.train_seconds if self.train_seconds > 0 else 0.0,
            history=list(self.history), ema=self.ema is not None, device=str(self.dev),
            stopped_by=self.stopped_by, test_acc=test_acc, test_loss=test_loss,
            params=self.params, macs=self.macs, arch=self.arch.to_string() if self.arch else None,
            resolution=self.resolution, batch_size=self.config.batch_size, lr=self.lr,
            weight_decay=self.weight_decay, amp=self.amp, world_size=self.world,
            resumed_epoch=self.resumed_epoch,
            model=self._eval_module() if self.keep_model else None,
        )
