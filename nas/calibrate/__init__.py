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

from .cli import add_parser
from .draw import draw_architectures
from .fidelity import FIDELITY_KEYS, Fidelity, parse_fidelity
from .plot import plot_calibration
from .report import ArchRow, CalibrationReport, format_summary
from .runner import calibrate
from .stats import kendall_rows, spearman_rows

__all__ = [
    "ArchRow",
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
