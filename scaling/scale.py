"""The scaling primitive: grow or shrink an `Arch` along depth, width and resolution.

The rounding rules themselves are `Stage.adjust_channels` (``make_divisible(c * w, 8)``
with the 90% rule) and `Stage.adjust_depth` (``ceil(l * d)``), kept beside the
description; this module applies them to every part of an architecture in one place.
"""

from __future__ import annotations

from space.arch import Arch, Stage

__all__ = ["scale"]


def scale(arch: Arch, *, depth: float = 1.0, width: float = 1.0, resolution: int | None = None,
          dropout: float | None = None, drop_path: float | None = None) -> Arch:
    """Scale ``arch``: layers by ``depth``, every channel count (stem, stages, head) by
    ``width``, and set the input ``resolution`` (pixels; unchanged when None).

    ``dropout`` and ``drop_path`` replace the regularisers when given; larger family
    members in the reference use more dropout.
    """
    for name, value in (("depth", depth), ("width", width)):
        if not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} multiplier must be a positive number, got {value!r}")
    stages = tuple(
        Stage(
            block=s.block,
            kernel=s.kernel,
            stride=s.stride,
            expand=s.expand,
            channels=Stage.adjust_channels(s.channels, width),
            layers=Stage.adjust_depth(s.layers, depth),
            se=s.se,
        )
        for s in arch.stages
    )
    return arch.replace(
        stem_channels=Stage.adjust_channels(arch.stem_channels, width),
        stages=stages,
        head_channels=Stage.adjust_channels(arch.head_channels, width),
        resolution=arch.resolution if resolution is None else int(resolution),
        dropout=arch.dropout if dropout is None else dropout,
        drop_path=arch.drop_path if drop_path is None else drop_path,
    )
