"""What a search is asked to do: `SearchSettings` (the Python form of ``nas search``'s flags)
and `resolve_settings`, which checks every setting before anything is loaded or written.

Conventions and units
---------------------
* Accuracy is a fraction in [0, 1]. MACs are multiply-accumulates per image and params a
  parameter count, both as `space.cost` counts them at the dataset's number of classes;
  latency and step time are seconds (see `nas.search.objectives`).
* Quantities may be given as numbers in those units or as text that
  `nas.search.objectives.parse_quantity` reads (``"400M"``, ``"5ms"``).
* Epochs are whole epochs of the proxy training; ``min_epochs`` and ``eta`` place the
  early-stopping rungs at ``min_epochs * eta**k`` below ``epochs``.

Every mistake raises `space.errors.UserError` with one sentence that names the flag of
``nas search`` (``--trials``, ``--max-macs``...); the Python argument has the same name
with underscores.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from space.errors import UserError

from .objectives import COST_KINDS, MnasReward, cost_kind, parse_quantity

__all__ = ["SearchSettings", "Resolved", "resolve_settings", "settings_for_budget", "MODES", "REWARDS",
           "SAMPLERS", "EARLY_STOPS", "BUDGET_KINDS", "BUDGETS", "STUDY_NAME_RE"]

MODES = ("reward", "pareto")
REWARDS = ("mnas", "v2")
SAMPLERS = ("tpe", "nsga2", "random", "grid")
# "asha": successive halving (Optuna's pruner in reward mode, MO-ASHA in Pareto mode);
# "median" and "hyperband" are Optuna pruners, so reward mode only.
EARLY_STOPS = ("none", "asha", "median", "hyperband")
_EARLY_STOP_ALIASES = {"mo-asha": "asha", "moasha": "asha", "sha": "asha"}
#: Cost kinds a hard budget can bound, with the settings field that sets each.
BUDGET_KINDS = {"macs": "max_macs", "params": "max_params", "latency": "max_latency"}
#: Named search budgets: trials, proxy epochs per candidate and training images per candidate
#: (None: the whole training split less validation). ``quick`` is the calibrated CPU proxy
#: (4 epochs on 2,000 images, about 250 optimiser steps: see the README's calibration) and
#: a first look in minutes on 2 CPU cores; ``full`` is the search to run on a GPU.
BUDGETS: dict[str, dict[str, Any]] = {
    "quick": {"trials": 16, "epochs": 4, "subset": 2000},
    "full": {"trials": 100, "epochs": 10, "subset": None},
}
#: A study name is also a folder name under ``runs/``.
STUDY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")

_FLAG = {
    "space": "--space", "dataset": "--dataset", "mode": "--mode", "reward": "--reward",
    "hard": "--hard", "objectives": "--objectives", "target": "--target-*", "trials": "--trials",
    "timeout": "--timeout", "sampler": "--sampler", "storage": "--storage", "study": "--study",
    "recipe": "--recipe", "epochs": "--epochs", "subset": "--subset", "val_size": "--val-size",
    "seed": "--seed", "split_seed": "--split-seed", "enqueue": "--enqueue",
    "max_macs": "--max-macs", "max_params": "--max-params", "max_latency": "--max-latency",
    "early_stop": "--early-stop", "min_epochs": "--min-epochs", "eta": "--eta",
    "num_threads": "--threads", "device": "--device", "out": "--out", "workers": "--workers",
    "max_failures": "--max-failures", "train_overrides": "train_overrides",
    "target_factor": "target_factor",
}


@dataclass(frozen=True)
class SearchSettings:
    """Everything ``nas search`` takes, as one immutable value (see `run_search`). The
    defaults of ``trials``, ``epochs`` and ``subset`` are the ``quick`` budget's
    (`BUDGETS`); `settings_for_budget` takes them from another.

    Attributes:
        space: a shipped space name, a space file, or a `space.search.SearchSpace`.
        dataset: ``cifar10``, ``cifar100``, ``synthetic[:N[:C[:S]]]`` or an image folder.
        mode: ``"reward"`` (one objective, maximised) or ``"pareto"`` (accuracy and costs).
        reward: reward mode's reward: ``"mnas"`` (ACC * (X / T)^w) or ``"v2"``
            (A * S^-0.07 * P^-0.05, S and P relative to the space's base architecture).
        hard: the MnasNet hard constraint (w = 0 below T, -1 above) instead of the soft
            EfficientNet one (w = -0.07 both sides); mnas reward only.
        objectives: Pareto mode's objectives: ``"acc"`` and one to three cost kinds
            (``macs``, ``params``, ``latency``, ``step_time``), e.g. ``("acc", "macs")``.
        target: ``(cost kind, value)``: T of the mnas reward (default: ``target_factor``
            times the space's base architecture's MACs at the dataset's classes); in Pareto
            mode the budget under which `baseline.json` takes the most accurate front member
            (else the knee).
        target_factor: the mnas reward's default T as a multiple of the base's MACs (1:
            a better network of the base's size; ``scaling grid`` uses 2, the MACs a unit of
            phi should double to). Only without ``target``.
        trials: trials to finish in the study (complete, pruned and infeasible ones count,
            failed ones do not); a resumed study adds only the missing ones. With the grid
            sampler at most the number of grid points (a larger value is capped to it, and
            None means all of them).
        timeout: seconds after which no new trial starts (None: no limit).
        sampler: ``"tpe"`` (Optuna's default, multi-objective TPE in Pareto mode),
            ``"nsga2"``, ``"random"`` or ``"grid"`` (every point of the space's parameters
            once, `nas.search.grid_sampler`; for small spaces, such as a listed space's
            candidates: at most `GRID_LIMIT` points).
        storage: an Optuna RDB URL (``sqlite:///...``, ``postgresql://...``); default a
            SQLite file ``<out>/runs/<study>/study.db``.
        study: the study name (default ``<space name>-<mode>``); also the run folder's name.
        recipe: ``"proxy"`` (default) or ``"paper"`` (`nas.train.TrainConfig`).
        epochs: proxy training epochs per candidate.
        subset: training images per candidate (drawn after validation is held out).
        subset_is_cap: take ``subset`` as a cap, as a budget's default is: on a smaller
            dataset every candidate trains on all images (with a warning). False (an explicit
            ``--subset``) refuses a subset larger than the data.
        val_size: validation images (None: `make_splits`' default, 2,500 but at most a
            fifth of the training split); the same images for every candidate.
        seed: training seed of every candidate (so a duplicate is an exact repeat) and the
            sampler's seed (each proposal depends on it and on the study's history:
            `nas.search.seeding`).
        split_seed: seed of the validation and subset draws.
        enqueue: architectures to try first: preset names, arch strings, arch JSON files,
            or JSON files holding a list of those; each must be in the space.
        max_macs, max_params, max_latency: hard budgets; a candidate over one is never
            trained (Optuna constraint > 0, user attr ``infeasible``).
        early_stop: ``"asha"`` (default: successive halving; MO-ASHA in Pareto mode),
            ``"median"``, ``"hyperband"`` (reward mode) or ``"none"``.
        min_epochs, eta: the first rung and the reduction factor of early stopping.
        num_threads: CPU threads for training (None: torch's choice).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` (None: CUDA when available).
        out: the folder holding ``runs/<study>/``.
        workers: processes working on the study at once (1: this process only).
        max_failures: stop this call after this many failed trials (None: ``trials``), so
            a setting under which every candidate diverges cannot loop for ever.
        train_overrides: single `TrainConfig` settings over the recipe's (``{"lr": 0.1}``).
    """

    space: Any
    dataset: str
    mode: str = "reward"
    reward: str = "mnas"
    hard: bool = False
    objectives: tuple[str, ...] | None = None
    target: tuple[str, Any] | None = None
    trials: int | None = BUDGETS["quick"]["trials"]
    timeout: float | None = None
    sampler: str = "tpe"
    storage: str | None = None
    study: str | None = None
    recipe: str = "proxy"
    epochs: int = BUDGETS["quick"]["epochs"]
    subset: int | None = BUDGETS["quick"]["subset"]
    subset_is_cap: bool = True
    val_size: int | None = None
    seed: int = 0
    split_seed: int = 0
    enqueue: tuple[str, ...] = ()
    max_macs: Any = None
    max_params: Any = None
    max_latency: Any = None
    early_stop: str = "asha"
    min_epochs: int = 1
    eta: int = 3
    num_threads: int | None = None
    device: str | None = None
    out: str | os.PathLike = "."
    workers: int = 1
    max_failures: int | None = None
    train_overrides: Mapping[str, Any] = field(default_factory=dict)
    target_factor: float = 1.0


@dataclass(frozen=True)
class Resolved:
    """Checked settings: the space loaded, quantities in units, defaults filled in."""

    settings: SearchSettings
    space: Any  # SearchSpace
    mode: str
    costs: tuple[str, ...]  # Pareto mode's cost objectives, () in reward mode
    reward_kind: str | None  # "mnas" / "v2" in reward mode
    target: tuple[str, float] | None  # (kind, value), explicit or (reward mnas) the default
    budgets: dict[str, float]  # cost kind -> limit
    early_stop: str
    study_name: str
    out: Path
    run_dir: Path
    storage_url: str
    max_failures: int
    grid_points: int | None = None  # the grid sampler's number of points
    trials_asked: int | None = None  # --trials as given, when the grid capped it

    @property
    def objective_names(self) -> tuple[str, ...]:
        return ("reward",) if self.mode == "reward" else ("acc",) + self.costs

    @property
    def directions(self) -> list[str]:
        return ["maximize"] if self.mode == "reward" else ["maximize"] + ["minimize"] * len(self.costs)

    def measured_kinds(self) -> set[str]:
        """Cost kinds that must be measured (not computed) for every candidate."""
        kinds = set(self.costs) | set(self.budgets)
        if self.target is not None:
            kinds.add(self.target[0])
        if self.reward_kind == "v2":
            kinds.add("step_time")
        return kinds & {"latency", "step_time"}


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _int(name: str, value: Any, minimum: int) -> int:
    if not _is_int(value) or value < minimum:
        raise UserError(f"{_FLAG[name]} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _quantity(name: str, value: Any, kind: str) -> float:
    """A user quantity in the module's units: text through parse_quantity, or a number."""
    if isinstance(value, str):
        try:
            return parse_quantity(value, kind)
        except UserError as err:
            raise UserError(f"{_FLAG.get(name, name)}: {err}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{_FLAG.get(name, name)} must be a positive {cost_kind(kind).label} "
                        f"such as {'5ms' if cost_kind(kind).is_duration else '400M'}, got {value!r}")
    return float(value)


_OVERRIDE_FLAGS = {"lr": "--lr", "batch_size": "--batch-size"}


def settings_for_budget(budget: str = "quick", **kwargs: Any) -> SearchSettings:
    """`SearchSettings` with ``trials``, ``epochs`` and ``subset`` taken from `BUDGETS`
    [budget] unless given in ``kwargs`` (``subset=None`` given means every image)."""
    if budget not in BUDGETS:
        raise UserError(f"--budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    return SearchSettings(**{**BUDGETS[budget], **kwargs})


def default_study_name(space_name: str, mode: str) -> str:
    """``<space>-<mode>``, cleaned into a folder name."""
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", f"{space_name}-{mode}").strip("._-") or "search"
    return name[:100]


def _space(value: Any):
    from space.listed import ListedSpace
    from space.search import SearchSpace

    if isinstance(value, (SearchSpace, ListedSpace)):
        return value
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise UserError(f"--space must be a shipped space name or a space file, got {value!r}")
    return SearchSpace.load(value if isinstance(value, str) else Path(value))


def _check_sqlite_file(url: str) -> None:
    """A ``--storage sqlite:///PATH`` whose file cannot be made is refused now, not after the
    data is loaded: PATH a folder, or its folder missing along with the folder above it (a
    mistyped path; one new folder is made, as for the default ``runs/<study>/``)."""
    if not url.startswith("sqlite:///"):
        return
    rest = url[len("sqlite:///"):].split("?", 1)[0]
    if rest in ("", ":memory:") or rest.startswith("file:"):
        return
    path = Path(rest)
    if path.is_dir():
        raise UserError(f"--storage {url}: {path} is a folder; name a database file in it, such as {path / 'study.db'}")
    if path.is_file():
        try:
            with open(path, "rb") as f:
                head = f.read(16)
        except OSError as err:
            raise UserError(f"--storage {url}: {path} cannot be read ({err.strerror or err})") from None
        if head and head != b"SQLite format 3\x00":
            raise UserError(f"--storage {url}: {path} is not a SQLite database; name a new file or a study.db")
    folder = path.parent
    for parent in (folder, folder.parent):
        if parent.exists() and not parent.is_dir():
            raise UserError(f"--storage {url}: {parent} is a file, so the database cannot go there")
    if not folder.exists() and not folder.parent.is_dir():
        raise UserError(f"--storage {url}: the folder {folder} does not exist; create it, or name a "
                        "database file in an existing folder")


def resolve_settings(s: SearchSettings) -> Resolved:
    """Check every setting of ``s`` (no data is loaded, nothing is written) and fill in the
    defaults; raises `UserError` naming the flag of the first mistake."""
    if not isinstance(s, SearchSettings):
        raise TypeError(f"settings must be a SearchSettings, got {type(s).__name__}")
    if s.mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got {s.mode!r}")
    if s.reward not in REWARDS:
        raise UserError(f"--reward must be one of {', '.join(REWARDS)}, got {s.reward!r}")
    if not isinstance(s.hard, bool):
        raise UserError(f"--hard must be True or False, got {s.hard!r}")
    if not isinstance(s.dataset, str) or not s.dataset.strip():
        raise UserError(f"--dataset must name a dataset or a folder, got {s.dataset!r}")
    if s.trials is None and s.sampler != "grid":
        raise UserError("--trials must be a whole number >= 1 (only --sampler grid takes every grid point "
                        "by default)")
    trials = _int("trials", s.trials, 1) if s.trials is not None else None
    if isinstance(s.target_factor, bool) or not isinstance(s.target_factor, numbers.Real) \
            or not math.isfinite(s.target_factor) or s.target_factor <= 0:
        raise UserError(f"target_factor must be a positive number, got {s.target_factor!r}")
    if s.target_factor != 1 and (s.target is not None or s.mode != "reward" or s.reward != "mnas"):
        raise UserError("target_factor scales the mnas reward's default target; it does not combine with "
                        "--target-*, --reward v2 or --mode pareto")
    if s.timeout is not None and (isinstance(s.timeout, bool) or not isinstance(s.timeout, numbers.Real)
                                  or not math.isfinite(s.timeout) or s.timeout <= 0):
        raise UserError(f"--timeout must be a positive number of seconds, got {s.timeout!r}")
    if s.sampler not in SAMPLERS:
        raise UserError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {s.sampler!r}")
    from ..train.config import RECIPES

    if s.recipe not in RECIPES:
        raise UserError(f"--recipe must be one of {', '.join(RECIPES)}, got {s.recipe!r}")
    _int("epochs", s.epochs, 1)
    if s.subset is not None:
        _int("subset", s.subset, 1)
    if s.val_size is not None:
        # Without validation images there is nothing to rank candidates by.
        _int("val_size", s.val_size, 1)
    _int("seed", s.seed, 0)
    _int("split_seed", s.split_seed, 0)
    _int("min_epochs", s.min_epochs, 1)
    _int("eta", s.eta, 2)
    _int("workers", s.workers, 1)
    if s.num_threads is not None:
        _int("num_threads", s.num_threads, 1)
    if s.max_failures is not None:
        _int("max_failures", s.max_failures, 1)
    if s.device is not None:
        if not isinstance(s.device, str) or not s.device.strip():
            raise UserError(f"--device must be a device name such as cpu or cuda:0, got {s.device!r}")
        from ..train.device import resolve_device

        resolve_device(s.device)  # a device this machine lacks is refused before any data loads
    if isinstance(s.enqueue, str) or not all(isinstance(e, str) and e.strip() for e in s.enqueue):
        raise UserError(f"--enqueue takes preset names, arch strings or files, got {s.enqueue!r}")
    if not isinstance(s.train_overrides, Mapping):
        raise UserError(f"train_overrides must be a mapping of TrainConfig settings, got {s.train_overrides!r}")
    from ..train import TrainConfig

    bad = sorted(set(s.train_overrides) - set(TrainConfig.__dataclass_fields__))
    if bad:
        raise UserError(f"train_overrides: {bad[0]!r} is not a TrainConfig setting")
    try:
        TrainConfig.for_recipe(s.recipe, **dict(s.train_overrides))  # validates the values
    except UserError as err:
        # The command's overrides are flags; name them as the user typed them.
        message = str(err)
        for name, flag in _OVERRIDE_FLAGS.items():
            message = message.replace(f"TrainConfig.{name} ", f"{flag} ")
        raise UserError(message) from None

    early = _EARLY_STOP_ALIASES.get(s.early_stop, s.early_stop)
    if early not in EARLY_STOPS:
        raise UserError(f"--early-stop must be one of {', '.join(EARLY_STOPS)} (or mo-asha), got {s.early_stop!r}")
    if s.mode == "pareto" and early in ("median", "hyperband"):
        raise UserError(f"--early-stop {early} is an Optuna pruner, which cannot prune multi-objective "
                        "studies; use asha (MO-ASHA) or none in --mode pareto")

    costs: tuple[str, ...] = ()
    if s.mode == "pareto":
        objectives = s.objectives if s.objectives is not None else ("acc", "macs")
        if isinstance(objectives, str):
            objectives = tuple(o.strip() for o in objectives.split(","))
        objectives = tuple(objectives)
        if objectives.count("acc") != 1:
            raise UserError(f"--objectives must name acc once and one to three costs, got {','.join(map(str, objectives))}")
        costs = tuple(o for o in objectives if o != "acc")
        unknown = [c for c in costs if c not in COST_KINDS]
        if unknown:
            raise UserError(f"--objectives: unknown objective {unknown[0]!r}; use acc and some of {', '.join(COST_KINDS)}")
        if not 1 <= len(costs) <= 3 or len(set(costs)) != len(costs):
            raise UserError(f"--objectives must name acc and one to three distinct costs, got {','.join(objectives)}")
        if s.hard or s.reward != "mnas":
            raise UserError("--reward and --hard apply to --mode reward; a Pareto study has no reward")
    elif s.objectives is not None and tuple(s.objectives) not in (("acc",), ("reward",)):
        raise UserError("--objectives applies to --mode pareto; reward mode has one objective, the reward")
    if s.hard and s.reward != "mnas":
        raise UserError("--hard is the MnasNet reward's hard constraint; it does not apply to --reward v2")

    target = None
    if s.target is not None:
        if not isinstance(s.target, (tuple, list)) or len(s.target) != 2 or s.target[0] not in ("macs", "params", "latency"):
            raise UserError(f"--target-* takes a cost kind (macs, params or latency) and a value, got {s.target!r}")
        kind = s.target[0]
        target = (kind, _quantity(f"--target-{kind}", s.target[1], kind))
        if s.mode == "reward" and s.reward == "v2":
            raise UserError(f"--target-{kind} sets the mnas reward's target; --reward v2 is relative to the "
                            "space's base architecture and takes none")
        if s.mode == "reward":
            MnasReward(target[1], kind)  # validated here, before anything loads

    budgets = {}
    for kind, name in BUDGET_KINDS.items():
        value = getattr(s, name)
        if value is not None:
            budgets[kind] = _quantity(name, value, kind)

    space = _space(s.space)
    grid_points = trials_asked = None
    if s.sampler == "grid":
        from .grid_sampler import GRID_LIMIT, grid_size

        grid_points = grid_size(space.dimensions())
        if grid_points > GRID_LIMIT:
            raise UserError(f"--sampler grid evaluates every point, and space {space.name} has {grid_points:,} "
                            f"(more than {GRID_LIMIT:,}); use tpe, nsga2 or random, or a smaller space")
        if trials is None or trials > grid_points:
            # Every point once is the whole grid: more trials would only repeat points.
            trials_asked, trials = trials, grid_points
            s = dataclasses.replace(s, trials=trials)
    study = s.study if s.study is not None else default_study_name(space.name, s.mode)
    if not isinstance(study, str) or not STUDY_NAME_RE.match(study):
        raise UserError(f"--study must be letters, digits, '_', '-' or '.' (it names a folder), got {study!r}")
    out = Path(s.out)
    run_dir = out / "runs" / study
    for parent in (run_dir, *run_dir.parents):
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {out}: {parent} is a file, so runs/{study} cannot be a folder there")
            if not os.access(parent, os.W_OK):
                raise UserError(f"--out {out}: {parent} is not writable; pass another folder")
            break
    if s.storage is None:
        storage_url = f"sqlite:///{(run_dir / 'study.db').resolve()}"
    elif not isinstance(s.storage, str) or "://" not in s.storage:
        from .storage_url import redact

        raise UserError(f"--storage must be a database URL such as sqlite:///study.db or "
                        f"postgresql+psycopg://user@host/db, got {redact(s.storage)!r}")
    else:
        storage_url = s.storage
        _check_sqlite_file(storage_url)
    max_failures = s.max_failures if s.max_failures is not None else trials
    return Resolved(settings=s, space=space, mode=s.mode, costs=costs,
                    reward_kind=s.reward if s.mode == "reward" else None, target=target, budgets=budgets,
                    early_stop=early, study_name=study, out=out, run_dir=run_dir, storage_url=storage_url,
                    max_failures=max_failures, grid_points=grid_points, trials_asked=trials_asked)
