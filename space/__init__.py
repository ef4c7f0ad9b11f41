"""What an architecture is: descriptions, search spaces, the model builder and the cost model.

Importing `space` (and the descriptions, the codec, search spaces, the cost model and
the ``space`` command) does not import torch: the builder names (`build_model`,
`create_model`, `EfficientNet`) load `space.builder`, and with it torch, on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .arch import Arch, ArchError, Stage, make_divisible
from .cost import Cost, cost, measure_latency
from .presets import get_preset, preset_names, resolve_arch
from .search import SearchSpace, SpaceError

if TYPE_CHECKING:
    from .builder import EfficientNet, build_model, create_model

__all__ = [
    "Arch", "ArchError", "Stage", "make_divisible", "build_model", "create_model", "EfficientNet",
    "Cost", "cost", "measure_latency", "get_preset", "preset_names", "resolve_arch",
    "SearchSpace", "SpaceError",
]

_BUILDER_NAMES = ("build_model", "create_model", "EfficientNet")


def __getattr__(name: str) -> Any:
    # torch costs seconds to import; only the builder needs it (PEP 562 lazy attributes).
    if name in _BUILDER_NAMES:
        from . import builder

        return getattr(builder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_BUILDER_NAMES))
