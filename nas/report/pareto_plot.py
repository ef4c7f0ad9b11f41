"""Accuracy against one cost (ours, drawn with matplotlib; not Optuna's
``plot_pareto_front``, which knows neither pruned nor infeasible trials, budgets, rewards
nor labels): `plot_accuracy_vs_cost`.

What is on it
-------------
* every trial with that cost recorded, one point each, by kind (`style.KIND_STYLE`):
  complete (blue dots), pruned (triangles, darker the later the epoch they were stopped at;
  drawn at the accuracy they stopped with), running (green rings, latest accuracy), failed
  (black squares, at their last accuracy), duplicates (faint grey rings around their
  original). Trials that trained nothing, infeasible (over a hard budget: red crosses) and
  failed before an epoch, sit in a shaded "not trained" band at the bottom, at their cost;
* the front of accuracy against this cost over the evaluated trials as a step line
  (`ReportData.front_2d`), and the study's front members ringed (Pareto mode: the front of
  all its objectives; reward mode: the step line's);
* the mnas reward's iso-lines ``ACC = R / (X / T)^w`` (`MnasReward.iso_curve`) when the
  plot's cost is the reward's: the best reward's curve and the rewards at the 90th, 75th
  and 50th percentiles of the evaluated trials (reward mode, or Pareto mode with a target,
  where the soft EfficientNet reward at that target is used), each in the legend; the
  target as a dotted line, a hard budget as a dashed red line;
* the baseline (gold star) and the architectures queued with ``--enqueue`` (magenta
  diamonds) labelled, and the front's two ends labelled with their trial number; labels
  go where they overlap neither one another nor points (`style.place_labels`);
* on the MACs plot, ``family.json``'s members as a connected curve (members without
  accuracy are left out of the curve and listed in the legend's entry).

The legend sits outside the axes, so it never hides a point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from matplotlib import colormaps
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.transforms import blended_transform_factory

from ..search.objectives import COST_KINDS, MnasReward, format_quantity
from .data import ReportData, TrialRow, short_arch
from .style import KIND_STYLE, LabelSpec, cost_axis, cost_label, new_figure, place_labels

__all__ = ["IsoCurve", "AccCostPlot", "plot_accuracy_vs_cost", "iso_levels", "BAND_Y"]

#: Height of the "not trained" band as a fraction of the axes, and where its points sit.
BAND_TOP = 0.08
BAND_Y = 0.04


@dataclass
class IsoCurve:
    """One drawn iso-line: the reward ``R`` and the points of its curve (cost, accuracy)."""

    reward: float
    xs: np.ndarray
    accs: np.ndarray
    label: str


@dataclass
class AccCostPlot:
    """An accuracy-vs-cost figure and what is on it (for the page and for tests).

    ``points``: trial number -> (cost, accuracy or None when in the "not trained" band,
    kind); ``front``: the step line's trial numbers by cost; ``labels``: the label texts;
    ``label_boxes``: their boxes in display pixels at the figure's dpi."""

    cost: str
    figure: object
    iso_curves: list[IsoCurve] = field(default_factory=list)
    iso_reward: MnasReward | None = None
    front: list[int] = field(default_factory=list)
    points: dict[int, tuple[float, float | None, str]] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    label_boxes: list[tuple[float, float, float, float]] = field(default_factory=list)


def iso_levels(rewards: list[float]) -> list[tuple[float, str]]:
    """The rewards whose iso-lines are drawn, with their legend words: the best, then the
    90th, 75th and 50th percentiles of ``rewards``, leaving out any within 0.5% of one
    already chosen."""
    rewards = [r for r in rewards if r is not None and math.isfinite(r) and r > 0]
    if not rewards:
        return []
    best = max(rewards)
    levels = [(best, "best")]
    for q in (90, 75, 50):
        value = float(np.percentile(rewards, q))
        if all(abs(value - v) > 0.005 * best for v, _ in levels):
            levels.append((value, f"{q}th percentile"))
    return levels


def _position(r: TrialRow) -> float | None:
    """The accuracy a trial is drawn at, or None for the "not trained" band."""
    if r.kind == "infeasible" or r.acc is None:
        return None
    return r.acc


def _enqueued_name(text: str) -> str:
    if text.startswith("net_") or "-stem_" in text:
        return short_arch(text)
    return text if len(text) <= 28 else text[:25] + "..."


