"""`make_splits`: the split seed decides the split, and nothing else does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.data import SplitsInfo, make_splits


@pytest.fixture(autouse=True)
def _private_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("EFFNAS_DATA", str(tmp_path / "default-data"))


def _rows(images: torch.Tensor) -> set[bytes]:
    return {img.numpy().tobytes() for img in images}


# --------------------------------------------------------------------------------------
# The split seed
# --------------------------------------------------------------------------------------


def test_same_split_seed_gives_the_same_split_whatever_else_changes():
    first = make_splits("synthetic:200", subset=100, val_fraction=0.2, split_seed=3)
    # What a training run changes (the global RNG a training seed sets, reading the test
    # split, the data folder) must not move the split.
    torch.manual_seed(12345)
    np.random.seed(54321)
    second = make_splits("synthetic:200", subset=100, val_fraction=0.2, split_seed=3, with_test=True,
                         root="/nonexistent-data-root-unused-by-synthetic")
    assert len(first.val) == 40 and len(first.train) == 100  # 20% of 200, then 100 of the other 160
    assert torch.equal(first.val.images, second.val.images)
    assert torch.equal(first.train.images, second.train.images)
    assert first.fingerprint() == second.fingerprint()


def test_another_split_seed_gives_another_split():
    a = make_splits("synthetic:200", subset=100, val_fraction=0.2, split_seed=3)
    b = make_splits("synthetic:200", subset=100, val_fraction=0.2, split_seed=4)
    # Different draws of 40 images among 200: an equal set would be a one-in-10^40 event.
    assert _rows(a.val.images) != _rows(b.val.images)
    assert a.fingerprint() != b.fingerprint()


def test_split_seed_defaults_to_zero_and_is_recorded():
    default = make_splits("synthetic:100", val_fraction=0.3)
    zero = make_splits("synthetic:100", val_fraction=0.3, split_seed=0)
    assert torch.equal(default.val.images, zero.val.images)
    assert default.info == SplitsInfo(dataset="synthetic:100", split_seed=0, val_size=30, subset=None)
    seeded = make_splits("synthetic:100", val_fraction=0.3, subset=50, split_seed=7)
    assert seeded.info.to_dict() == {"dataset": "synthetic:100", "split_seed": 7, "val_size": 30, "subset": 50}


def test_seed_is_a_deprecated_alias_of_split_seed():
    new = make_splits("synthetic:100", val_fraction=0.3, split_seed=5)
    with pytest.warns(DeprecationWarning, match="split_seed"):
        old = make_splits("synthetic:100", val_fraction=0.3, seed=5)
    assert torch.equal(old.val.images, new.val.images) and old.info.split_seed == 5
    with pytest.raises(TypeError, match="split_seed"):
        make_splits("synthetic:100", split_seed=5, seed=6)
