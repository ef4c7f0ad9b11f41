"""Datasets and a device-resident data pipeline.

Everything a training run reads goes through this module: `load_dataset` reads one split
of a dataset into memory, `make_splits` turns it into train / validation (/ test) parts,
and `DeviceLoader` keeps a part on the training device and serves shuffled, augmented,
normalised batches from it with batched tensor operations.

Conventions
-----------
* Images are ``uint8`` tensors of shape ``(N, C, H, W)`` with values 0..255, RGB channel
  order, on the CPU (`ImageData.images`); labels are ``int64`` of shape ``(N,)`` with values
  in ``0 .. len(classes) - 1``. ``classes[i]`` is the name of class ``i``.
* Sizes are in pixels. `Splits.image_size` is the stored height ``H``; every built-in
  dataset is square. `DeviceLoader` yields ``float`` batches ``(B, C, res, res)``,
  normalised per channel as ``(x / 255 - mean) / std``.
* ``mean`` and ``std`` are per channel, on the 0..1 scale. CIFAR-10 and CIFAR-100 carry their
  training-set statistics; every other dataset carries none and `DeviceLoader` then uses
  0.5 / 0.5 (so values lie in -1..1) unless told otherwise.
* Every split, subset and shuffle is a pure function of its ``seed`` (and epoch).

Dataset names (`load_dataset`, `make_splits`)
---------------------------------------------
* ``"cifar10"``, ``"cifar100"``: the official python archives (see `load_dataset`).
* ``"synthetic[:N[:C[:S]]]"``: `synthetic` data, ``N`` training images (default 1000) of
  ``C`` classes (default 10) and side ``S`` (default 32); the test split has ``N // 5``
  images (at least one) drawn with another seed from the same class patterns.
* Anything else is a path to an image folder ``<path>/{train,test}/<class>/<image>`` (images
  may sit in sub-folders of a class folder). The classes are the sorted union of the class
  folder names of ``train/`` and ``test/``, so both splits share label indices. Names are
  matched first: to read a folder called ``cifar10`` in the working directory, pass
  ``"./cifar10"``.

Data folder
-----------
``root`` (default: ``$EFFNAS_DATA``, else ``~/.cache/effnas/data``; see `data_dir`) holds
the CIFAR archives or their extracted folders, and the decoded-array caches of image
folders under ``root/imagefolder/``.

Decisions
---------
* Unreadable images in an image folder (corrupt, truncated, not an image although named
  like one) are skipped: one `warnings.warn` per load (cache hits included) counts them and
  names the paths and reasons (the first 20), and `ImageData.skipped` lists them all. An image folder with no readable image at
  all is a `DataError`. Files whose extension is not an image extension are ignored.
* Images of different sizes in one folder are resized (Pillow, bilinear) to the most
  common size, with a warning that says how many were resized; ties go to the larger
  size. Grey, palette and RGBA images are converted to RGB (alpha is dropped).
* `make_splits` takes the stratified ``subset`` of the training split first and then
  carves the validation split out of that subset, so ``subset`` bounds the number of
  images a run sees (train + val) and val stays a ``val_fraction`` of it. Train and val
  never share an image; the test split is read only with ``with_test=True``.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import io
import math
import multiprocessing
import os
import pickle
import re
import sys
import tarfile
import urllib.error
import urllib.request
import warnings
import zlib
from collections import Counter
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from space.errors import UserError

from .atomic import atomic_write

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DataError",
    "DeviceLoader",
    "ImageData",
    "Splits",
    "data_dir",
    "load_dataset",
    "make_splits",
    "stratified_split",
    "stratified_subset",
    "synthetic",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

_DEFAULT_MEAN = 0.5
_DEFAULT_STD = 0.5
_SPLITS = ("train", "test")


class DataError(UserError):
    """A dataset that cannot be read as asked (missing, corrupt, empty, bad argument).

    Its message is one sentence meant for the user; it is a `ValueError`.
    """


# --------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------


def _as_channel_stats(value: Sequence[float] | None, channels: int, what: str) -> tuple[float, ...] | None:
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
            raise DataError(f"ImageData.images must be a uint8 tensor (N, C, H, W), got {_describe(images)}")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
            raise DataError(f"ImageData.labels must be an int64 tensor (N,), got {_describe(labels)}")
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
        object.__setattr__(self, "mean", _as_channel_stats(self.mean, channels, "mean"))
        object.__setattr__(self, "std", _as_channel_stats(self.std, channels, "std"))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        shape = tuple(self.images.shape[1:])
        return f"ImageData(name={self.name!r}, n={len(self)}, shape={shape}, classes={len(self.classes)})"

    def subset(self, indices: torch.Tensor | np.ndarray | Sequence[int]) -> ImageData:
        """The images at ``indices`` (integer positions, or a boolean mask of length N), in
        that order, as a new `ImageData` (copies; metadata is kept)."""
        idx = _as_index(indices, len(self)).to(self.images.device)
        return ImageData(
            images=self.images.index_select(0, idx),
            labels=self.labels.index_select(0, idx),
            classes=self.classes,
            name=self.name,
            mean=self.mean,
            std=self.std,
            skipped=self.skipped,
        )


@dataclass(frozen=True, eq=False)
class Splits:
    """The parts of a dataset a run uses.

    Attributes:
        train: the training images.
        val: validation images carved out of the training split (never overlapping
            ``train``); empty when ``val_fraction`` was 0.
        test: the official test split, only when `make_splits` was asked ``with_test``.
    """

    train: ImageData
    val: ImageData
    test: ImageData | None = None

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def image_size(self) -> int:
        """Stored image height in pixels (images are square for every built-in dataset)."""
        return int(self.train.images.shape[2])


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def _as_index(indices: torch.Tensor | np.ndarray | Sequence[int], n: int) -> torch.Tensor:
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


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


def data_dir(root: str | Path | None = None) -> Path:
    """The data folder: ``root`` if given, else ``$EFFNAS_DATA``, else ``~/.cache/effnas/data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("EFFNAS_DATA")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/effnas/data").expanduser()


