"""The alpha, beta, gamma grid search of compound scaling (Tan & Le 2019, section 3.3, step 1),
trained: `run_grid`.

With phi fixed at 1, every grid point (`grid_points`: each coefficient >= 1 on a grid of
``step``, ``abs(alpha * beta**2 * gamma**2 - 2) <= tolerance``) names one network, the base
grown by depth alpha, width beta and resolution gamma (`compound`, with its rounding). Those
networks are trained and compared; the winner's coefficients scale the whole family
(``scaling family --coefficients runs/<study>/coefficients.json``).

How the training is done: not here. The grid's members are written as a *listed* search
space (`space.listed.ListedSpace`) into the run folder, ``runs/<study>/grid_space.yaml``
(labels such as ``a1.20_b1.10_g1.15``, each the member's arch string), and `nas.search.run_search`
evaluates it with the grid sampler, every point once: the same storage (``--storage``,
default SQLite ``runs/<study>/study.db``), heartbeats and retries of a dead worker's trial,
``--workers``, duplicate detection (two points whose rounding gives the same network are
trained once), progress bar, ``search.log``, ``trials.csv``, ``summary.txt`` and
``baseline.json`` as ``nas search``. The same command again resumes the study and trains
only what is missing; a different grid under the same study name is refused.

Which point wins: the highest EfficientNet reward ``ACC * (MACs / T) ** -0.07`` with
``T = 2 x`` the base's MACs (at the dataset's number of classes), the MACs that a unit of
phi should cost. The grid constrains only the *ideal* product, and the real MACs of a point
(layers, channels and pixels rounded) can land well above or below 2x; the reward's soft
penalty keeps a point that spends more MACs than that from winning by its extra MACs
alone (accuracy alone would favour it). Ties go to the earlier point in grid order (alpha,
then beta, then gamma). The choice is written atomically as ``runs/<study>/coefficients.json``
(``alpha``, ``beta``, ``gamma``, ``accuracy``, ``macs``, ``macs_ratio``, ``trial``, ``study``
and more: see `GridResult.coefficients`), next to a plot of accuracy over the grid,
``grid_accuracy.png`` and ``.svg`` (alpha across, gamma up, colour the accuracy, each point
labelled with its beta, the chosen point ringed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from space.arch import Arch
from space.cost import cost

from .compound import DEFAULT_PRODUCT_TOLERANCE, GridPoint, ScalingError, compound, grid_points

__all__ = ["GridRow", "GridResult", "run_grid", "grid_labels", "default_grid_study",
           "SPACE_FILE", "COEFFICIENTS_FILE", "PLOT_STEM", "REWARD_EXPONENT", "TARGET_FACTOR"]

SPACE_FILE = "grid_space.yaml"
COEFFICIENTS_FILE = "coefficients.json"
PLOT_STEM = "grid_accuracy"
#: EfficientNet's soft reward exponent (ACC * (MACs / T) ** -0.07).
REWARD_EXPONENT = -0.07
#: T = TARGET_FACTOR x the base's MACs: a unit of phi doubles the MACs.
TARGET_FACTOR = 2.0


@dataclass(frozen=True)
class GridRow:
    """One grid point and what its training gave.

    Attributes:
        label: its candidate label in the listed space (``a1.20_b1.10_g1.15``).
        alpha, beta, gamma, product: the point (``product = alpha * beta**2 * gamma**2``).
        arch: the base grown at phi = 1 by the point (an arch string).
        macs: that network's MACs at the dataset's number of classes.
        macs_ratio: ``macs`` over the base's MACs at the same number of classes.
        trial: the study's trial that evaluated it (None: not yet).
        state: that trial's state (``COMPLETE``, ``PRUNED``, ``FAIL``...) or ``"not run"``.
        val_acc, reward: its validation accuracy and reward (None when not evaluated).
        duplicate_of: the trial whose training it reused (another point with the same
            network), or None.
    """

    label: str
    alpha: float
    beta: float
    gamma: float
    product: float
    arch: str
    macs: int
    macs_ratio: float
    trial: int | None = None
    state: str = "not run"
    val_acc: float | None = None
    reward: float | None = None
    duplicate_of: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class GridResult:
    """What `run_grid` did.

    Attributes:
        study: the study's name; run_dir: ``<out>/runs/<study>``.
        rows: one `GridRow` per grid point, in grid order.
        chosen: the winning row (None when no point has been evaluated).
        coefficients: what ``coefficients.json`` holds (None with ``chosen``): ``alpha``,
            ``beta``, ``gamma``, ``accuracy``, ``macs``, ``macs_ratio``, ``trial``,
            ``study``, and ``label``, ``product``, ``reward``, ``reward_rule``,
            ``target_macs``, ``base_macs``, ``arch``, ``dataset``, ``epochs``,
            ``grid_points`` and ``evaluated`` (how many points, and how many trained).
        base_macs, target_macs: the base's MACs and T, at the dataset's classes.
        files: every file written by this call's own step (the space file, coefficients,
            plot), beside what `run_search` wrote.
        summary: `run_search`'s `SearchSummary`.
    """

    study: str
    run_dir: Path
    rows: list[GridRow]
    chosen: GridRow | None
    coefficients: dict[str, Any] | None
    base_macs: int
    target_macs: float
    files: list[Path] = field(default_factory=list)
    summary: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document: the coefficients (or nulls) and ``points``."""
        keys = ("alpha", "beta", "gamma", "accuracy", "macs", "macs_ratio", "trial", "study")
        head = dict(self.coefficients) if self.coefficients else {k: None for k in keys}
        head["study"] = self.study
        head["run_dir"] = str(self.run_dir)
        head["points"] = [r.to_dict() for r in self.rows]
        return head


