"""Early stopping at work (ours, drawn with matplotlib; Optuna's
``plot_intermediate_values`` shows reward-mode intermediate values only, while Pareto
mode's MO-ASHA keeps its per-epoch accuracies in the ``epoch_acc`` user attribute):
`plot_early_stopping`.

Every trial that trained draws its validation accuracy after each epoch
(`nas.search.early_stop.epoch_accuracies`): complete trials in blue, pruned ones in orange
ending with a triangle at the epoch they were stopped at (spread by up to 0.05 epoch
sideways, so many trials stopped at one rung with one accuracy stay countable), running ones dashed green, failed
ones dotted black, the baseline thick gold. The rungs (`rung_epochs` of the study's
``min_epochs``, ``eta`` and ``epochs``; for ``hyperband`` those of its first bracket, for
``median`` the first epoch it may prune at) are vertical lines, and the title gives the
compute saved (`SearchSummary.saved`).
"""

from __future__ import annotations

from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..search.early_stop import rung_epochs
from .data import ReportData
from .style import new_figure

__all__ = ["plot_early_stopping", "rungs_of"]

_LOOK = {
    "complete": dict(color="#1f77b4", lw=0.9, alpha=0.55, ls="-"),
    "duplicate": dict(color="#1f77b4", lw=0.9, alpha=0.55, ls="-"),
    "pruned": dict(color="#ff7f0e", lw=1.0, alpha=0.8, ls="-"),
    "running": dict(color="#2ca02c", lw=1.0, alpha=0.9, ls="--"),
    "failed": dict(color="black", lw=0.9, alpha=0.8, ls=":"),
}


def rungs_of(info: dict) -> tuple[list[int], str]:
    """The epochs drawn as rungs and their legend words, from the study's settings."""
    how = info.get("early_stop", "none")
    try:
        epochs, low, eta = int(info["epochs"]), int(info.get("min_epochs", 1)), int(info.get("eta", 3))
    except (KeyError, TypeError, ValueError):
        return [], ""
    if how in ("asha", "hyperband"):
        try:
            rungs = rung_epochs(low, eta, epochs)
        except Exception:  # noqa: BLE001 - settings a later version may store differently
            return [], ""
        return rungs, "rung (successive halving)" if how == "asha" else "rung (hyperband, first bracket)"
    if how == "median":
        return ([low] if low < epochs else []), "median pruning from here"
    return [], ""


def plot_early_stopping(data: ReportData):
    """The figure, and the (trial number, epochs drawn) of each line."""
    s = data.summary
    fig = new_figure(10.0, 5.2)
    ax = fig.add_subplot()
    drawn: dict[int, int] = {}
    max_epoch = int(data.info.get("epochs") or 1)
    order = {"complete": 0, "duplicate": 0, "failed": 1, "running": 2, "pruned": 3}
    for r in sorted(data.rows, key=lambda r: (order.get(r.kind, 0), r.number)):
        if not r.epoch_acc or r.kind not in _LOOK or r.number == data.baseline:
            continue
        look = _LOOK[r.kind]
        xs = list(range(1, len(r.epoch_acc) + 1))
        ax.plot(xs, r.epoch_acc, color=look["color"], lw=look["lw"], alpha=look["alpha"], ls=look["ls"],
                marker="." if len(xs) == 1 else None, zorder=2 + order.get(r.kind, 0))
        if r.kind == "pruned":
            # Spread a little sideways (by trial number) so a stack of trials stopped at one
            # rung with one accuracy stays countable.
            jitter = 0.05 * (((r.number * 0.618034) % 1.0) * 2 - 1)
            ax.plot([xs[-1] + jitter], r.epoch_acc[-1:], "v", color="#ff7f0e", markeredgecolor="#7a3b00",
                    markersize=6, zorder=6)
        drawn[r.number] = len(xs)
        max_epoch = max(max_epoch, len(xs))
    if data.baseline is not None:
        b = data.row(data.baseline)
        if b.epoch_acc:
            ax.plot(range(1, len(b.epoch_acc) + 1), b.epoch_acc, color="gold", lw=2.6, zorder=8,
                    marker="o", markersize=4, markeredgecolor="black", markeredgewidth=0.5)
            drawn[b.number] = len(b.epoch_acc)
    rungs, rung_words = rungs_of(data.info)
    for e in rungs:
        ax.axvline(e, color="#555555", lw=0.9, ls=":", zorder=1)
    counts = {k: sum(1 for r in data.rows if r.kind == k and r.number in drawn) for k in _LOOK}
    handles = [Line2D([], [], **{k: v for k, v in _LOOK["complete"].items()},
                      label=f"complete ({counts['complete'] + counts['duplicate']})"),
               Line2D([], [], color="#ff7f0e", lw=1.0, marker="v", markeredgecolor="#7a3b00",
                      label=f"pruned, stopped at the triangle ({counts['pruned']})")]
    if counts["running"]:
        handles.append(Line2D([], [], **_LOOK["running"], label=f"running ({counts['running']})"))
    if counts["failed"]:
        handles.append(Line2D([], [], **_LOOK["failed"], label=f"failed ({counts['failed']})"))
    if data.baseline is not None and data.baseline in drawn:
        handles.append(Line2D([], [], color="gold", lw=2.6, marker="o", markeredgecolor="black",
                              label=f"baseline #{data.baseline}"))
    if rungs:
        handles.append(Line2D([], [], color="#555555", lw=0.9, ls=":", label=rung_words))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              borderaxespad=0.0)
    ax.set_xlim(0.8, max_epoch + 0.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (finished passes over the training subset)")
    ax.set_ylabel("validation accuracy")
    ax.grid(True, lw=0.4, alpha=0.5)
    sv = s.saved
    how = data.info.get("early_stop", "none")
    setting = (f"{how}, min_epochs {data.info.get('min_epochs')}, eta {data.info.get('eta')}"
               if how != "none" else "no early stopping")
    fig.suptitle(f"{s.study}: per-epoch accuracy ({setting})", fontsize=12, x=0.01, ha="left")
    ax.set_title(f"compute saved: {sv.epochs_trained} epochs trained of {sv.epochs_if_unpruned} without early "
                 f"stopping ({100 * sv.fraction_saved:.0f}% saved)", fontsize=9, loc="left", color="#444444")
    if not drawn:
        ax.text(0.5, 0.5, "no trial has finished an epoch yet", transform=ax.transAxes, ha="center",
                va="center", color="#777777")
    return fig, drawn
