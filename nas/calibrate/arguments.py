"""The arguments of a calibration: the recipes and smallest sample it accepts, the names its
messages give the arguments (`API_NAMES` for `calibrate`, `FLAG_NAMES` for the command), and
`check_counts`, which refuses bad numbers before anything is loaded or trained."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from space.errors import UserError

__all__ = ["RECIPES", "MIN_SAMPLES", "API_NAMES", "FLAG_NAMES", "check_counts"]

#: Training recipes (`TrainConfig.proxy`, `TrainConfig.paper`), for both fidelities.
RECIPES = ("proxy", "paper")
#: Fewest architectures a rank correlation is computed over.
MIN_SAMPLES = 3

# How the same argument is named in a message: by its Python parameter or by its flag.
API_NAMES = {k: k for k in ("samples", "seeds", "recipe", "val_size", "split_seed", "seed",
                             "bootstrap", "out", "space", "dataset", "low", "high", "num_threads")}
FLAG_NAMES = {**{k: "--" + k.replace("_", "-") for k in API_NAMES}, "num_threads": "--threads"}


def check_counts(names: Mapping[str, str], samples: Any, seeds: Any, recipe: Any, val_size: Any,
                 split_seed: Any, seed: Any, bootstrap: Any, num_threads: Any) -> None:
    """Raise `UserError`, naming the argument as ``names`` does, for a count that is not a
    whole number in range or a recipe that is not one of `RECIPES`."""
    def whole(key: str, value: Any, low: int, why: str = "") -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise UserError(f"{names[key]} must be a whole number >= {low}{why}, got {value!r}")

    whole("samples", samples, MIN_SAMPLES, " (a rank correlation needs at least 3 architectures)")
    whole("seeds", seeds, 1)
    whole("split_seed", split_seed, 0)
    whole("seed", seed, 0)
    whole("bootstrap", bootstrap, 100, " (fewer resamples make a meaningless interval)")
    if val_size is not None:
        whole("val_size", val_size, 1)
    if num_threads is not None:
        whole("num_threads", num_threads, 1)
    if recipe not in RECIPES:
        raise UserError(f"{names['recipe']} must be one of {', '.join(RECIPES)}, got {recipe!r}")