# --------------------------------------------------------------------------- naming


def _decimals(step: float) -> int:
    exponent = Decimal(repr(float(step))).normalize().as_tuple().exponent
    return min(10, max(2, -int(exponent)))


def grid_labels(points: list[GridPoint], step: float) -> list[str]:
    """``a1.20_b1.10_g1.15`` for each point: as many decimals as the step needs (at least 2)."""
    d = _decimals(step)
    return [f"a{p.alpha:.{d}f}_b{p.beta:.{d}f}_g{p.gamma:.{d}f}" for p in points]


def default_grid_study(base_name: str) -> str:
    """``<base name>-grid``, cleaned into a folder name."""
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", f"{base_name}-grid").strip("._-") or "grid"
    return name[:100]


def _resolve_base(arch: Arch | str, name: str | None) -> tuple[Arch, str]:
    """The base `Arch` and its name: a preset's name, a file's stem, else ``arch_<hash>``."""
    if isinstance(arch, Arch):
        base, found = arch, None
    elif isinstance(arch, str):
        from space.presets import resolve

        resolved = resolve(arch)
        base = resolved.arch
        found = getattr(resolved, "preset", None)
        text = arch.strip()
        if found is None and (text.lower().endswith(".json") or os.sep in text or "/" in text) \
                and Path(text).is_file():
            found = Path(text).stem
    else:
        raise TypeError(f"run_grid needs an Arch or an architecture reference, got {type(arch).__name__}")
    if name is None:
        name = found or "arch_" + hashlib.sha1(base.to_string().encode()).hexdigest()[:8]
    return base, name


# --------------------------------------------------------------------------- the run


def _space_text(name: str, base: Arch, labels: list[str], members: list[Arch], description: str) -> str:
    import yaml

    doc = {"name": name, "description": description, "base": base.to_string(),
           "candidates": {label: m.to_string() for label, m in zip(labels, members)}}
    return "# written by `scaling grid`: the phi = 1 member of every grid point\n" + \
        yaml.safe_dump(doc, sort_keys=False, width=4096)


