"""Checkpoint files: atomic writes, safe loading, and refusing a checkpoint of another run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint"]

CHECKPOINT_FORMAT = 1


def save_checkpoint(obj: Any, path: Path) -> None:
    """`torch.save` ``obj`` to ``path`` atomically (readers see the old or the new
    checkpoint, never a partial one)."""
    with atomic_write(path) as f:
        torch.save(obj, f)
