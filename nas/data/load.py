"""Entry points: `load_dataset` reads one split of a dataset by name or path,
`make_splits` turns it into train / validation (/ test) parts, `data_dir` is where data lives."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from .cifar import CIFAR_ALIASES, load_cifar
from .containers import DataError, ImageData, Splits, SplitsInfo
from .folder import SPLITS, load_image_folder
from .stratify import stratified_split, stratified_subset
from .synthetic import parse_synthetic, synthetic

__all__ = ["data_dir", "load_dataset", "make_splits"]

_MAX_NAMED = 5  # class names shown in a warning about missing classes


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
            image files, so a changed folder is decoded again). A decode says on stderr
            where its cache goes and, once written, its size in MiB; a large folder is
            decoded in worker processes with a progress bar after two seconds. Processes
            that miss the same cache together take turns on a lock file beside it
            (``<cache>.npz.lock``, left in place): one decodes, the others say they are
            waiting and then read its cache.
        download: for CIFAR, download the official archive into ``root`` (MD5-checked)
            when neither it nor the extracted folder is there. An archive or folder already
            in ``root`` is used as is.
        split: ``"train"`` or ``"test"``. Validation splits come from `make_splits`.

    Raises:
        DataError: unknown name, missing or corrupt files, no network for a download.
    """
    if split not in SPLITS:
        raise DataError(f"split must be 'train' or 'test', got {split!r} (validation splits come from make_splits)")
    key = name_or_path.strip().lower()
    if key in CIFAR_ALIASES:
        return load_cifar(CIFAR_ALIASES[key], data_dir(root), download=download, split=split)
    if key == "synthetic" or key.startswith("synthetic:"):
        n, num_classes, size = parse_synthetic(name_or_path)
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
    return load_image_folder(path, split, data_dir(root))


def make_splits(
    name_or_path: str,
    *,
    val_fraction: float = 0.1,
    subset: int | None = None,
    split_seed: int = 0,
    with_test: bool = False,
    root: str | Path | None = None,
    download: bool = True,
    seed: int | None = None,
) -> Splits:
    """Train / validation (/ test) parts of a dataset, stratified by class and seeded.

    The training split is read; when ``subset`` is given, a stratified subset of that many
    images is taken first (`stratified_subset`), then a stratified ``val_fraction`` of what
    remains is held out as validation (`stratified_split`), so train + val together have
    ``subset`` images. The test split is read only when ``with_test`` is true (final
    evaluation); otherwise ``Splits.test`` is ``None`` and no test file is touched.

    Requests that cannot be honoured as asked: a ``subset`` smaller than the number of
    classes in the training split is refused (`DataError`: no draw could give every class an
    image, so the run would learn another task). A part that lacks classes for other
    reasons only warns (one `warnings.warn` per part), because the run is still usable, e.g.
    as a smoke test: a subset of very rare classes, a training part that gives a class's
    only images to validation, or a validation split with fewer images than classes (its
    accuracy then leaves some classes out). A ``val_fraction > 0`` that rounds to no
    validation image, or to no training image, is refused.

    Args:
        val_fraction: share of the (subset of the) training split held out, ``0 <= f < 1``;
            0 gives an empty validation split (final training on all training images).
        subset: number of training images to use (train + val), or ``None`` for all.
        split_seed: seed of the subset and validation draws, and the only thing besides
            the data and the arguments above that the split depends on (not the global
            RNG, not a training seed): keep it fixed across a study so that every candidate
            is trained and validated on the same images while training seeds vary.
            Recorded in ``Splits.info``.
        root, download: as in `load_dataset`.
        seed: deprecated name of ``split_seed`` (a `DeprecationWarning`), removed in the
            next release; a non-zero ``split_seed`` that differs from it is a `TypeError`.
    """
    if seed is not None:
        if split_seed != 0 and split_seed != seed:
            raise TypeError("make_splits() got both split_seed and its deprecated alias seed; pass split_seed only")
        warnings.warn(
            "make_splits(seed=...) is deprecated; pass split_seed=... (the split, not the training seed)",
            DeprecationWarning,
            stacklevel=2,
        )
        split_seed = seed
    split_seed = int(split_seed)
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    full = load_dataset(name_or_path, root=root, download=download, split="train")
    base = full.name.rsplit(":", 1)[0] if full.name.endswith(":train") else full.name
    if subset is not None:
        if subset < 1 or subset > len(full):
            raise DataError(f"subset must be between 1 and {len(full)} (the training images of {base}), got {subset}")
        present = _present(full.labels, len(full.classes))
        if subset < int(present.sum()):
            raise DataError(
                f"subset={subset} is smaller than the {int(present.sum())} classes of {base}, so some classes "
                f"would have no image; use a subset of at least {int(present.sum())}"
            )
        full = full.subset(stratified_subset(full.labels, subset, split_seed))
        _warn_missing(f"the subset of {_images(subset)} of {base}", present, full, "so use a larger subset")
    keep, held = stratified_split(full.labels, val_fraction, split_seed)
    if val_fraction > 0 and held.numel() == 0:
        raise DataError(
            f"val_fraction={val_fraction} of {len(full)} images leaves an empty validation split; "
            "use a larger subset or val_fraction"
        )
    if keep.numel() == 0:
        raise DataError(f"val_fraction={val_fraction} of {len(full)} images leaves no training images")
    train = _renamed(full.subset(keep), f"{base}:train")
    val = _renamed(full.subset(held), f"{base}:val")
    present = _present(full.labels, len(full.classes))
    _warn_missing(f"the training split of {base} ({_images(len(train))})", present, train,
                  "so the model never sees them (use a smaller val_fraction or a larger subset)")
    if len(val):
        _warn_missing(f"the validation split of {base} ({_images(len(val))})", present, val,
                      "so its accuracy leaves them out")
    test = None
    if with_test:
        test = load_dataset(name_or_path, root=root, download=download, split="test")
        if test.classes != train.classes:
            raise DataError(f"the test split of {base} has other classes than its training split")
    info = SplitsInfo(dataset=name_or_path, split_seed=split_seed, val_fraction=float(val_fraction), subset=subset)
    return Splits(train=train, val=val, test=test, info=info)


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def _present(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Boolean mask of the classes with at least one image among ``labels``."""
    return torch.bincount(labels, minlength=num_classes) > 0


def _warn_missing(part: str, expected: torch.Tensor, data: ImageData, consequence: str) -> None:
    """Warn, in one sentence, when classes in ``expected`` (a mask) have no image in ``data``."""
    missing = (expected & ~_present(data.labels, len(data.classes))).nonzero().flatten().tolist()
    if not missing:
        return
    names = ", ".join(data.classes[i] for i in missing[:_MAX_NAMED]) + (", ..." if len(missing) > _MAX_NAMED else "")
    warnings.warn(
        f"{part} has no image of {len(missing)} of its {int(expected.sum())} classes ({names}), {consequence}",
        stacklevel=3,
    )


def _renamed(data: ImageData, name: str) -> ImageData:
    return ImageData(data.images, data.labels, data.classes, name, data.mean, data.std, data.skipped)
