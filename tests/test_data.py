"""Tests for `nas.data`: CIFAR archives, image folders, splits, synthetic data, DeviceLoader.

No test touches the network: an autouse fixture lets `nas.data.cifar._open_url` open only
``file://`` URLs, and every test keeps its data folder under ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import pickle
import struct
import tarfile
import urllib.error
import warnings
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import nas.data.cifar as cifar
import nas.data.folder as folder_mod
import nas.data.load as load_mod
from nas.data import (
    CIFAR10_MEAN,
    CIFAR100_STD,
    DataError,
    DeviceLoader,
    ImageData,
    Splits,
    data_dir,
    load_dataset,
    make_splits,
    stratified_split,
    stratified_subset,
    synthetic,
)

REAL_CIFAR10 = Path("/work/shared/datasets/cifar10")


@pytest.fixture(autouse=True)
def _offline_and_private_cache(monkeypatch, tmp_path):
    """No network, and the default data folder is a fresh temporary one."""
    real_open = cifar._open_url

    def open_local_only(url, timeout):
        if not url.startswith("file:"):
            raise AssertionError(f"test tried to open {url}")
        return real_open(url, timeout)

    monkeypatch.setattr(cifar, "_open_url", open_local_only)
    monkeypatch.setenv("EFFNAS_DATA", str(tmp_path / "default-data"))


# --------------------------------------------------------------------------------------
# Helpers: files in the official CIFAR format
# --------------------------------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):
    """Pickles like Python 2's cPickle did for the official files: every string (bytes or
    str) as a py2 ``str`` opcode, which ``encoding="bytes"`` turns into bytes."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        raw = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    # numpy 1.x (which wrote the official files) lived in numpy.core
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def _random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def write_cifar(root: Path, kind: str = "cifar10", *, archive: bool = False) -> dict:
    """A tiny dataset in the official layout; returns the expected arrays per split."""
    src = cifar._CIFAR_SOURCES[kind]
    stage = root / "stage" if archive else root
    folder = stage / src.folder
    folder.mkdir(parents=True)
    num_classes = 10 if kind == "cifar10" else 100
    names = [f"name{i:03d}".encode() for i in range(num_classes)]
    expected: dict = {}
    for split, files in src.files.items():
        per_file = 4 if (kind == "cifar10" and split == "train") else 7 if split == "train" else 6
        all_images, all_labels = [], []
        for k, file in enumerate(files):
            images = _random_images(per_file, seed=zlib.crc32(f"{kind}/{split}/{k}".encode()))
            labels = [(20 + 11 * i + 3 * k) % num_classes for i in range(per_file)]
            blob = {b"batch_label": b"batch", b"data": images.reshape(per_file, -1), b"filenames": [b"x.png"] * per_file}
            if kind == "cifar10":
                blob[b"labels"] = labels
            else:
                blob[b"fine_labels"] = labels
                blob[b"coarse_labels"] = [label // 5 for label in labels]
            (folder / file).write_bytes(py2_pickle(blob))
            all_images.append(images)
            all_labels.extend(labels)
        expected[split] = (np.concatenate(all_images), np.array(all_labels))
    meta = {src.names_key: names, b"num_vis": 3072}
    if kind == "cifar100":
        meta[b"coarse_label_names"] = [b"coarse"] * 20
    (folder / src.meta_file).write_bytes(py2_pickle(meta))
    expected["classes"] = tuple(n.decode() for n in names)
    if archive:
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(root / src.archive, "w:gz") as tar:
            tar.add(folder, arcname=src.folder)
        expected["archive"] = root / src.archive
        shutil.rmtree(stage)
    return expected


def assert_matches(loaded: ImageData, images: np.ndarray, labels: np.ndarray) -> None:
    assert loaded.images.dtype == torch.uint8 and loaded.labels.dtype == torch.int64
    assert torch.equal(loaded.images, torch.from_numpy(images))
    assert torch.equal(loaded.labels, torch.from_numpy(labels).long())


# --------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------


def test_cifar10_from_extracted_folder(tmp_path):
    expected = write_cifar(tmp_path)
    train = load_dataset("cifar10", root=tmp_path, download=False)
    test = load_dataset("CIFAR-10", root=tmp_path, download=False, split="test")
    assert_matches(train, *expected["train"])  # 5 batches of 4, in batch order
    assert_matches(test, *expected["test"])
    assert len(train) == 20 and len(test) == 6
    assert train.classes == expected["classes"] and train.name == "cifar10:train"
    assert train.mean == CIFAR10_MEAN


def test_cifar10_from_tarball_without_extracting(tmp_path):
    expected = write_cifar(tmp_path, archive=True)
    train = load_dataset("cifar10", root=tmp_path, download=False)
    assert_matches(train, *expected["train"])
    assert_matches(load_dataset("cifar10", root=tmp_path, split="test"), *expected["test"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]


@pytest.mark.parametrize("archive", [False, True])
def test_cifar100_uses_fine_labels(tmp_path, archive):
    expected = write_cifar(tmp_path, "cifar100", archive=archive)
    train = load_dataset("cifar100", root=tmp_path, download=False)
    assert_matches(train, *expected["train"])
    assert len(train.classes) == 100 and train.std == CIFAR100_STD
    assert int(train.labels.max()) > 19  # fine (0..99), not coarse (0..19) labels


def test_cifar_refuses_pickled_code(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}, protocol=4))
    with pytest.raises(DataError, match=r"data_batch_3 is not a valid CIFAR batch file .*(posix|os)\.system"):
        load_dataset("cifar10", root=tmp_path, download=False)
    assert not marker.exists()


