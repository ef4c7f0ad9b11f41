"""Stratified, seeded sampling of positions: validation hold-outs and subsets."""

from __future__ import annotations

import math

import torch

from .containers import DataError, describe

__all__ = ["stratified_split", "stratified_subset"]


def _check_labels(labels: torch.Tensor) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise DataError(f"labels must be a 1-D integer tensor, got {describe(labels)}")
    labels = labels.to("cpu", torch.int64)
    if labels.numel() and int(labels.min()) < 0:
        raise DataError("labels must be non-negative")
    return labels


def _stratified_take(labels: torch.Tensor, total: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split positions into (rest, taken) with ``total`` taken, per class as close to
    proportional as integers allow (largest remainder; ties to the lower class index)."""
    n = labels.numel()
    if n == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    counts = torch.bincount(labels)
    quota, remainder = (counts * total) // n, (counts * total) % n  # exact integer quotas
    short = total - int(quota.sum())
    if short > 0:
        order = sorted(range(len(counts)), key=lambda c: (-int(remainder[c]), c))
        for c in order[:short]:
            quota[c] += 1
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    by_class = perm[torch.argsort(labels[perm], stable=True)]  # grouped by class, random within
    sorted_labels = labels[by_class]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts[sorted_labels]
    taken_mask = rank < quota[sorted_labels]
    taken = by_class[taken_mask].sort().values
    rest = by_class[~taken_mask].sort().values
    return rest, taken


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hold out a stratified, seeded ``fraction`` of the positions of ``labels``.

    ``round(fraction * N)`` positions (halves round up) are held out, per class within one
    of ``fraction * count``. Returns ``(keep_idx, held_idx)``: disjoint, sorted ``int64``
    tensors that together cover ``0 .. N - 1``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise DataError(f"fraction must be in [0, 1], got {fraction}")
    labels = _check_labels(labels)
    total = int(math.floor(fraction * labels.numel() + 0.5))
    return _stratified_take(labels, min(total, labels.numel()), seed)


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` seeded positions of ``labels`` with class counts proportional to the whole
    (each within one of ``n * count / N``), as a sorted ``int64`` tensor."""
    labels = _check_labels(labels)
    if not 0 <= n <= labels.numel():
        raise DataError(f"a subset of {n} images cannot be drawn from {labels.numel()}")
    return _stratified_take(labels, n, seed)[1]
