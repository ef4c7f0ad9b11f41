"""What a training run reports: per-epoch `EpochStats`, the final `Result`, and the
`TrainingFailed` errors a search counts as failed candidates."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["EpochStats", "Result", "TrainingFailed", "Diverged", "OutOfMemory"]


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
        val_acc_se: its binomial standard error, ``sqrt(val_acc * (1 - val_acc) / n_val)``:
            differences between candidates smaller than about two of these are noise.
        val_size: validation images.
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
            ``evaluate_test`` was asked for (measured once per checkpointed run and then
            read from the checkpoint); else None.
        params: trainable parameters of the model.
        macs: multiply-accumulates per image at the training resolution from
            `space.cost.cost`, when the architecture is known; else None.
        arch: the architecture string, when known.
        resolution: training image side in pixels.
        batch_size, lr, weight_decay, amp: the resolved settings (global batch, peak
            learning rate, L2 penalty, and the autocast mode that ran: ``"bf16"``,
            ``"fp16"`` or ``"off"``, which can differ from ``TrainConfig.amp``, see
            `nas.train.device.resolve_amp`).
        world_size: number of processes.
        recipe: the recipe the settings came from (``"proxy"`` or ``"paper"``).
        config: every setting of the `TrainConfig` that ran, resolved (the batch size
            and learning rate as used), JSON-ready.
        compiled: True when ``TrainConfig.compile`` was asked for and torch.compile really
            produced a graph of the model in this call's first training step (a model
            with graph breaks, partly compiled, counts); False without compile, when
            dynamo gave up (it then runs the model eagerly, and `train` warns) or when
            this call took no step (a finished run resumed).
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
    val_acc_se: float = float("nan")
    val_size: int = 0
    recipe: str = "paper"
    config: dict[str, Any] = field(default_factory=dict)
    compiled: bool = False
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


