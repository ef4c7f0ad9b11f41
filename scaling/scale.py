"""The scaling primitive: grow or shrink an `Arch` along depth, width and resolution.

The rule itself is `Arch.scale`, a method of the description (with the rounding of
`Stage.adjust_channels` and `Stage.adjust_depth` beside it); this function is the
`scaling` package's public name for it.
"""

from __future__ import annotations

from space.arch import Arch

__all__ = ["scale"]


def scale(arch: Arch, *, depth: float = 1.0, width: float = 1.0, resolution: int | None = None,
          dropout: float | None = None, drop_path: float | None = None) -> Arch:
    """``arch.scale(...)``: layers by ``depth`` (``ceil``), every channel count by ``width``
    (``make_divisible(c * width, 8)``), the input side set to ``resolution`` pixels (a
    whole number; unchanged when None), and ``dropout`` / ``drop_path`` replaced when
    given. See `Arch.scale` for the rules and the `ArchError` raised on bad input."""
    if not isinstance(arch, Arch):
        raise TypeError(f"scale needs an Arch, got {type(arch).__name__}")
    return arch.scale(depth=depth, width=width, resolution=resolution, dropout=dropout,
                      drop_path=drop_path)
