"""Running a search: `run_search(settings)` checks everything, loads the data once, creates
or resumes the study, seeds it, runs trials until the study holds ``trials`` counted ones
(or ``timeout`` passes), and writes the outputs (`nas.search.results.write_outputs`).

Order of work (nothing is written until every check has passed)::

    resolve_settings -> load the splits (the number of classes decides costs)
    -> default target, hard budgets reachable?, --enqueue architectures in the space?
    -> open the storage, create or resume the study (refused if made with other settings)
    -> queue the --enqueue architectures -> trials (one process, or --workers processes)
    -> baseline.json, trials.csv, summary.txt

Counting: COMPLETE trials (infeasible and duplicate ones included) and PRUNED trials count
toward ``trials``; FAILED ones do not, so a resumed study re-runs what failed or was cut off.
One call gives up after ``max_failures`` failed trials (default ``trials``), so a setting
under which every candidate diverges ends with a warning instead of looping for ever. Trials
RUNNING in other live workers are waited for (a dead worker's trial goes stale after
`study.GRACE_PERIOD` seconds, is marked FAIL and queued again by Optuna's retry callback).
With ``sampler="grid"`` the count is at most the number of grid points (a larger one is
capped, with a line on stderr), so every point is evaluated once, a failed one again on
resume (`nas.search.grid_sampler`).

Progress: a bar over trials on stderr (trial k/N, the running trial's epoch and accuracy,
best reward or front size and hypervolume) and one line per finished trial appended to
``<out>/runs/<study>/search.log``.

Workers (``workers=K > 1``): the parent checks, creates and seeds the study, then starts K
processes (``python -m nas.search.worker -``, the JSON settings on stdin: nothing depends
on how the parent was started and no password shows in the process list) that each load
the data once and run trials on the shared study; CPU threads are split between them
(``num_threads`` or torch's count, divided by K, at least 1), and with CUDA devices each
worker takes ``cuda:(i mod G)``. The parent shows the bar
from the storage, waits for them, and on Ctrl-C interrupts them (their running trials are
marked FAIL and re-run on resume). Other machines join with the same ``storage`` and
``study``. A SQLite file suits workers on one machine; use PostgreSQL across machines.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from space.errors import UserError

from .budgets import candidate_costs, largest_reachable, smallest_reachable
from .early_stop import MOASHA
from .outage import Outage, StorageUnreachable, is_unreachable
from .objectives import MnasReward, V2Reward, format_quantity, reward_from_dict
from .results import LOG_FILE, SearchSummary, summarize, trial_reason, write_outputs
from .settings import Resolved, SearchSettings, resolve_settings, settings_for_budget
from .stale import StaleTrials
from .storage_url import redact
from .study import (counted_trials, create_or_load_study, enqueue, open_storage, resolve_enqueue,
                    study_info)
from .trial import ARCH_ATTR, SURPLUS_ATTR, Objective, SurplusTrial, TrialContext, sweep_checkpoints

# Per-trial checkpoints, so that the retry of a killed trial continues it (`nas.search.trial`).
CHECKPOINT_DIR = "checkpoints"

__all__ = ["run_search", "search"]

_WAIT_POLL = 2.0  # seconds between looks at the storage while others' trials run


def search(space, dataset: str, **kwargs: Any) -> SearchSummary:
    """`run_search` with the settings as keyword arguments: ``search("mnasnet_cifar",
    "cifar10", trials=20, target=("macs", "30M"))``; ``budget="full"`` takes trials, epochs
    and subset from that budget (`BUDGETS`) unless given; ``progress`` is passed through."""
    progress = kwargs.pop("progress", True)
    budget = kwargs.pop("budget", "quick")
    return run_search(settings_for_budget(budget, space=space, dataset=dataset, **kwargs), progress=progress)


# --------------------------------------------------------------------------- preparation


@dataclasses.dataclass
class _Prepared:
    r: Resolved
    splits: Any
    num_classes: int
    config: Any
    batch_size: int
    enqueue: list
    notes: list  # warnings to show once every check has passed (`_warn_notes`)


# Fewer optimiser steps per candidate than this and the proxy recipe barely leaves chance.
MIN_USEFUL_STEPS = 150


def _prepare(settings: SearchSettings, r: Resolved | None = None) -> _Prepared:
    """Every check that needs the data, before anything is written. Its warnings are kept
    in ``notes``, so that a refusal found later (a study with other settings, a storage that
    does not answer) is the only thing the user sees."""
    from space.cost import cost as arch_cost

    from ..data import make_splits
    from ..train import TrainConfig

    r = resolve_settings(settings) if r is None else r
    s = settings
    notes: list[str] = []
    queued = resolve_enqueue(r.space, s.enqueue)
    # A budget's subset is a cap: on a dataset smaller than it, every candidate gets all
    # images. A --subset the user gave is not: more than the data is refused.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = make_splits(s.dataset, val_size=s.val_size, subset=s.subset, split_seed=s.split_seed,
                             subset_at_most=s.subset_is_cap, names={"subset": "--subset", "val_size": "--val-size"})
    notes += [str(w.message) for w in caught]
    if s.subset is not None and len(splits.train) < s.subset:
        notes.append(f"the budget's subset of {s.subset} images is more than the {len(splits.train)} training images "
                     f"that validation leaves in {s.dataset}; every candidate trains on all {len(splits.train)}")
    num_classes = splits.num_classes
    if r.mode == "reward" and r.reward_kind == "mnas" and r.target is None:
        # T defaults to the base architecture's MACs: search for a better network of its size
        # (times target_factor: scaling grid's members should cost twice the base).
        base_macs = arch_cost(r.space.base, num_classes=num_classes).macs
        r = dataclasses.replace(r, target=("macs", float(base_macs * s.target_factor)))
    for kind, limit in r.budgets.items():
        if kind in ("macs", "params"):
            least, _ = smallest_reachable(r.space, kind, num_classes)
            if least > limit:
                flag = "--max-macs" if kind == "macs" else "--max-params"
                raise UserError(f"{flag} {format_quantity(limit, kind)} is below every architecture of space "
                                f"{r.space.name}: the smallest reachable is {format_quantity(least, kind)} "
                                f"at {num_classes} classes")
        else:
            # Latency cannot be reasoned about analytically: the architecture with the fewest
            # MACs is measured as the stand-in for the fastest.
            _, small = smallest_reachable(r.space, "macs", num_classes)
            measured = candidate_costs(small, num_classes, {"latency"}, device=s.device,
                                       num_threads=s.num_threads)["latency"]
            if measured > limit:
                raise UserError(f"--max-latency {format_quantity(limit, 'latency')} is below the measured latency "
                                f"of the space's smallest architecture by MACs, {format_quantity(measured, 'latency')}")
    config = TrainConfig.for_recipe(s.recipe, **{**dict(s.train_overrides), "seed": s.seed, "device": s.device,
                                                 "num_threads": s.num_threads})
    batch = config.resolved_batch_size(len(splits.train))
    steps = int(s.epochs * (len(splits.train) // batch))
    if steps < MIN_USEFUL_STEPS:
        # Measured: at 31 proxy steps every mnasnet_cifar candidate sat at chance on CIFAR-10,
        # so the reward only ranked costs; `nas calibrate` tells how many steps a ranking needs.
        epochs = f"{s.epochs:g} epoch" + ("" if s.epochs == 1 else "s")
        notes.append(f"each candidate trains only {steps} steps ({epochs} of {len(splits.train)} images "
                     f"in batches of {batch}); the proxy recipe needs a few hundred to rank architectures, "
                     "so raise --epochs or --subset")
    return _Prepared(r, splits, num_classes, config, batch, queued, notes)


def _warn_notes(p: _Prepared) -> None:
    for note in p.notes:
        warnings.warn(note, UserWarning, stacklevel=3)


def _study_info(p: _Prepared) -> dict:
    """`STUDY_ATTR` for a new study; the V2 reward's references are measured here, once."""
    r, s = p.r, p.r.settings
    reward = None
    if r.mode == "reward":
        if r.reward_kind == "mnas":
            kind, target = r.target
            reward = (MnasReward.hard if s.hard else MnasReward.soft)(target, kind)
        else:
            # References: the space's base architecture, timed by the same micro-benchmark and
            # at the same batch as every candidate (see budgets.measure_step_time).
            ref = candidate_costs(r.space.base, p.num_classes, {"step_time"}, device=s.device,
                                  batch_size=p.batch_size, num_threads=s.num_threads)
            reward = V2Reward(ref_step_time=ref["step_time"], ref_params=ref["params"])
    # A fixed hypervolume reference, so the figure is comparable across a study's life and
    # between studies of one space: the budget, else the space's costliest architecture
    # (analytic costs only; a measured cost falls back to the costliest seen).
    hv_reference = {c: float(r.budgets[c]) if c in r.budgets else largest_reachable(r.space, c, p.num_classes)[0]
                    for c in r.costs if c in r.budgets or c in ("macs", "params")}
    info = {
        "mode": r.mode, "objectives": list(r.objective_names), "directions": r.directions,
        "hv_reference": hv_reference,
        "costs": list(r.costs), "budgets": dict(r.budgets),
        "target": list(r.target) if r.target else None,
        "reward": reward.to_dict() if reward is not None else None,
        "reward_text": reward.describe() if reward is not None else None,
        "reward_reference": r.space.base.to_string() if r.reward_kind == "v2" else None,
        "epochs": s.epochs, "early_stop": r.early_stop, "min_epochs": s.min_epochs, "eta": s.eta,
        "num_classes": p.num_classes, "dataset": str(s.dataset), "space": r.space.name,
        "recipe": s.recipe, "seed": s.seed, "subset": s.subset, "val_size": len(p.splits.val),
        "train_size": len(p.splits.train), "batch_size": p.batch_size,
    }
    return info


