"""The in-memory containers every dataset is read into: `ImageData` (labelled uint8
images), `Splits` (train / validation / test) with the `SplitsInfo` that records how they
were drawn, the `DataError` for bad data, and the small argument checks they share."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from space.errors import UserError

__all__ = ["DataError", "ImageData", "Splits", "SplitsInfo", "as_channel_stats", "as_index", "describe"]


class DataError(UserError):
    """A dataset that cannot be read as asked (missing, corrupt, empty, bad argument).

    Its message is one sentence meant for the user; it is a `ValueError`.
    """


def as_channel_stats(value: Sequence[float] | None, channels: int, what: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    stats = tuple(float(v) for v in value)
    if len(stats) == 1:
        stats = stats * channels
    if len(stats) != channels:
        raise DataError(f"{what} has {len(stats)} values but the images have {channels} channels")
    return stats


@dataclass(frozen=True, eq=False, repr=False)
class ImageData:
    """A labelled set of images held in memory.

    Attributes:
        images: ``uint8`` tensor ``(N, C, H, W)``, values 0..255, RGB, on the CPU.
        labels: ``int64`` tensor ``(N,)`` with values in ``0 .. len(classes) - 1``.
        classes: class names; ``classes[i]`` names label ``i``.
        name: a human-readable label such as ``"cifar10:train"``.
        mean, std: per-channel normalisation statistics on the 0..1 scale, or ``None``
            when the dataset has no known statistics (`DeviceLoader` then uses 0.5).
        skipped: images that could not be read when the dataset was loaded, as
            ``"path (reason)"`` strings; they are not part of ``images``.

    Instances compare by identity (tensors have no single truth value).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str = ""
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    skipped: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f"ImageData.images must be a uint8 tensor (N, C, H, W), got {describe(images)}")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
            raise DataError(f"ImageData.labels must be an int64 tensor (N,), got {describe(labels)}")
        if labels.shape[0] != images.shape[0]:
            raise DataError(f"ImageData has {images.shape[0]} images but {labels.shape[0]} labels")
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "skipped", tuple(self.skipped))
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(self.classes)):
            raise DataError(
                f"ImageData labels span {int(labels.min())}..{int(labels.max())} "
                f"but there are {len(self.classes)} classes"
            )
        channels = images.shape[1]
        object.__setattr__(self, "mean", as_channel_stats(self.mean, channels, "mean"))
        object.__setattr__(self, "std", as_channel_stats(self.std, channels, "std"))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def fingerprint(self) -> str:
        """A short hash of the images, labels and class names (see `Splits.fingerprint`)."""
        return _fingerprint(self)

    @property
    def side(self) -> int:
        """The square side, in pixels, a model trains and evaluates at when nothing else
        sets it: the stored height ``H``. Every built-in dataset is square; an image folder
        of another aspect ratio is resized to a square (not cropped) by `DeviceLoader`."""
        return int(self.images.shape[2])

    def __repr__(self) -> str:
        shape = tuple(self.images.shape[1:])
        return f"ImageData(name={self.name!r}, n={len(self)}, shape={shape}, classes={len(self.classes)})"

    def subset(self, indices: torch.Tensor | np.ndarray | Sequence[int]) -> ImageData:
        """The images at ``indices`` (integer positions, or a boolean mask of length N), in
        that order, as a new `ImageData` (copies; metadata is kept)."""
        idx = as_index(indices, len(self)).to(self.images.device)
        return ImageData(
            images=self.images.index_select(0, idx),
            labels=self.labels.index_select(0, idx),
            classes=self.classes,
            name=self.name,
            mean=self.mean,
            std=self.std,
            skipped=self.skipped,
        )


@dataclass(frozen=True)
class SplitsInfo:
    """How a `Splits` was made, so that a checkpoint or a study can tell whether two runs
    saw the same data.

    Attributes:
        dataset: the dataset name or path given to `make_splits`.
        split_seed: seed of the subset and validation draws (not the training seed).
        val_size: validation images held out of the training split.
        subset: training images asked for, or None for all.
    """

    dataset: str
    split_seed: int
    val_size: int
    subset: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, eq=False)
class Splits:
    """The parts of a dataset a run uses.

    Attributes:
        train: the training images.
        val: validation images carved out of the training split (never overlapping
            ``train``); empty when ``val_fraction`` was 0.
        test: the official test split, only when `make_splits` was asked ``with_test``.
        info: how `make_splits` made these parts; None for hand-built splits.
    """

    train: ImageData
    val: ImageData
    test: ImageData | None = None
    info: SplitsInfo | None = None

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def image_size(self) -> int:
        """The training images' `ImageData.side` in pixels (the stored height)."""
        return self.train.side

    def fingerprint(self) -> str:
        """A short hash of the training and validation images and labels: equal for the
        same data in the same order, different (with overwhelming probability) otherwise."""
        return _fingerprint(self.train, self.val)


def _fingerprint(*parts: ImageData) -> str:
    digest = hashlib.blake2b(digest_size=10)
    for part in parts:
        digest.update(repr((tuple(part.images.shape), part.classes)).encode())
        digest.update(part.labels.cpu().numpy().tobytes())
        digest.update(part.images.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def as_index(indices: torch.Tensor | np.ndarray | Sequence[int], n: int) -> torch.Tensor:
    idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
    if idx.dtype == torch.bool:
        if idx.shape != (n,):
            raise DataError(f"a boolean mask must have shape ({n},), got {tuple(idx.shape)}")
        return idx.nonzero().flatten()
    if idx.numel() == 0:
        return torch.zeros(0, dtype=torch.int64)
    if idx.is_floating_point() or idx.is_complex():
        raise DataError(f"indices must be integers, got {idx.dtype}")
    idx = idx.to(torch.int64).flatten()
    if int(idx.min()) < -n or int(idx.max()) >= n:
        raise DataError(f"indices span {int(idx.min())}..{int(idx.max())} but there are {n} images")
    idx = idx.cpu()
    return torch.where(idx < 0, idx + n, idx)
