"""`DeviceLoader` resizing, checked against Pillow and against a hand-built aliasing case.

Pillow's BILINEAR resize on float ("F" mode) images is the reference: it filters with a
triangle whose support widens with the reduction factor when shrinking (antialiasing) and
is plain half-pixel bilinear interpolation when enlarging.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nas.data import DeviceLoader, ImageData


def _data(images: np.ndarray) -> ImageData:
    tensor = torch.from_numpy(images)
    n = tensor.shape[0]
    return ImageData(tensor, torch.zeros(n, dtype=torch.int64), ("only",), name="resize")


def _loaded(images: np.ndarray, resolution: int) -> np.ndarray:
    """The loader's output (evaluation mode, no augmentation) back on the 0..255 scale."""
    loader = DeviceLoader(_data(images), 64, train=False, resolution=resolution, mean=(0.0,), std=(1.0,))
    (x, _), = list(loader)
    return x.numpy() * 255.0


def _pillow(images: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.stack([
        np.stack([
            np.asarray(Image.fromarray(plane.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR))
            for plane in image
        ])
        for image in images
    ])


def _checkerboard(side: int) -> np.ndarray:
    board = (np.indices((side, side)).sum(0) % 2 * 255).astype(np.uint8)
    return np.broadcast_to(board, (1, 3, side, side)).copy()


def test_shrinking_a_checkerboard_gives_flat_grey_not_an_alias():
    # Shrinking 3x, plain bilinear samples pixel (3i+1, 3j+1): a full-contrast 0/255
    # checkerboard again. A low-pass filter first leaves the mean, 127.5, everywhere.
    out = _loaded(_checkerboard(48), resolution=16)
    assert out.shape == (1, 3, 16, 16)
    assert abs(out.mean() - 127.5) < 1.0
    assert out.std() < 5.0, f"aliased: pixel std {out.std():.1f} (plain bilinear gives about 127)"
    assert out.min() > 110 and out.max() < 145


@pytest.mark.parametrize(
    "stored, resolution",
    [
        ((40, 40), 24),  # shrink by a non-integer factor
        ((48, 48), 16),  # shrink 3x
        ((30, 40), 24),  # non-square folder, shrunk in both dimensions
        ((20, 40), 32),  # enlarged in height, shrunk in width
        ((16, 16), 24),  # enlarge only (e.g. 32px CIFAR to a larger resolution)
    ],
)
def test_resize_matches_pillow_bilinear(stored, resolution):
    images = np.random.default_rng(sum(stored) + resolution).integers(0, 256, (2, 3, *stored), dtype=np.uint8)
    out = _loaded(images, resolution)
    reference = _pillow(images, resolution, resolution)
    assert out.shape == reference.shape == (2, 3, resolution, resolution)
    assert np.abs(out - reference).max() < 0.05  # float32 rounding only, on the 0..255 scale


def test_no_resize_at_the_stored_size():
    images = np.random.default_rng(1).integers(0, 256, (2, 3, 12, 12), dtype=np.uint8)
    assert np.abs(_loaded(images, 12) - images).max() < 1e-3
