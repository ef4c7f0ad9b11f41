"""CIFAR-10 / CIFAR-100 from the official python archives: download with an MD5 check,
read from the extracted folder or straight from the ``.tar.gz``, unpickling restricted to
numpy arrays."""

from __future__ import annotations

import hashlib
import http.client
import io
import pickle
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from ..atomic import atomic_write
from .containers import DataError, ImageData
from .progress import progress

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "CIFAR_ALIASES", "load_cifar"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


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
CIFAR_ALIASES = {"cifar10": "cifar10", "cifar-10": "cifar10", "cifar100": "cifar100", "cifar-100": "cifar100"}

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
                    with progress(total, f"downloading {src.archive}", unit="B") as bar:
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


def load_cifar(key: str, base: Path, *, download: bool, split: str) -> ImageData:
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
