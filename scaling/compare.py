"""Single-dimension scaling against compound scaling at equal MACs (Tan & Le 2019, Figure 8 /
Table 3): `compare_points` and `run_compare`.

The base is grown to ``macs_factor`` x its MACs in four ways:

* ``depth``: layers only, ``compound(base, 1, d, 1, 1)`` (every stage ``ceil(layers * d)``);
* ``width``: channels only, ``compound(base, 1, 1, w, 1)`` (make_divisible 8, the 90% rule);
* ``resolution``: input side only, ``compound(base, 1, 1, 1, r)`` (rounded to
  ``resolution_multiple`` pixels);
* ``compound``: ``compound(base, phi, alpha, beta, gamma)``, phi from `solve_phi`.

Every point keeps the base's dropout (compound scaling would otherwise raise dropout with
phi for the compound curve only), so the four methods differ in the network alone and train
with one recipe.

Targets: ``steps`` points per method, ``base_macs * macs_factor ** (i / steps)`` for
``i = 1..steps`` (the last is the target itself), each at the dataset's number of classes;
the base (``base``, phi = 0) starts every curve and is trained once. A single-dimension point
is the *smallest* multiplier whose real MACs reach ``target * (1 - tolerance)``, found by
doubling then bisection (real MACs are a non-decreasing step function of one multiplier);
when that step overshoots past ``target * (1 + tolerance)``, the nearer of it and the step
below is kept and ``hit`` is false. The compound point is `solve_phi`'s (within the
tolerance when a phi lands there, else the nearest). The real MACs are always reported.

Training: every point is a candidate of one listed search space
(``runs/<study>/compare_space.yaml``, labels ``base``, ``depth-1``, ... ``compound-3``)
evaluated by ``nas search``'s runner with the grid sampler once per training seed
(`scaling.family.train_listed`: seed s > 0 is the study ``<study>-s<s>``), so the experiment
resumes where it stopped and identical networks train once. Results: ``compare.md``,
``compare.csv``, ``compare.json`` and ``compare_accuracy.png`` / ``.svg`` (accuracy vs MACs,
one line per method, error bars the standard deviation over seeds) in the run folder.

The proxy's limit: on 32-pixel images (CIFAR) a larger input side only upsamples the same
pixels, so resolution scaling adds no information and the resolution-only curve (and the
resolution part of compound scaling) is handicapped; `CAVEAT` says so in every output when
the scaled resolution exceeds the dataset's image side. Use an image folder with larger
images to test resolution scaling.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from space.arch import Arch
from space.cost import cost

from .compound import Member, ScalingError, compound, solve_phi
from .family import PAPER_COEFFICIENTS, _markdown, format_acc, mean_std, short_count, train_listed

__all__ = ["METHODS", "ComparePoint", "CompareResult", "compare_points", "solve_multiplier",
           "run_compare", "CAVEAT", "SPACE_FILE", "PLOT_STEM", "COLUMNS", "dataset_facts"]

METHODS = ("depth", "width", "resolution", "compound")
SPACE_FILE = "compare_space.yaml"
PLOT_STEM = "compare_accuracy"
DEFAULT_TOLERANCE = 0.05
#: The largest single multiplier tried.
MAX_MULTIPLIER = 64.0
COLUMNS = ["method", "step", "label", "multiplier", "phi", "depth", "width", "resolution_multiplier",
           "resolution", "layers", "channels", "target_macs", "macs", "macs_ratio", "hit", "params",
           "acc_mean", "acc_std", "n", "accs", "arch"]

CAVEAT = ("caveat: the dataset's images are {side} pixels, so resolution scaling only upsamples the same "
          "pixels (no new information): resolution-only and the resolution part of compound scaling are "
          "handicapped here; use an image folder with larger images to test resolution scaling")


@dataclass(frozen=True)
class ComparePoint:
    """One network of the comparison.

    Attributes:
        method: ``base`` or one of `METHODS`; step: 0 for the base, 1..steps.
        label: its candidate label (``base``, ``depth-2``...).
        multiplier: the solved multiplier (depth, width or resolution factor; phi for
            compound; 0 for the base).
        member: the grown network (`Member`, costs at the dataset's classes).
        target_macs: the MACs aimed at; hit: real MACs within the tolerance of it.
    """

    method: str
    step: int
    label: str
    multiplier: float
    member: Member
    target_macs: float
    hit: bool

    @property
    def arch(self) -> Arch:
        return self.member.arch


def solve_multiplier(grow: Callable[[float], Member | None], target: float, tolerance: float, *,
                     start: float = 1.0, limit: float = MAX_MULTIPLIER) -> tuple[float, Member, bool]:
    """The smallest multiplier ``m >= start`` whose ``grow(m).macs`` reaches ``target * (1 -
    tolerance)`` (doubling, then 60 bisections), shortened to the fewest decimals giving the
    same network. When that member overshoots ``target * (1 + tolerance)``, the nearer (in
    relative MACs) of it and the member just below is returned. ``grow`` returns None past the
    description's limits. Returns (multiplier, member, hit)."""
    low_bound = target * (1 - tolerance)

    def macs(m: Member | None) -> float:
        return math.inf if m is None else float(m.macs)

    lo, hi = start, start * 2
    while macs(grow(hi)) < low_bound and hi < limit:
        lo, hi = hi, min(hi * 2, limit)
    if macs(grow(hi)) < low_bound:
        m = grow(hi)
        return hi, m, False
    if macs(grow(lo)) >= low_bound:
        hi = lo
    else:
        for _ in range(60):
            mid = (lo + hi) / 2
            if mid in (lo, hi):
                break
            if macs(grow(mid)) >= low_bound:
                hi = mid
            else:
                lo = mid
    found = grow(hi)
    for digits in range(1, 7):  # the shortest multiplier giving the same network
        scale = 10 ** digits
        short = math.ceil(hi * scale - 1e-9) / scale
        m = grow(short)
        if m is not None and found is not None and m.arch == found.arch:
            hi, found = short, m
            break
    hit = abs(found.macs / target - 1) <= tolerance
    if not hit:
        below = grow(lo)
        if below is not None and abs(below.macs / target - 1) < abs(found.macs / target - 1):
            for digits in range(1, 7):
                short = math.floor(lo * 10 ** digits + 1e-9) / 10 ** digits
                m = grow(short) if short >= start else None
                if m is not None and m.arch == below.arch:
                    lo, below = short, m
                    break
            return lo, below, False
    return hi, found, hit


def compare_points(base: Arch, macs_factor: float, *, steps: int = 3,
                   coefficients: tuple[float, float, float] = PAPER_COEFFICIENTS,
                   tolerance: float = DEFAULT_TOLERANCE, num_classes: int = 1000,
                   resolution_multiple: int = 8, product_tolerance: float | None = None) -> list[ComparePoint]:
    """The base, then ``steps`` points of each method in `METHODS` (see the module
    docstring). Raises `ScalingError` on a factor <= 1, steps < 1 or a bad tolerance."""
    if isinstance(macs_factor, bool) or not isinstance(macs_factor, (int, float)) or \
            not math.isfinite(macs_factor) or macs_factor <= 1:
        raise ScalingError(f"--macs-factor must be a number > 1 (the MACs target as a multiple of the "
                           f"base's), got {macs_factor!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ScalingError(f"--steps must be a whole number >= 1, got {steps!r}")
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and 0 <= tolerance < 1):
        raise ScalingError(f"--tolerance must be a fraction in [0, 1), got {tolerance!r}")
    alpha, beta, gamma = coefficients
    opts = dict(resolution_multiple=resolution_multiple, dropout=base.dropout, num_classes=num_classes)
    # The coefficients are checked once, with the product tolerance asked for.
    compound(base, 0, alpha, beta, gamma, tolerance=product_tolerance, **opts)
    base_member = compound(base, 0, 1, 1, 1, tolerance=None, **opts)
    points = [ComparePoint("base", 0, "base", 0.0, base_member, float(base_member.macs), True)]

    def single(method: str) -> Callable[[float], Member | None]:
        def grow(m: float) -> Member | None:
            coeffs = {"depth": (m, 1, 1), "width": (1, m, 1), "resolution": (1, 1, m)}[method]
            try:
                return compound(base, 1, *coeffs, tolerance=None, **opts)
            except ScalingError:
                return None
        return grow

    for method in METHODS:
        for i in range(1, steps + 1):
            target = base_member.macs * macs_factor ** (i / steps)
            if method == "compound":
                sol = solve_phi(base, alpha, beta, gamma, macs=target, tolerance=tolerance,
                                product_tolerance=product_tolerance, **opts)
                m, mult, hit = sol.member, sol.member.phi, sol.hit
            else:
                mult, m, hit = solve_multiplier(single(method), target, tolerance)
            points.append(ComparePoint(method, i, f"{method}-{i}", float(mult), m, target, bool(hit)))
    return points


# --------------------------------------------------------------------------- dataset


def dataset_facts(dataset: str) -> tuple[int, int | None]:
    """(number of classes, image side in pixels or None when the images differ in size) of
    a dataset as ``nas search --dataset`` names it; CIFAR and synthetic data without loading,
    an image folder by loading its training split (cached by `nas.data`)."""
    key = str(dataset).strip().lower()
    if key in ("cifar10", "cifar-10"):
        return 10, 32
    if key in ("cifar100", "cifar-100"):
        return 100, 32
    if key == "synthetic" or key.startswith("synthetic:"):
        from nas.data.synthetic import parse_synthetic

        _, classes, size = parse_synthetic(str(dataset))
        return classes, size
    from nas.data.load import load_dataset
    from nas.data.containers import DataError  # noqa: F401 - raised through

    data = load_dataset(str(dataset), split="train", download=False)
    h, w = int(data.images.shape[-2]), int(data.images.shape[-1])
    return len(data.classes), (h if h == w else max(h, w))


# --------------------------------------------------------------------------- the run


@dataclass
class CompareResult:
    """What `run_compare` did: ``rows`` (one dict per point with the keys of `COLUMNS`),
    the points, the caveat (None when resolution carries information), files written."""

    study: str
    run_dir: Path
    macs_factor: float
    seeds: int
    coefficients: tuple[float, float, float]
    base_macs: int
    rows: list[dict[str, Any]]
    points: list[ComparePoint]
    caveat: str | None
    files: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        alpha, beta, gamma = self.coefficients
        return {"study": self.study, "run_dir": str(self.run_dir), "macs_factor": self.macs_factor,
                "target_macs": self.base_macs * self.macs_factor, "base_macs": self.base_macs,
                "seeds": self.seeds, "alpha": alpha, "beta": beta, "gamma": gamma,
                "columns": COLUMNS, "rows": self.rows, "caveat": self.caveat}


def _row(p: ComparePoint, base: Member, outcomes) -> dict[str, Any]:
    m = p.member
    accs = [o.val_acc for o in outcomes if o.val_acc is not None]
    mean, std = mean_std(accs)
    return {"method": p.method, "step": p.step, "label": p.label, "multiplier": p.multiplier,
            "phi": p.multiplier if p.method == "compound" else None,
            "depth": sum(s.layers for s in m.arch.stages) / sum(s.layers for s in base.arch.stages),
            "width": m.arch.stages[-1].channels / base.arch.stages[-1].channels,
            "resolution_multiplier": m.resolution / base.resolution, "resolution": m.resolution,
            "layers": [s.layers for s in m.arch.stages], "channels": [s.channels for s in m.arch.stages],
            "target_macs": p.target_macs, "macs": m.macs, "macs_ratio": m.macs / base.macs, "hit": p.hit,
            "params": m.params, "acc_mean": mean, "acc_std": std, "n": len(accs), "accs": accs,
            "arch": m.arch.to_string()}


def run_compare(arch: Arch | str, dataset: str, *, macs_factor: float = 4.0, seeds: int = 3, steps: int = 3,
                coefficients: tuple[float, float, float] = PAPER_COEFFICIENTS,
                tolerance: float = DEFAULT_TOLERANCE, resolution_multiple: int = 8,
                product_tolerance: float | None = None, study: str | None = None,
                out: str | os.PathLike = ".", name: str | None = None, **train: Any) -> CompareResult:
    """Grow ``arch`` by each method to ``macs_factor`` x its MACs (`compare_points`), train
    every point ``seeds`` times with the same recipe (`train_listed`; ``train`` holds
    ``epochs``, ``subset``, ``val_size``, ``recipe``, ``storage``, ``workers``,
    ``num_threads``, ``device``, ``progress``) and write the table and plot into
    ``<out>/runs/<study>/`` (study default ``<base name>-compare``)."""
    from nas.atomic import atomic_write

    from .grid import _resolve_base

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ScalingError(f"--seeds must be a whole number >= 1, got {seeds!r}")
    base, base_name = _resolve_base(arch, name)
    num_classes, side = dataset_facts(dataset)
    points = compare_points(base, macs_factor, steps=steps, coefficients=coefficients, tolerance=tolerance,
                            num_classes=num_classes, resolution_multiple=resolution_multiple,
                            product_tolerance=product_tolerance)
    import re

    study = study if study is not None else (
        re.sub(r"[^A-Za-z0-9_.\-]+", "_", f"{base_name}-compare").strip("._-")[:100] or "compare")
    candidates = {p.label: p.arch for p in points}
    alpha, beta, gamma = coefficients
    run = train_listed(candidates, base, dataset, study=study, space_file=SPACE_FILE,
                       space_name=f"{base_name}-compare",
                       description=f"depth, width, resolution and compound (alpha, beta, gamma = {alpha:g}, "
                                   f"{beta:g}, {gamma:g}) scaling of {base_name} to {macs_factor:g}x its MACs",
                       command="scaling compare", seeds=seeds, out=out, **train)
    base_member = points[0].member
    rows = [_row(p, base_member, run.outcomes[p.label]) for p in points]
    largest = max(p.member.resolution for p in points)
    caveat = CAVEAT.format(side=side) if side is not None and largest > side else None
    result = CompareResult(study=study, run_dir=run.run_dir, macs_factor=float(macs_factor), seeds=seeds,
                           coefficients=(float(alpha), float(beta), float(gamma)), base_macs=base_member.macs,
                           rows=rows, points=points, caveat=caveat, files=list(run.written))
    texts = {"compare.md": to_markdown(result), "compare.csv": to_csv(result),
             "compare.json": json.dumps(result.to_dict(), indent=2) + "\n"}
    for fname, text in texts.items():
        with atomic_write(run.run_dir / fname, "w") as f:
            f.write(text)
        result.files.append(run.run_dir / fname)
    if any(r["acc_mean"] is not None for r in rows):
        result.files += plot_compare(result)
    return result


# --------------------------------------------------------------------------- outputs


def _shown(value: float) -> str:
    """A multiplier to 4 significant digits, with "+" when that hides how it exceeds a
    round value: the smallest depth above 1 already rounds every one-layer stage up to 2."""
    text = f"{value:.4g}"
    return text + "+" if float(text) <= 1.0 < value else text


def _multipliers(r: dict[str, Any]) -> str:
    """The asked multiplier(s), then the realised ratios after rounding (layers, channels and
    pixels of the scaled network over the base's)."""
    if r["method"] == "base":
        return "-"
    real = f"real d {r['depth']:.3g}, w {r['width']:.3g}, r {r['resolution_multiplier']:.3g}"
    if r["method"] == "compound":
        return f"φ {_shown(r['multiplier'])} ({real})"
    return f"{r['method'][0]} {_shown(r['multiplier'])} ({real})"


def footer(result: CompareResult) -> str:
    lines = [f"MACs target {short_count(result.base_macs * result.macs_factor)} = {result.macs_factor:g} x the "
             f"base's {short_count(result.base_macs)} (at the dataset's classes); accuracy: validation, mean ± "
             f"sample std over {result.seeds} training seed{'s' if result.seeds != 1 else ''}; "
             f"a '*' after the MACs: not within the tolerance of its target (the nearest step)."]
    if result.caveat:
        lines.append(result.caveat[0].upper() + result.caveat[1:] + ".")
    return "\n".join(lines) + "\n"


def to_markdown(result: CompareResult) -> str:
    body = []
    for r in result.rows:
        body.append([r["method"], str(r["step"]), _multipliers(r), str(r["resolution"]),
                     "/".join(map(str, r["layers"])), "/".join(map(str, r["channels"])),
                     short_count(r["macs"]) + ("" if r["hit"] else "*"), f"{r['macs_ratio']:.2f}",
                     short_count(r["params"]), format_acc(r["acc_mean"], r["acc_std"], r["n"]), str(r["n"])])
    table = _markdown(["method", "step", "multiplier(s)", "resolution", "layers", "channels", "MACs",
                       "MACs ratio", "params", "accuracy (mean ± std)", "n"], body)
    return table + "\n" + footer(result)


def to_csv(result: CompareResult) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in result.rows:
        writer.writerow({**r, "layers": " ".join(map(str, r["layers"])),
                         "channels": " ".join(map(str, r["channels"])), "accs": " ".join(f"{a:.6g}" for a in r["accs"])})
    return buffer.getvalue()


def plot_compare(result: CompareResult) -> list[Path]:
    """Accuracy vs MACs (log), one line per method from the base, error bars the std."""
    from nas.report.style import cost_axis, new_figure, save_figure

    fig = new_figure(6.8, 4.8)
    ax = fig.subplots()
    base = result.rows[0]
    colors = {"depth": "#1f77b4", "width": "#2ca02c", "resolution": "#ff7f0e", "compound": "#d62728"}
    for method in METHODS:
        rows = [base] + [r for r in result.rows if r["method"] == method]
        rows = [r for r in rows if r["acc_mean"] is not None]
        if not rows:
            continue
        ax.errorbar([r["macs"] for r in rows], [r["acc_mean"] for r in rows],
                    yerr=[r["acc_std"] or 0 for r in rows], fmt="-o", color=colors[method], capsize=3,
                    markersize=4, lw=1.4, label=f"{method}" + ("-only" if method != "compound" else ""))
    ax.axvline(result.base_macs * result.macs_factor, color="#888888", ls=":", lw=1.0,
               label=f"target: {result.macs_factor:g}x the base's MACs")
    cost_axis(ax, "macs", span=ax.get_xlim())
    ax.set_xlabel("MACs per image (log scale)")
    ax.set_ylabel(f"validation accuracy (mean ± std, {result.seeds} seed{'s' if result.seeds != 1 else ''})")
    ax.grid(True, which="both", lw=0.4, alpha=0.5)
    ax.legend(loc="best", fontsize=8, frameon=False)
    title = f"{result.study}: scaling to {result.macs_factor:g}x the base's MACs"
    if result.caveat:
        title += "\n(images too small: resolution scaling only upsamples)"
    ax.set_title(title, fontsize=9.5, loc="left")
    return save_figure(fig, result.run_dir, PLOT_STEM)
