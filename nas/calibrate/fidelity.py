"""A training fidelity: `Fidelity` (budget, training images, recipe overrides), its spec
text (`parse_fidelity`, ``str(fidelity)``), and how much training one allows."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from space.errors import UserError

__all__ = ["FIDELITY_KEYS", "Fidelity", "parse_fidelity", "estimated_images", "warn_if_low_costs_more"]

#: Keys of a fidelity spec, in the order `Fidelity.__str__` writes them.
FIDELITY_KEYS = ("epochs", "seconds", "images", "subset", "batch_size", "lr")
_BUDGET_KEYS = ("epochs", "seconds", "images")
_INT_KEYS = ("images", "subset", "batch_size")


def _fmt_number(value: float | int) -> str:
    """Exact text of a number, integral floats without ".0" (2.0 -> "2", 0.05 -> "0.05"), so
    that a spec written and parsed back is the same spec and equal specs compare equal."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


@dataclass(frozen=True)
class Fidelity:
    """One training fidelity: a budget, the training images it draws, and optional
    `TrainConfig` overrides.

    Attributes:
        epochs, seconds, images: the `nas.train.Budget` (at least one; training stops at
            whichever comes first). ``seconds`` are wall-clock seconds of training steps.
        subset: training images drawn (after the shared validation split is held out);
            None uses all that remain.
        batch_size, lr: overrides of the recipe's global batch size and peak learning rate
            (None keeps the recipe's: the proxy recipe adapts the batch to the data).

    ``str(fidelity)`` is its canonical spec (``"epochs=2,subset=4500"``), which
    `parse_fidelity` reads back to an equal `Fidelity`.
    """

    epochs: float | None = None
    seconds: float | None = None
    images: int | None = None
    subset: int | None = None
    batch_size: int | None = None
    lr: float | None = None

    def __post_init__(self) -> None:
        if all(getattr(self, k) is None for k in _BUDGET_KEYS):
            raise UserError("a Fidelity needs a budget: give epochs, seconds or images")
        for key in FIDELITY_KEYS:
            value = getattr(self, key)
            if value is None:
                continue
            problem = _number_problem(key, value)
            if problem:
                raise UserError(f"Fidelity.{key} {problem}, got {value!r}")
            object.__setattr__(self, key, int(value) if key in _INT_KEYS else float(value))

    @property
    def budget(self):
        """The `nas.train.Budget` of this fidelity."""
        from ..train import Budget

        return Budget(epochs=self.epochs, seconds=self.seconds, images=self.images)

    def overrides(self) -> dict[str, Any]:
        """The `TrainConfig` settings this fidelity sets (batch size, learning rate)."""
        return {k: getattr(self, k) for k in ("batch_size", "lr") if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in FIDELITY_KEYS if getattr(self, k) is not None}

    def __str__(self) -> str:
        return ",".join(f"{k}={_fmt_number(v)}" for k, v in self.to_dict().items())


def _number_problem(key: str, value: Any) -> str | None:
    """Why ``value`` cannot be the fidelity's ``key``, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return "must be a number"
    if not math.isfinite(value) or value <= 0:
        return "must be a finite number > 0"
    if key in _INT_KEYS and float(value) != int(value):
        return "must be a whole number"
    return None


def parse_fidelity(text: str | Fidelity, name: str = "fidelity spec") -> Fidelity:
    """A `Fidelity` from a spec such as ``"epochs=2,subset=4500"``.

    Keys (each at most once, comma separated, spaces around items ignored): ``epochs``,
    ``seconds``, ``images`` (the budget; at least one), ``subset`` (training images),
    ``batch_size`` and ``lr`` (recipe overrides). Whole-number keys (``images``, ``subset``,
    ``batch_size``) also accept an integral float such as ``1e4``.

    Raises `UserError` with one sentence that starts with ``name`` (the CLI passes the flag,
    ``--low`` or ``--high``) and says what is wrong: an unknown or repeated key, an item that
    is not ``key=value``, a value that is not a positive finite number (or not a whole number
    where one is needed), or no budget.
    """
    if isinstance(text, Fidelity):
        return text
    if not isinstance(text, str):
        raise UserError(f"{name} must be a string such as 'epochs=2,subset=4500', got {type(text).__name__}")
    shown = repr(text)
    values: dict[str, float | int] = {}
    items = [item.strip() for item in text.split(",")]
    if not text.strip():
        raise UserError(f"{name} is empty; give a budget such as 'epochs=2' (keys: {', '.join(FIDELITY_KEYS)})")
    for item in items:
        if not item:
            raise UserError(f"{name} {shown} has an empty item; separate key=value pairs with single commas")
        key, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or not key or not raw:
            raise UserError(f"{name} {shown}: {item!r} is not key=value (e.g. epochs=2)")
        if key not in FIDELITY_KEYS:
            raise UserError(f"{name} {shown} has an unknown key {key!r}; use {', '.join(FIDELITY_KEYS)}")
        if key in values:
            raise UserError(f"{name} {shown} gives {key} twice")
        try:
            number: float | int = float(raw)
        except ValueError:
            raise UserError(f"{name} {shown}: {key} must be a number, got {raw!r}") from None
        problem = _number_problem(key, number)
        if problem:
            raise UserError(f"{name} {shown}: {key} {problem}, got {raw!r}")
        values[key] = int(number) if key in _INT_KEYS else number
    if not any(k in values for k in _BUDGET_KEYS):
        raise UserError(f"{name} {shown} has no budget; add epochs, seconds or images (e.g. epochs=2)")
    return Fidelity(**values)


def estimated_images(fid: Fidelity, num_train: int) -> float:
    """Training images a fidelity's budget allows at most (inf when only seconds bound it)."""
    limits = [math.inf]
    if fid.epochs is not None:
        limits.append(fid.epochs * num_train)
    if fid.images is not None:
        limits.append(float(fid.images))
    return min(limits)


def warn_if_low_costs_more(fids: Mapping[str, Fidelity], splits: Mapping[int | None, Any]) -> None:
    """Warn when the ``"low"`` fidelity allows more training than the ``"high"`` one (``splits``:
    one `Splits` per ``subset``). The warning points three calls up: at the caller of
    `calibrate` (or of the command)."""
    low, high = fids["low"], fids["high"]
    images = {k: estimated_images(f, len(splits[f.subset].train)) for k, f in fids.items()}
    more_images = math.isfinite(images["low"]) and images["low"] > images["high"]
    more_seconds = low.seconds is not None and high.seconds is not None and low.seconds > high.seconds
    if more_images or more_seconds:
        warnings.warn(f"the low fidelity ({low}) allows more training than the high one ({high}); "
                      "the cost ratio will be below 1", UserWarning, stacklevel=4)

