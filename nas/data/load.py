"""Entry points: `load_dataset` reads one split of a dataset by name or path,
`make_splits` turns it into train / validation (/ test) parts, `data_dir` is where data lives."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Mapping

import torch

from .cifar import CIFAR_ALIASES, load_cifar
from .containers import DataError, ImageData, Splits, SplitsInfo
from .folder import SPLITS, class_names, load_image_folder
from .stratify import stratified_subset
from .synthetic import parse_synthetic, synthetic

__all__ = ["DEFAULT_VAL_SIZE", "data_dir", "default_val_size", "load_dataset", "make_splits"]

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


DEFAULT_VAL_SIZE = 2500
_DEFAULT_VAL_SHARE = 0.2


def default_val_size(num_train: int) -> int:
    """Validation images held out when neither ``val_size`` nor ``val_fraction`` is given:
    2,500 (a standard error of at most one point: ``sqrt(0.25 / 2500) = 0.01``), but never
    more than a fifth of the training split."""
    return min(DEFAULT_VAL_SIZE, int(round(_DEFAULT_VAL_SHARE * num_train)))


def make_splits(
    name_or_path: str,
    *,
    val_size: int | None = None,
    val_fraction: float | None = None,
    subset: int | None = None,
    split_seed: int = 0,
    with_test: bool = False,
    root: str | Path | None = None,
    download: bool = True,
    seed: int | None = None,
    subset_at_most: bool = False,
    names: Mapping[str, str] | None = None,
) -> Splits:
    """Train / validation (/ test) parts of a dataset, stratified by class and seeded.

    The training split is read and the validation images are held out of it *first*
    (stratified, drawn by ``split_seed`` alone); ``subset`` then draws the training images
    from the rest. So the validation images depend only on the data, ``val_size`` and
    ``split_seed``: they are the same for every subset and every training seed, which is
    what lets a study compare candidates trained on different budgets on one yardstick. Train
    and validation never share an image. The test split is read only when ``with_test`` is
    true (final evaluation); otherwise ``Splits.test`` is ``None`` and no test file is touched.

    Requests that cannot be honoured as asked: a ``subset`` smaller than the number of
    classes is refused (`DataError`: no draw could give every class an image, so the run
    would learn another task), and so is a subset larger than what validation leaves, or a
    validation split that leaves no training image. A part that lacks classes for other
    reasons only warns (one `warnings.warn` per part), because the run is still usable, e.g.
    as a smoke test: a subset of very rare classes, a training part that gives a class's
    only images to validation, or a validation split with fewer images than classes (its
    accuracy then leaves some classes out).

    Args:
        val_size: validation images held out of the training split; 0 gives an empty
            validation split (final training on all training images). Default: see
            `default_val_size` (2,500, at most a fifth of the split).
        val_fraction: the same as a share of the training split, ``0 <= f < 1``
            (``round(f * N)`` images); give at most one of the two.
        subset: number of training images to use (after validation is held out), or
            ``None`` for all that remain.
        split_seed: seed of the validation and subset draws, and the only thing besides
            the data and the arguments above that the split depends on (not the global
            RNG, not a training seed): keep it fixed across a study so that every candidate
            is validated on the same images while training seeds vary. Recorded in
            ``Splits.info``.
        root, download: as in `load_dataset`.
        subset_at_most: take ``subset`` as a cap: a larger one than validation leaves uses
            every remaining image (a search's budget on a small dataset) instead of failing.
        names: how errors call ``subset`` and ``val_size`` (a command passes its flags,
            ``{"subset": "--subset", "val_size": "--val-size"}``).
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
    name_of = {"subset": "subset", "val_size": "val_size", **(names or {})}

    def given(key: str, value) -> str:  # "subset=2000" in Python, "--subset 2000" for a flag
        n = name_of[key]
        return f"{n} {value}" if n.startswith("-") else f"{n}={value}"

    if val_size is not None and val_fraction is not None:
        raise DataError("give val_size or val_fraction, not both")
    if val_fraction is not None and not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_size is not None and (isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 0):
        raise DataError(f"val_size must be a whole number of images >= 0, got {val_size!r}")
    _check_folder(name_or_path, with_test)  # before decoding the training images, not after
    full = load_dataset(name_or_path, root=root, download=download, split="train")
    base = full.name.rsplit(":", 1)[0] if full.name.endswith(":train") else full.name
    if len(full.classes) < 2:
        raise DataError(f"{name_or_path} has one class ({full.classes[0]}) and a classifier needs at least 2; "
                        "give a dataset with two or more class folders")
    n = len(full)
    if val_size is None:
        val_size = int(round(val_fraction * n)) if val_fraction is not None else default_val_size(n)
        if val_fraction is not None and val_fraction > 0 and val_size == 0:
            raise DataError(f"val_fraction={val_fraction} of {n} images leaves an empty validation split; "
                            "use a larger val_fraction or give val_size")
    if val_size >= n:
        raise DataError(f"{given('val_size', val_size)} leaves no training images of the {n} in {base}; "
                        "use a smaller one")
    present = _present(full.labels, len(full.classes))
    held = stratified_subset(full.labels, val_size, split_seed)
    keep_mask = torch.ones(n, dtype=torch.bool)
    keep_mask[held] = False
    rest = full.subset(keep_mask)
    val = _renamed(full.subset(held), f"{base}:val")
    if subset is not None and subset_at_most and subset >= len(rest):
        subset = None
    if subset is not None:
        if subset < 1 or subset > len(rest):
            raise DataError(f"{name_of['subset']} must be between 1 and {len(rest)} (the training images of {base} "
                            f"left after {_images(val_size)} of validation), got {subset}")
        classes_left = int(_present(rest.labels, len(rest.classes)).sum())
        if subset < classes_left:
            raise DataError(
                f"{given('subset', subset)} is smaller than the {classes_left} classes of {base}, so some "
                f"classes would have no image; use a subset of at least {classes_left}"
            )
        train = rest.subset(stratified_subset(rest.labels, subset, split_seed))
    else:
        train = rest
    train = _renamed(train, f"{base}:train")
    # One warning for the training images, whichever draw lost the classes.
    part = (f"the subset of {_images(subset)} of {base}" if subset is not None
            else f"the training split of {base} ({_images(len(train))})")
    _warn_missing(part, present, train,
                  "so the model never sees them (use a smaller validation split or a larger subset)")
    if len(val):
        _warn_missing(f"the validation split of {base} ({_images(len(val))})", present, val,
                      "so its accuracy leaves them out")
    test = None
    if with_test:
        test = load_dataset(name_or_path, root=root, download=download, split="test")
        if test.classes != train.classes:
            raise DataError(f"the test split of {base} has other classes than its training split")
    info = SplitsInfo(dataset=name_or_path, split_seed=split_seed, val_size=len(val), subset=subset)
    return Splits(train=train, val=val, test=test, info=info)


def _check_folder(name_or_path: str, with_test: bool) -> None:
    """What can be told of an image folder without decoding it: a test split when one is
    asked for, and more than one class."""
    key = name_or_path.strip().lower()
    if key in CIFAR_ALIASES or key == "synthetic" or key.startswith("synthetic:"):
        return
    path = Path(name_or_path).expanduser()
    if not path.is_dir() or not (path / "train").is_dir():
        return  # load_dataset says what is missing
    if with_test and not (path / "test").is_dir():
        raise DataError(f"{path / 'test'} does not exist: an image folder needs test/<class>/<image> files "
                        "for the test split (or leave out --test)")
    classes = class_names(path)
    if len(classes) == 1:
        raise DataError(f"{path} has one class folder ({classes[0]}) and a classifier needs at least 2; "
                        "add train/<class>/ folders of the other classes")


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
