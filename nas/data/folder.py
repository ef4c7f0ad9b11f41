"""Image folders ``<root>/{train,test}/<class>/<image>``: listing, decoding (in worker
processes for large folders), and the decoded-array cache, which concurrent processes
share through a file lock so that one of them decodes.

What the cache does is said on stderr with plain lines (``print``, not warnings: these
report progress, not problems, and the command lines show them as they are): when a
decode starts (and where its cache goes), when the cache is written (its size in MiB),
and, once, when a process waits for another one decoding the same folder. A cache hit
says nothing."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import multiprocessing
import os
import re
import sys
import warnings
from collections import Counter
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no flock, concurrent cache misses each decode (see _decode_lock)
    fcntl = None  # type: ignore[assignment]

import numpy as np
import torch

from ..atomic import atomic_write
from .containers import DataError, ImageData
from .progress import progress

__all__ = ["SPLITS", "class_names", "load_image_folder"]

SPLITS = ("train", "test")

_IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp"}
)
_CACHE_VERSION = 1
_POOL_MIN_IMAGES = 2000  # decode in worker processes from this many images on
_MAX_WORKERS = 8
_CHUNK = 500
_MAX_NAMED = 20  # skipped images named in the warning (all are in ImageData.skipped)


def class_names(path: Path) -> tuple[str, ...]:
    """Sorted union of the class folder names of every split present (shared indices)."""
    names: set[str] = set()
    for split in SPLITS:
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


def load_image_folder(path: Path, split: str, base: Path) -> ImageData:
    split_dir = path / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} does not exist: an image folder needs {split}/<class>/<image> files")
    classes = class_names(path)
    if not classes:
        raise DataError(f"{split_dir} has no class sub-folders: an image folder needs {split}/<class>/<image> files")
    entries = _list_images(split_dir, classes)
    if not entries:
        raise DataError(f"{split_dir} contains no image files ({', '.join(sorted(_IMAGE_EXTENSIONS))})")
    _check_classes(path, split, classes, entries)
    cache = _cache_path(path, split, classes, entries, base)
    name = f"{path.resolve().name}:{split}"
    cached = _read_cache(cache, classes)
    if cached is None:
        with _decode_lock(cache, split_dir):
            # whoever held the lock before us may have just written the cache
            cached = _read_cache(cache, classes)
            if cached is None:
                _say(f"decoding {len(entries)} images in {split_dir} once; the arrays will be cached in {cache}")
                cached = _decode_folder(split_dir, entries)
                _write_cache(cache, classes, *cached)
    images, labels, skipped, notes = cached
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return ImageData(torch.from_numpy(images), torch.from_numpy(labels), classes, name=name, skipped=skipped)


def _check_classes(path: Path, split: str, classes: tuple[str, ...], entries: list) -> None:
    """Refuse a training split without an image of some class (a class folder of train/ or
    test/: the two share the class indices), which no model could learn. A test split
    without some class is allowed: its accuracy leaves the class out."""
    counts = Counter(label for *_, label in entries)
    empty = [name for label, name in enumerate(classes) if counts[label] == 0]
    if empty and split == "train":
        shown = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
        union = (", the class folders of train/ and test/ together"
                 if any(not (path / split / name).is_dir() for name in empty) else "")
        raise DataError(f"{path / split} has no image of class{'es' if len(empty) > 1 else ''} {shown} "
                        f"({len(empty)} of the {len(classes)} classes{union}); give every class training "
                        "images, or remove its folders")


def _say(message: str) -> None:
    """One line on stderr about slow work on the cache: what happens, not a problem, so not
    a warning (warnings are deduplicated per call site and print as ``warning: ...``)."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _decode_lock(cache: Path, split_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<cache>.lock`` so that of several processes that miss the
    cache together one decodes and the others wait, then read its cache.

    The lock file is left in place: deleting it would let a newcomer lock a fresh file
    while a waiter still holds the old one. Without ``fcntl`` (Windows), or where the lock
    file cannot be made or locked (a read-only cache folder, a file system without
    ``flock``), every process decodes for itself; `atomic_write` still keeps the cache whole.
    """
    if fcntl is None:
        yield
        return
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(cache.with_name(cache.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"waiting for another process decoding {split_dir}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # e.g. ENOLCK: no locking on this file system
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


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
    with progress(len(paths), desc, unit="img") as bar:
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
    """Write the decoded arrays atomically (temporary file, then rename) and say where and
    how big (MiB) on stderr; a failure only warns."""
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
        size = cache.stat().st_size
    except OSError as err:
        warnings.warn(f"could not write the decoded-image cache {cache} ({err}); the next load decodes again", stacklevel=4)
        return
    _say(f"cached {len(images)} images in {cache} ({size / 2**20:.3g} MiB)")
