"""The architectures a calibration trains: a search space loaded by name, file or object,
and ``samples`` distinct architectures drawn from it (`draw_architectures`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from space.errors import UserError

__all__ = ["load_space", "draw_architectures"]


def load_space(space: Any):
    """A `space.search.SearchSpace` as given, or loaded from a shipped name or a space file."""
    from space.search import SearchSpace

    return space if isinstance(space, SearchSpace) else SearchSpace.load(space)


def draw_architectures(space: Any, samples: int, seed: int, *, name: str = "samples") -> list:
    """``samples`` distinct architectures (by `Arch.to_string`) drawn with
    ``np.random.default_rng(seed)`` in draw order; duplicates are skipped and more drawn.

    Raises `UserError` when the space has fewer distinct architectures than asked for, or
    when a bounded number of draws (``1000 + 100 * samples``) does not find enough of them.
    """
    space = load_space(space)
    size = space.size()
    if size < samples:
        raise UserError(f"{name} {samples} asks for more architectures than the {size} "
                        f"that space {space.name} holds")
    rng = np.random.default_rng(seed)
    found: dict[str, Any] = {}
    tries = 0
    limit = 1000 + 100 * samples
    while len(found) < samples and tries < limit:
        arch = space.sample(rng)
        found.setdefault(arch.to_string(), arch)
        tries += 1
    if len(found) < samples:
        raise UserError(f"{tries} draws from space {space.name} gave only {len(found)} distinct "
                        f"architectures of the {samples} asked for by {name}; ask for fewer")
    return list(found.values())

