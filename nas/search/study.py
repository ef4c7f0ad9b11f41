"""The Optuna side of a search: storage, sampler, pruner, creating or resuming a study and
refusing one made with other settings, seeding it with known architectures, and counting
its trials.

Study user attributes (JSON in the storage, read by `nas best` and the reports):

* ``STUDY_ATTR`` (``"search"``): what the study is: ``mode``, ``objectives`` (names, in
  the order of the values), ``directions``, ``costs``, ``budgets`` (cost kind -> limit),
  ``target`` ([kind, value] or null), ``hv_reference`` (cost kind -> the hypervolume reference
  value fixed at creation, see `nas.search.results`), ``reward`` (`MnasReward.to_dict` /
  `V2Reward.to_dict`, with the measured references, or null), ``epochs``,
  ``early_stop``, ``min_epochs``, ``eta``, ``num_classes``, ``dataset``, ``space``
  (name), ``recipe``, ``seed``.
* ``IDENTITY_ATTR`` (``"search_identity"``): the settings a resumed study must share with
  the call that created it (mode, objectives, reward kind / hard / target, the space's
  choices and base, dataset, split, epochs, subset, recipe and overrides, seed, budgets,
  early stopping). Sampler, trials, timeout, workers, threads and device may differ.

Heartbeats: every RDB storage is opened with a heartbeat (`HEARTBEAT_INTERVAL` s, grace
`GRACE_PERIOD` s) and Optuna's `RetryHeartbeatStaleTrialCallback`: a trial whose worker
died is marked FAIL once its heartbeat is stale, and a WAITING copy with the same
parameters is queued (at most `MAX_RETRY` times), which the next worker runs. The
environment variables ``EFFNAS_HEARTBEAT_INTERVAL`` and ``EFFNAS_GRACE_PERIOD`` (whole
seconds) override the two, for every process that opens the storage (the tests use 1 and 3);
give every worker the same values.

Storage URLs: a password in one is never shown; every message here names the storage
through `nas.search.storage_url.redact`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import optuna
from optuna.trial import TrialState

from space.errors import UserError

from .seeding import HistorySeededSampler
from .settings import Resolved
from .outage import keep_beating
from .storage_url import driver_message, redact, scrub
from .trial_states import atomic_state_changes

__all__ = ["STUDY_ATTR", "IDENTITY_ATTR", "HEARTBEAT_INTERVAL", "GRACE_PERIOD", "MAX_RETRY",
           "heartbeat_settings", "open_storage", "make_sampler", "history_seeded_sampler", "make_pruner",
           "identity", "create_or_load_study", "load_existing_study", "resolve_enqueue", "enqueue",
           "counted_trials", "is_counted", "study_info", "space_identity"]

STUDY_ATTR = "search"
IDENTITY_ATTR = "search_identity"
HEARTBEAT_INTERVAL = 10  # seconds between a running trial's heartbeats
GRACE_PERIOD = 30  # seconds without a heartbeat after which a running trial is stale
MAX_RETRY = 2  # times a trial whose worker died is run again

HEARTBEAT_ENV = "EFFNAS_HEARTBEAT_INTERVAL"
GRACE_ENV = "EFFNAS_GRACE_PERIOD"
POSTGRES_CONNECT_TIMEOUT = 10  # seconds to wait for a PostgreSQL server to answer

#: Trial states that count toward ``trials`` (an infeasible trial is COMPLETE).
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def _sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///"):]
        return None if rest in ("", ":memory:") else Path(rest)
    return None


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds: `HEARTBEAT_INTERVAL` and
    `GRACE_PERIOD`, or the whole numbers in ``EFFNAS_HEARTBEAT_INTERVAL`` /
    ``EFFNAS_GRACE_PERIOD``. A grace period must exceed the interval."""
    import os

    values = []
    for env, default in ((HEARTBEAT_ENV, HEARTBEAT_INTERVAL), (GRACE_ENV, GRACE_PERIOD)):
        text = os.environ.get(env, "").strip()
        if not text:
            values.append(default)
            continue
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise UserError(f"{env} must be a whole number of seconds of at least 1, got {text!r}")
        values.append(value)
    interval, grace = values
    if grace <= interval:
        raise UserError(f"the heartbeat grace period ({grace} s, {GRACE_ENV}) must be longer than the "
                        f"heartbeat interval ({interval} s, {HEARTBEAT_ENV})")
    return interval, grace


