"""`DeviceLoader`: a split kept whole on the training device, served as shuffled,
augmented, normalised batches by batched tensor operations."""

from __future__ import annotations

import hashlib
from typing import Iterator

import torch
import torch.nn.functional as F

from .containers import DataError, ImageData, as_channel_stats

__all__ = ["DeviceLoader"]

_DEFAULT_MEAN = 0.5
_DEFAULT_STD = 0.5


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
    ``resolution`` × ``resolution`` when that differs from the stored size, and cast to
    ``dtype`` (in ``channels_last`` layout if asked). Resizing is bilinear with half-pixel
    centres (``align_corners=False``), antialiased when the output is smaller than the
    stored size in either dimension (a triangle filter widened by the reduction factor, as
    Pillow's BILINEAR does), plain bilinear interpolation when it only enlarges (e.g. 32px
    CIFAR to a larger resolution); a non-square stored size is stretched, not cropped.

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
        mean_values = as_channel_stats(mean, channels, "mean") or data.mean or (_DEFAULT_MEAN,) * channels
        std_values = as_channel_stats(std, channels, "std") or data.std or (_DEFAULT_STD,) * channels
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
        # Shrinking without a low-pass filter aliases (fine texture turns into false
        # patterns); enlarging needs none, and torch's antialiased kernel only widens in
        # the dimensions that shrink.
        self._antialias = self._out_size[0] < height or self._out_size[1] < width
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
            x = F.interpolate(x, size=self._out_size, mode="bilinear", align_corners=False, antialias=self._antialias)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.to(dtype=self.dtype, memory_format=memory_format)
