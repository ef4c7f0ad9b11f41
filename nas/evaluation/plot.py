"""The confusion-matrix picture of ``nas eval`` (matplotlib, Agg, written atomically)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_write

__all__ = ["plot_confusion", "row_normalised"]

# Up to this many classes every cell shows its percentage and every class is named.
_ANNOTATE_UP_TO = 20
_NAME_UP_TO = 120


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """Each row (true class) divided by its total: the share of that class predicted as
    each class; a row without images stays 0."""
    counts = np.asarray(confusion, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], path: str | Path, *,
                   title: str = "", subtitle: str = "") -> Path:
    """Write the row-normalised ``confusion`` (counts, row = true class) as a PNG to ``path``.

    Classes are named on both axes, the true ones with their image counts (up to 120
    classes; beyond, every few are numbered) and, up to 20 classes, every cell shows its
    percentage. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    shares = row_normalised(confusion)
    n = shares.shape[0]
    if shares.shape != (n, n) or len(class_names) != n:
        raise ValueError(f"a {shares.shape} confusion matrix needs {n} class names, got {len(class_names)}")
    side = float(np.clip(0.55 * n + 3.0, 6.0, 24.0))
    fig = Figure(figsize=(side + 1.4, side), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(100 * shares, cmap="Blues", vmin=0.0, vmax=100.0, interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("% of the true class's images")
    totals = np.asarray(confusion).sum(axis=1)
    fontsize = 10 if n <= 12 else 8 if n <= 30 else 6 if n <= 60 else 5
    if n <= _NAME_UP_TO:
        ticks = np.arange(n)
        labels = [str(c) for c in class_names]
        row_labels = [f"{c} ({t})" for c, t in zip(labels, totals)]
    else:
        ticks = np.arange(0, n, int(np.ceil(n / _NAME_UP_TO)))
        labels = row_labels = [str(i) for i in ticks]
    ax.set_xticks(ticks, labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center",
                  rotation_mode="anchor", fontsize=fontsize)
    ax.set_yticks(ticks, row_labels, fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (images)" if n <= _NAME_UP_TO else "true class")
    if n <= _ANNOTATE_UP_TO:
        for i in range(n):
            for j in range(n):
                if totals[i] == 0:
                    continue
                value = shares[i, j]
                text = "<1" if 0 < 100 * value < 0.5 else f"{100 * value:.0f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize - 1,
                        color="white" if value > 0.55 else "black" if value > 0 else "0.7")
    # Thin grid lines between the cells.
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    if title or subtitle:
        ax.set_title(title + ("\n" + subtitle if subtitle else ""), fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    path = Path(path)
    with atomic_write(path) as f:
        f.write(buffer.getvalue())
    return path
