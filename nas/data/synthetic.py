"""Synthetic image classification data that a tiny network can learn (tests, smoke runs),
and the parsing of the ``synthetic[:N[:C[:S]]]`` dataset names."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from .containers import DataError, ImageData

__all__ = ["synthetic", "parse_synthetic"]

_SYNTHETIC_PATTERN_SEED = 20240917


def synthetic(n: int, num_classes: int = 10, size: int = 32, seed: int = 0) -> ImageData:
    """``n`` learnable RGB images of side ``size`` in ``num_classes`` balanced classes.

    Each class has a fixed smooth colour pattern (a random 4x4 grid per channel, upsampled
    bilinearly) that depends only on ``num_classes`` and ``size``, not on ``seed``; an image
    is its class pattern with a random contrast and brightness plus pixel noise. Different
    seeds therefore give different samples of the same task (train and test can be drawn
    with two seeds). Class counts differ by at most one; label order is shuffled by ``seed``.
    """
    if n < 0 or num_classes < 1 or size < 1:
        raise DataError(f"synthetic data needs n >= 0, num_classes >= 1 and size >= 1, got {n}, {num_classes}, {size}")
    pattern_gen = torch.Generator().manual_seed(_SYNTHETIC_PATTERN_SEED)
    grid = torch.randn(num_classes, 3, 4, 4, generator=pattern_gen)
    patterns = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
    patterns = patterns - patterns.mean(dim=(1, 2, 3), keepdim=True)
    patterns = patterns / patterns.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    contrast = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=gen)
    brightness = 10.0 * torch.randn(n, 1, 1, 1, generator=gen)
    noise = 25.0 * torch.randn(n, 3, size, size, generator=gen)
    images = 128.0 + 50.0 * contrast * patterns[labels] + brightness + noise
    images = images.round_().clamp_(0, 255).to(torch.uint8)
    width = len(str(num_classes - 1))
    classes = tuple(f"class{i:0{width}d}" for i in range(num_classes))
    return ImageData(images, labels.to(torch.int64), classes, name=f"synthetic:{n}:{num_classes}:{size}")


def parse_synthetic(name: str) -> tuple[int, int, int]:
    parts = name.strip().split(":")[1:]
    values = [1000, 10, 32]
    if len(parts) > 3 or not all(re.fullmatch(r"\d+", p) for p in parts):
        raise DataError(f"bad synthetic dataset name {name!r}: expected 'synthetic[:N[:classes[:size]]]' with integers")
    for i, p in enumerate(parts):
        values[i] = int(p)
    n, num_classes, size = values
    if n < 1 or num_classes < 1 or size < 1:
        raise DataError(f"bad synthetic dataset name {name!r}: N, classes and size must be at least 1")
    if num_classes < 2:
        raise DataError(f"bad synthetic dataset name {name!r}: a classifier needs at least 2 classes")
    return n, num_classes, size
