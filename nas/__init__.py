"""How candidates are judged and searched: `nas.data` (datasets, the device-resident
pipeline), `nas.train` (the trainer and its recipes), `nas.calibrate` (how well a proxy
ranks) and `nas.search` (the Optuna study).

The trainer lives in `nas.train` (``from nas.train import train, Budget, TrainConfig``); it
is not re-exported here so that ``nas.train`` keeps naming the module. The data names below
are loaded on first use, so that ``nas --help`` and the search's pure modules do not pay for
importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DataError", "DeviceLoader", "ImageData", "Splits", "load_dataset", "make_splits"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".data", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
