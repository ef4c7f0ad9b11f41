"""Checkpoint files: atomic writes, safe loading, and refusing a checkpoint of another run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from space.errors import UserError

from ..atomic import atomic_write

__all__ = ["CHECKPOINT_FORMAT", "CheckpointMismatch", "check_meta", "load_checkpoint", "save_checkpoint"]

# 2: the metadata names the data (dataset, split seed, subset, validation share, a
# fingerprint of the images), the world size and the precision; the test result is stored.
CHECKPOINT_FORMAT = 2


class CheckpointMismatch(UserError):
    """A checkpoint that cannot be continued by this call of `train`: it is of another run
    (other data, split, settings, world size or precision), of another checkpoint format,
    or not a checkpoint at all. It is a `UserError` (a ValueError).

    The message is one sentence, ``"checkpoint PATH REASON; pass resume=False to start
    over"``; a command line can say the same in its own words from the attributes.

    Attributes:
        path: the checkpoint file.
        reason: what is wrong, e.g. ``"is of another run (split_seed: 0 there, 1 now)"``.
        differences: one ``"name: saved there, current now"`` string per setting that
            differs (values as Python writes them: ``amp: 'off' there, 'bf16' now``), in a
            fixed order; ``["format: 1 there, 2 now"]`` for an older format; empty when the
            file is not a readable checkpoint.
    """

    def __init__(self, path: str | os.PathLike, differences: Sequence[str] = (), reason: str | None = None):
        self.path = Path(path)
        self.differences = list(differences)
        self.reason = reason if reason is not None else f"is of another run ({'; '.join(self.differences)})"
        super().__init__(f"checkpoint {self.path} {self.reason}; pass resume=False to start over")

    def __reduce__(self) -> tuple[Any, ...]:  # keep the attributes across processes
        return type(self), (self.path, self.differences, self.reason)


def save_checkpoint(obj: Any, path: Path) -> None:
    """`torch.save` ``obj`` to ``path`` atomically (readers see the old or the new
    checkpoint, never a partial one)."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """The checkpoint at ``path`` (``torch.load(weights_only=True)``, tensors on ``device``);
    `CheckpointMismatch` when it cannot be read, is not a checkpoint of `nas.train` or is
    of another format."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling raises many types; the name is enough
        raise CheckpointMismatch(path, reason=f"cannot be read as a checkpoint ({type(err).__name__})") from None
    if not isinstance(state, dict) or "format" not in state or "meta" not in state:
        raise CheckpointMismatch(path, reason="is not a checkpoint of nas.train")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointMismatch(
            path, [f"format: {state['format']!r} there, {CHECKPOINT_FORMAT!r} now"],
            reason=f"was written in checkpoint format {state['format']!r} and this nas.train reads "
                   f"format {CHECKPOINT_FORMAT}")
    return state


# Recorded for the reader but not compared: the same folder reached by another path (or
# moved) is the same data, and the data fingerprint already decides that.
RECORDED_ONLY = frozenset({"dataset"})


def check_meta(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    """Raise `CheckpointMismatch` naming every key of ``now`` whose value differs in ``saved``
    (keys in `RECORDED_ONLY` excepted)."""
    differences = [f"{key}: {saved.get(key)!r} there, {value!r} now"
                   for key, value in now.items() if key not in RECORDED_ONLY and saved.get(key) != value]
    if differences:
        raise CheckpointMismatch(path, differences)