def plot_accuracy_vs_cost(data: ReportData, cost: str) -> AccCostPlot:
    """The accuracy-vs-``cost`` figure of ``data`` (see the module docstring)."""
    s = data.summary
    fig = new_figure(11.0, 6.4)
    grid = fig.add_gridspec(1, 2, width_ratios=(2.6, 1.0))
    ax = fig.add_subplot(grid[0, 0])
    legend_ax = fig.add_subplot(grid[0, 1])
    legend_ax.axis("off")
    result = AccCostPlot(cost=cost, figure=fig)
    band = blended_transform_factory(ax.transData, ax.transAxes)
    rows = [r for r in data.rows if cost in r.costs and r.kind != "waiting" and r.costs[cost] > 0
            and math.isfinite(r.costs[cost])]
    family = [m for m in data.family if cost == "macs"]

    # Limits first: they decide where the iso-lines start and end.
    accs = [_position(r) for r in rows if _position(r) is not None] + [m.acc for m in family if m.acc is not None]
    xs_all = [r.costs[cost] for r in rows] + [m.macs for m in family if m.acc is not None]
    budgets = {k: float(v) for k, v in (data.info.get("budgets") or {}).items()}
    iso = data.iso_reward if data.iso_reward is not None and data.iso_reward.cost == cost else None
    if cost in budgets:
        xs_all.append(budgets[cost])
    if iso is not None:
        xs_all.append(iso.target)
    if accs:
        lo, hi = min(accs), max(accs)
    else:
        lo, hi = 0.0, 1.0
    if hi - lo < 0.05:  # one accuracy, or a few close together: centre them
        lo, hi = (lo + hi) / 2 - 0.025, (lo + hi) / 2 + 0.025
    span = (hi - lo) / (1 - BAND_TOP - 0.17)
    ylim = (lo - (BAND_TOP + 0.04) * span, hi + 0.13 * span)  # headroom for labels above the front
    if xs_all:
        xlo, xhi = min(xs_all) / 1.25, max(xs_all) * 1.25
    else:
        xlo, xhi = 1.0, 10.0
    ax.set_ylim(*ylim)
    ax.set_xlim(xlo, xhi)
    cost_axis(ax, cost, span=(xlo, xhi))
    ax.add_patch(Rectangle((0, 0), 1, BAND_TOP, transform=ax.transAxes, fc="#f2f2f2", ec="none", zorder=0))
    ax.text(0.005, BAND_TOP - 0.006, "not trained", transform=ax.transAxes, fontsize=7, color="#777777",
            va="top", ha="left", zorder=1)
    ax.grid(True, which="major", lw=0.4, alpha=0.5)
    handles: list = []

    def y_of(r: TrialRow) -> tuple[float, object]:
        p = _position(r)
        return (p, ax.transData) if p is not None else (BAND_Y, band)

    def scatter(rs: list[TrialRow], kind: str, label: str | None = None, color=None, zorder=3) -> None:
        if not rs:
            return
        st = KIND_STYLE[kind]
        for transform, group in ((ax.transData, [r for r in rs if _position(r) is not None]),
                                 (band, [r for r in rs if _position(r) is None])):
            if not group:
                continue
            xs = [r.costs[cost] for r in group]
            ys = [y_of(r)[0] for r in group]
            face = color if color is not None else st["color"]
            if st["marker"] == "x":  # an unfilled marker: its colour is the face colour
                ax.scatter(xs, ys, marker="x", s=st["size"], c=[face] * len(xs), linewidths=1.4,
                           alpha=st["alpha"], transform=transform, zorder=zorder)
                continue
            ax.scatter(xs, ys, marker=st["marker"], s=st["size"], c=[face] * len(xs) if face != "none" else "none",
                       edgecolors=st["edge"], linewidths=1.0 if face == "none" else 0.5,
                       alpha=st["alpha"], transform=transform, zorder=zorder)
        handles.append(Line2D([], [], ls="none", marker=st["marker"], markersize=7,
                              markerfacecolor=color if color is not None else st["color"],
                              markeredgecolor=(color if st["marker"] == "x" and color is not None else st["edge"]),
                              alpha=st["alpha"], label=label or st["label"]))

    by_kind = {k: [r for r in rows if r.kind == k] for k in KIND_STYLE}
    scatter(by_kind["duplicate"], "duplicate", zorder=2)
    scatter(by_kind["complete"], "complete", label=f"complete ({len(by_kind['complete'])})")
    pruned = by_kind["pruned"]
    epochs = sorted({r.pruned_at for r in pruned if r.pruned_at is not None})
    cmap = colormaps["Oranges"]
    for i, e in enumerate(epochs):
        shade = cmap(0.45 + 0.5 * (i / (len(epochs) - 1) if len(epochs) > 1 else 0.5))
        group = [r for r in pruned if r.pruned_at == e]
        scatter(group, "pruned", label=f"pruned at epoch {e} ({len(group)})", color=shade, zorder=4)
    scatter([r for r in pruned if r.pruned_at is None], "pruned", label="pruned", zorder=4)
    scatter(by_kind["infeasible"], "infeasible",
            label=f"infeasible: over a hard budget, not trained ({len(by_kind['infeasible'])})", zorder=4)
    scatter(by_kind["failed"], "failed", label=f"failed ({len(by_kind['failed'])})", zorder=4)
    scatter(by_kind["running"], "running", label=f"running, latest epoch ({len(by_kind['running'])})", zorder=4)
    for r in rows:
        p = _position(r)
        result.points[r.number] = (r.costs[cost], p, r.kind)

    # The front of accuracy against this cost, as a step line (attainable accuracy at each cost).
    front = data.front_2d(cost)
    result.front = [r.number for r in front]
    if front:
        fx = [r.costs[cost] for r in front] + [xhi]
        fy = [r.acc for r in front] + [front[-1].acc]
        (line,) = ax.plot(fx, fy, drawstyle="steps-post", color="black", lw=1.3, zorder=5,
                          label=f"front: accuracy vs {COST_KINDS[cost].label} ({len(front)})")
        handles.append(line)
    ringed = set(data.top) if data.mode == "pareto" else set(result.front)
    ring_rows = [r for r in rows if r.number in ringed and _position(r) is not None]
    if ring_rows:
        ax.scatter([r.costs[cost] for r in ring_rows], [r.acc for r in ring_rows], s=110, facecolors="none",
                   edgecolors="black", linewidths=1.1, zorder=6)
        handles.append(Line2D([], [], ls="none", marker="o", markersize=10, markerfacecolor="none",
                              markeredgecolor="black",
                              label="front member (all objectives)" if data.mode == "pareto" and len(s.objectives) > 2
                              else "front member"))

    # Reward iso-lines over the whole cost range.
    if iso is not None:
        rewards = [iso(min(max(r.acc, 0.0), 1.0), r.costs[cost]) for r in data.evaluated
                   if r.acc is not None and cost in r.costs and r.costs[cost] > 0]
        grid = np.geomspace(xlo, xhi, 256)
        name = "reward" if data.mode == "reward" else "soft reward at the target"
        for i, (value, words) in enumerate(iso_levels(rewards)):
            accs_curve = iso.iso_curve(value, grid)
            label = f"{name} R = {value:.4g} ({words})"
            (line,) = ax.plot(grid, accs_curve, color="#9467bd", lw=1.4 if i == 0 else 0.9,
                              ls="--" if i == 0 else (0, (1, 2 + i)), alpha=0.9 if i == 0 else 0.7,
                              zorder=1.5, gid=f"iso-{i}", label=label)
            handles.append(line)
            result.iso_curves.append(IsoCurve(value, grid, accs_curve, label))
        result.iso_reward = iso
        tline = ax.axvline(iso.target, color="#9467bd", lw=0.8, ls=":", zorder=1,
                           label=f"target T = {format_quantity(iso.target, cost)} "
                                 f"(w = {iso.alpha:g} / {iso.beta:g} below / above)")
        handles.append(tline)
    if cost in budgets:
        handles.append(ax.axvline(budgets[cost], color="#d62728", lw=1.0, ls="--", zorder=1,
                                  label=f"hard budget {format_quantity(budgets[cost], cost)}"))

    # Family overlay (MACs only).
    drawn_family = [m for m in sorted(family, key=lambda m: m.macs) if m.acc is not None]
    if family:
        missing = [m.name for m in family if m.acc is None]
        if drawn_family:
            (line,) = ax.plot([m.macs for m in drawn_family], [m.acc for m in drawn_family], "-s", color="#17becf",
                              markersize=5, lw=1.4, zorder=7,
                              label="scaled family" + (f" (no accuracy yet: {', '.join(missing)})" if missing else ""))
            handles.append(line)

    # Marked trials: enqueued architectures and the baseline.
    enq = [r for r in rows if r.enqueued]
    for r in enq:
        y, tr = y_of(r)
        ax.scatter([r.costs[cost]], [y], marker="D", s=90, facecolors="none", edgecolors="#e377c2",
                   linewidths=1.6, transform=tr, zorder=7)
    if enq:
        handles.append(Line2D([], [], ls="none", marker="D", markersize=8, markerfacecolor="none",
                              markeredgecolor="#e377c2", label="queued with --enqueue"))
    base = next((r for r in rows if r.number == data.baseline), None)
    if base is not None:
        y, tr = y_of(base)
        ax.scatter([base.costs[cost]], [y], marker="*", s=260, c="gold", edgecolors="black", linewidths=0.8,
                   transform=tr, zorder=8)
        handles.append(Line2D([], [], ls="none", marker="*", markersize=13, markerfacecolor="gold",
                              markeredgecolor="black", label=f"baseline: {_rule_short(s.rule)}"))

    ax.set_xlabel(cost_label(cost))
    epochs_text = f"{data.info.get('epochs')} epochs" if data.info.get("epochs") else "proxy"
    ax.set_ylabel(f"validation accuracy (proxy training, {epochs_text})")
    c = s.counts
    drawn_numbers = {r.number for r in rows}
    undrawn = sum(1 for r in data.rows if r.kind != "waiting" and r.number not in drawn_numbers)
    fig.suptitle(f"{s.study}: accuracy vs {COST_KINDS[cost].label} ({s.mode} mode)", fontsize=12, x=0.01,
                 ha="left")
    plain = c["COMPLETE"] - c["infeasible"] - c["duplicate"]
    ax.set_title(f"{len(rows)} trial{'s' if len(rows) != 1 else ''} drawn: {plain} complete, {c['PRUNED']} pruned,"
                 f" {c['infeasible']} infeasible, {c['FAIL']} failed, {c['duplicate']} "
                 f"duplicates, {c['RUNNING']} running"
                 + (f"; {undrawn} without this cost not drawn" if undrawn else ""),
                 fontsize=8, loc="left", color="#444444")
    legend_ax.legend(handles=handles, loc="upper left", fontsize=8, frameon=False, borderaxespad=0.0)

    # Labels, once the layout is final (annotations must not move the axes).
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    obstacles = np.array([ax.transData.transform((r.costs[cost], _position(r))) if _position(r) is not None
                          else band.transform((r.costs[cost], BAND_Y)) for r in rows]).reshape(-1, 2)
    specs: list[LabelSpec] = []
    if base is not None:
        y, tr = y_of(base)
        specs.append(LabelSpec((base.costs[cost], y), tr, f"baseline #{base.number}\n{short_arch(base.arch)}",
                               color="#8a6d00", weight="bold"))
    for r in enq:
        if base is not None and r.number == base.number:
            continue
        y, tr = y_of(r)
        specs.append(LabelSpec((r.costs[cost], y), tr, f"{_enqueued_name(r.enqueued)} #{r.number}", color="#b0307f"))
    named = {sp.xy for sp in specs}
    for r in {id(x): x for x in (front[:1] + front[-1:])}.values():
        if (r.costs[cost], r.acc) not in named and (base is None or r.number != base.number):
            specs.append(LabelSpec((r.costs[cost], r.acc), ax.transData, f"#{r.number}", color="#333333"))
    for m in drawn_family:
        specs.append(LabelSpec((m.macs, m.acc), ax.transData, m.name, color="#0e7c86"))
    taken = _iso_labels(ax, result.iso_curves, ylim)
    result.labels = [sp.text for sp in specs]
    result.label_boxes = place_labels(ax, specs, obstacles, taken=taken)
    return result


