"""What `calibrate` reports: one `ArchRow` per architecture, the `CalibrationReport`, its
JSON form (NaN as null) and the summary table (`format_summary`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["ArchRow", "CalibrationReport", "format_summary", "json_ready", "format_value", "format_ci"]


@dataclass
class ArchRow:
    """One architecture's accuracies (fractions) and cost.

    Attributes:
        arch: the architecture string.
        macs, params: of the trained network (`Result.macs`, `Result.params`).
        low_accs: low-fidelity validation accuracy per seed (seed order ``seed, seed+1..``).
        low_mean: their mean; low_std: their standard deviation (``ddof=1``; None for one seed).
        high_acc: high-fidelity validation accuracy.
        low_seconds: wall-clock seconds per low run; high_seconds: of the high run.
    """

    arch: str
    macs: int | None
    params: int | None
    low_accs: list[float]
    low_mean: float
    low_std: float | None
    high_acc: float
    low_seconds: list[float]
    high_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class CalibrationReport:
    """What `calibrate` measured. Accuracies are fractions, seconds wall-clock.

    Attributes:
        space, dataset, recipe: what was calibrated.
        low, high: the fidelity specs (`Fidelity` strings).
        samples: architectures asked for; archs: architectures in the statistics (those
            whose every run finished; ``failed`` lists the others' strings).
        seeds: low-fidelity training seeds per architecture (``seed .. seed+seeds-1``; the
            high fidelity trains once with ``seed``).
        val_size: validation images (one split for every run); split_seed, seed: as given.
        spearman, kendall: rank correlation (Spearman's rho, Kendall's tau-b) between the
            low-fidelity mean and the high-fidelity accuracy; NaN when undefined (every
            accuracy equal at one fidelity). spearman_p, kendall_p: scipy's p-values.
        spearman_ci, kendall_ci: 95% percentile bootstrap intervals over architectures
            (see `nas.calibrate`); bootstrap: resamples drawn; bootstrap_valid:
            resamples with a defined Spearman correlation.
        low_seed_std: mean over architectures of the std across low seeds (None for one seed).
        low_seed_spearman: mean over seed pairs of the Spearman correlation between the two
            seeds' low accuracies (None for one seed): the proxy's agreement with itself.
        high_seconds: total seconds of the high runs; low_seconds: total seconds of one low
            seed's runs (the low total divided by ``seeds``); cost_ratio: their ratio.
        low_val_acc_se, high_val_acc_se: mean binomial standard error of the validation
            accuracies at each fidelity.
        rows: one `ArchRow` per architecture in the statistics, in draw order.
        out: the output folder, when there was one.
    """

    space: str
    dataset: str
    recipe: str
    low: str
    high: str
    samples: int
    archs: int
    seeds: int
    val_size: int
    split_seed: int
    seed: int
    spearman: float
    spearman_p: float
    spearman_ci: tuple[float, float]
    kendall: float
    kendall_p: float
    kendall_ci: tuple[float, float]
    bootstrap: int
    bootstrap_valid: int
    low_seed_std: float | None
    low_seed_spearman: float | None
    high_seconds: float
    low_seconds: float
    cost_ratio: float
    low_val_acc_se: float
    high_val_acc_se: float
    rows: list[ArchRow] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    out: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes None, intervals become two-element lists."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "rows"}
        d["rows"] = [r.to_dict() for r in self.rows]
        return json_ready(d)

    def summary(self) -> str:
        """A few aligned lines for a terminal."""
        return format_summary(self)


def json_ready(value: Any) -> Any:
    """``value`` with non-finite floats as None, numpy scalars as Python numbers and tuples as
    lists, recursively (dicts, lists, tuples)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (np.floating, np.integer)):
        return json_ready(value.item())
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def format_value(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; ``"n/a"`` for None or a non-finite value."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def format_ci(ci: Sequence[float]) -> str:
    """A confidence interval as ``"[0.12, 0.34]"``."""
    return f"[{format_value(ci[0], 2)}, {format_value(ci[1], 2)}]"


def format_summary(report: CalibrationReport) -> str:
    """The summary table `nas calibrate` prints on stdout."""
    r = report
    lines = [
        f"calibration: {r.archs} architectures of {r.space} on {r.dataset} ({r.recipe} recipe, "
        f"{r.val_size} validation images)",
        f"  low   {r.low}  ({r.seeds} seed{'s' if r.seeds != 1 else ''})",
        f"  high  {r.high}",
        f"  Spearman rho       {format_value(r.spearman, 3):>7}  {format_ci(r.spearman_ci)} "
        "95% bootstrap CI",
        f"  Kendall tau        {format_value(r.kendall, 3):>7}  {format_ci(r.kendall_ci)}",
    ]
    if r.seeds >= 2:
        lines.append(f"  low seed std       {format_value(r.low_seed_std, 4):>7}  "
                     "(accuracy, mean over architectures)")
        lines.append(f"  low seed-to-seed   {format_value(r.low_seed_spearman, 3):>7}  "
                     "(mean pairwise Spearman)")
    lines.append(f"  cost               {format_value(r.cost_ratio, 1):>7}x  (high {r.high_seconds:.1f} s, "
                 f"low {r.low_seconds:.1f} s per seed)")
    lines.append(f"  val_acc std error  {format_value(r.low_val_acc_se, 4):>7}  low, "
                 f"{format_value(r.high_val_acc_se, 4)} high")
    if r.failed:
        lines.append(f"  failed             {len(r.failed):>7}  architectures left out (a run failed)")
    return "\n".join(lines)