def test_cifar_corrupt_tarball_is_a_data_error(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    with pytest.raises(DataError, match="not a readable CIFAR-10 archive"):
        load_dataset("cifar10", root=tmp_path, download=False)


def _point_download_at(monkeypatch, path: Path, md5: str | None = None) -> None:
    src = cifar._CIFAR_SOURCES["cifar10"]
    monkeypatch.setitem(
        cifar._CIFAR_SOURCES, "cifar10", replace(src, url=path.resolve().as_uri(), md5=md5 or src.md5)
    )


def test_download_md5_mismatch_removes_file(tmp_path, monkeypatch):
    fake = tmp_path / "served" / "cifar-10-python.tar.gz"
    fake.parent.mkdir()
    fake.write_bytes(b"definitely not the CIFAR-10 archive")
    _point_download_at(monkeypatch, fake)
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"MD5 .* expected c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10", root=root)
    assert list(root.iterdir()) == []  # neither the archive nor a temporary file is left


def test_download_with_matching_md5(tmp_path, monkeypatch):
    expected = write_cifar(tmp_path / "served", archive=True)
    served = expected["archive"]
    _point_download_at(monkeypatch, served, hashlib.md5(served.read_bytes()).hexdigest())
    root = tmp_path / "data"
    assert_matches(load_dataset("cifar10", root=root), *expected["train"])
    assert [p.name for p in root.iterdir()] == ["cifar-10-python.tar.gz"]


def test_offline_error_says_where_to_put_the_files(tmp_path, monkeypatch):
    def unreachable(url, timeout):
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(cifar, "_open_url", unreachable)
    root = tmp_path / "data"
    with pytest.raises(DataError) as info:
        load_dataset("cifar100", root=root)
    message = str(info.value)
    assert "Network is unreachable" in message and str(root) in message
    assert "cifar-100-python.tar.gz" in message and "cifar-100-python/" in message
    assert "\n" not in message
    assert list(root.iterdir()) == []
    with pytest.raises(DataError, match=f"CIFAR-10 is not in {root}"):
        load_dataset("cifar10", root=root, download=False)


