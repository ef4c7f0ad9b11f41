"""Progress bars for long data work (downloads, decoding) on stderr."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

__all__ = ["progress"]


def progress(total: int | None, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr that appears only after 2 s (quick work shows nothing)."""
    scale = unit == "B"
    return tqdm(
        total=total, desc=desc, unit=unit, unit_scale=scale, unit_divisor=1024 if scale else 1000,
        delay=2.0, file=sys.stderr, leave=False, dynamic_ncols=True,
    )