def _context(p: _Prepared, study: optuna.Study, info: dict) -> TrialContext:
    r, s = p.r, p.r.settings
    reward = reward_from_dict(info["reward"]) if info.get("reward") else None
    moasha = None
    if r.mode == "pareto" and r.early_stop == "asha":
        moasha = MOASHA(min_epochs=s.min_epochs, eta=s.eta, max_epochs=s.epochs, cost_keys=r.costs)
    measured = set(r.measured_kinds())
    return TrialContext(study=study, space=r.space, splits=p.splits, num_classes=p.num_classes, mode=r.mode,
                        costs=r.costs, measured=measured, budgets=dict(r.budgets), reward=reward,
                        epochs=s.epochs, config=p.config, batch_size=p.batch_size, moasha=moasha,
                        trials=s.trials, checkpoint_dir=r.run_dir / CHECKPOINT_DIR)


# --------------------------------------------------------------------------- progress


class _Progress:
    """The bar over trials on stderr and the per-trial log lines."""

    def __init__(self, study: optuna.Study, r: Resolved, show: bool, log_path: Path | None):
        self.study, self.r, self.show = study, r, show
        self.log_path = log_path
        self.bar = None
        self.status = ""
        self.best = ""
        if show:
            from tqdm.auto import tqdm

            done, _ = counted_trials(study)
            self.bar = tqdm(total=r.settings.trials, initial=min(done, r.settings.trials),
                            desc=f"search {r.study_name}", unit="trial", file=sys.stderr, dynamic_ncols=True,
                            leave=True)
            self.refresh_best()

    def refresh_best(self) -> None:
        s = summarize(self.study)
        if s.mode == "reward":
            self.best = f"best reward {s.best['reward']:.4f}" if s.best else "best -"
        else:
            self.best = (f"front {len(s.front)}, HV {s.hypervolume:.4g}" if s.hypervolume is not None
                         else "front 0")
        self._post()

    def _post(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(" | ".join(x for x in (self.status, self.best) if x), refresh=True)

    def on_start(self, number: int, arch: str) -> None:
        self.status = f"trial {number}"
        self._post()

    def on_epoch(self, number: int, epoch: int, acc: float) -> None:
        self.status = f"trial {number} epoch {epoch}/{self.r.settings.epochs} acc {acc:.3f}"
        self._post()

    def finished(self, t: FrozenTrial) -> None:
        if self.log_path is not None:
            self.log(t)
        self.status = ""
        if self.bar is not None:
            done, _ = counted_trials(self.study)
            self.bar.n = min(done, self.r.settings.trials)
            self.refresh_best()

    def sync(self) -> None:
        """For the parent of workers: read the count from the storage (its workers wait
        out an outage; the bar just stands still)."""
        if self.bar is not None:
            try:
                done, running = counted_trials(self.study)
            except Exception as err:  # noqa: BLE001
                if not is_unreachable(err):
                    raise
                return
            self.status = f"{running} running"
            self.bar.n = min(done, self.r.settings.trials)
            self.refresh_best()

    def log(self, t: FrozenTrial) -> None:
        a = t.user_attrs
        parts = [datetime.datetime.now().isoformat(timespec="seconds"), f"trial {t.number}", t.state.name]
        if t.state == TrialState.COMPLETE and t.values is not None:
            parts.append(" ".join(f"{n}={_short(v, n)}" for n, v in zip(self.r.objective_names, t.values)))
        for key in ("val_acc", "macs", "params", "seconds"):
            if key in a and key not in self.r.objective_names:
                parts.append(f"{key}={_short(a[key], key)}")
        reason = trial_reason(t)
        if reason:
            parts.append(reason)
        parts.append(a.get(ARCH_ATTR, ""))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write("  ".join(str(p) for p in parts if p != "") + "\n")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _short(value: Any, kind: str) -> str:
    if kind in ("macs", "params", "latency", "step_time"):
        if not math.isfinite(value):
            return "inf"
        text = format_quantity(value, kind)
        # key=value tokens without spaces: the key names the unit of a count ("macs=32M"),
        # a duration keeps its unit ("latency=5.0ms")
        return text.replace(" ", "") if kind in ("latency", "step_time") else text.split(" ")[0]
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --------------------------------------------------------------------------- the loop


def _run_trials(study: optuna.Study, ctx: TrialContext, r: Resolved, progress: _Progress,
                deadline: float | None) -> str:
    """Run trials in this process until the count is reached; returns why it stopped."""
    from ..train import TrainingFailed

    objective = Objective(ctx)
    failures = 0

    def after(st: optuna.Study, t: FrozenTrial) -> None:
        nonlocal failures
        if t.state == TrialState.FAIL and not t.user_attrs.get(SURPLUS_ATTR):
            failures += 1
        objective.finished(t)  # after the storage has its state: a finished trial's checkpoint goes
        progress.finished(t)

    ctx.on_epoch, ctx.on_start = progress.on_epoch, progress.on_start
    trials = r.settings.trials
    fail_stale = StaleTrials()
    outage = Outage(r.storage_url)
    while True:
        try:
            fail_stale(study)  # dead workers' trials, those killed before their first heartbeat too
            done, running = counted_trials(study)
        except Exception as err:  # noqa: BLE001 - only an unreachable storage is waited out
            if not is_unreachable(err):
                raise
            outage.wait(err)
            continue
        # The clock of an outage is reset only by a trial that went through (or by having no
        # trial to run): reads that work while every write fails (a full disk) still end.
        if done >= trials:
            outage.ok()
            return "done"
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout"
        if failures >= r.max_failures:
            warnings.warn(f"study {r.study_name}: {failures} trials failed in this run (see {LOG_FILE}); "
                          f"stopping with {done} of {trials} trials; run again to retry")
            return "failures"
        if done + running >= trials:
            # Other workers' trials may fill the count; wait for them (or for them to go stale).
            outage.ok()
            time.sleep(_WAIT_POLL)
            continue
        try:
            study.optimize(objective, n_trials=1, catch=(TrainingFailed, SurplusTrial), callbacks=[after])
        except Exception as err:  # noqa: BLE001
            # The trial in flight is lost with the connection; once the storage is back it
            # is stale (no heartbeat), failed and queued again by the check above.
            if not is_unreachable(err):
                raise
            outage.wait(err)
        else:
            outage.ok()


def _worker(settings_dict: dict, index: int, deadline_wall: float | None) -> None:
    """A worker process: load the data once, run trials on the shared study."""
    d = dict(settings_dict)
    for key in ("objectives", "target", "enqueue"):
        if d.get(key) is not None:
            d[key] = tuple(d[key])
    settings = SearchSettings(**d)
    p = _prepare(settings)
    storage = open_storage(p.r.storage_url)
    with _quiet_optuna():
        study, _ = create_or_load_study(p.r, {}, storage=storage, seed_offset=1000 * (index + 1))
    info = study_info(study)
    ctx = _context(p, study, info)
    deadline = None if deadline_wall is None else time.monotonic() + max(0.0, deadline_wall - time.time())
    progress = _Progress(study, p.r, False, p.r.run_dir / LOG_FILE)
    with _quiet_optuna():
        _run_trials(study, ctx, p.r, progress, deadline)


class _quiet_optuna:
    """Optuna's per-trial INFO lines and caught-exception tracebacks would break the bar;
    the log file and the bar say the same."""

    def __enter__(self):
        self.level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        return self

    def __exit__(self, *exc):
        optuna.logging.set_verbosity(self.level)
        return False


def _worker_settings(settings: SearchSettings, r: Resolved, k: int, i: int) -> dict:
    import torch

    total = settings.num_threads or torch.get_num_threads()
    device = settings.device
    if (device in (None, "cuda")) and torch.cuda.is_available() and torch.cuda.device_count() > 0:
        device = f"cuda:{i % torch.cuda.device_count()}"
    space = settings.space
    if not isinstance(space, (str, os.PathLike)):
        space = str(r.space.source.split("'")[1]) if r.space.source.startswith("space file '") else None
        if space is None:
            raise UserError("--workers needs --space as a shipped name or a file (a SearchSpace object "
                            "cannot be sent to worker processes)")
    d = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    d.update(space=str(space), workers=1, num_threads=max(1, total // k), device=device, enqueue=(),
             study=r.study_name, storage=r.storage_url, train_overrides=dict(settings.train_overrides))
    return d


def _run_workers(settings: SearchSettings, r: Resolved, study: optuna.Study, progress: _Progress,
                 deadline: float | None) -> None:
    """Start ``settings.workers`` worker processes (``python -m nas.search.worker``, so they
    do not depend on how this process was started), show the bar from the storage, wait."""
    import json
    import signal
    import subprocess

    k = settings.workers
    deadline_wall = None if deadline is None else time.time() + (deadline - time.monotonic())
    procs = []
    for i in range(k):
        payload = json.dumps({"settings": _worker_settings(settings, r, k, i), "index": i,
                              "deadline": deadline_wall}, default=str)
        # The settings go through stdin, not the command line: the storage URL may hold a
        # password, and any user on the machine can read a process's arguments.
        proc = subprocess.Popen([sys.executable, "-m", "nas.search.worker", "-"], stdin=subprocess.PIPE)
        try:
            proc.stdin.write(payload.encode("utf-8"))
            proc.stdin.close()
        except OSError:  # it died at once; its exit code tells
            pass
        procs.append(proc)
    try:
        while any(proc.poll() is None for proc in procs):
            time.sleep(_WAIT_POLL)
            progress.sync()
    except KeyboardInterrupt:
        for proc in procs:  # forward Ctrl-C: each worker's running trial ends as FAIL
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.terminate()
        raise
    bad = [proc.returncode for proc in procs if proc.returncode != 0]
    if bad:
        warnings.warn(f"{len(bad)} of {k} search workers exited with an error (exit codes {bad}); "
                      "run the same command again to finish the study")


def run_search(settings: SearchSettings, progress: bool = True) -> SearchSummary:
    """Run (or resume) the search ``settings`` describes and return its `SearchSummary`.

    See the module docstring for the order of work, counting, progress and workers, and
    `SearchSettings` for every setting. Raises `UserError` (one sentence naming the flag)
    before anything is written when a setting is wrong, a hard budget is below every
    architecture of the space (naming the smallest reachable value), an ``enqueue``
    architecture is not in the space, or the study exists with other settings.

    Warns:
        UserWarning: this call stopped after ``max_failures`` failed trials; workers that
            exited with an error.
    """
    started = time.monotonic()
    r = resolve_settings(settings)
    storage = None
    if not r.storage_url.startswith("sqlite:"):
        # A server that does not answer is told before the data is loaded (minutes for an
        # image folder); a SQLite file is made only once every check has passed.
        storage = open_storage(r.storage_url)
    p = _prepare(settings, r)
    r, s = p.r, p.r.settings  # the checked settings: the grid sampler caps trials
    if storage is None:
        storage = open_storage(r.storage_url)
    with _quiet_optuna():
        study, created = create_or_load_study(r, lambda: _study_info(p), storage=storage)
        info = study_info(study)
        enqueue(study, p.enqueue)
    _warn_notes(p)
    deadline = None if s.timeout is None else started + s.timeout
    bar = _Progress(study, r, progress, r.run_dir / LOG_FILE)
    if progress and r.grid_points is not None and r.trials_asked is not None:
        print(f"grid sampler: {r.grid_points} points, so {s.trials} trials (each point once) instead of "
              f"{r.trials_asked}", file=sys.stderr, flush=True)
    if progress and not created:
        done, _ = counted_trials(study)
        print(f"resuming study {r.study_name}: {done} of {s.trials} trials done", file=sys.stderr, flush=True)
    try:
        with _quiet_optuna():
            if s.workers > 1:
                _run_workers(s, r, study, bar, deadline)
            else:
                _run_trials(study, _context(p, study, info), r, bar, deadline)
    except BaseException:
        bar.close()
        try:  # what finished stays readable; the original error is the one to see
            write_outputs(study, r.out)
        except Exception:  # noqa: BLE001
            pass
        raise
    bar.close()
    try:
        sweep_checkpoints(study, r.run_dir / CHECKPOINT_DIR, s.seed)
        return write_outputs(study, r.out)
    except Exception as err:  # noqa: BLE001
        if not is_unreachable(err):
            raise
        raise StorageUnreachable(f"the storage {redact(r.storage_url)} does not answer, so the outputs were not "
                                 "written; the finished trials are kept in it: run the same command again once "
                                 "it is back") from None

