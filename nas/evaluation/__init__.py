"""``nas eval``: a ``nas train`` checkpoint measured on its validation split (or the test
split): top-1, top-5, loss, throughput and a confusion matrix (`evaluate_split`,
`plot_confusion`); `load_model` rebuilds the network a checkpoint holds (``nas export``
uses it too).

Importing the package (as the ``nas`` command does to register ``nas eval``) does not
import torch; the names below load their modules on first use.
"""

from __future__ import annotations

from typing import Any

_WHERE = {"EvalResult": "metrics", "evaluate_split": "metrics", "plot_confusion": "plot",
          "LoadedModel": "trained", "load_model": "trained", "same_network": "trained"}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