def test_default_data_folder_is_effnas_data(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNAS_DATA", str(tmp_path / "elsewhere"))
    assert data_dir() == tmp_path / "elsewhere"
    expected = write_cifar(tmp_path / "elsewhere")
    assert_matches(load_dataset("cifar10", download=False, split="test"), *expected["test"])
    monkeypatch.delenv("EFFNAS_DATA")
    assert data_dir() == Path.home() / ".cache" / "effnas" / "data"


# --------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------


def write_folder(root: Path, split: str, per_class: dict[str, int], size=(8, 8), seed=0) -> dict[str, np.ndarray]:
    """PNG images ``root/split/<class>/<i>.png``; returns {relative path: HxWx3 array}."""
    rng = np.random.default_rng(seed)
    written = {}
    for cls, count in per_class.items():
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            array = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(array).save(root / split / cls / f"{i:03d}.png")
            written[f"{cls}/{i:03d}.png"] = array
    return written


def expected_folder(written: dict[str, np.ndarray], classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(written, key=lambda k: (classes.index(k.split("/")[0]), k))
    images = np.stack([written[k].transpose(2, 0, 1) for k in keys])
    labels = np.array([classes.index(k.split("/")[0]) for k in keys])
    return images, labels


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pets"
    train = write_folder(root, "train", {"eel": 3, "cat": 4, "dog": 2})
    test = write_folder(root, "test", {"cat": 1, "dog": 2}, seed=1)
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (root / "train" / "cat" / "notes.txt").write_text("not an image, ignored")
    return root, train, test


def test_image_folder_skips_corrupt_image_and_names_it(folder, tmp_path):
    root, train, _ = folder
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image.*dog/broken\.jpg"):
        loaded = load_dataset(str(root), root=tmp_path / "cache")
    assert loaded.classes == ("cat", "dog", "eel")  # sorted folder names
    assert_matches(loaded, *expected_folder(train, loaded.classes))
    assert len(loaded.skipped) == 1 and str(root / "train" / "dog" / "broken.jpg") in loaded.skipped[0]
    assert loaded.name == "pets:train" and loaded.mean is None


def test_image_folder_test_split_shares_class_indices(folder, tmp_path):
    root, _, test = folder
    loaded = load_dataset(str(root), root=tmp_path / "cache", split="test")  # test/ has no "eel"
    assert loaded.classes == ("cat", "dog", "eel")
    assert_matches(loaded, *expected_folder(test, loaded.classes))


def test_image_folder_cache_hit_is_equal_and_skips_decoding(folder, tmp_path, monkeypatch):
    root, train, _ = folder
    cache_root = tmp_path / "cache"
    with pytest.warns(UserWarning, match="broken.jpg"):
        first = load_dataset(str(root), root=cache_root)
    cache_files = sorted(p.name for p in (cache_root / "imagefolder").iterdir())
    assert len(cache_files) == 2 and cache_files[0].endswith(".npz")  # no temporary file left
    assert cache_files[1] == cache_files[0] + ".lock"  # the decode lock stays beside its cache

    real_decode = folder_mod._decode_chunk
    decoded = []

    def no_decoding(paths):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(folder_mod, "_decode_chunk", no_decoding)
    with pytest.warns(UserWarning, match="broken.jpg"):  # the skip is reported on every load
        second = load_dataset(str(root), root=cache_root)
    assert_matches(second, *expected_folder(train, ("cat", "dog", "eel")))  # the written pixels
    assert second.classes == ("cat", "dog", "eel") and second.skipped == first.skipped
    assert len(second.skipped) == 1 and "broken.jpg" in second.skipped[0]

    # changing a file changes the listing (size / mtime), so the folder is decoded again
    monkeypatch.setattr(folder_mod, "_decode_chunk", lambda paths: decoded.extend(paths) or real_decode(paths))
    new = np.zeros((8, 8, 3), dtype=np.uint8)
    Image.fromarray(new).save(root / "train" / "cat" / "000.png")
    os.utime(root / "train" / "cat" / "000.png", ns=(1, 1))
    with pytest.warns(UserWarning, match="broken.jpg"):
        third = load_dataset(str(root), root=cache_root)
    assert len(decoded) == 10 and torch.equal(third.images[0], torch.from_numpy(new.transpose(2, 0, 1)))
    assert len(list((cache_root / "imagefolder").glob("*.npz"))) == 2


def test_image_folder_unreadable_cache_is_rebuilt(folder, tmp_path):
    root, train, _ = folder
    cache_root = tmp_path / "cache"
    with pytest.warns(UserWarning):
        load_dataset(str(root), root=cache_root)
    (cache_file,) = (cache_root / "imagefolder").glob("*.npz")
    cache_file.write_bytes(b"truncated")
    with pytest.warns(UserWarning) as record:
        loaded = load_dataset(str(root), root=cache_root)
    assert any("ignoring unreadable cache" in str(w.message) for w in record)
    assert_matches(loaded, *expected_folder(train, loaded.classes))


def test_image_folder_errors_name_the_path(tmp_path):
    root = tmp_path / "ds"
    write_folder(root, "train", {"a": 1})
    with pytest.raises(DataError, match=f"{root / 'test'} does not exist"):
        load_dataset(str(root), root=tmp_path / "cache", split="test")
    (root / "test" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=f"{root / 'test'} contains no image files"):
        load_dataset(str(root), root=tmp_path / "cache", split="test")
    (root / "test" / "a" / "bad.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="has no readable image"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_dataset(str(root), root=tmp_path / "cache", split="test")
    with pytest.raises(DataError, match="unknown dataset 'no/such/folder'"):
        load_dataset("no/such/folder")
    with pytest.raises(DataError, match="split must be 'train' or 'test'"):
        load_dataset(str(root), split="val")


def test_image_folder_mixed_sizes_and_modes(tmp_path):
    root = tmp_path / "mixed"
    write_folder(root, "train", {"a": 3}, size=(8, 8))
    Image.fromarray(np.full((12, 10), 200, dtype=np.uint8), mode="L").save(root / "train" / "a" / "grey.png")
    Image.fromarray(np.full((8, 8, 4), 50, dtype=np.uint8), mode="RGBA").save(root / "train" / "a" / "alpha.png")
    with pytest.warns(UserWarning, match=r"resized 1 of 5 images .* 8x8"):
        loaded = load_dataset(str(root), root=tmp_path / "cache")
    assert loaded.images.shape == (5, 3, 8, 8)
    names = sorted(["000.png", "001.png", "002.png", "grey.png", "alpha.png"])
    grey = loaded.images[names.index("grey.png")]
    assert int(grey.min()) == int(grey.max()) == 200  # grey -> RGB, resized
    assert int(loaded.images[names.index("alpha.png")].max()) == 50  # alpha dropped


def test_image_folder_worker_pool_matches_serial(folder, tmp_path, monkeypatch):
    root, train, _ = folder
    with pytest.warns(UserWarning):
        serial = load_dataset(str(root), root=tmp_path / "serial")
    used = []
    real_pool = folder_mod.concurrent.futures.ProcessPoolExecutor

    def spy_pool(*args, **kwargs):
        used.append(args)
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(folder_mod, "_workers", lambda n: 2)
    monkeypatch.setattr(folder_mod, "_CHUNK", 3)
    monkeypatch.setattr(folder_mod.concurrent.futures, "ProcessPoolExecutor", spy_pool)
    with pytest.warns(UserWarning, match="broken.jpg"):
        pooled = load_dataset(str(root), root=tmp_path / "pooled")
    assert used, "the worker pool was not used"
    assert_matches(pooled, *expected_folder(train, pooled.classes))  # chunks reassembled in order
    assert_matches(serial, *expected_folder(train, serial.classes))
    assert serial.skipped == pooled.skipped and len(pooled.skipped) == 1 and "broken.jpg" in pooled.skipped[0]


# --------------------------------------------------------------------------------------
# Stratified splits and subsets
# --------------------------------------------------------------------------------------


def _labels(counts: list[int], seed: int = 0) -> torch.Tensor:
    labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def test_stratified_split_is_proportional_disjoint_and_seeded():
    labels = _labels([100, 50, 30, 20])
    keep, held = stratified_split(labels, 0.1, seed=3)
    assert torch.bincount(labels[held]).tolist() == [10, 5, 3, 2]
    assert torch.bincount(labels[keep]).tolist() == [90, 45, 27, 18]
    assert set(keep.tolist()).isdisjoint(held.tolist())
    assert sorted(keep.tolist() + held.tolist()) == list(range(200))
    assert torch.equal(held, held.sort().values) and held.dtype == torch.int64
    again = stratified_split(labels, 0.1, seed=3)
    assert torch.equal(again[1], held)
    assert not torch.equal(stratified_split(labels, 0.1, seed=4)[1], held)


def test_stratified_split_rounding_stays_within_one_per_class():
    labels = _labels([7, 7, 7, 1])
    keep, held = stratified_split(labels, 0.5, seed=0)
    assert len(held) == 11  # round(0.5 * 22)
    counts = torch.bincount(labels[held], minlength=4).tolist()
    assert all(abs(c - 0.5 * n) <= 0.5 for c, n in zip(counts, [7, 7, 7, 1]))
    assert stratified_split(labels, 0.0, seed=0)[1].numel() == 0
    with pytest.raises(DataError):
        stratified_split(labels, 1.5, seed=0)


def test_stratified_subset():
    labels = _labels([100, 50, 30, 20])
    sub = stratified_subset(labels, 40, seed=1)
    assert torch.bincount(labels[sub]).tolist() == [20, 10, 6, 4]
    assert len(set(sub.tolist())) == 40
    assert torch.equal(sub, stratified_subset(labels, 40, seed=1))
    with pytest.raises(DataError, match="cannot be drawn"):
        stratified_subset(labels, 201, seed=0)


def _rows(d: ImageData) -> set[bytes]:
    return {bytes(img.numpy().tobytes()) for img in d.images}


def test_make_splits_val_first_then_subset_without_overlap():
    splits = make_splits("synthetic:1000", subset=300, val_fraction=0.1, split_seed=5)
    assert isinstance(splits, Splits) and splits.test is None
    # validation is 10% of all 1000 training images, the subset then 300 of the other 900
    assert len(splits.train) == 300 and len(splits.val) == 100
    assert torch.bincount(splits.val.labels).tolist() == [10] * 10
    assert torch.bincount(splits.train.labels).tolist() == [30] * 10
    assert _rows(splits.train).isdisjoint(_rows(splits.val))
    assert _rows(splits.train) | _rows(splits.val) <= _rows(load_dataset("synthetic:1000"))  # drawn from it
    assert splits.num_classes == 10 and splits.image_size == 32
    assert splits.train.name.endswith(":train") and splits.val.name.endswith(":val")
    same = make_splits("synthetic:1000", subset=300, val_fraction=0.1, split_seed=5)
    assert torch.equal(same.val.images, splits.val.images)
    other = make_splits("synthetic:1000", subset=300, val_fraction=0.1, split_seed=6)
    assert not torch.equal(other.val.images, splits.val.images)
    full = make_splits("synthetic:200", val_fraction=0.25)
    assert len(full.train) == 150 and len(full.val) == 50
    assert make_splits("synthetic:200", val_fraction=0).val.images.shape == (0, 3, 32, 32)


def test_make_splits_reads_test_only_when_asked(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    write_folder(root, "train", {"a": 10, "b": 10})  # there is no test/ at all
    splits = make_splits(str(root), root=tmp_path / "cache", val_fraction=0.2)
    assert splits.test is None and len(splits.val) == 4
    with pytest.raises(DataError, match=f"{root / 'test'} does not exist"):
        make_splits(str(root), root=tmp_path / "cache", with_test=True)

    requested = []
    real_load = load_mod.load_dataset

    def spy(*args, **kwargs):
        requested.append(kwargs.get("split"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(load_mod, "load_dataset", spy)
    make_splits("synthetic:100")
    assert requested == ["train"]
    with_test = make_splits("synthetic:100", with_test=True)
    assert requested == ["train", "train", "test"] and len(with_test.test) == 20


def test_make_splits_errors():
    with pytest.raises(DataError, match="val_fraction"):
        make_splits("synthetic:100", val_fraction=1.0)
    with pytest.raises(DataError, match="subset must be between 1 and 80"):  # 100 - 20 held out
        make_splits("synthetic:100", subset=81)
    with pytest.raises(DataError, match="empty validation split"):
        make_splits("synthetic:100", subset=10, val_fraction=0.001)
    with pytest.raises(DataError, match="not both"):
        make_splits("synthetic:100", val_size=10, val_fraction=0.1)
    with pytest.raises(DataError, match="leaves no training images"):
        make_splits("synthetic:100", val_size=100)


# --------------------------------------------------------------------------------------
# Synthetic data and ImageData
# --------------------------------------------------------------------------------------


def test_synthetic_is_balanced_seeded_and_learnable():
    train = synthetic(500, num_classes=5, size=16, seed=0)
    test = synthetic(200, num_classes=5, size=16, seed=1)
    assert train.images.shape == (500, 3, 16, 16) and train.images.dtype == torch.uint8
    assert torch.bincount(train.labels).tolist() == [100] * 5
    assert torch.equal(synthetic(500, 5, 16, seed=0).images, train.images)
    assert not torch.equal(test.images[:10], train.images[:10])
    # nearest class mean from one seed classifies another seed's images
    x_train, x_test = train.images.flatten(1).float(), test.images.flatten(1).float()
    means = torch.stack([x_train[train.labels == c].mean(0) for c in range(5)])
    predicted = torch.cdist(x_test, means).argmin(1)
    assert (predicted == test.labels).float().mean() > 0.9
    named = load_dataset("synthetic:50:4:12", split="test")
    assert named.images.shape == (10, 3, 12, 12) and len(named.classes) == 4
    with pytest.raises(DataError, match="bad synthetic dataset name"):
        load_dataset("synthetic:lots")


def test_image_data_subset_and_validation():
    d = synthetic(20, num_classes=4, size=8)
    picked = d.subset([3, -1, 0])
    assert torch.equal(picked.images, d.images[[3, 19, 0]]) and torch.equal(picked.labels, d.labels[[3, 19, 0]])
    mask = d.labels == 2
    assert torch.equal(d.subset(mask).labels, d.labels[mask]) and len(d.subset([])) == 0
    assert d.subset(np.array([1, 2])).classes == d.classes
    assert "n=20" in repr(d) and len(repr(d)) < 200
    with pytest.raises(DataError, match="uint8"):
        ImageData(d.images.float(), d.labels, d.classes)
    with pytest.raises(DataError, match="labels span"):
        ImageData(d.images, d.labels + 10, d.classes)
    with pytest.raises(DataError, match="indices span"):
        d.subset([20])


# --------------------------------------------------------------------------------------
# DeviceLoader
# --------------------------------------------------------------------------------------


def _identity_data(n: int, size: int = 32, seed: int = 0) -> ImageData:
    """Noise images whose label is their index (so every output can be traced back)."""
    images = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8))
    return ImageData(images, torch.arange(n), tuple(str(i) for i in range(n)), name="ids")


def _pillow_resize(images: torch.Tensor, side: int) -> torch.Tensor:
    """Every channel of every image resized by Pillow (BILINEAR, float "F" mode)."""
    planes = [
        np.asarray(Image.fromarray(plane.astype(np.float32), mode="F").resize((side, side), Image.Resampling.BILINEAR))
        for plane in images.numpy().reshape(-1, *images.shape[2:])
    ]
    return torch.from_numpy(np.stack(planes)).view(*images.shape[:2], side, side)


def _to_uint8(x: torch.Tensor, mean=0.5, std=0.5) -> torch.Tensor:
    return ((x.float() * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


def test_loader_shapes_dtypes_and_lengths():
    d = synthetic(100, size=32)
    loader = DeviceLoader(d, 32)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and loader.num_samples == 96  # drop_last in training
    x, y = batches[0]
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.is_contiguous()

    resized = DeviceLoader(d, 32, resolution=48, channels_last=True, dtype=torch.bfloat16)
    x, _ = next(iter(resized))
    assert x.shape == (32, 3, 48, 48) and x.dtype == torch.bfloat16
    assert x.is_contiguous(memory_format=torch.channels_last)

    evaluation = DeviceLoader(d, 32, train=False, resolution=24)
    sizes = [len(y) for _, y in evaluation]
    assert sizes == [32, 32, 32, 4] and len(evaluation) == 4 and evaluation.num_samples == 100
    tiny = DeviceLoader(synthetic(10), 32)  # fewer images than a batch: keep the partial one
    assert len(tiny) == 1 and tiny.num_samples == 10
    empty = DeviceLoader(d.subset([]), 32)  # e.g. the val split of val_fraction=0
    assert len(empty) == 0 and list(empty) == []


def test_loader_augmentation_is_pad_crop_flip_with_aligned_labels():
    d = _identity_data(48)
    loader = DeviceLoader(d, 16, seed=1)
    padded = F.pad(d.images, (4, 4, 4, 4))
    # all 9 x 9 crops and their mirror images of every source image: (N, 162, 3, 32, 32)
    crops = torch.stack([padded[:, :, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)], 1)
    candidates = torch.cat([crops, crops.flip(-1)], 1)
    seen = []
    for x, y in loader:
        out = _to_uint8(x)
        matches = (candidates[y] == out[:, None]).flatten(2).all(2)  # (B, 162)
        assert bool(matches.any(1).all()), "an output is not a pad-crop-flip of its labelled image"
        seen.extend(matches.float().argmax(1).tolist())
    assert len(seen) == 48
    flipped = sum(s >= 81 for s in seen)
    assert 0 < flipped < len(seen)
    assert len({s % 81 for s in seen}) > 10  # many different crop offsets
    assert sum(s != 40 for s in seen) > len(seen) // 2  # most images changed (40: centre, no flip)


def test_loader_eval_normalises_resizes_and_keeps_order():
    d = synthetic(10, size=16)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    x, y = next(iter(DeviceLoader(d, 64, train=False, mean=mean, std=std)))
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    reference = (d.images.float() / 255 - m) / s
    assert torch.allclose(x, reference, atol=1e-5) and torch.equal(y, d.labels)
    # Pillow's BILINEAR on float images resizes the raw pixels (antialiased when shrinking),
    # then the normalisation applies: the same thing, since resizing weights sum to one.
    for resolution in (24, 10):
        x, _ = next(iter(DeviceLoader(d, 64, train=False, mean=mean, std=std, resolution=resolution)))
        expected = (_pillow_resize(d.images, resolution) / 255 - m) / s
        assert x.shape == (10, 3, resolution, resolution)
        assert torch.allclose(x, expected, atol=1e-4), resolution
    cifar_like = ImageData(d.images, d.labels, d.classes, mean=CIFAR10_MEAN, std=(0.25, 0.25, 0.25))
    x, _ = next(iter(DeviceLoader(cifar_like, 64, train=False)))  # the dataset's own statistics
    assert torch.allclose(x, (d.images.float() / 255 - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / 0.25, atol=1e-5)


def test_loader_is_deterministic_per_seed_and_epoch():
    d = _identity_data(40, size=8)

    def epoch_batches(loader):
        return [(x.clone(), y.clone()) for x, y in loader]

    a, b = DeviceLoader(d, 8, seed=7), DeviceLoader(d, 8, seed=7)
    first_a, first_b = epoch_batches(a), epoch_batches(b)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(first_a, first_b))
    second = epoch_batches(a)  # no set_epoch: the epoch advances by itself
    assert a.epoch == 2
    order = lambda batches: torch.cat([y for _, y in batches])  # noqa: E731
    assert not torch.equal(order(second), order(first_a))
    a.set_epoch(0)
    assert torch.equal(order(epoch_batches(a)), order(first_a))
    assert not torch.equal(order(epoch_batches(DeviceLoader(d, 8, seed=8))), order(first_a))
    assert sorted(order(first_a).tolist()) == list(range(40))


def test_loader_shards_are_disjoint_and_equal_sized():
    d = _identity_data(103, size=8)
    for train in (True, False):
        parts = []
        for rank in range(3):
            loader = DeviceLoader(d, 8, shard=(rank, 3), train=train, drop_last=False)
            loader.set_epoch(5)
            parts.append(torch.cat([y for _, y in loader]).tolist())
            assert loader.num_samples == 34 and len(loader) == 5
        assert [len(p) for p in parts] == [34, 34, 34]
        assert len(set(parts[0]) | set(parts[1]) | set(parts[2])) == 102
        if not train:
            assert parts == [list(range(r, 102, 3)) for r in range(3)]
    # with drop_last (the training default) every rank runs the same number of steps
    assert {len(DeviceLoader(d, 8, shard=(r, 3))) for r in range(3)} == {4}
    # in training mode rank r takes positions r, r + 3, ... of the shared permutation
    unsharded = DeviceLoader(d, 8, drop_last=False, pad=0, flip=False)
    unsharded.set_epoch(5)
    whole = torch.cat([y for _, y in unsharded]).tolist()
    sharded = DeviceLoader(d, 8, drop_last=False, shard=(1, 3))
    sharded.set_epoch(5)
    assert torch.cat([y for _, y in sharded]).tolist() == whole[1:102:3]
    with pytest.raises(DataError, match="shard"):
        DeviceLoader(d, 8, shard=(3, 3))


def test_loader_argument_errors():
    d = synthetic(10)
    with pytest.raises(DataError, match="batch_size"):
        DeviceLoader(d, 0)
    with pytest.raises(DataError, match="mean has 2 values"):
        DeviceLoader(d, 4, mean=(0.5, 0.5))
    with pytest.raises(DataError, match="floating-point"):
        DeviceLoader(d, 4, dtype=torch.int32)


# --------------------------------------------------------------------------------------
# The real CIFAR-10 image folder
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_CIFAR10 / "test").is_dir(), reason="no /work/shared/datasets/cifar10")
def test_real_cifar10_folder_test_split(tmp_path, monkeypatch):
    first = load_dataset(str(REAL_CIFAR10), root=tmp_path, split="test")
    assert first.images.shape == (10000, 3, 32, 32)
    assert torch.bincount(first.labels).tolist() == [1000] * 10
    assert first.classes[0] == "airplane" and first.skipped == ()
    # images in sorted class folder, then file name order, decoded as Pillow decodes them
    for label, name in ((0, "0000.jpg"), (9, "0999.jpg")):
        cls = first.classes[label]
        with Image.open(REAL_CIFAR10 / "test" / cls / name) as im:
            expected = torch.from_numpy(np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy())
        position = 1000 * label + sorted(os.listdir(REAL_CIFAR10 / "test" / cls)).index(name)
        assert torch.equal(first.images[position], expected) and int(first.labels[position]) == label

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(folder_mod, "_decode_folder", no_decoding)
    second = load_dataset(str(REAL_CIFAR10), root=tmp_path, split="test")  # from the cache
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