def _driver_hint(url: str) -> str:
    scheme = url.split("://", 1)[0].lower()
    if scheme.startswith("postgres"):
        return '; for PostgreSQL install effnas[postgres] (psycopg 3) and use a postgresql+psycopg:// URL'
    return ""


def open_storage(url: str, *, create: bool = True) -> optuna.storages.BaseStorage:
    """An `RDBStorage` for ``url`` with heartbeats (`heartbeat_settings`), retry of stale
    trials, state changes two workers cannot both win (`nas.search.trial_states`) and
    heartbeats that skip a beat while the database does not answer (`nas.search.outage`).
    A SQLite file's folder is created (with ``create``); without ``create`` a missing SQLite
    file is a `UserError` rather than a new empty database. A server that cannot be reached,
    a refused login or a missing driver is a `UserError` of one sentence that names the URL
    without its password."""
    path = _sqlite_path(url)
    if path is not None:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.is_file():
            raise UserError(f"no study database at {path}; run `nas search` first, or pass --storage/--out")
    interval, grace = heartbeat_settings()
    shown = redact(url)
    if path is not None:
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.split("://", 1)[0].lower().startswith("postgres"):
        engine_kwargs = {"connect_args": {"connect_timeout": POSTGRES_CONNECT_TIMEOUT}}
    else:
        engine_kwargs = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            storage = optuna.storages.RDBStorage(
                url, heartbeat_interval=interval, grace_period=grace,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRY),
                engine_kwargs=engine_kwargs)
        except (ImportError, ModuleNotFoundError) as err:
            raise UserError(f"--storage {shown}: the database driver is not installed "
                            f"({scrub(str(err), url)}){_driver_hint(url)}") from None
        except Exception as err:  # noqa: BLE001 - sqlalchemy's many connection errors
            reason = driver_message(err, url)
            if "no password supplied" in reason:
                reason += "; give the password in PGPASSWORD or a pgpass file (PGPASSFILE), not on the command line"
            raise UserError(f"--storage {shown} cannot be opened: {reason}") from None
    if path is not None:
        _fast_sqlite(storage)
    # Two workers never both win one trial's state change; heartbeats outlive an outage.
    return keep_beating(atomic_state_changes(storage))


def _fast_sqlite(storage: optuna.storages.RDBStorage) -> None:
    """WAL journal and ``synchronous=NORMAL`` on every connection of a SQLite storage.

    Why: Optuna commits once per suggested parameter and per user attribute, and SQLite's
    default journal fsyncs at every commit (about 15 ms here), which made 1.1 s of overhead
    per trial of the 33-parameter mnasnet_cifar space. In WAL mode with NORMAL
    synchronisation a commit is durable against a killed process (the database is never
    corrupted) and only the last transactions can be lost to a power cut; WAL needs the
    workers on one machine, which SQLite needs anyway.
    """
    from sqlalchemy import event

    def pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections opened before the listener get replaced


def make_sampler(name: str, *, multi_objective: bool, seed: int, trials: int,
                 search_space: Mapping[str, Any] | None = None) -> optuna.samplers.BaseSampler:
    """``tpe`` (Optuna's default sampler, multi-objective TPE for several objectives),
    ``nsga2`` (population ``min(50, max(8, trials // 4))``: Optuna's 50 would leave a
    20-trial study in its random first generation), ``random``, or ``grid``: every point
    of ``search_space`` (the space's `dimensions()`, required for it) once
    (`nas.search.grid_sampler.SpaceGridSampler`, which survives resumes and workers).
    Constraints set with `Trial.set_constraint` reach TPE and NSGA-II through the trials
    themselves."""
    if name == "grid":
        from .grid_sampler import SpaceGridSampler

        if search_space is None:
            raise ValueError("the grid sampler needs the search space's dimensions")
        return SpaceGridSampler(search_space, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=min(50, max(8, trials // 4)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UserError(f"--sampler must be one of tpe, nsga2, random, grid, got {name!r}")


def history_seeded_sampler(name: str, *, multi_objective: bool, seed: int, trials: int,
                           search_space: Mapping[str, Any] | None = None, offset: int = 0) -> HistorySeededSampler:
    """`make_sampler`'s sampler, made afresh for each trial with a seed derived from ``seed``,
    ``offset`` and how many trials of the study stand for a proposal already made
    (`nas.search.seeding`): the same seed and history give the same proposal in any process."""
    # Made once here too, so that a bad name or a grid without dimensions is refused now.
    make_sampler(name, multi_objective=multi_objective, seed=seed, trials=trials, search_space=search_space)
    return HistorySeededSampler(
        lambda derived: make_sampler(name, multi_objective=multi_objective, seed=derived, trials=trials,
                                     search_space=search_space),
        seed, offset=offset, max_retry=MAX_RETRY, per_parameter=name != "grid")


def make_pruner(early_stop: str, mode: str, *, min_epochs: int, eta: int, epochs: int) -> optuna.pruners.BasePruner:
    """Reward mode's Optuna pruner over the per-epoch reward (``trial.report(value, epoch)``):
    ``asha`` = `SuccessiveHalvingPruner` (rungs at ``min_epochs * eta**k``), ``median`` =
    `MedianPruner` (5 startup trials, no pruning before ``min_epochs``), ``hyperband`` =
    `HyperbandPruner` (``min_epochs`` .. ``epochs``). Pareto mode and ``none`` get the
    `NopPruner` (MO-ASHA runs in the objective: Optuna cannot prune several objectives)."""
    if mode != "reward" or early_stop == "none":
        return optuna.pruners.NopPruner()
    if early_stop == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_epochs, reduction_factor=eta)
    if early_stop == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=min_epochs - 1)
    if early_stop == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_epochs, max_resource=max(epochs, min_epochs),
                                              reduction_factor=eta)
    raise UserError(f"--early-stop must be one of none, asha, median, hyperband, got {early_stop!r}")


