"""How an architecture grows: compound scaling of a baseline into a family."""

from .scale import scale

__all__ = ["scale"]