def run_grid(arch: Arch | str, dataset: str, *, step: float = 0.05,
             tolerance: float = DEFAULT_PRODUCT_TOLERANCE, max_coefficient: float = 2.0,
             out: str | os.PathLike = ".", study: str | None = None, storage: str | None = None,
             workers: int = 1, epochs: int | None = None, subset: Any = "budget",
             val_size: int | None = None, recipe: str = "proxy", seed: int = 0, split_seed: int = 0,
             early_stop: str = "none", num_threads: int | None = None, device: str | None = None,
             max_failures: int | None = None, name: str | None = None,
             progress: bool = True) -> GridResult:
    """Train the phi = 1 member of every grid point as a resumable study and pick the best
    (see the module docstring).

    Args:
        arch: the baseline: an `Arch`, or a preset name, arch string or arch JSON file.
        dataset: as ``nas search --dataset`` takes it (``cifar10``, ``synthetic:240:4:16``, a folder).
        step, tolerance, max_coefficient: the grid (`grid_points`).
        out: the folder holding ``runs/<study>/``.
        study: the study name (default ``<base name>-grid``: a preset's name, an arch
            file's stem, else ``arch_<hash of the arch string>``; ``name`` overrides the
            base name).
        storage, workers, recipe, seed, split_seed, val_size, early_stop, num_threads,
            device, max_failures: as `nas.search.SearchSettings` (early stopping is off by
            default: every point trains its full epochs).
        epochs, subset: per point; by default (None epochs, ``"budget"`` subset) the
            ``quick`` budget's (`nas.search.settings.BUDGETS`); ``subset=None`` trains on
            every image.
        progress: the progress bar and notes on stderr.

    Raises `ScalingError` / `UserError` (one sentence) on a bad setting, an empty grid, or
    a run folder holding another grid under the same study name; nothing is written then.
    """
    import yaml

    from nas.search.settings import BUDGETS, SearchSettings, resolve_settings
    from space.listed import ListedSpace

    from .family import run_listed

    base, base_name = _resolve_base(arch, name)
    points = grid_points(base, step=step, tolerance=tolerance, max_coefficient=max_coefficient)
    if not points:
        raise ScalingError(f"no grid point meets |alpha * beta^2 * gamma^2 - 2| <= {tolerance:g} with "
                           f"--step {step:g} and --max-coefficient {max_coefficient:g}; widen --tolerance "
                           f"or refine --step")
    labels = grid_labels(points, step)
    members = [compound(base, 1, p.alpha, p.beta, p.gamma, tolerance=None).arch for p in points]
    study_name = study if study is not None else default_grid_study(base_name)
    description = (f"phi = 1 members of {base_name} on the alpha, beta, gamma grid with "
                   f"|alpha * beta^2 * gamma^2 - 2| <= tolerance")
    text = _space_text(default_grid_study(base_name), base, labels, members, description)

    quick = BUDGETS["quick"]
    settings = SearchSettings(
        space=ListedSpace.from_dict(yaml.safe_load(text), source="the grid"),
        dataset=dataset, mode="reward", reward="mnas", target=None, target_factor=TARGET_FACTOR,
        sampler="grid", trials=len(points), study=study_name, storage=storage, out=out, workers=workers,
        epochs=quick["epochs"] if epochs is None else epochs,
        subset=quick["subset"] if isinstance(subset, str) and subset == "budget" else subset,
        subset_is_cap=isinstance(subset, str) and subset == "budget",
        val_size=val_size, recipe=recipe, seed=seed, split_seed=split_seed, early_stop=early_stop,
        num_threads=num_threads, device=device, max_failures=max_failures)
    r = resolve_settings(settings)  # every flag checked before anything is written
    refused = (f"study {r.study_name} in {r.run_dir} holds another grid (other --arch, --step, --tolerance "
               f"or --max-coefficient); pass the same flags to resume it, or another --study")
    (summary,), written = run_listed(r.run_dir / SPACE_FILE, text, [settings], refused, progress=progress)
    result = _collect(r, points, labels, members, base, summary)
    result.files = written + _write_outputs(result, dataset=str(dataset), epochs=settings.epochs)
    return result


def _collect(r, points, labels, members, base: Arch, summary) -> GridResult:
    """The rows and the choice, from the study alone."""
    import optuna
    from optuna.trial import TrialState

    from nas.search.study import open_storage, study_info
    from space.listed import CANDIDATE_PARAM

    with _quiet():
        study = optuna.load_study(study_name=r.study_name, storage=open_storage(r.storage_url))
    info = study_info(study)
    num_classes = int(info["num_classes"])
    base_macs = cost(base, num_classes=num_classes).macs
    target = float(info["target"][1])
    by_label: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        label = t.params.get(CANDIDATE_PARAM)
        if label is not None:
            by_label.setdefault(label, []).append(t)
    rank = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.WAITING: 3,
            TrialState.FAIL: 4}
    rows = []
    for p, label, member in zip(points, labels, members):
        macs = cost(member, num_classes=num_classes).macs
        row = GridRow(label=label, alpha=p.alpha, beta=p.beta, gamma=p.gamma, product=p.product,
                      arch=member.to_string(), macs=macs, macs_ratio=macs / base_macs)
        trials = sorted(by_label.get(label, []), key=lambda t: (rank.get(t.state, 5), t.number))
        if trials:
            t = trials[0]
            a = t.user_attrs
            evaluated = t.state == TrialState.COMPLETE and "infeasible" not in a and a.get("val_acc") is not None
            row = dataclasses.replace(
                row, trial=t.number, state=t.state.name,
                val_acc=float(a["val_acc"]) if evaluated else None,
                reward=float(t.value) if evaluated else None,
                duplicate_of=a.get("duplicate_of"))
        rows.append(row)
    scored = [(i, row) for i, row in enumerate(rows) if row.reward is not None and math.isfinite(row.reward)]
    chosen = max(scored, key=lambda ir: (ir[1].reward, -ir[0]))[1] if scored else None
    coefficients = None
    if chosen is not None:
        coefficients = {
            "alpha": chosen.alpha, "beta": chosen.beta, "gamma": chosen.gamma,
            "accuracy": chosen.val_acc, "macs": chosen.macs, "macs_ratio": chosen.macs_ratio,
            "trial": chosen.trial, "study": r.study_name,
            "label": chosen.label, "product": chosen.product, "reward": chosen.reward,
            "reward_rule": f"ACC * (MACs / T)^{REWARD_EXPONENT:g}, T = {TARGET_FACTOR:g} x the base's MACs",
            "target_macs": target, "base_macs": base_macs, "arch": chosen.arch,
            "dataset": info.get("dataset"), "epochs": info.get("epochs"),
            "grid_points": len(rows), "evaluated": len(scored),
        }
    return GridResult(study=r.study_name, run_dir=r.run_dir, rows=rows, chosen=chosen,
                      coefficients=coefficients, base_macs=base_macs, target_macs=target, summary=summary)


