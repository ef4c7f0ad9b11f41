"""Running a calibration (`calibrate`): draw the architectures, load one validation split
for every run, train each planned run not already in the run log (checkpointed, logged as
it finishes), and write the report and the plot."""

from __future__ import annotations

import hashlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..atomic import write_json_atomic
from .arguments import API_NAMES, check_counts
from .draw import draw_architectures, load_space
from .fidelity import Fidelity, parse_fidelity, warn_if_low_costs_more
from .plot import plot_calibration
from .report import CalibrationReport
from .runlog import (ARGS_FILE, ARGS_FORMAT, PLOT_FILE, REPORT_FILE, RUNS_FILE, append_run,
                     check_out_args, drop_partial_tail, read_runs, space_identity)
from .summarise import summarise

__all__ = ["calibrate", "run_calibration"]


@dataclass(frozen=True)
class _Run:
    """One planned training run."""

    fidelity: str  # "low" or "high"
    seed: int
    index: int  # 0-based architecture index

    def key(self, arch_string: str) -> tuple[str, str, int]:
        return (arch_string, self.fidelity, self.seed)


def calibrate(space: Any, dataset: str, samples: int, low: str | Fidelity, high: str | Fidelity, *,
              seeds: int = 1, recipe: str = "proxy", val_size: int | None = None,
              split_seed: int = 0, seed: int = 0, out: str | os.PathLike | None = None,
              device: str | None = None, num_threads: int | None = None, progress: bool = True,
              bootstrap: int = 2000, root: str | os.PathLike | None = None,
              download: bool = True) -> CalibrationReport:
    """Measure how well training at fidelity ``low`` ranks architectures of ``space``
    compared with training at fidelity ``high``; see `nas.calibrate` for what is measured
    and the conventions.

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
    return run_calibration(space, dataset, samples, low, high, seeds=seeds, recipe=recipe,
                           val_size=val_size, split_seed=split_seed, seed=seed, out=out, device=device,
                           num_threads=num_threads, progress=progress, bootstrap=bootstrap, root=root,
                           download=download, names=API_NAMES)


def run_calibration(space: Any, dataset: str, samples: int, low: Any, high: Any, *, seeds: int,
                    recipe: str, val_size: int | None, split_seed: int, seed: int, out: Any,
                    device: str | None, num_threads: int | None, progress: bool, bootstrap: int,
                    root: Any, download: bool, names: Mapping[str, str]) -> CalibrationReport:
    """`calibrate`, with every argument given and ``names`` saying how messages name the
    arguments (`API_NAMES` for `calibrate`, `FLAG_NAMES` for the command). Warnings point
    two calls up, at the caller of `calibrate` or of the command's function."""
    check_counts(names, samples, seeds, recipe, val_size, split_seed, seed, bootstrap, num_threads)
    if device is not None:
        from ..train.device import resolve_device

        resolve_device(device)  # a device this machine lacks: refused before --out is written
    fids = {"low": parse_fidelity(low, names["low"]), "high": parse_fidelity(high, names["high"])}
    space = load_space(space)
    archs = draw_architectures(space, samples, seed, name=names["samples"])
    arch_strings = [a.to_string() for a in archs]

    out_path = Path(out) if out is not None else None
    done: dict[tuple[str, str, int], dict] = {}
    if out_path is not None:
        args = {
            "format": ARGS_FORMAT, "space": space_identity(space), "dataset": str(dataset),
            "samples": samples, "seeds": seeds, "low": str(fids["low"]), "high": str(fids["high"]),
            "recipe": recipe, "val_size": val_size, "split_seed": split_seed, "seed": seed,
            "archs": arch_strings,
        }
        args_stored = check_out_args(out_path, args, names)
        done = read_runs(out_path / RUNS_FILE)

    splits_by_subset = _load_splits(dataset, fids, val_size, split_seed, root, download)
    n_val = len(next(iter(splits_by_subset.values())).val)
    warn_if_low_costs_more(fids, splits_by_subset)

    if out_path is not None:
        # Only now that the data loaded: a refused dataset must not lock --out to its name.
        if not args_stored:
            write_json_atomic(out_path / ARGS_FILE, args)
        drop_partial_tail(out_path / RUNS_FILE)

    plan = [_Run("low", seed + k, i) for k in range(seeds) for i in range(samples)]
    plan += [_Run("high", seed, i) for i in range(samples)]
    total = len(plan)
    finished_before = sum(1 for r in plan if r.key(arch_strings[r.index]) in done)
    if progress and finished_before:
        print(f"resuming: {finished_before} of {total} runs finished earlier in {out_path / RUNS_FILE}",
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

    report = summarise(space.name, str(dataset), recipe, fids, samples, seeds, n_val, split_seed, seed,
                       bootstrap, arch_strings, records, names)
    if out_path is not None:
        report.out = str(out_path)
        write_json_atomic(out_path / REPORT_FILE, report.to_dict())
        plot_calibration(report, out_path / PLOT_FILE)
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

    from ..data import make_splits

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


def _run_once(arch, run: _Run, fid: Fidelity, splits_by_subset: Mapping[int | None, Any], recipe: str,
              device: str | None, num_threads: int | None, out: Path | None, progress: bool) -> dict:
    """Train one run and return its record (appended to the run log first, when there is one).
    With ``progress``, completes the line the caller started on stderr."""
    from ..train import CheckpointMismatch, TrainConfig, TrainingFailed, train

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
        append_run(out / RUNS_FILE, record)
        if checkpoint is not None and checkpoint.exists():
            checkpoint.unlink()  # the record now stands for the run
    return record

