"""What an architecture is: descriptions, search spaces, the model builder and the cost model."""

from .arch import Arch, ArchError, Stage, make_divisible
from .builder import build_model
from .cost import Cost, cost, measure_latency
from .presets import get_preset, preset_names, resolve_arch
from .search import SearchSpace, SpaceError

__all__ = [
    "Arch", "ArchError", "Stage", "make_divisible", "build_model", "Cost", "cost",
    "measure_latency", "get_preset", "preset_names", "resolve_arch", "SearchSpace", "SpaceError",
]
