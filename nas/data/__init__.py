"""Datasets and a device-resident data pipeline.

Everything a training run reads goes through this package: `load_dataset` reads one split
of a dataset into memory, `make_splits` turns it into train / validation (/ test) parts,
and `DeviceLoader` keeps a part on the training device and serves shuffled, augmented,
normalised batches from it with batched tensor operations.

Conventions
-----------
* Images are ``uint8`` tensors of shape ``(N, C, H, W)`` with values 0..255, RGB channel
  order, on the CPU (`ImageData.images`); labels are ``int64`` of shape ``(N,)`` with values
  in ``0 .. len(classes) - 1``. ``classes[i]`` is the name of class ``i``.
* Sizes are in pixels. `ImageData.side` (and `Splits.image_size`) is the stored height
  ``H``, the square side a model uses when nothing else sets it; every built-in dataset
  is square. `DeviceLoader` yields ``float`` batches ``(B, C, res, res)``,
  normalised per channel as ``(x / 255 - mean) / std`` and resized bilinearly to ``res``
  (antialiased when that shrinks the stored size).
* ``mean`` and ``std`` are per channel, on the 0..1 scale. CIFAR-10 and CIFAR-100 carry their
  training-set statistics; every other dataset carries none and `DeviceLoader` then uses
  0.5 / 0.5 (so values lie in -1..1) unless told otherwise.
* Every subset and validation draw of `make_splits` is a pure function of the data and
  its ``split_seed`` (default 0; not the training seed, not the global RNG; recorded in
  `Splits.info`), so the candidates of a study share one split while their training seeds
  vary. Every
  `DeviceLoader` shuffle and augmentation is a pure function of its ``seed`` and epoch.

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
folders under ``root/imagefolder/`` (each with a ``.lock`` file beside it, so that of
several processes missing the cache at once only one decodes). Nothing is ever evicted.
Decoding an image folder says on stderr where its cache goes and how big it is.

Decisions
---------
* Unreadable images in an image folder (corrupt, truncated, not an image although named
  like one) are skipped: one `warnings.warn` per load (cache hits included) counts them and
  names the paths and reasons (the first 20), and `ImageData.skipped` lists them all. An
  image folder with no readable image at all is a `DataError`. Files whose extension is
  not an image extension are ignored.
* Images of different sizes in one folder are resized (Pillow, bilinear) to the most
  common size, with a warning that says how many were resized; ties go to the larger
  size. Grey, palette and RGBA images are converted to RGB (alpha is dropped).
* `make_splits` holds the validation images out of the whole training split first
  (``val_size``, default 2,500 but at most a fifth; or ``val_fraction``), then draws the
  stratified ``subset`` of training images from the rest, both by ``split_seed``. So the
  validation images are the same for every subset and every training seed (what lets a
  study compare candidates on one yardstick), and ``subset`` sizes the training set alone.
  Train and val never share an image; the test split is read only with ``with_test=True``. A subset
  smaller than the number of classes is a `DataError`; a train, validation or subset part
  that still lacks some classes (rare classes, a validation split with fewer images than
  classes) is a warning naming them.
"""

from __future__ import annotations

from .cifar import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from .containers import DataError, ImageData, Splits, SplitsInfo
from .load import data_dir, load_dataset, make_splits
from .loader import DeviceLoader
from .stratify import stratified_split, stratified_subset
from .synthetic import synthetic

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DataError",
    "DeviceLoader",
    "ImageData",
    "Splits",
    "SplitsInfo",
    "data_dir",
    "load_dataset",
    "make_splits",
    "stratified_split",
    "stratified_subset",
    "synthetic",
]