def space_identity(space) -> dict:
    """What of a space decides its architectures: its choices and its base's string (its
    name and prose do not)."""
    d = json.loads(json.dumps(space.to_dict()))
    d.pop("name", None)
    d.pop("description", None)
    d["base"] = space.base.to_string()
    return d


def identity(r: Resolved) -> dict:
    """The settings a resumed study must share with the call that created it (JSON-ready)."""
    s = r.settings
    return json.loads(json.dumps({
        "mode": r.mode,
        "objectives": list(r.objective_names),
        "reward": None if r.mode != "reward" else {"kind": r.reward_kind, "hard": bool(s.hard)},
        "target": list(r.target) if r.target else None,
        "space": space_identity(r.space),
        "dataset": str(s.dataset),
        "epochs": s.epochs,
        "subset": s.subset,
        "val_size": s.val_size,
        "split_seed": s.split_seed,
        "recipe": s.recipe,
        "train_overrides": dict(sorted(dict(s.train_overrides).items())),
        "seed": s.seed,
        "budgets": dict(sorted(r.budgets.items())),
        "early_stop": [r.early_stop, s.min_epochs, s.eta] if r.early_stop != "none" else "none",
    }, default=str))


_FLAGS = {"mode": "--mode", "objectives": "--objectives", "reward": "--reward/--hard",
          "target": "--target-*", "space": "--space", "dataset": "--dataset", "epochs": "--epochs",
          "subset": "--subset", "val_size": "--val-size", "split_seed": "--split-seed",
          "recipe": "--recipe", "train_overrides": "train_overrides", "seed": "--seed",
          "budgets": "--max-*", "early_stop": "--early-stop/--min-epochs/--eta"}


def _show(value: Any) -> str:
    if value is None:
        return "not given"
    if isinstance(value, (dict, list)) and len(json.dumps(value)) > 60:
        return "other"
    return json.dumps(value)


