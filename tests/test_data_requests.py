"""`make_splits` refuses, or warns about, requests it cannot honour as asked."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.data import DataError, make_splits


@pytest.fixture(autouse=True)
def _private_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("EFFNAS_DATA", str(tmp_path / "default-data"))


def write_folder(root: Path, per_class: dict[str, int]) -> None:
    """Distinct 4x4 PNG images ``root/train/<class>/<i>.png`` (image k is filled with k)."""
    k = 0
    for cls, count in per_class.items():
        (root / "train" / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(np.full((4, 4, 3), k, dtype=np.uint8)).save(root / "train" / cls / f"{i:03d}.png")
            k += 1


# --------------------------------------------------------------------------------------
# Requests that cannot be honoured as asked
# --------------------------------------------------------------------------------------


def test_subset_smaller_than_the_number_of_classes_is_refused():
    with pytest.raises(DataError, match=r"subset=5 .* 10 classes") as info:
        make_splits("synthetic:100", subset=5)
    assert "\n" not in str(info.value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = make_splits("synthetic:100", subset=10, val_fraction=0.1)  # 1 per class each: honoured
    assert torch.bincount(splits.train.labels).tolist() == [1] * 10
    assert torch.bincount(splits.val.labels).tolist() == [1] * 10


def test_subset_that_leaves_a_rare_class_out_warns(tmp_path):
    # 40 images of "a", 2 of "b"; validation holds out 2 "a" (2 * 40/42 = 1.9, 2 * 2/42 = 0.1),
    # so 38 "a" and 2 "b" remain, and a proportional subset of 10 has 10 * 2/40 = 0.5: no "b"
    # under largest-remainder rounding with ties to the lower class.
    write_folder(tmp_path / "rare", {"a": 40, "b": 2})
    with pytest.warns(UserWarning, match=r"subset of 10 images .* no image of 1 of its 2 classes \(b\)"):
        splits = make_splits(str(tmp_path / "rare"), subset=10, val_size=2, root=tmp_path / "cache")
    assert len(splits.train) == 10 and int(splits.train.labels.max()) == 0


def test_validation_split_with_fewer_images_than_classes_warns():
    # 5% of 100 images is 5 validation images for 10 classes.
    with pytest.warns(UserWarning, match=r"validation split .* \(5 images\) has no image of 5 of its 10 classes") as record:
        splits = make_splits("synthetic:100", val_fraction=0.05)
    assert len(splits.val) == 5 and len(torch.unique(splits.val.labels)) == 5
    messages = [str(w.message) for w in record if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "\n" not in messages[0]


def test_training_split_without_a_class_warns(tmp_path):
    # "b" has one image; holding out round(0.5 * 11) = 6 of 11 images gives "b" the largest
    # remainder (6/11 against a's 60/11 - 5 = 5/11), so its only image goes to validation.
    write_folder(tmp_path / "lone", {"a": 10, "b": 1})
    with pytest.warns(UserWarning, match=r"training split .* no image of 1 of its 2 classes \(b\)"):
        splits = make_splits(str(tmp_path / "lone"), val_fraction=0.5, root=tmp_path / "cache")
    assert torch.bincount(splits.val.labels, minlength=2).tolist() == [5, 1]
    assert torch.bincount(splits.train.labels, minlength=2).tolist() == [5, 0]


def test_a_single_validation_image_is_counted_in_the_singular():
    # 20 images, 2 per class: one held out for validation leaves 9 classes out of it
    with pytest.warns(UserWarning) as record:
        make_splits("synthetic:20", val_size=1)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 1
    assert messages[0].startswith("the validation split of synthetic:20 (1 image) has no image of 9 of its 10 classes")
