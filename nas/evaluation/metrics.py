"""Measuring a trained network on a split: top-1 and top-5 accuracy, loss, a confusion
matrix and throughput, in one pass (`evaluate_split`).

Images are prepared exactly as `nas.train.evaluate.evaluate` (and so training's
validation) prepares them: a `nas.data.DeviceLoader` in evaluation mode (the data's
normalisation, resized to ``resolution``, channels-last on CPU and CUDA), under the same
autocast, with the same optional mirror-image averaging.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from space.errors import UserError

from ..data import DeviceLoader, ImageData
from ..train.config import AMP_MODES, positive_int
from ..train.device import autocast, default_channels_last, resolve_amp
from ..train.evaluate import EVAL_BAR_DELAY_S

__all__ = ["EvalResult", "evaluate_split", "TOP_K"]

TOP_K = 5


@dataclass
class EvalResult:
    """One split's measurement.

    Attributes:
        images: images evaluated.
        top1, topk: fractions of images whose label is the top prediction / among the
            ``k`` top predictions (``k = min(5, classes)``; with 5 classes or fewer top-k is 1).
        k: that ``k``.
        loss: mean cross entropy, nats per image (no label smoothing).
        confusion: ``(classes, classes)`` counts, row = true class, column = predicted.
        seconds: wall-clock of the pass (after one warm-up batch, which is not counted).
        images_per_s: ``images / seconds``.
    """

    images: int
    top1: float
    topk: float
    k: int
    loss: float
    confusion: np.ndarray
    seconds: float
    images_per_s: float

    def per_class_accuracy(self) -> np.ndarray:
        """Recall of each class (NaN for a class without images)."""
        totals = self.confusion.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(totals > 0, np.diag(self.confusion) / np.maximum(totals, 1), np.nan)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@torch.no_grad()
def evaluate_split(model: nn.Module, data: ImageData, *, batch_size: int = 256,
                   device: str | torch.device = "cpu", resolution: int | None = None, amp: str = "off",
                   channels_last: bool | None = None, flip: bool = False,
                   progress: str | None = None) -> EvalResult:
    """Measure ``model`` (put in eval mode) on ``data``; see `EvalResult`.

    ``resolution`` defaults to the images' side; ``amp`` is a `TrainConfig.amp` mode,
    resolved for the device; ``flip`` averages the logits of each image and its mirror
    image; ``progress`` is a progress bar's description (shown on stderr once the pass has
    taken a couple of seconds), None for none.
    """
    positive_int("batch_size", batch_size)
    if len(data) == 0:
        raise UserError("there are no images to evaluate")
    dev = torch.device(device)
    if amp not in AMP_MODES:
        raise UserError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    amp_mode = resolve_amp(amp, dev)
    cl = default_channels_last(dev) if channels_last is None else bool(channels_last)
    model = model.eval().to(dev)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    side = data.side if resolution is None else int(resolution)
    loader = DeviceLoader(data, batch_size, device=dev, train=False, resolution=side, channels_last=cl)
    num_classes = len(data.classes)
    k = min(TOP_K, num_classes)

    def logits_of(images: torch.Tensor) -> torch.Tensor:
        out = model(images).float()
        if flip:
            out = 0.5 * (out + model(images.flip(3)).float())
        return out

    # One warm-up batch (kernels chosen, memory allocated), not counted in the time.
    with autocast(amp_mode, dev):
        first, _ = next(iter(loader))
        logits_of(first)
    _sync(dev)

    batches: Iterable = loader
    if progress is not None:
        from tqdm import tqdm

        batches = tqdm(loader, total=len(loader), desc=progress, unit="batch", file=sys.stderr,
                       delay=EVAL_BAR_DELAY_S, leave=False, dynamic_ncols=True)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=dev)
    top1 = torch.zeros((), dtype=torch.int64, device=dev)
    topk = torch.zeros((), dtype=torch.int64, device=dev)
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    count = 0
    start = time.perf_counter()
    with autocast(amp_mode, dev):
        for images, labels in batches:
            logits = logits_of(images)
            if logits.shape[1] != num_classes:
                raise UserError(f"the model has {logits.shape[1]} outputs but the data has {num_classes} classes")
            predicted = logits.argmax(1)
            top1 += (predicted == labels).sum()
            topk += (logits.topk(k, dim=1).indices == labels[:, None]).any(1).sum()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
            confusion += torch.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
            count += int(labels.shape[0])
    _sync(dev)
    seconds = time.perf_counter() - start
    return EvalResult(images=count, top1=int(top1) / count, topk=int(topk) / count, k=k,
                      loss=float(loss_sum) / count,
                      confusion=confusion.view(num_classes, num_classes).cpu().numpy(),
                      seconds=seconds, images_per_s=count / seconds if seconds > 0 else float("inf"))