def load_dataset(
    name_or_path: str,
    *,
    root: str | Path | None = None,
    download: bool = True,
    split: str = "train",
) -> ImageData:
    """Read one split (``"train"`` or ``"test"``) of a dataset into memory.

    Args:
        name_or_path: ``"cifar10"``, ``"cifar100"``, ``"synthetic[:N[:C[:S]]]"`` or the path
            of an image folder ``<path>/{train,test}/<class>/<image>`` (see the module
            docstring).
        root: the data folder (see `data_dir`). For CIFAR it holds the extracted
            ``cifar-10-batches-py`` / ``cifar-100-python`` folder or the official
            ``.tar.gz`` (read directly, never extracted); for image folders it holds the
            decoded-array cache (``root/imagefolder/<name>-<split>-<hash>.npz``, keyed by
            the folder's path and the relative paths, sizes and modification times of its
            image files, so a changed folder is decoded again; the first decode of a large folder uses worker
            processes and shows progress on stderr after two seconds).
        download: for CIFAR, download the official archive into ``root`` (MD5-checked)
            when neither it nor the extracted folder is there. An archive or folder already
            in ``root`` is used as is.
        split: ``"train"`` or ``"test"``. Validation splits come from `make_splits`.

    Raises:
        DataError: unknown name, missing or corrupt files, no network for a download.
    """
    if split not in _SPLITS:
        raise DataError(f"split must be 'train' or 'test', got {split!r} (validation splits come from make_splits)")
    key = name_or_path.strip().lower()
    if key in _CIFAR_ALIASES:
        return _load_cifar(_CIFAR_ALIASES[key], data_dir(root), download=download, split=split)
    if key == "synthetic" or key.startswith("synthetic:"):
        n, num_classes, size = _parse_synthetic(name_or_path)
        if split == "test":
            data = synthetic(max(1, n // 5), num_classes, size, seed=1)
        else:
            data = synthetic(n, num_classes, size, seed=0)
        return _renamed(data, f"{name_or_path}:{split}")
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise DataError(
            f"unknown dataset {name_or_path!r}: expected 'cifar10', 'cifar100', "
            "'synthetic[:N[:classes[:size]]]' or the path of an image folder with train/ and test/ sub-folders"
        )
    if not path.is_dir():
        raise DataError(f"{path} is not a folder: an image folder has train/ and test/ sub-folders of class folders")
    return _load_image_folder(path, split, data_dir(root))


def make_splits(
    name_or_path: str,
    *,
    val_fraction: float = 0.1,
    subset: int | None = None,
    seed: int = 0,
    with_test: bool = False,
    root: str | Path | None = None,
    download: bool = True,
) -> Splits:
    """Train / validation (/ test) parts of a dataset, stratified by class and seeded.

    The training split is read; when ``subset`` is given, a stratified subset of that many
    images is taken first (`stratified_subset`), then a stratified ``val_fraction`` of what
    remains is held out as validation (`stratified_split`), so train + val together have
    ``subset`` images. The test split is read only when ``with_test`` is true (final
    evaluation); otherwise ``Splits.test`` is ``None`` and no test file is touched.

    Args:
        val_fraction: share of the (subset of the) training split held out, ``0 <= f < 1``;
            0 gives an empty validation split (final training on all training images).
        subset: number of training images to use (train + val), or ``None`` for all.
        seed: seed of the subset and validation draws.
        root, download: as in `load_dataset`.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    full = load_dataset(name_or_path, root=root, download=download, split="train")
    base = full.name.rsplit(":", 1)[0] if full.name.endswith(":train") else full.name
    if subset is not None:
        if subset < 1 or subset > len(full):
            raise DataError(f"subset must be between 1 and {len(full)} (the training images of {base}), got {subset}")
        full = full.subset(stratified_subset(full.labels, subset, seed))
    keep, held = stratified_split(full.labels, val_fraction, seed)
    if val_fraction > 0 and held.numel() == 0:
        raise DataError(
            f"val_fraction={val_fraction} of {len(full)} images leaves an empty validation split; "
            "use a larger subset or val_fraction"
        )
    if keep.numel() == 0:
        raise DataError(f"val_fraction={val_fraction} of {len(full)} images leaves no training images")
    train = _renamed(full.subset(keep), f"{base}:train")
    val = _renamed(full.subset(held), f"{base}:val")
    test = None
    if with_test:
        test = load_dataset(name_or_path, root=root, download=download, split="test")
        if test.classes != train.classes:
            raise DataError(f"the test split of {base} has other classes than its training split")
    return Splits(train=train, val=val, test=test)


def _renamed(data: ImageData, name: str) -> ImageData:
    return ImageData(data.images, data.labels, data.classes, name, data.mean, data.std, data.skipped)


# --------------------------------------------------------------------------------------
# Stratified sampling
# --------------------------------------------------------------------------------------


def _check_labels(labels: torch.Tensor) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise DataError(f"labels must be a 1-D integer tensor, got {_describe(labels)}")
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


# --------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------

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


def _parse_synthetic(name: str) -> tuple[int, int, int]:
    parts = name.strip().split(":")[1:]
    values = [1000, 10, 32]
    if len(parts) > 3 or not all(re.fullmatch(r"\d+", p) for p in parts):
        raise DataError(f"bad synthetic dataset name {name!r}: expected 'synthetic[:N[:classes[:size]]]' with integers")
    for i, p in enumerate(parts):
        values[i] = int(p)
    n, num_classes, size = values
    if n < 1 or num_classes < 1 or size < 1:
        raise DataError(f"bad synthetic dataset name {name!r}: N, classes and size must be at least 1")
    return n, num_classes, size


# --------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CifarSource:
    title: str
    url: str
    md5: str
    archive: str
    folder: str
    files: dict[str, tuple[str, ...]]
    meta_file: str
    label_key: bytes
    names_key: bytes
    mean: tuple[float, ...]
    std: tuple[float, ...]


_CIFAR_SOURCES: dict[str, _CifarSource] = {
    "cifar10": _CifarSource(
        title="CIFAR-10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        archive="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    ),
    "cifar100": _CifarSource(
        title="CIFAR-100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        archive="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        files={"train": ("train",), "test": ("test",)},
        meta_file="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
    ),
}
_CIFAR_ALIASES = {"cifar10": "cifar10", "cifar-10": "cifar10", "cifar100": "cifar100", "cifar-100": "cifar100"}

# The official batch files are pickled dicts of bytes, lists of ints and one numpy uint8
# array. Only what rebuilds a numpy array may be looked up; every other global is refused,
# so a tampered file cannot run code.
_NP_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _NP_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _NP_RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals needed to rebuild numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed") from None


def _unpickle(f: BinaryIO, where: str) -> dict:
    """Unpickle one official CIFAR batch file (``encoding="bytes"``: keys are bytes)."""
    try:
        obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except Exception as err:  # any failure to parse untrusted bytes is a data problem
        raise DataError(f"{where} is not a valid CIFAR batch file ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict):
        raise DataError(f"{where} is not a valid CIFAR batch file (it holds a {type(obj).__name__}, not a dict)")
    return obj


def _open_url(url: str, timeout: float) -> Any:
    """Open ``url`` for reading (a seam for tests; ``file://`` URLs work too)."""
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - fixed https URLs


def _download(src: _CifarSource, dest: Path) -> None:
    """Download ``src.url`` to ``dest`` through a temporary file, checking the MD5."""
    try:
        with atomic_write(dest) as out:
            digest = hashlib.md5(usedforsecurity=False)
            try:
                with _open_url(src.url, timeout=60) as response:
                    total = _content_length(response)
                    with _progress(total, f"downloading {src.archive}", unit="B") as bar:
                        while chunk := response.read(1 << 20):
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
            except (OSError, http.client.HTTPException, ValueError) as err:
                raise DataError(
                    f"could not download {src.title} from {src.url} ({err}); without network, put {src.archive} "
                    f"or the extracted {src.folder}/ folder in {dest.parent} (or pass root= / set EFFNAS_DATA)"
                ) from err
            if digest.hexdigest() != src.md5:
                raise DataError(
                    f"the download of {src.url} has MD5 {digest.hexdigest()}, expected {src.md5}; "
                    "it was deleted, try again or fetch the archive by hand"
                )
    except OSError as err:  # the data folder itself cannot be written
        raise DataError(f"cannot write {src.title} into {dest.parent} ({err}); pass a writable root") from err


def _content_length(response: Any) -> int | None:
    try:
        value = response.headers.get("Content-Length")
        return int(value) if value else None
    except (AttributeError, TypeError, ValueError):
        return None


def _load_cifar(key: str, base: Path, *, download: bool, split: str) -> ImageData:
    src = _CIFAR_SOURCES[key]
    folder, archive = base / src.folder, base / src.archive
    names = [*src.files[split], src.meta_file]
    if folder.is_dir():
        blobs = {}
        for name in names:
            path = folder / name
            if not path.is_file():
                raise DataError(f"{path} is missing: the {src.title} folder {folder} is incomplete")
            with open(path, "rb") as f:
                blobs[name] = _unpickle(f, str(path))
    else:
        if not archive.is_file():
            if not download:
                raise DataError(
                    f"{src.title} is not in {base}: put {src.archive} or the extracted {src.folder}/ folder "
                    "there (or pass root= / set EFFNAS_DATA), or allow download"
                )
            _download(src, archive)
        blobs = _read_archive(archive, src, names)
    data, labels = [], []
    for name in src.files[split]:
        blob = blobs[name]
        where = f"{src.title} file {name}"
        try:
            array = np.asarray(blob[b"data"])
            label_list = np.asarray(blob[src.label_key], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{where} lacks valid b'data' / {src.label_key!r} entries ({err})") from err
        if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != 3 * 32 * 32:
            raise DataError(f"{where} holds {array.dtype} data of shape {array.shape}, expected uint8 (N, 3072)")
        if label_list.shape != (array.shape[0],):
            raise DataError(f"{where} has {array.shape[0]} images but {label_list.size} labels")
        data.append(array.reshape(-1, 3, 32, 32))
        labels.append(label_list)
    try:
        classes = tuple(
            c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in blobs[src.meta_file][src.names_key]
        )
    except (KeyError, TypeError) as err:
        raise DataError(f"{src.title} file {src.meta_file} lacks its {src.names_key!r} entry") from err
    images = torch.from_numpy(np.concatenate(data))
    label_tensor = torch.from_numpy(np.concatenate(labels))
    return ImageData(images, label_tensor, classes, name=f"{key}:{split}", mean=src.mean, std=src.std)


def _read_archive(archive: Path, src: _CifarSource, names: list[str]) -> dict[str, dict]:
    """Unpickle the wanted members of a CIFAR ``.tar.gz`` in one sequential pass."""
    wanted = {f"{src.folder}/{name}": name for name in names}
    blobs: dict[str, dict] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                member_name = member.name[2:] if member.name.startswith("./") else member.name
                if member_name in wanted and member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None
                    blobs[wanted[member_name]] = _unpickle(io.BytesIO(f.read()), f"{archive}:{member_name}")
                    if len(blobs) == len(wanted):
                        break
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DataError(f"{archive} is not a readable {src.title} archive ({err}); delete it and try again") from err
    missing = [name for name in names if name not in blobs]
    if missing:
        raise DataError(f"{archive} lacks {src.folder}/{missing[0]}; it is not the official {src.title} archive")
    return blobs


# --------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------

_IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp"}
)
_CACHE_VERSION = 1
_POOL_MIN_IMAGES = 2000  # decode in worker processes from this many images on
_MAX_WORKERS = 8
_CHUNK = 500
_MAX_NAMED = 20  # skipped images named in the warning (all are in ImageData.skipped)


def _class_names(path: Path) -> tuple[str, ...]:
    """Sorted union of the class folder names of every split present (shared indices)."""
    names: set[str] = set()
    for split in _SPLITS:
        split_dir = path / split
        if split_dir.is_dir():
            names.update(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    return tuple(sorted(names))


def _list_images(split_dir: Path, classes: tuple[str, ...]) -> list[tuple[str, int, int, int]]:
    """``(relative path, size in bytes, mtime in ns, label)`` of every image file, sorted."""
    entries = []
    for label, cls in enumerate(classes):
        class_dir = split_dir / cls
        if not class_dir.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if filename.startswith(".") or os.path.splitext(filename)[1].lower() not in _IMAGE_EXTENSIONS:
                    continue
                full = os.path.join(dirpath, filename)
                rel = Path(os.path.relpath(full, split_dir)).as_posix()
                try:
                    st = os.stat(full)
                    entries.append((rel, st.st_size, st.st_mtime_ns, label))
                except OSError:  # e.g. a dangling symlink: listed, then skipped when decoded
                    entries.append((rel, -1, -1, label))
    return entries


def _cache_path(path: Path, split: str, classes: tuple[str, ...], entries: list, base: Path) -> Path:
    digest = hashlib.sha256()
    # the folder's own path is part of the key too: the cached warnings name its files
    digest.update(f"effnas-imagefolder v{_CACHE_VERSION}\n{path.resolve()}\n{split}\n".encode())
    digest.update(("\t".join(classes) + "\n").encode())
    for rel, size, mtime, label in entries:
        digest.update(f"{label}\t{rel}\t{size}\t{mtime}\n".encode())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.resolve().name) or "folder"
    return base / "imagefolder" / f"{slug}-{split}-{digest.hexdigest()[:20]}.npz"


def _load_image_folder(path: Path, split: str, base: Path) -> ImageData:
    split_dir = path / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} does not exist: an image folder needs {split}/<class>/<image> files")
    classes = _class_names(path)
    if not classes:
        raise DataError(f"{split_dir} has no class sub-folders: an image folder needs {split}/<class>/<image> files")
    entries = _list_images(split_dir, classes)
    if not entries:
        raise DataError(f"{split_dir} contains no image files ({', '.join(sorted(_IMAGE_EXTENSIONS))})")
    cache = _cache_path(path, split, classes, entries, base)
    name = f"{path.resolve().name}:{split}"
    cached = _read_cache(cache, classes)
    if cached is not None:
        images, labels, skipped, notes = cached
    else:
        images, labels, skipped, notes = _decode_folder(split_dir, entries)
        _write_cache(cache, classes, images, labels, skipped, notes)
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return ImageData(torch.from_numpy(images), torch.from_numpy(labels), classes, name=name, skipped=skipped)


def _decode_one(path: str) -> np.ndarray:
    """Decode one image file to an RGB ``uint8`` array ``(H, W, 3)``."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("P", "PA") and "transparency" in im.info:
            im = im.convert("RGBA")
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _decode_chunk(paths: list[str]) -> list[np.ndarray | str]:
    """Decode paths; an unreadable file yields its error message instead of an array."""
    out: list[np.ndarray | str] = []
    for p in paths:
        try:
            out.append(_decode_one(p))
        except Exception as err:  # Pillow raises many types for broken files
            out.append(f"{type(err).__name__}: {err}")
    return out


def _workers(n: int) -> int:
    if n < _POOL_MIN_IMAGES:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, _MAX_WORKERS))


def _decode_all(paths: list[str], desc: str) -> list[np.ndarray | str]:
    """Decode every path, in worker processes when there are many, with progress on stderr
    when it takes more than a couple of seconds."""
    workers = _workers(len(paths))
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    results: list[np.ndarray | str] = []
    with _progress(len(paths), desc, unit="img") as bar:
        if workers > 1:
            context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
            try:
                with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
                    for chunk_result in pool.map(_decode_chunk, chunks):
                        results.extend(chunk_result)
                        bar.update(len(chunk_result))
                return results
            except (OSError, BrokenProcessPool) as err:
                warnings.warn(f"decoding in worker processes failed ({err}); decoding in this process", stacklevel=4)
                results.clear()
                bar.reset()
        for chunk in chunks:
            chunk_result = _decode_chunk(chunk)
            results.extend(chunk_result)
            bar.update(len(chunk_result))
    return results


def _decode_folder(
    split_dir: Path, entries: list[tuple[str, int, int, int]]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], list[str]]:
    """Decode an image folder split: ``(images N,3,H,W, labels, skipped, warnings)``."""
    paths = [str(split_dir / rel) for rel, *_ in entries]
    decoded = _decode_all(paths, f"decoding {split_dir}")
    good: list[tuple[np.ndarray, int]] = []
    skipped: list[str] = []
    for path, (_, _, _, label), result in zip(paths, entries, decoded):
        if isinstance(result, str):
            skipped.append(f"{path} ({result})")
        else:
            good.append((result, label))
    notes: list[str] = []
    if skipped:
        shown = "; ".join(skipped[:_MAX_NAMED])
        more = f"; and {len(skipped) - _MAX_NAMED} more (see ImageData.skipped)" if len(skipped) > _MAX_NAMED else ""
        notes.append(f"skipped {len(skipped)} unreadable image(s) in {split_dir}: {shown}{more}")
    if not good:
        raise DataError(f"{split_dir} has no readable image: all {len(entries)} files failed to decode")
    sizes = Counter(array.shape[:2] for array, _ in good)
    (height, width), _ = max(sizes.items(), key=lambda kv: (kv[1], kv[0][0] * kv[0][1], kv[0]))
    images = np.empty((len(good), 3, height, width), dtype=np.uint8)
    resized = 0
    for i, (array, _) in enumerate(good):
        if array.shape[:2] != (height, width):
            array = _resize(array, height, width)
            resized += 1
        images[i] = array.transpose(2, 0, 1)
    if resized:
        notes.append(
            f"resized {resized} of {len(good)} images in {split_dir} to the most common size {height}x{width} (HxW)"
        )
    labels = np.fromiter((label for _, label in good), dtype=np.int64, count=len(good))
    return images, labels, tuple(skipped), notes


def _resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def _read_cache(
    cache: Path, classes: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], list[str]] | None:
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
            cached_classes = tuple(str(c) for c in z["classes"])
            skipped = tuple(str(s) for s in z["skipped"])
            notes = [str(s) for s in z["notes"]]
        ok = (
            images.dtype == np.uint8
            and images.ndim == 4
            and labels.dtype == np.int64
            and labels.shape == (images.shape[0],)
            and cached_classes == classes
        )
        if ok:
            return images, labels, skipped, notes
        problem = "unexpected contents"
    except Exception as err:  # a truncated or foreign file: decode again
        problem = f"{type(err).__name__}: {err}"
    warnings.warn(f"ignoring unreadable cache {cache} ({problem}); decoding the images again", stacklevel=4)
    return None


def _write_cache(
    cache: Path,
    classes: tuple[str, ...],
    images: np.ndarray,
    labels: np.ndarray,
    skipped: tuple[str, ...],
    notes: list[str],
) -> None:
    """Write the decoded arrays atomically (temporary file, then rename); a failure only warns."""
    try:
        with atomic_write(cache) as f:
            np.savez(
                f,
                images=images,
                labels=labels,
                classes=np.array(classes, dtype=str),
                skipped=np.array(skipped, dtype=str),
                notes=np.array(notes, dtype=str),
            )
    except OSError as err:
        warnings.warn(f"could not write the decoded-image cache {cache} ({err}); the next load decodes again", stacklevel=4)


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def reset(self, total: int | None = None) -> None:
        pass

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _progress(total: int | None, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr that appears only after 2 s (a silent stand-in without tqdm)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return _NoProgress()
    scale = unit == "B"
    return tqdm(
        total=total, desc=desc, unit=unit, unit_scale=scale, unit_divisor=1024 if scale else 1000,
        delay=2.0, file=sys.stderr, leave=False, dynamic_ncols=True,
    )


# --------------------------------------------------------------------------------------
# Device loader
# --------------------------------------------------------------------------------------


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs, platforms and Python versions)."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class DeviceLoader:
    """Batches of one `ImageData`, kept whole as ``uint8`` on ``device``.

    Each epoch, in training mode (``train=True``), the images are shuffled by a permutation
    drawn from a CPU `torch.Generator` seeded from ``(seed, epoch)``, then each batch is
    gathered on the device, randomly cropped (zero padding of ``pad`` pixels on every
    side, then a crop of the stored size at a random offset) and randomly mirrored
    left-right (``flip``), all as batched tensor operations; the random offsets and flips
    are drawn for the whole epoch from the same generator. Then, in both modes, the batch
    is converted to float, normalised as ``(x / 255 - mean) / std``, resized to
    ``resolution`` (bilinear, ``antialias=False``) when that differs from the stored
    size, and cast to ``dtype`` (in ``channels_last`` layout if asked).

    In evaluation mode (``train=False``) the order is fixed, nothing is augmented and the
    last partial batch is kept.

    Epochs: `__iter__` uses the current epoch and then advances it by one, so successive
    loops see epochs 0, 1, 2, ...; `set_epoch` fixes the epoch of the next loop (call it
    before each loop to be explicit, as with ``DistributedSampler``). Batches depend only
    on ``(seed, epoch)`` and the arguments, not on the device; the random draws are made
    for the whole epoch before sharding, so a rank's batches are its slice of the same plan.

    Sharding: with ``shard=(rank, world_size)`` every rank draws the same permutation and
    takes positions ``rank, rank + world_size, ...`` of its first
    ``world_size * (N // world_size)`` entries: disjoint, equal-sized parts. The
    ``N % world_size`` left-over images differ from epoch to epoch in training mode; in
    evaluation mode the same last images are left out every time (evaluate unsharded, or
    with N divisible by the world size, for an exact figure).

    Args:
        data: the images; moved to ``device`` once, as ``uint8``.
        batch_size: images per batch (per rank when sharded).
        resolution: output side in pixels; ``None`` keeps the stored size.
        mean, std: per-channel statistics on the 0..1 scale; default ``data.mean`` /
            ``data.std``, else 0.5 / 0.5.
        pad: zero padding of the random crop in pixels (0: no crop).
        flip: random horizontal flips with probability 0.5.
        drop_last: drop the last partial batch; default: in training mode when there is at
            least one full batch, never in evaluation mode.
        shard: ``(rank, world_size)`` for data-parallel training.
    """

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        *,
        device: torch.device | str = "cpu",
        train: bool = True,
        resolution: int | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        pad: int = 4,
        flip: bool = True,
        seed: int = 0,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        drop_last: bool | None = None,
        shard: tuple[int, int] | None = None,
    ):
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        if resolution is not None and resolution < 1:
            raise DataError(f"resolution must be at least 1 pixel, got {resolution}")
        if pad < 0:
            raise DataError(f"pad must be non-negative, got {pad}")
        if not dtype.is_floating_point:
            raise DataError(f"dtype must be a floating-point type, got {dtype}")
        n = len(data)
        if shard is not None:
            rank, world = (int(v) for v in shard)
            if world < 1 or not 0 <= rank < world:
                raise DataError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}")
            self._shard: tuple[int, int] | None = (rank, world)
            per_rank = n // world
        else:
            self._shard = None
            per_rank = n
        channels, height, width = (int(s) for s in data.images.shape[1:])
        mean_values = _as_channel_stats(mean, channels, "mean") or data.mean or (_DEFAULT_MEAN,) * channels
        std_values = _as_channel_stats(std, channels, "std") or data.std or (_DEFAULT_STD,) * channels
        if min(std_values) <= 0:
            raise DataError(f"std must be positive, got {std_values}")

        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.pad = int(pad) if self.train else 0
        self.flip = bool(flip) and self.train
        self.seed = int(seed)
        self.dtype = dtype
        self.channels_last = bool(channels_last)
        self.mean, self.std = mean_values, std_values
        self.drop_last = (self.train and per_rank >= self.batch_size) if drop_last is None else bool(drop_last)
        self.size = (height, width)
        self.resolution = resolution
        self._out_size = (resolution, resolution) if resolution is not None else (height, width)
        self._n = n
        self._per_rank = per_rank
        self._num_samples = (per_rank // self.batch_size) * self.batch_size if self.drop_last else per_rank
        self._epoch = 0

        self.images = data.images.to(self.device).contiguous()
        self.labels = data.labels.to(self.device)
        stats = torch.tensor([mean_values, std_values], dtype=torch.float32)
        self._scale = (1.0 / (255.0 * stats[1])).view(1, -1, 1, 1).to(self.device)
        self._shift = (stats[0] / stats[1]).view(1, -1, 1, 1).to(self.device)
        self._rows = torch.arange(height, device=self.device)
        self._cols = torch.arange(width, device=self.device)

    @property
    def num_samples(self) -> int:
        """Images served per epoch (by this rank), after sharding and ``drop_last``."""
        return self._num_samples

    @property
    def epoch(self) -> int:
        """The epoch the next loop over the loader will use."""
        return self._epoch

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-self._num_samples // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` (shuffle and augmentation seed) for the next loop."""
        self._epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``(images B,C,res,res in dtype, labels int64 B)`` on the device."""
        epoch = self._epoch
        self._epoch += 1
        return self._batches(epoch)

    def _plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Image order of this rank for ``epoch`` and per-position crop offsets / flips."""
        n = self._n
        offsets = flips = None
        if self.train:
            gen = torch.Generator().manual_seed(_mix_seed(self.seed, epoch))
            order = torch.randperm(n, generator=gen)
            if self.pad:
                offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=gen)
            if self.flip:
                flips = torch.rand(n, generator=gen) < 0.5
        else:
            order = torch.arange(n)
        if self._shard is not None:
            rank, world = self._shard
            positions = torch.arange(rank, self._per_rank * world, world)
        else:
            positions = torch.arange(n)
        positions = positions[: self._num_samples]
        order = order[positions].to(self.device)
        if offsets is not None:
            offsets = offsets[positions].to(self.device)
        if flips is not None:
            flips = flips[positions].to(self.device)
        return order, offsets, flips

    def _batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, offsets, flips = self._plan(epoch)
        for start in range(0, self._num_samples, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.images.index_select(0, idx)
            y = self.labels.index_select(0, idx)
            if offsets is not None or flips is not None:
                x = self._crop_flip(
                    x,
                    None if offsets is None else offsets[start : start + self.batch_size],
                    None if flips is None else flips[start : start + self.batch_size],
                )
            yield self._finish(x), y

    def _crop_flip(self, x: torch.Tensor, offsets: torch.Tensor | None, flips: torch.Tensor | None) -> torch.Tensor:
        """Random crop with zero padding and horizontal flip as one batched gather.

        Output pixel ``(i, j)`` of image ``b`` is padded pixel ``(dy_b + i, dx_b + j')``
        with ``j' = W - 1 - j`` when ``b`` is flipped, else ``j``; the gather reads the
        flattened padded images at ``row * padded_width + column``.
        """
        batch, channels, height, width = x.shape
        rows, cols = self._rows.expand(batch, -1), self._cols.expand(batch, -1)
        if flips is not None:
            cols = torch.where(flips[:, None], cols.flip(1), cols)
        if offsets is not None:
            x = F.pad(x, (self.pad, self.pad, self.pad, self.pad))
            rows = rows + offsets[:, :1]
            cols = cols + offsets[:, 1:]
        flat = (rows[:, :, None] * x.shape[3] + cols[:, None, :]).view(batch, 1, height * width)
        out = x.reshape(batch, channels, -1).gather(2, flat.expand(batch, channels, height * width))
        return out.view(batch, channels, height, width)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32).mul_(self._scale).sub_(self._shift)
        if self._out_size != self.size:
            x = F.interpolate(x, size=self._out_size, mode="bilinear", align_corners=False, antialias=False)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.to(dtype=self.dtype, memory_format=memory_format)
