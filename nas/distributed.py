"""torch.distributed helpers for data-parallel training launched by ``torchrun``.

`nas.train.train` calls `setup` itself: when the default process group is already
initialised it is used as is; otherwise, when the environment says ``WORLD_SIZE > 1``
(as ``torchrun`` sets it, together with ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``), the group is initialised from the environment with the ``nccl`` backend
for CUDA training and ``gloo`` otherwise, and ``LOCAL_RANK`` picks the GPU. A group that
`setup` created stays initialised for later calls; call `cleanup` at the end of the
program (or let the process exit).

A world of one process is not distributed: `setup` returns ``None`` and training runs
without DistributedDataParallel.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "setup", "cleanup", "env_world_size", "broadcast_buffers"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the default process group.

    Attributes:
        rank: global rank, 0 .. world_size - 1 (rank 0 prints and writes checkpoints).
        world_size: number of processes.
        local_rank: rank on this machine (``LOCAL_RANK``), the index of the GPU it uses.
    """

    rank: int
    world_size: int
    local_rank: int


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset or not a number)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _local_rank(rank: int) -> int:
    try:
        return int(os.environ["LOCAL_RANK"])
    except (KeyError, ValueError):
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return rank % torch.cuda.device_count()
        return 0


def setup(device_type: str) -> DistInfo | None:
    """Join (or initialise) the default process group; ``None`` when not distributed.

    Args:
        device_type: ``"cuda"`` or ``"cpu"`` (the training device's type); chooses the
            backend when the group has to be created (nccl for CUDA, gloo otherwise) and,
            on CUDA, makes ``cuda:LOCAL_RANK`` the current device.
    """
    if not dist.is_available():
        return None
    created = False
    if not dist.is_initialized():
        if env_world_size() <= 1:
            return None
        for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise RuntimeError(
                    f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {name} is not set; launch with "
                    "torchrun (or set RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)"
                )
        rank = int(os.environ["RANK"])
        if device_type == "cuda":
            torch.cuda.set_device(_local_rank(rank))
        backend = "nccl" if device_type == "cuda" else "gloo"
        kwargs = {}
        if device_type == "cuda" and "device_id" in inspect.signature(dist.init_process_group).parameters:
            kwargs["device_id"] = torch.device("cuda", _local_rank(rank))  # bind NCCL to this GPU
        dist.init_process_group(backend=backend, init_method="env://", **kwargs)
        created = True
    world = dist.get_world_size()
    if world <= 1:
        return None
    rank = dist.get_rank()
    local_rank = _local_rank(rank)
    if device_type == "cuda" and not created:
        torch.cuda.set_device(local_rank)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def cleanup() -> None:
    """Destroy the default process group if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@torch.no_grad()
def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy ``module``'s buffers (batch-norm running statistics) from rank ``src`` to every
    rank, in one collective.

    Training keeps batch-norm statistics per rank (DistributedDataParallel is built with
    ``broadcast_buffers=False`` and there is no SyncBatchNorm); broadcasting before
    evaluation makes every rank evaluate (and rank 0 save) the same network. All buffers,
    whatever their dtype, travel as the bytes of one flat ``uint8`` tensor, so the cost is
    one collective rather than one per buffer. Every rank must call it with a module of
    the same structure (as DistributedDataParallel guarantees).
    """
    # Widest elements first: every buffer then starts at a byte offset that is a multiple
    # of its element size, which viewing the bytes back as its dtype requires.
    buffers = sorted(module.buffers(), key=lambda b: -b.element_size())
    if not buffers:
        return
    flat = torch.cat([b.detach().contiguous().view(-1).view(torch.uint8) for b in buffers])
    dist.broadcast(flat, src)
    offset = 0
    for b in buffers:
        size = b.numel() * b.element_size()
        b.copy_(flat[offset:offset + size].view(b.dtype).view(b.shape))
        offset += size
