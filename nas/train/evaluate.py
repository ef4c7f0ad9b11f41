"""Measuring a model: top-1 accuracy and loss over a loader, summed over processes."""

from __future__ import annotations

import sys
from typing import Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from space.arch import Arch
from space.errors import UserError

from .. import distributed as ddp
from ..data import DeviceLoader, ImageData
from .config import AMP_MODES, positive_int
from .device import autocast, default_channels_last, resolve_amp

__all__ = ["EVAL_BAR_DELAY_S", "evaluate", "evaluate_loader", "image_side", "model_arch", "split_shard"]


def model_arch(net: nn.Module) -> Arch | None:
    arch = getattr(net, "arch", None)
    return arch if isinstance(arch, Arch) else None


def image_side(data: ImageData) -> int:
    return data.side


def split_shard(data: ImageData, rank: int, world: int) -> ImageData:
    """Every ``world``-th image from ``rank`` (exact, no padding): for evaluation shards."""
    if world <= 1:
        return data
    return data.subset(torch.arange(rank, len(data), world))


# Evaluation passes shorter than this show no progress bar.
EVAL_BAR_DELAY_S = 2.0


@torch.no_grad()
def evaluate_loader(module: nn.Module, loader: DeviceLoader, dev: torch.device, amp: str,
                    info: ddp.DistInfo | None, progress: str | None = None,
                    flip: bool = False) -> tuple[float, float, int]:
    """Accuracy, mean loss and image count over ``loader`` (summed over processes).

    ``progress``: the description of a progress bar on stderr, shown once the pass has
    taken `EVAL_BAR_DELAY_S` seconds and removed when it ends; None shows none.
    ``flip``: test-time augmentation: the logits are the mean of the image's and its
    left-right mirror's.
    """
    module.eval()
    correct = torch.zeros((), dtype=torch.float64, device=dev)
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    count = 0
    batches: Iterable = loader
    if progress is not None:
        from tqdm import tqdm

        batches = tqdm(loader, total=len(loader), desc=progress, unit="batch", file=sys.stderr,
                       delay=EVAL_BAR_DELAY_S, leave=False, dynamic_ncols=True)
    with autocast(amp, dev):
        for images, labels in batches:
            logits = module(images).float()
            if flip:
                logits = 0.5 * (logits + module(images.flip(3)).float())
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
             amp: str = "off", channels_last: bool | None = None,
             flip: bool = False) -> tuple[float, float]:
    """Top-1 accuracy (fraction) and mean cross entropy (nats per image) of ``model`` on
    ``data``, in eval mode without gradients, in this process alone.

    Images are prepared as `train` prepares validation images (`nas.data.DeviceLoader`
    with ``train=False``, so the same normalisation). ``device`` defaults to the model's,
    ``resolution`` to the model's ``arch.resolution`` when it has one, else the images'
    size; ``channels_last`` defaults to True on CUDA and CPU. ``flip`` averages the logits of each image and its mirror
    image (test-time augmentation). The model is left in eval mode.
    """
    positive_int("batch_size", batch_size)
    if device is None:
        first = next(iter(model.parameters()), None)
        dev = first.device if first is not None else torch.device("cpu")
    else:
        dev = torch.device(device)
    amp_mode = resolve_amp(amp, dev) if amp in AMP_MODES else None
    if amp_mode is None:
        raise UserError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if resolution is None:
        arch = model_arch(model)
        resolution = arch.resolution if arch is not None else image_side(data)
    cl = default_channels_last(dev) if channels_last is None else bool(channels_last)
    loader = DeviceLoader(data, batch_size, device=dev, train=False, resolution=resolution,
                          channels_last=cl)
    acc, loss, _ = evaluate_loader(model, loader, dev, amp_mode, None, flip=flip)
    return acc, loss