def create_or_load_study(r: Resolved, info: Mapping[str, Any] | Callable[[], Mapping[str, Any]], *,
                         storage=None, seed_offset: int = 0) -> tuple[optuna.Study, bool]:
    """The study ``r.study_name`` in ``r.storage_url``: created (with ``info``, or what the
    callable ``info`` returns, stored as `STUDY_ATTR` and `identity` as `IDENTITY_ATTR`) or
    loaded and checked. Returns the study and whether it was created now. A stored study
    with other settings is refused with one sentence naming each differing flag. The
    sampler is `history_seeded_sampler` with ``seed`` and ``seed_offset``: each trial's
    proposal depends on them and on the study's history, not on this process, so a resumed
    one-worker study proposes what an uninterrupted one would (and does not replay its first
    run's proposals); workers get distinct offsets so that they do not propose alike."""
    storage = storage if storage is not None else open_storage(r.storage_url)
    s = r.settings
    existing = set(optuna.get_all_study_names(storage))
    ident = identity(r)
    if r.study_name in existing:
        study = optuna.load_study(study_name=r.study_name, storage=storage)
        stored = study.user_attrs.get(IDENTITY_ATTR)
        if stored is None:
            raise UserError(f"study {r.study_name} in {redact(r.storage_url)} was not made by nas search; "
                            "pass another --study")
        differs = [k for k in sorted(set(ident) | set(stored)) if ident.get(k) != stored.get(k)]
        if differs:
            shown = "; ".join(f"{_FLAGS.get(k, k)} {_show(ident.get(k))} here, {_show(stored.get(k))} there"
                              if k != "space" else "--space has other choices" for k in differs)
            raise UserError(f"study {r.study_name} was made with other settings ({shown}); pass the same "
                            f"settings to resume it, or another --study")
        created = False
    else:
        study = optuna.create_study(storage=storage, study_name=r.study_name, directions=r.directions,
                                    load_if_exists=True)
        created = True
        if IDENTITY_ATTR not in study.user_attrs:  # another worker may have won the race
            made = info() if callable(info) else info
            study.set_user_attr(STUDY_ATTR, json.loads(json.dumps(dict(made))))
            study.set_user_attr(IDENTITY_ATTR, ident)
    study.sampler = history_seeded_sampler(s.sampler, multi_objective=r.mode == "pareto", seed=s.seed,
                                           trials=s.trials, search_space=r.space.dimensions(), offset=seed_offset)
    study.pruner = make_pruner(r.early_stop, r.mode, min_epochs=s.min_epochs, eta=s.eta, epochs=s.epochs)
    return study, created


def load_existing_study(study_name: str, storage_url: str) -> optuna.Study:
    """A study made by `nas search`, for reading (`nas best`); `UserError` naming the
    studies there when it does not exist."""
    storage = open_storage(storage_url, create=False)
    names = optuna.get_all_study_names(storage)
    if study_name not in names:
        there = f"; studies there: {', '.join(sorted(names))}" if names else "; it holds no study"
        raise UserError(f"no study {study_name} in {redact(storage_url)}{there}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    if STUDY_ATTR not in study.user_attrs:
        raise UserError(f"study {study_name} in {redact(storage_url)} was not made by nas search")
    return study


def study_info(study: optuna.Study) -> dict:
    """The study's `STUDY_ATTR` dict."""
    return dict(study.user_attrs[STUDY_ATTR])


def _enqueue_refs(refs: Iterable[str]) -> list[tuple[str, Any]]:
    """(label, Arch) for each reference: a preset, an arch string, an arch JSON file, or a
    JSON file holding a list of those."""
    from space.presets import resolve_arch

    out = []
    for ref in refs:
        path = Path(ref)
        if ref.lower().endswith(".json") and path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, UnicodeDecodeError) as err:
                raise UserError(f"--enqueue {ref}: not readable JSON ({err})") from None
            if isinstance(data, list):
                for i, item in enumerate(data):
                    if not isinstance(item, str):
                        raise UserError(f"--enqueue {ref}: item {i + 1} is not an arch string or preset name")
                    out.append((f"{ref}[{i}]", resolve_arch(item)))
                continue
        out.append((ref, resolve_arch(ref)))
    return out


def resolve_enqueue(space, refs: Iterable[str]) -> list[tuple[str, dict]]:
    """(label, parameters) for each referenced architecture: the parameters that decode to
    it (`SearchSpace.params_of`). An architecture the space cannot express is refused with
    one sentence naming the reference and why."""
    from space.search import SpaceError

    out = []
    for label, arch in _enqueue_refs(refs):
        try:
            out.append((label, space.params_of(arch)))
        except SpaceError as err:
            raise UserError(f"--enqueue {label} is not in search space {space.name}: "
                            f"{str(err).split(': ', 1)[-1]}") from None
    return out


def enqueue(study: optuna.Study, items: Iterable[tuple[str, dict]]) -> None:
    """Queue each (label, parameters) as a WAITING trial with user attr ``enqueued`` = label.
    Parameters already queued or tried are skipped (Optuna's ``skip_if_exists``), so a
    resumed study does not queue them again."""
    for label, params in items:
        study.enqueue_trial(params, user_attrs={"enqueued": label}, skip_if_exists=True)


def is_counted(t) -> bool:
    return t.state in COUNTED_STATES


def counted_trials(study: optuna.Study) -> tuple[int, int]:
    """(trials that count toward ``trials``: COMPLETE and PRUNED, infeasible ones
    included; trials RUNNING now)."""
    trials = study.get_trials(deepcopy=False)
    return (sum(1 for t in trials if is_counted(t)),
            sum(1 for t in trials if t.state == TrialState.RUNNING))
