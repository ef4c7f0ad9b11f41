"""How candidates are judged and searched: datasets, the device-resident pipeline, the trainer.

The trainer lives in `nas.train` (``from nas.train import train, Budget, TrainConfig``); it
is not re-exported here so that ``nas.train`` keeps naming the module.
"""

from .data import DataError, DeviceLoader, ImageData, Splits, load_dataset, make_splits

__all__ = ["DataError", "DeviceLoader", "ImageData", "Splits", "load_dataset", "make_splits"]
