"""What every plot of `nas report` shares: the look of each trial kind, cost axes, writing a
figure as PNG and SVG, and placing text labels where they overlap neither one another nor
the points.

Figures are `matplotlib.figure.Figure` objects on the Agg canvas, made without pyplot, so
a report touches no global matplotlib state (no backend switch, no open-figure registry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..atomic import atomic_write
from ..search.objectives import COST_KINDS, format_quantity

__all__ = ["KIND_STYLE", "new_figure", "cost_axis", "save_figure", "LabelSpec", "place_labels",
           "cost_label", "short_quantity", "PNG_DPI"]

PNG_DPI = 130

#: How each trial kind is drawn on the accuracy-vs-cost plots: marker, face colour, edge
#: colour, size (points^2), alpha and the legend's words.
KIND_STYLE = {
    "complete": dict(marker="o", color="#1f77b4", edge="white", size=34, alpha=0.85,
                     label="complete"),
    "pruned": dict(marker="v", color="#ff7f0e", edge="#7a3b00", size=40, alpha=0.9,
                   label="pruned"),
    "infeasible": dict(marker="x", color="#d62728", edge="#d62728", size=40, alpha=0.9,
                       label="infeasible: over a hard budget, not trained"),
    "failed": dict(marker="s", color="none", edge="black", size=36, alpha=0.9,
                   label="failed"),
    "duplicate": dict(marker="o", color="none", edge="#999999", size=70, alpha=0.5,
                      label="duplicate (repeats an earlier trial)"),
    "running": dict(marker="o", color="none", edge="#2ca02c", size=40, alpha=0.9,
                    label="running (latest epoch)"),
}


def new_figure(width: float, height: float, *, constrained: bool = True) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def short_quantity(value: float, kind: str) -> str:
    """``format_quantity`` without the unit word (``"120M"``, ``"5.0 ms"``): for ticks."""
    text = format_quantity(value, kind)
    unit = COST_KINDS[kind].unit
    return text[: -len(unit)].strip() if not COST_KINDS[kind].is_duration and text.endswith(unit) else text


def cost_label(kind: str) -> str:
    k = COST_KINDS[kind]
    per = " per image" if kind == "macs" else ""
    unit = " (s)" if k.is_duration else ""
    return f"{k.label}{per}{unit}, log scale"


def cost_axis(ax, kind: str, axis: str = "x", span: tuple[float, float] | None = None) -> None:
    """A log-scale cost axis, its ticks written short (``100k``, ``2M``, ``5.0 ms``): at
    every multiple 1..9 of a power of ten within one decade (``span``: the axis limits), at
    1, 2, 3 and 5 times each power of ten up to two, 1, 2 and 5 up to four, powers of ten
    beyond."""
    set_scale = ax.set_xscale if axis == "x" else ax.set_yscale
    a = ax.xaxis if axis == "x" else ax.yaxis
    set_scale("log")
    decades = math.log10(span[1] / span[0]) if span and span[0] > 0 and span[1] > span[0] else 3.0
    subs = (tuple(float(k) for k in range(1, 10)) if decades <= 1 else (1.0, 2.0, 3.0, 5.0) if decades <= 2
            else (1.0, 2.0, 5.0) if decades <= 4 else (1.0,))
    a.set_major_locator(LogLocator(base=10, subs=subs))
    a.set_minor_locator(LogLocator(base=10, subs=tuple(np.arange(1, 10, dtype=float))))
    a.set_major_formatter(FuncFormatter(lambda v, _pos: short_quantity(v, kind) if v > 0 else ""))
    a.set_minor_formatter(NullFormatter())


def save_figure(fig: Figure, plots_dir: Path, stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` into ``plots_dir``, each atomically; the SVG
    carries no date and a fixed id salt, so an unchanged study redraws byte for byte."""
    paths = []
    for fmt in ("png", "svg"):
        path = Path(plots_dir) / f"{stem}.{fmt}"
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        with matplotlib.rc_context({"svg.hashsalt": "nas-report"}), atomic_write(path, "wb") as f:
            fig.savefig(f, format=fmt, dpi=PNG_DPI, metadata=metadata)
        paths.append(path)
    return paths


@dataclass
class LabelSpec:
    """A label to place: the point it names (``xy`` in the coordinates of ``transform``,
    e.g. ``ax.transData``), its text and style."""

    xy: tuple[float, float]
    transform: object
    text: str
    color: str = "black"
    weight: str = "normal"


# Offsets tried, nearest first: 8 directions at five distances (in points).
_ANGLES = (45, 135, -45, -135, 90, -90, 0, 180)
_RADII = (22, 40, 62, 90, 125)


def _overlap(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _crosses(p1, p2, q1, q2) -> bool:
    """Whether segments p1-p2 and q1-q2 cross (touching at an end does not count)."""
    def orient(a, b, c):
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    d1, d2 = orient(q1, q2, p1), orient(q1, q2, p2)
    d3, d4 = orient(p1, p2, q1), orient(p1, p2, q2)
    return d1 * d2 < 0 and d3 * d4 < 0


def _through(p1, p2, box) -> bool:
    """Whether the segment p1-p2 enters ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    if any(x0 < p[0] < x1 and y0 < p[1] < y1 for p in (p1, p2)):
        return True
    corners = ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
    return any(_crosses(p1, p2, corners[i], corners[(i + 1) % 4]) for i in range(4))


def _near_segment(points: np.ndarray, p1, p2, within: float) -> int:
    """How many ``points`` lie within ``within`` pixels of the segment p1-p2, its first
    end (the labelled point itself) excluded."""
    if not len(points):
        return 0
    a, b = np.asarray(p1, float), np.asarray(p2, float)
    d = b - a
    length2 = float(d @ d)
    if length2 == 0:
        return 0
    t = np.clip(((points - a) @ d) / length2, 0.0, 1.0)
    dist = np.linalg.norm(points - (a + t[:, None] * d), axis=1)
    own = np.linalg.norm(points - a, axis=1) < 1.0
    return int(np.sum((dist < within) & ~own))


def place_labels(ax, labels: Sequence[LabelSpec], obstacles: np.ndarray, *, fontsize: float = 7.5,
                 taken: list | None = None, passes: int = 3) -> list[tuple[float, float, float, float]]:
    """Annotate ``ax`` with each label, with a thin arrow to its point.

    Each label goes to one of 40 candidate offsets (8 directions, 5 distances), the one
    that minimises, in this order of weight: overlap with other labels (or boxes in
    ``taken``), running outside the axes, its arrow crossing other arrows or labels (or
    theirs crossing it), points (``obstacles``, display pixels, shape (n, 2)) under the
    text, points the arrow passes over, and distance. Labels are placed greedily in the
    order given (most important first), then each is moved again, given where all the
    others are, for ``passes - 1`` more rounds (a greedy choice can block a later label's
    only good spot). The figure's layout must be final (`Figure.draw_without_rendering`
    then no layout engine). Returns the boxes (x0, y0, x1, y1 in display pixels).
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72.0
    frame = ax.get_window_extent(renderer)
    fixed: list[tuple[float, float, float, float]] = list(taken or [])
    obstacles = np.asarray(obstacles, dtype=float).reshape(-1, 2)

    # Candidates and what each costs on its own (frame, points under it, under its arrow).
    cands: list[list[tuple]] = []
    anchors = []
    for spec in labels:
        probe = ax.text(0, 0, spec.text, fontsize=fontsize, weight=spec.weight, transform=None)
        ext = probe.get_window_extent(renderer)
        probe.remove()
        pad = 4.0 * px_per_pt
        w, h = ext.width + 2 * pad, ext.height + 2 * pad
        sx, sy = spec.transform.transform(spec.xy)
        anchors.append((sx, sy))
        mine = []
        for radius in _RADII:
            for angle in _ANGLES:
                dx = radius * math.cos(math.radians(angle)) * px_per_pt
                dy = radius * math.sin(math.radians(angle)) * px_per_pt
                cx, cy = sx + dx, sy + dy
                # The text hangs away from its point: left-aligned to the right of it, etc.
                x0 = cx if dx > 1 else cx - w if dx < -1 else cx - w / 2
                y0 = cy if dy > 1 else cy - h if dy < -1 else cy - h / 2
                box = (x0, y0, x0 + w, y0 + h)
                outside = (max(0.0, frame.x0 - box[0]) + max(0.0, box[2] - frame.x1)
                           + max(0.0, frame.y0 - box[1]) + max(0.0, box[3] - frame.y1))
                inside = 0
                if len(obstacles):
                    inside = int(np.sum((obstacles[:, 0] > box[0] - 4) & (obstacles[:, 0] < box[2] + 4)
                                        & (obstacles[:, 1] > box[1] - 4) & (obstacles[:, 1] < box[3] + 4)))
                # The arrow runs from the point to the box's nearest corner or edge middle.
                tip = (min(max(sx, box[0]), box[2]), min(max(sy, box[1]), box[3]))
                grazed = _near_segment(obstacles, (sx, sy), tip, 4.0)
                alone = outside * 2000.0 + inside * 400.0 + grazed * 300.0 + radius
                alone += 1e7 + sum(_overlap(box, _grow(b)) for b in fixed) if any(
                    _overlap(box, _grow(b)) for b in fixed) else 0.0
                alone += 6000.0 * sum(_through((sx, sy), tip, b) for b in fixed)
                mine.append((alone, dx, dy, box, tip))
        cands.append(mine)

    def cost(i: int, c: tuple, chosen: dict[int, tuple]) -> float:
        alone, _, _, box, tip = c
        a = anchors[i]
        overlap = sum(_overlap(box, _grow(o[3])) for j, o in chosen.items() if j != i)
        tangled = 0
        for j, o in chosen.items():
            if j == i:
                continue
            tangled += _crosses(a, tip, anchors[j], o[4]) + _through(a, tip, o[3]) + _through(anchors[j], o[4], box)
        return alone + (1e7 + overlap if overlap > 0 else 0.0) + tangled * 6000.0

    chosen: dict[int, tuple] = {}
    for i in range(len(labels)):  # greedy, most important first
        chosen[i] = min(cands[i], key=lambda c: cost(i, c, chosen))
    for _ in range(max(0, passes - 1)):
        moved = False
        for i in range(len(labels)):
            best = min(cands[i], key=lambda c: cost(i, c, chosen))
            if cost(i, best, chosen) < cost(i, chosen[i], chosen) - 1e-9:
                chosen[i], moved = best, True
        if not moved:
            break

    placed = []
    for i, spec in enumerate(labels):
        _, dx, dy, box, _ = chosen[i]
        placed.append(box)
        ha = "left" if dx > 1 else "right" if dx < -1 else "center"
        va = "bottom" if dy > 1 else "top" if dy < -1 else "center"
        ax.annotate(spec.text, xy=spec.xy, xycoords=spec.transform,
                    xytext=(dx / px_per_pt, dy / px_per_pt),
                    textcoords="offset points", ha=ha, va=va, fontsize=fontsize, weight=spec.weight,
                    color=spec.color, zorder=20, annotation_clip=False,
                    bbox=dict(boxstyle="round,pad=0.25", fc="white", ec=spec.color, lw=0.6, alpha=0.75),
                    arrowprops=dict(arrowstyle="-", color=spec.color, lw=0.7, shrinkA=0, shrinkB=3))
    return placed


def _grow(b: Sequence[float], by: float = 2.0) -> tuple[float, float, float, float]:
    return (b[0] - by, b[1] - by, b[2] + by, b[3] + by)
