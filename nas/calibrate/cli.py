"""The ``nas calibrate`` command: its flags (`add_parser`, hooked on the ``nas`` command by
`nas.cli`) and what it prints."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .arguments import FLAG_NAMES, RECIPES
from .runlog import PLOT_FILE, REPORT_FILE
from .runner import run_calibration

__all__ = ["add_parser"]


def _cmd_calibrate(args: argparse.Namespace) -> int:
    report = run_calibration(
        args.space, args.dataset, args.samples, args.low, args.high, seeds=args.seeds,
        recipe=args.recipe, val_size=args.val_size, split_seed=args.split_seed, seed=args.seed,
        out=args.out, device=args.device, num_threads=args.threads, progress=not args.quiet,
        bootstrap=args.bootstrap, root=args.data_root, download=not args.no_download, names=FLAG_NAMES)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2), flush=True)
    else:
        print(report.summary(), flush=True)
        print(f"wrote {Path(args.out) / REPORT_FILE} and {Path(args.out) / PLOT_FILE}", flush=True)
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
    p.add_argument("--recipe", choices=RECIPES, default="proxy", help="training recipe for both (proxy)")
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
