"""The report from the run records: one `ArchRow` per architecture whose every run finished,
the rank correlations with their bootstrap intervals, the low fidelity's seed noise, the
cost ratio and the accuracies' standard errors (`summarise`)."""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from space.errors import UserError

from .arguments import MIN_SAMPLES
from .fidelity import Fidelity
from .report import ArchRow, CalibrationReport
from .stats import bootstrap_ci, correlation, kendall_rows, spearman_rows

__all__ = ["summarise"]


def _tied_share(values: np.ndarray) -> float:
    """The share of values equal to at least one other value."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return float(np.mean(counts[inverse] > 1))


def summarise(space_name: str, dataset: str, recipe: str, fids: Mapping[str, Fidelity], samples: int,
              seeds: int, n_val: int, split_seed: int, seed: int, bootstrap: int, arch_strings: list[str],
              records: Mapping[tuple[str, str, int], dict], names: Mapping[str, str]) -> CalibrationReport:
    """The `CalibrationReport` over ``arch_strings`` (in draw order) from ``records``, the
    record of every planned run by (arch, fidelity, seed). Architectures with a failed run
    are left out (with a warning); fewer than `MIN_SAMPLES` left is a `UserError` naming
    ``names["samples"]``. Warnings point three calls up: at the caller of `calibrate`."""
    rows: list[ArchRow] = []
    failed: list[str] = []
    low_se: list[float] = []
    high_se: list[float] = []
    for s in arch_strings:
        low_recs = [records[(s, "low", seed + k)] for k in range(seeds)]
        high_rec = records[(s, "high", seed)]
        if any("failed" in r for r in (*low_recs, high_rec)):
            failed.append(s)
            continue
        accs = [float(r["val_acc"]) for r in low_recs]
        macs = high_rec.get("macs", low_recs[0].get("macs"))
        params = high_rec.get("params", low_recs[0].get("params"))
        rows.append(ArchRow(
            arch=s, macs=macs, params=params, low_accs=accs, low_mean=float(np.mean(accs)),
            low_std=float(np.std(accs, ddof=1)) if seeds >= 2 else None,
            high_acc=float(high_rec["val_acc"]), low_seconds=[float(r["seconds"]) for r in low_recs],
            high_seconds=float(high_rec["seconds"])))
        low_se += [_float(r.get("val_acc_se")) for r in low_recs]
        high_se.append(_float(high_rec.get("val_acc_se")))
    if failed:
        warnings.warn(f"{len(failed)} of {samples} architectures had a failed run and are left out "
                      "of the statistics", UserWarning, stacklevel=4)
    if len(rows) < MIN_SAMPLES:
        raise UserError(f"only {len(rows)} of the {samples} architectures trained at both fidelities "
                        f"without failing; a rank correlation needs 3, so raise {names['samples']}")

    x = np.array([r.low_mean for r in rows])
    y = np.array([r.high_acc for r in rows])
    rho, rho_p = correlation("spearman", x, y)
    tau, tau_p = correlation("kendall", x, y)
    for label, values in (("low", x), ("high", y)):
        if np.all(values == values[0]):
            warnings.warn(f"every {label}-fidelity accuracy is {values[0]:.3f}, so the rank correlation is "
                          "undefined; train longer at that fidelity", UserWarning, stacklevel=4)
        elif _tied_share(values) >= 0.5:
            # A fidelity that leaves most architectures at the same accuracy (typically chance)
            # ranks by ties: the correlation and its bootstrap interval are then mostly noise,
            # and a percentile interval may not even contain the estimate.
            warnings.warn(f"{_tied_share(values):.0%} of the {label}-fidelity accuracies are tied with another "
                          "architecture's, so the rank correlation is unreliable; train longer at that fidelity",
                          UserWarning, stacklevel=4)
    # One set of resamples for both statistics, seeded apart from the architecture draw.
    idx = np.random.default_rng((seed, 1)).integers(0, len(x), size=(bootstrap, len(x)))
    rho_ci, valid = bootstrap_ci(x, y, spearman_rows, idx)
    tau_ci, _ = bootstrap_ci(x, y, kendall_rows, idx)

    seed_std = seed_rho = None
    if seeds >= 2:
        seed_std = float(np.mean([r.low_std for r in rows]))
        lows = np.array([r.low_accs for r in rows])  # (archs, seeds)
        pair_rhos = [correlation("spearman", lows[:, a], lows[:, b])[0]
                     for a, b in itertools.combinations(range(seeds), 2)]
        pair_rhos = [v for v in pair_rhos if math.isfinite(v)]
        seed_rho = float(np.mean(pair_rhos)) if pair_rhos else math.nan

    high_seconds = float(sum(r.high_seconds for r in rows))
    low_seconds = float(sum(sum(r.low_seconds) for r in rows)) / seeds
    return CalibrationReport(
        space=space_name, dataset=dataset, recipe=recipe, low=str(fids["low"]), high=str(fids["high"]),
        samples=samples, archs=len(rows), seeds=seeds, val_size=n_val, split_seed=split_seed, seed=seed,
        spearman=rho, spearman_p=rho_p, spearman_ci=rho_ci, kendall=tau, kendall_p=tau_p, kendall_ci=tau_ci,
        bootstrap=bootstrap, bootstrap_valid=valid, low_seed_std=seed_std, low_seed_spearman=seed_rho,
        high_seconds=high_seconds, low_seconds=low_seconds,
        cost_ratio=high_seconds / low_seconds if low_seconds > 0 else math.nan,
        low_val_acc_se=_nanmean(low_se), high_val_acc_se=_nanmean(high_se), rows=rows, failed=failed)


def _float(value: Any) -> float:
    """A record's number, NaN for a missing one."""
    return math.nan if value is None else float(value)


def _nanmean(values: Sequence[float]) -> float:
    """Mean of the finite values, NaN when there is none."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan

