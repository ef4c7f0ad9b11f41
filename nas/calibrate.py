"""`nas calibrate`: how well a cheap proxy training ranks architectures, measured against a
longer training of the same architectures.

A search ranks candidates by a short ("low fidelity") training; that ranking is only worth
what its agreement with a longer ("high fidelity") training says. `calibrate` draws ``N``
architectures from a search space, trains each once at the high fidelity and ``K`` times
(training seeds ``seed .. seed+K-1``) at the low fidelity, and reports:

* the Spearman and Kendall (tau-b) rank correlations between the low-fidelity accuracy
  (the mean over its ``K`` seeds) and the high-fidelity accuracy, each with a 95% bootstrap
  confidence interval;
* the low fidelity's seed-to-seed noise: the mean over architectures of the standard
  deviation across seeds (``ddof=1``), and, for ``K >= 2``, the mean pairwise Spearman
  correlation between the seed runs (how well the proxy agrees with *itself*, an upper
  bound on how well it can agree with anything else);
* the cost ratio ``high seconds / low seconds of one seed`` ("high costs X times low");
* the mean binomial standard error of the validation accuracies at each fidelity.

Conventions
-----------
* Accuracies are fractions in [0, 1], measured on one validation split shared by every run
  (same ``val_size`` and ``split_seed``; `nas.data.make_splits` holds validation out before
  ``subset`` draws the training images, so fidelities with different subsets still share
  it, and `calibrate` checks that they do).
* Seconds are wall-clock seconds of a whole `nas.train.train` call (`Result.seconds`:
  training, evaluation, checkpoints).
* Confidence intervals are percentile bootstrap intervals: architectures are resampled with
  replacement ``bootstrap`` times (2,000 by default; seeded by ``seed``, so reproducible), the
  correlation is recomputed on each resample, and the interval spans the 2.5th to 97.5th
  percentiles of those values. Resamples where the correlation is undefined (every drawn
  accuracy equal at one fidelity) are left out. The interval describes the uncertainty due to
  *which* architectures were drawn; the training noise of the high fidelity (one seed) is not
  in it, so with few architectures or a noisy high fidelity it is optimistic.
* A run that fails (`nas.train.TrainingFailed`: divergence, out of memory) is recorded as
  failed and its architecture is left out of every statistic (and listed in ``failed``).

Resuming
--------
With ``out``, the arguments are stored in ``out/calibration.args.json`` before any run and
each finished run is appended as one JSON line to ``out/runs.jsonl`` (flushed and fsync'd),
keyed by (architecture string, fidelity, seed). Calling again with the same arguments skips
the finished runs; a line cut short by a kill is ignored (and removed before new lines are
appended). A run in progress checkpoints every epoch under ``out/checkpoints/`` and continues
from there. Other arguments on the same ``out`` are refused (`UserError`). At the end
``calibration.json`` (the report) and ``calibration.png`` (the scatter plot) are written
atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from space.errors import UserError

from .atomic import atomic_write

__all__ = [
    "CalibrationReport",
    "Fidelity",
    "FIDELITY_KEYS",
    "add_parser",
    "calibrate",
    "draw_architectures",
    "format_summary",
    "kendall_rows",
    "parse_fidelity",
    "plot_calibration",
    "spearman_rows",
]

#: Keys of a fidelity spec, in the order `Fidelity.__str__` writes them.
FIDELITY_KEYS = ("epochs", "seconds", "images", "subset", "batch_size", "lr")
_BUDGET_KEYS = ("epochs", "seconds", "images")
_INT_KEYS = ("images", "subset", "batch_size")
_RECIPES = ("proxy", "paper")
_MIN_SAMPLES = 3
_ARGS_FILE = "calibration.args.json"
_RUNS_FILE = "runs.jsonl"
_REPORT_FILE = "calibration.json"
_PLOT_FILE = "calibration.png"
_ARGS_FORMAT = 1


# --- fidelities ---------------------------------------------------------------------------


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
        from .train import Budget

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


# --- statistics ---------------------------------------------------------------------------


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho between ``x[b]`` and ``y[b]`` for every row ``b`` of two ``(B, n)``
    arrays: the Pearson correlation of average ranks, as `scipy.stats.spearmanr` computes it
    (ties included). NaN where a row is constant."""
    from scipy.stats import rankdata

    rx = rankdata(np.asarray(x, dtype=float), axis=1)
    ry = rankdata(np.asarray(y, dtype=float), axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    num = (rx * ry).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(rho, -1.0, 1.0)


def kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between ``x[b]`` and ``y[b]`` for every row ``b`` of two ``(B, n)``
    arrays, as `scipy.stats.kendalltau` computes it: ``(concordant - discordant) /
    sqrt(pairs untied in x * pairs untied in y)``. NaN where a row is constant."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    rows, n = x.shape
    out = np.empty(rows)
    # Pairwise sign matrices are (chunk, n, n); bound them to a few tens of MB.
    chunk = max(1, 2_000_000 // max(1, n * n))
    for start in range(0, rows, chunk):
        xs, ys = x[start:start + chunk], y[start:start + chunk]
        sx = np.sign(xs[:, :, None] - xs[:, None, :])
        sy = np.sign(ys[:, :, None] - ys[:, None, :])
        # Full matrices count every pair twice, numerator and denominator alike.
        num = (sx * sy).sum(axis=(1, 2))
        den = np.sqrt(np.count_nonzero(sx, axis=(1, 2)).astype(float)
                      * np.count_nonzero(sy, axis=(1, 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + chunk] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(out, -1.0, 1.0)


def _bootstrap_ci(x: np.ndarray, y: np.ndarray, stat, idx: np.ndarray,
                  confidence: float = 0.95) -> tuple[tuple[float, float], int]:
    """Percentile bootstrap interval of ``stat`` over the resamples ``idx`` (rows of
    architecture indices), and how many resamples gave a defined value."""
    values = stat(x[idx], y[idx])
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return (math.nan, math.nan), int(len(values))
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return (float(lo), float(hi)), int(len(values))


def _correlation(kind: str, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) from scipy; NaN for constant input (scipy warns; we say why
    ourselves, once, in the report)."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.spearmanr(x, y) if kind == "spearman" else stats.kendalltau(x, y)
    return float(res.statistic), float(res.pvalue)


# --- the report -----------------------------------------------------------------------------


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
            (see the module docstring); bootstrap: resamples drawn; bootstrap_valid:
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
        return _json_ready(d)

    def summary(self) -> str:
        """A few aligned lines for a terminal."""
        return format_summary(self)


def _json_ready(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (np.floating, np.integer)):
        return _json_ready(value.item())
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _fmt_ci(ci: Sequence[float]) -> str:
    return f"[{_fmt(ci[0], 2)}, {_fmt(ci[1], 2)}]"


def format_summary(report: CalibrationReport) -> str:
    """The summary table `nas calibrate` prints on stdout."""
    r = report
    lines = [
        f"calibration: {r.archs} architectures of {r.space} on {r.dataset} ({r.recipe} recipe, "
        f"{r.val_size} validation images)",
        f"  low   {r.low}  ({r.seeds} seed{'s' if r.seeds != 1 else ''})",
        f"  high  {r.high}",
        f"  Spearman rho       {_fmt(r.spearman, 3):>7}  {_fmt_ci(r.spearman_ci)} 95% bootstrap CI",
        f"  Kendall tau        {_fmt(r.kendall, 3):>7}  {_fmt_ci(r.kendall_ci)}",
    ]
    if r.seeds >= 2:
        lines.append(f"  low seed std       {_fmt(r.low_seed_std, 4):>7}  (accuracy, mean over architectures)")
        lines.append(f"  low seed-to-seed   {_fmt(r.low_seed_spearman, 3):>7}  (mean pairwise Spearman)")
    lines.append(f"  cost               {_fmt(r.cost_ratio, 1):>7}x  (high {r.high_seconds:.1f} s, "
                 f"low {r.low_seconds:.1f} s per seed)")
    lines.append(f"  val_acc std error  {_fmt(r.low_val_acc_se, 4):>7}  low, {_fmt(r.high_val_acc_se, 4)} high")
    if r.failed:
        lines.append(f"  failed             {len(r.failed):>7}  architectures left out (a run failed)")
    return "\n".join(lines)


def plot_calibration(report: CalibrationReport, path: str | os.PathLike) -> None:
    """Scatter plot of high- vs low-fidelity accuracy, one point per architecture, written
    atomically as PNG. Horizontal error bars are the low fidelity's std across seeds (two or
    more seeds). Uses matplotlib's Agg canvas directly: no pyplot, no global backend change."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = report.rows
    x = [r.low_mean for r in rows]
    y = [r.high_acc for r in rows]
    xerr = [r.low_std for r in rows] if report.seeds >= 2 else None
    fig = Figure(figsize=(6.4, 5.2), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.errorbar(x, y, xerr=xerr, fmt="o", ms=5, color="tab:blue", ecolor="tab:gray",
                elinewidth=1, capsize=2, alpha=0.85)
    seeds = f"mean of {report.seeds} seeds" if report.seeds >= 2 else "1 seed"
    ax.set_xlabel(f"low fidelity val accuracy: {report.low} ({seeds})")
    ax.set_ylabel(f"high fidelity val accuracy: {report.high}")
    ax.set_title(
        f"{report.space} on {report.dataset}: {report.archs} architectures\n"
        f"Spearman \u03c1 = {_fmt(report.spearman, 2)} {_fmt_ci(report.spearman_ci)}, "
        f"Kendall \u03c4 = {_fmt(report.kendall, 2)} {_fmt_ci(report.kendall_ci)} (95% CI)",
        fontsize=10)
    ax.grid(True, alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())


# --- architectures and runs -------------------------------------------------------------


def _load_space(space: Any):
    from space.search import SearchSpace

    return space if isinstance(space, SearchSpace) else SearchSpace.load(space)


def draw_architectures(space: Any, samples: int, seed: int, *, name: str = "samples") -> list:
    """``samples`` distinct architectures (by `Arch.to_string`) drawn with
    ``np.random.default_rng(seed)`` in draw order; duplicates are skipped and more drawn.

    Raises `UserError` when the space has fewer distinct architectures than asked for, or
    when a bounded number of draws (``1000 + 100 * samples``) does not find enough of them.
    """
    space = _load_space(space)
    size = space.size()
    if size < samples:
        raise UserError(f"{name} {samples} asks for more architectures than the {size} "
                        f"that space {space.name} holds")
    rng = np.random.default_rng(seed)
    found: dict[str, Any] = {}
    tries = 0
    limit = 1000 + 100 * samples
    while len(found) < samples and tries < limit:
        arch = space.sample(rng)
        found.setdefault(arch.to_string(), arch)
        tries += 1
    if len(found) < samples:
        raise UserError(f"{tries} draws from space {space.name} gave only {len(found)} distinct "
                        f"architectures of the {samples} asked for by {name}; ask for fewer")
    return list(found.values())


@dataclass(frozen=True)
class _Run:
    """One planned training run."""

    fidelity: str  # "low" or "high"
    seed: int
    index: int  # 0-based architecture index

    def key(self, arch_string: str) -> tuple[str, str, int]:
        return (arch_string, self.fidelity, self.seed)


def _read_runs(path: Path) -> dict[tuple[str, str, int], dict]:
    """Finished runs by (arch, fidelity, seed). A last line without its newline is a write
    cut short by a kill: ignored. Another unreadable line is skipped with a warning (that
    run is simply trained again)."""
    if not path.exists():
        return {}
    # The piece after the last newline is "" for a complete file, else a cut-short record.
    complete = path.read_text(encoding="utf-8").split("\n")[:-1]
    runs: dict[tuple[str, str, int], dict] = {}
    bad = 0
    for line in complete:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            key = (str(rec["arch"]), str(rec["fidelity"]), int(rec["seed"]))
            if "failed" not in rec:
                float(rec["val_acc"]), float(rec["seconds"])
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        runs[key] = rec
    if bad:
        warnings.warn(f"{path}: skipped {bad} unreadable line{'s' if bad != 1 else ''}; "
                      "those runs are trained again")
    return runs


def _drop_partial_tail(path: Path) -> None:
    """Cut a partial last line off ``path`` so that new records start on a line of their own."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())


def _append_run(path: Path, record: Mapping[str, Any]) -> None:
    line = json.dumps(_json_ready(dict(record)), separators=(",", ":")) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


# --- calibrate ------------------------------------------------------------------------------


# How the same argument is named in a message: by its Python parameter or by its flag.
_API_NAMES = {k: k for k in ("samples", "seeds", "recipe", "val_size", "split_seed", "seed",
                             "bootstrap", "out", "space", "dataset", "low", "high", "num_threads")}
_FLAG_NAMES = {**{k: "--" + k.replace("_", "-") for k in _API_NAMES}, "num_threads": "--threads"}


def _check_counts(names: Mapping[str, str], samples: Any, seeds: Any, recipe: Any, val_size: Any,
                  split_seed: Any, seed: Any, bootstrap: Any, num_threads: Any) -> None:
    def whole(key: str, value: Any, low: int, why: str = "") -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise UserError(f"{names[key]} must be a whole number >= {low}{why}, got {value!r}")

    whole("samples", samples, _MIN_SAMPLES, " (a rank correlation needs at least 3 architectures)")
    whole("seeds", seeds, 1)
    whole("split_seed", split_seed, 0)
    whole("seed", seed, 0)
    whole("bootstrap", bootstrap, 100, " (fewer resamples make a meaningless interval)")
    if val_size is not None:
        whole("val_size", val_size, 1)
    if num_threads is not None:
        whole("num_threads", num_threads, 1)
    if recipe not in _RECIPES:
        raise UserError(f"{names['recipe']} must be one of {', '.join(_RECIPES)}, got {recipe!r}")


def _space_identity(space) -> dict:
    """What of a space decides the architectures drawn (its name and prose do not)."""
    d = json.loads(json.dumps(space.to_dict()))
    d.pop("name", None)
    d.pop("description", None)
    return d


def _check_out_args(out: Path, args: dict, names: Mapping[str, str]) -> bool:
    """Refuse an ``out`` made with other arguments; True when ``out`` already holds these
    arguments, False when it holds no calibration yet."""
    args_path, runs_path = out / _ARGS_FILE, out / _RUNS_FILE
    if out.exists() and not out.is_dir():
        raise UserError(f"{names['out']} {out} is a file; pass a folder path")
    if args_path.exists():
        try:
            stored = json.loads(args_path.read_text(encoding="utf-8"))
        except ValueError:
            raise UserError(f"{names['out']} {out}: {_ARGS_FILE} is not readable JSON; pass another "
                            f"{names['out']} or remove that folder") from None
        differs = [k for k in args if k != "archs" and stored.get(k) != args[k]]
        if differs:
            def show(value: Any) -> str:
                return "not given" if value is None else repr(value)

            shown = "; ".join(
                f"{names.get(k, k)} differs" if k == "space"
                else f"{names.get(k, k)} {show(args[k])} here, {show(stored.get(k))} there" for k in differs)
            raise UserError(f"{names['out']} {out} holds a calibration made with other arguments "
                            f"({shown}); pass the same arguments to resume it, or another {names['out']}")
        return True
    if runs_path.exists():
        raise UserError(f"{names['out']} {out} holds {_RUNS_FILE} without {_ARGS_FILE}, so its runs cannot "
                        f"be matched to these arguments; pass another {names['out']}")
    return False


def _estimated_images(fid: Fidelity, num_train: int) -> float:
    """Training images a fidelity's budget allows at most (inf when only seconds bound it)."""
    limits = [math.inf]
    if fid.epochs is not None:
        limits.append(fid.epochs * num_train)
    if fid.images is not None:
        limits.append(float(fid.images))
    return min(limits)


def calibrate(space: Any, dataset: str, samples: int, low: str | Fidelity, high: str | Fidelity, *,
              seeds: int = 1, recipe: str = "proxy", val_size: int | None = None,
              split_seed: int = 0, seed: int = 0, out: str | os.PathLike | None = None,
              device: str | None = None, num_threads: int | None = None, progress: bool = True,
              bootstrap: int = 2000, root: str | os.PathLike | None = None,
              download: bool = True) -> CalibrationReport:
    """Measure how well training at fidelity ``low`` ranks architectures of ``space``
    compared with training at fidelity ``high``; see the module docstring for what is
    measured and the conventions.

    Args:
        space: a `space.search.SearchSpace`, a shipped space name or a space file.
        dataset: a dataset name or folder for `nas.data.make_splits`.
        samples: distinct architectures to draw (at least 3), with
            ``np.random.default_rng(seed)`` (see `draw_architectures`).
        low, high: `Fidelity` or spec strings (`parse_fidelity`).
        seeds: low-fidelity runs per architecture (training seeds ``seed .. seed+seeds-1``);
            the high fidelity trains once, with training seed ``seed``.
        recipe: ``"proxy"`` or ``"paper"`` (`TrainConfig.proxy` / `TrainConfig.paper`), for
            both fidelities; a fidelity's ``batch_size`` / ``lr`` override it.
        val_size: validation images (default: `make_splits`'s), one split for every run.
        split_seed: seed of the validation and subset draws.
        seed: seed of the architecture draw, the bootstrap, and the first training seed.
        out: folder for the resumable run log and the report (see "Resuming"); None keeps
            everything in memory.
        device, num_threads: passed to `TrainConfig`.
        progress: one line per run on stderr (``run k/M: low seed s, arch i/N ... val 0.xxx
            (12.3 s)``); the trainer's own bars stay off.
        bootstrap: bootstrap resamples for the confidence intervals (at least 100).
        root, download: passed to `make_splits`.

    Raises:
        UserError: bad arguments, an ``out`` made with other arguments, fewer than 3
            architectures with every run finished.

    Warns:
        UserWarning: the low fidelity's budget allows more training than the high one's;
            a correlation is undefined.
    """
    return _calibrate(space, dataset, samples, low, high, seeds=seeds, recipe=recipe, val_size=val_size,
                      split_seed=split_seed, seed=seed, out=out, device=device, num_threads=num_threads,
                      progress=progress, bootstrap=bootstrap, root=root, download=download,
                      names=_API_NAMES)


def _calibrate(space: Any, dataset: str, samples: int, low: Any, high: Any, *, seeds: int, recipe: str,
               val_size: int | None, split_seed: int, seed: int, out: Any, device: str | None,
               num_threads: int | None, progress: bool, bootstrap: int, root: Any, download: bool,
               names: Mapping[str, str]) -> CalibrationReport:
    _check_counts(names, samples, seeds, recipe, val_size, split_seed, seed, bootstrap, num_threads)
    fids = {"low": parse_fidelity(low, names["low"]), "high": parse_fidelity(high, names["high"])}
    space = _load_space(space)
    archs = draw_architectures(space, samples, seed, name=names["samples"])
    arch_strings = [a.to_string() for a in archs]

    out_path = Path(out) if out is not None else None
    done: dict[tuple[str, str, int], dict] = {}
    if out_path is not None:
        args = {
            "format": _ARGS_FORMAT, "space": _space_identity(space), "dataset": str(dataset),
            "samples": samples, "seeds": seeds, "low": str(fids["low"]), "high": str(fids["high"]),
            "recipe": recipe, "val_size": val_size, "split_seed": split_seed, "seed": seed,
            "archs": arch_strings,
        }
        args_stored = _check_out_args(out_path, args, names)
        done = _read_runs(out_path / _RUNS_FILE)

    splits_by_subset = _load_splits(dataset, fids, val_size, split_seed, root, download)
    n_val = len(next(iter(splits_by_subset.values())).val)
    _warn_if_low_costs_more(fids, splits_by_subset)

    if out_path is not None:
        # Only now that the data loaded: a refused dataset must not lock --out to its name.
        if not args_stored:
            with atomic_write(out_path / _ARGS_FILE, "w") as f:
                json.dump(args, f, indent=2)
                f.write("\n")
        _drop_partial_tail(out_path / _RUNS_FILE)

    plan = [_Run("low", seed + k, i) for k in range(seeds) for i in range(samples)]
    plan += [_Run("high", seed, i) for i in range(samples)]
    total = len(plan)
    finished_before = sum(1 for r in plan if r.key(arch_strings[r.index]) in done)
    if progress and finished_before:
        print(f"resuming: {finished_before} of {total} runs finished earlier in {out_path / _RUNS_FILE}",
              file=sys.stderr, flush=True)

    records: dict[tuple[str, str, int], dict] = {}
    for k, run in enumerate(plan, 1):
        key = run.key(arch_strings[run.index])
        if key not in done:
            if progress:
                print(f"run {k}/{total}: {run.fidelity} seed {run.seed}, arch {run.index + 1}/{samples} ...",
                      end="", file=sys.stderr, flush=True)
            done[key] = _run_once(archs[run.index], run, fids[run.fidelity], splits_by_subset, recipe,
                                  device, num_threads, out_path, progress)
        records[key] = done[key]

    report = _summarise(space.name, str(dataset), recipe, fids, samples, seeds, n_val, split_seed, seed,
                        bootstrap, arch_strings, records, names)
    if out_path is not None:
        report.out = str(out_path)
        with atomic_write(out_path / _REPORT_FILE, "w") as f:
            json.dump(report.to_dict(), f, indent=2)
            f.write("\n")
        plot_calibration(report, out_path / _PLOT_FILE)
        # Every run has its record now; a checkpoint left by a kill between the record and
        # its removal stands for nothing.
        ckpts = out_path / "checkpoints"
        if ckpts.is_dir():
            for stale in ckpts.glob("*.pt"):
                stale.unlink()
            if not any(ckpts.iterdir()):
                ckpts.rmdir()
    return report


def _load_splits(dataset: str, fids: Mapping[str, Fidelity], val_size: int | None, split_seed: int,
                 root: Any, download: bool) -> dict[int | None, Any]:
    """One `Splits` per distinct ``subset`` (loading can be slow), checked to share one
    validation split."""
    import torch

    from .data import make_splits

    splits: dict[int | None, Any] = {}
    for fid in fids.values():
        if fid.subset not in splits:
            splits[fid.subset] = make_splits(dataset, val_size=val_size, subset=fid.subset,
                                             split_seed=split_seed, root=root, download=download)
    first = next(iter(splits.values()))
    for other in splits.values():
        # The whole comparison rests on one yardstick; make_splits promises it, check it.
        if not (torch.equal(other.val.labels, first.val.labels)
                and torch.equal(other.val.images, first.val.images)):
            raise RuntimeError("make_splits gave different validation images for different subsets; "
                               "the fidelities cannot be compared")
    return splits


def _warn_if_low_costs_more(fids: Mapping[str, Fidelity], splits: Mapping[int | None, Any]) -> None:
    low, high = fids["low"], fids["high"]
    images = {k: _estimated_images(f, len(splits[f.subset].train)) for k, f in fids.items()}
    more_images = math.isfinite(images["low"]) and images["low"] > images["high"]
    more_seconds = low.seconds is not None and high.seconds is not None and low.seconds > high.seconds
    if more_images or more_seconds:
        warnings.warn(f"the low fidelity ({low}) allows more training than the high one ({high}); "
                      "the cost ratio will be below 1", UserWarning, stacklevel=4)


def _run_once(arch, run: _Run, fid: Fidelity, splits_by_subset: Mapping[int | None, Any], recipe: str,
              device: str | None, num_threads: int | None, out: Path | None, progress: bool) -> dict:
    """Train one run and return its record (appended to the run log first, when there is one).
    With ``progress``, completes the line the caller started on stderr."""
    from .train import CheckpointMismatch, TrainConfig, TrainingFailed, train

    arch_string = arch.to_string()
    splits = splits_by_subset[fid.subset]
    factory = TrainConfig.proxy if recipe == "proxy" else TrainConfig.paper
    config = factory(seed=run.seed, device=device, num_threads=num_threads, **fid.overrides())
    checkpoint = None
    if out is not None:
        digest = hashlib.blake2b(arch_string.encode(), digest_size=6).hexdigest()
        checkpoint = out / "checkpoints" / f"{run.fidelity}-s{run.seed}-{digest}.pt"
    record: dict[str, Any] = {"arch": arch_string, "fidelity": run.fidelity, "seed": run.seed,
                              "spec": str(fid)}
    try:
        try:
            result = train(arch, splits, fid.budget, config, checkpoint=checkpoint, progress=False)
        except CheckpointMismatch:
            # A checkpoint left by a run with other settings (device, precision): start over.
            result = train(arch, splits, fid.budget, config, checkpoint=checkpoint, resume=False,
                           progress=False)
    except TrainingFailed as err:
        record["failed"] = str(err).splitlines()[0] if str(err) else type(err).__name__
        if progress:
            print(f" failed: {record['failed']}", file=sys.stderr, flush=True)
    except BaseException:
        if progress:  # end the started line, so an error or "interrupted" reads on its own
            print(file=sys.stderr, flush=True)
        raise
    else:
        record.update(
            val_acc=result.val_acc, val_acc_se=getattr(result, "val_acc_se", math.nan),
            seconds=result.seconds, train_seconds=result.train_seconds, macs=result.macs,
            params=result.params, epochs=result.epochs, steps=result.steps,
            images_seen=result.images_seen, batch_size=result.batch_size,
            recipe=getattr(result, "recipe", recipe), train_size=len(splits.train),
            val_size=len(splits.val))
        if progress:
            print(f" val {result.val_acc:.3f} ({result.seconds:.1f} s)", file=sys.stderr, flush=True)
    if out is not None:
        _append_run(out / _RUNS_FILE, record)
        if checkpoint is not None and checkpoint.exists():
            checkpoint.unlink()  # the record now stands for the run
    return record


def _summarise(space_name: str, dataset: str, recipe: str, fids: Mapping[str, Fidelity], samples: int,
               seeds: int, n_val: int, split_seed: int, seed: int, bootstrap: int, arch_strings: list[str],
               records: Mapping[tuple[str, str, int], dict], names: Mapping[str, str]) -> CalibrationReport:
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
    if len(rows) < _MIN_SAMPLES:
        raise UserError(f"only {len(rows)} of the {samples} architectures trained at both fidelities "
                        f"without failing; a rank correlation needs 3, so raise {names['samples']}")

    x = np.array([r.low_mean for r in rows])
    y = np.array([r.high_acc for r in rows])
    rho, rho_p = _correlation("spearman", x, y)
    tau, tau_p = _correlation("kendall", x, y)
    for label, values in (("low", x), ("high", y)):
        if np.all(values == values[0]):
            warnings.warn(f"every {label}-fidelity accuracy is {values[0]:.3f}, so the rank correlation is "
                          "undefined; train longer at that fidelity", UserWarning, stacklevel=4)
    # One set of resamples for both statistics, seeded apart from the architecture draw.
    idx = np.random.default_rng((seed, 1)).integers(0, len(x), size=(bootstrap, len(x)))
    rho_ci, valid = _bootstrap_ci(x, y, spearman_rows, idx)
    tau_ci, _ = _bootstrap_ci(x, y, kendall_rows, idx)

    seed_std = seed_rho = None
    if seeds >= 2:
        seed_std = float(np.mean([r.low_std for r in rows]))
        lows = np.array([r.low_accs for r in rows])  # (archs, seeds)
        pair_rhos = [_correlation("spearman", lows[:, a], lows[:, b])[0]
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
    return math.nan if value is None else float(value)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


# --- command line -----------------------------------------------------------------------------


def _cmd_calibrate(args: argparse.Namespace) -> int:
    report = _calibrate(
        args.space, args.dataset, args.samples, args.low, args.high, seeds=args.seeds,
        recipe=args.recipe, val_size=args.val_size, split_seed=args.split_seed, seed=args.seed,
        out=args.out, device=args.device, num_threads=args.threads, progress=not args.quiet,
        bootstrap=args.bootstrap, root=args.data_root, download=not args.no_download, names=_FLAG_NAMES)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2), flush=True)
    else:
        print(report.summary(), flush=True)
        print(f"wrote {Path(args.out) / _REPORT_FILE} and {Path(args.out) / _PLOT_FILE}", flush=True)
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``calibrate`` on the ``nas`` command's sub-parsers (``set_defaults(func=...)``
    returns the exit status)."""
    p = subparsers.add_parser(
        "calibrate", help="measure how well a short training ranks architectures",
        description="Train N architectures of a space at a low fidelity (K seeds) and a high one, "
                    "and report their rank correlation (Spearman, Kendall, bootstrap 95% CIs), the "
                    "low fidelity's seed noise and the cost ratio. A fidelity is a spec such as "
                    "'epochs=2,subset=4500' with keys epochs, seconds, images (the budget), subset "
                    "(training images), batch_size and lr (recipe overrides). Runs are logged to "
                    "--out and a re-run with the same arguments resumes.")
    p.add_argument("--space", required=True, help="shipped space name or space file")
    p.add_argument("--dataset", required=True,
                   help="cifar10, cifar100, synthetic[:N[:classes[:size]]], or an image folder")
    p.add_argument("--samples", type=int, required=True, help="architectures to draw (at least 3)")
    p.add_argument("--low", required=True, help="cheap fidelity, e.g. epochs=1,subset=4500")
    p.add_argument("--high", required=True, help="reference fidelity, e.g. epochs=10")
    p.add_argument("--seeds", type=int, default=1, help="low-fidelity training seeds per architecture (1)")
    p.add_argument("--recipe", choices=_RECIPES, default="proxy", help="training recipe for both (proxy)")
    p.add_argument("--val-size", type=int, default=None,
                   help="validation images held out of the training split, one split for every run "
                        "(default: make_splits', 2500 but at most a fifth of the split)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the validation and subset draws (0)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the architecture draw and the bootstrap, and the first training seed (0)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CIs (2000)")
    p.add_argument("--out", default="runs/calibrate", help="output folder (default runs/calibrate)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument("--data-root", default=None, help="folder holding or caching dataset archives")
    p.add_argument("--no-download", action="store_true", help="never download datasets")
    p.add_argument("--quiet", action="store_true", help="no per-run lines on stderr")
    p.add_argument("--json", action="store_true", help="print calibration.json instead of the summary")
    p.set_defaults(func=_cmd_calibrate)
    return p