def _iso_labels(ax, curves: list[IsoCurve], ylim: tuple[float, float]) -> list[tuple[float, float, float, float]]:
    """``R = ...`` written on each iso-line where it leaves the plot (right edge or top),
    skipping one that would overlap another; returns the boxes written (display pixels)."""
    renderer = ax.figure.canvas.get_renderer()
    low = ylim[0] + (ylim[1] - ylim[0]) * (BAND_TOP + 0.02)
    high = ylim[1] - (ylim[1] - ylim[0]) * 0.02
    boxes: list[tuple[float, float, float, float]] = []
    for curve in curves:
        inside = np.flatnonzero((curve.accs <= high) & (curve.accs >= low))
        if not len(inside):
            continue
        i = int(inside[-1])
        text = ax.text(curve.xs[i], curve.accs[i], f"R = {curve.reward:.4g} ", fontsize=7, color="#6a3d9a",
                       ha="right", va="top" if i < len(curve.xs) - 1 else "bottom", zorder=9,
                       bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.7))
        e = text.get_window_extent(renderer)
        box = (e.x0 - 3, e.y0 - 3, e.x1 + 3, e.y1 + 3)  # with its backing box and a margin
        if any(min(box[2], b[2]) > max(box[0], b[0]) and min(box[3], b[3]) > max(box[1], b[1]) for b in boxes):
            text.remove()
            continue
        boxes.append(box)
    return boxes


def _rule_short(rule: str) -> str:
    return rule if len(rule) <= 60 else rule[:57] + "..."