class _quiet:
    def __enter__(self):
        import optuna

        self.level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)

    def __exit__(self, *exc):
        import optuna

        optuna.logging.set_verbosity(self.level)
        return False


def _write_outputs(result: GridResult, *, dataset: str, epochs: int) -> list[Path]:
    from nas.atomic import write_json_atomic

    files = []
    if result.coefficients is not None:
        path = result.run_dir / COEFFICIENTS_FILE
        write_json_atomic(path, result.coefficients)
        files.append(path)
    if any(r.val_acc is not None for r in result.rows):
        files += plot_grid(result)
    return files


def plot_grid(result: GridResult) -> list[Path]:
    """``grid_accuracy.png`` and ``.svg`` in the run folder: alpha across, gamma up, colour
    the validation accuracy, each point labelled with its beta (implied by the constraint),
    points not evaluated hollow, the chosen point ringed in red."""
    import numpy as np

    from nas.report.style import new_figure, save_figure

    rows = result.rows
    fig = new_figure(6.8, 5.0)
    ax = fig.subplots()
    alphas = sorted({r.alpha for r in rows})
    gammas = sorted({r.gamma for r in rows})
    spacing = min([b - a for a, b in zip(alphas, alphas[1:])] or [0.05])
    # Points sharing (alpha, gamma) differ in beta: spread them across a little.
    groups: dict[tuple[float, float], list[GridRow]] = {}
    for r in rows:
        groups.setdefault((r.alpha, r.gamma), []).append(r)
    xy: dict[str, tuple[float, float]] = {}
    for (a, g), members in groups.items():
        n = len(members)
        for k, r in enumerate(sorted(members, key=lambda r: r.beta)):
            xy[r.label] = (a + (k - (n - 1) / 2) * spacing * 0.3, g)
    done = [r for r in rows if r.val_acc is not None]
    rest = [r for r in rows if r.val_acc is None]
    if done:
        accs = np.array([r.val_acc for r in done])
        lo, hi = float(accs.min()), float(accs.max())
        if hi - lo < 1e-3:  # all (nearly) equal: a readable scale around the one value
            lo, hi = lo - 0.005, hi + 0.005
        sc = ax.scatter([xy[r.label][0] for r in done], [xy[r.label][1] for r in done], c=accs,
                        cmap="viridis", s=110, edgecolors="black", linewidths=0.6, zorder=3,
                        vmin=lo, vmax=hi)
        bar = fig.colorbar(sc, ax=ax, label="validation accuracy", fraction=0.05, pad=0.03)
        # Accuracies differ in the third decimal: an offset label ("1e-7+2.5e-1") reads as noise.
        bar.formatter.set_useOffset(False)
        bar.update_ticks()
    if rest:
        ax.scatter([xy[r.label][0] for r in rest], [xy[r.label][1] for r in rest], s=110, facecolors="none",
                   edgecolors="#999999", linewidths=1.0, zorder=3, label="not evaluated")
    for r in rows:
        x, y = xy[r.label]
        ax.annotate(f"β {r.beta:g}", (x, y), xytext=(0, 12), textcoords="offset points", ha="center",
                    fontsize=7.5, color="#333333")
    if result.chosen is not None:
        x, y = xy[result.chosen.label]
        c = result.chosen
        ax.scatter([x], [y], s=330, facecolors="none", edgecolors="#d62728", linewidths=2.0, zorder=4,
                   label=f"chosen: α {c.alpha:g}, β {c.beta:g}, γ {c.gamma:g} (acc {c.val_acc:.3f}, "
                         f"{c.macs_ratio:.2f}x MACs)")
    pad_x = max(spacing, 0.02)
    ax.set_xlim(alphas[0] - pad_x, alphas[-1] + pad_x)
    gap = min([b - a for a, b in zip(gammas, gammas[1:])] or [0.05])
    ax.set_ylim(gammas[0] - max(gap, 0.02), gammas[-1] + max(gap, 0.02))
    ax.set_xlabel("α (depth coefficient)")
    ax.set_ylabel("γ (resolution coefficient)")
    ax.grid(True, lw=0.4, alpha=0.5)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=7.5, frameon=False)
    ax.set_title(f"{result.study}: accuracy over the grid (phi = 1; β from α·β²·γ² ≈ 2)", fontsize=9.5,
                 loc="left")
    return save_figure(fig, result.run_dir, PLOT_STEM)
