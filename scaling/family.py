"""A compound-scaled family: its members, its tables (markdown, CSV, JSON) and, for the
paper's own case, the official EfficientNet B1..B7 beside it.

Units and conventions are `scaling.compound`'s: ``macs`` multiply-accumulates per image at
the member's resolution, ``params`` a count, both at 1000 classes unless asked otherwise;
latency, when measured, in milliseconds per image (batch 1, CPU, median of
`space.cost.measure_latency`). Markdown tables show MACs and params in short form
(``386M``, ``1.83G``); CSV and JSON carry the exact integers.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from space.arch import Arch
from space.cost import cost
from space.presets import get_preset

from .compound import Member, ScalingError, compound

__all__ = [
    "PAPER_COEFFICIENTS",
    "OfficialRow",
    "family",
    "family_columns",
    "family_rows",
    "official_comparison",
    "to_csv",
    "to_json",
    "to_markdown",
    "comparison_markdown",
    "write_family",
]

# Tan & Le 2019, section 4.2: the grid search on B0 found alpha = 1.2, beta = 1.1,
# gamma = 1.15.
PAPER_COEFFICIENTS = (1.2, 1.1, 1.15)


def family(arch: Arch, alpha: float, beta: float, gamma: float, phis: Iterable[float],
           **options: Any) -> tuple[Member, ...]:
    """`compound` of ``arch`` at each phi in ``phis`` (in the order given), with ``options``
    (``resolution_multiple``, ``max_resolution``, ``later_stage_depth``, ``dropout``,
    ``tolerance``, ``num_classes``) passed on. An empty ``phis`` raises `ScalingError`."""
    phis = list(phis)
    if not phis:
        raise ScalingError("--phi must name at least one value")
    return tuple(compound(arch, phi, alpha, beta, gamma, **options) for phi in phis)


# --------------------------------------------------------------------------- tables


def family_columns(members: Sequence[Member], *, latency: bool = False) -> list[str]:
    """The column names of `family_rows` (and of the CSV): phi, the multipliers, the input
    side, dropout, ``stageN_channels`` and ``stageN_layers`` for each stage (1-based),
    params, MACs, the real and ideal MACs ratios, and ``latency_ms`` when asked."""
    stages = len(members[0].arch.stages) if members else 0
    columns = ["phi", "depth_multiplier", "width_multiplier", "resolution_multiplier",
               "resolution", "dropout"]
    for i in range(1, stages + 1):
        columns += [f"stage{i}_channels", f"stage{i}_layers"]
    columns += ["params", "macs", "macs_ratio", "ideal_macs_ratio"]
    if latency:
        columns.append("latency_ms")
    return columns


def family_rows(members: Sequence[Member], *, latency: bool = False,
                latencies: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """One dict per member with the keys of `family_columns`. With ``latency`` the seconds in
    ``latencies`` (one per member) are used, or measured here when not given."""
    if latency and latencies is None:
        latencies = measure_latencies(members)
    rows = []
    for i, m in enumerate(members):
        row: dict[str, Any] = {
            "phi": m.phi, "depth_multiplier": m.depth, "width_multiplier": m.width,
            "resolution_multiplier": m.resolution_multiplier, "resolution": m.resolution,
            "dropout": m.arch.dropout,
        }
        for j, s in enumerate(m.arch.stages, start=1):
            row[f"stage{j}_channels"] = s.channels
            row[f"stage{j}_layers"] = s.layers
        row.update(params=m.params, macs=m.macs, macs_ratio=m.macs_ratio,
                   ideal_macs_ratio=m.ideal_macs_ratio)
        if latency:
            row["latency_ms"] = latencies[i] * 1e3
        rows.append(row)
    return rows


def measure_latencies(members: Sequence[Member]) -> list[float]:
    """Median seconds of one CPU forward pass of one image, per member (builds each model,
    so it imports torch and takes seconds per large member)."""
    from space.cost import measure_latency

    return [measure_latency(m.arch, "cpu", 1) for m in members]


def short_count(value: float) -> str:
    """Three significant digits with k / M / G / T: ``386M``, ``1.83G``, ``5.29M``."""
    value = float(value)
    if not math.isfinite(value) or value == 0:
        return f"{value:g}"
    rounded = float(f"{value:.3g}")
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(rounded) >= scale:
            return f"{rounded / scale:.3g}{prefix}"
    return f"{rounded:.3g}"


def _num(value: float) -> str:
    return f"{value:.4g}"


def _markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_markdown(members: Sequence[Member], *, latency: bool = False,
                latencies: Sequence[float] | None = None) -> str:
    """The family as a markdown table: phi, depth / width / resolution multipliers, the input
    side, dropout, one ``sN c×l`` column per stage (channels × layers), params, MACs, the
    real and ideal MACs ratios (and latency in ms when asked)."""
    rows = family_rows(members, latency=latency, latencies=latencies)
    stages = len(members[0].arch.stages) if members else 0
    header = ["phi", "depth ×", "width ×", "resolution ×", "resolution", "dropout",
              *[f"s{i} c×l" for i in range(1, stages + 1)],
              "params", "MACs", "MACs ratio", "ideal ratio"]
    if latency:
        header.append("latency (ms)")
    body = []
    for r in rows:
        cells = [_num(r["phi"]), _num(r["depth_multiplier"]), _num(r["width_multiplier"]),
                 _num(r["resolution_multiplier"]), str(r["resolution"]), _num(r["dropout"])]
        cells += [f"{r[f'stage{i}_channels']}×{r[f'stage{i}_layers']}" for i in range(1, stages + 1)]
        cells += [short_count(r["params"]), short_count(r["macs"]), f"{r['macs_ratio']:.2f}",
                  f"{r['ideal_macs_ratio']:.2f}"]
        if latency:
            cells.append(f"{r['latency_ms']:.1f}")
        body.append(cells)
    return _markdown(header, body)


def to_csv(members: Sequence[Member], *, latency: bool = False,
           latencies: Sequence[float] | None = None) -> str:
    """The family as CSV with the columns of `family_columns` (exact integers, full floats)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=family_columns(members, latency=latency),
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(family_rows(members, latency=latency, latencies=latencies))
    return buffer.getvalue()


def to_json(members: Sequence[Member], *, latencies: Sequence[float] | None = None) -> list[dict]:
    """The members as JSON-ready dicts (`Member.to_dict`: ``phi``, ``arch`` as a string,
    ``params``, ``macs``, ``resolution`` and the rest), with ``latency_ms`` when given."""
    docs = [m.to_dict() for m in members]
    if latencies is not None:
        for doc, seconds in zip(docs, latencies):
            doc["latency_ms"] = seconds * 1e3
    return docs


# --------------------------------------------------------------------------- official B1..B7


@dataclass(frozen=True)
class OfficialRow:
    """A member beside the official EfficientNet of the same phi (``efficientnet_b{phi}``)."""

    member: Member
    name: str
    official_macs: int
    official_params: int

    @property
    def macs_difference(self) -> float:
        """Relative difference of the member's MACs from the official's (0.1 = 10% more)."""
        return self.member.macs / self.official_macs - 1

    @property
    def params_difference(self) -> float:
        return self.member.params / self.official_params - 1

    def to_dict(self) -> dict[str, Any]:
        return {"phi": self.member.phi, "official": self.name,
                "macs": self.member.macs, "official_macs": self.official_macs,
                "macs_difference": self.macs_difference,
                "params": self.member.params, "official_params": self.official_params,
                "params_difference": self.params_difference}


def official_comparison(base: Arch, members: Sequence[Member]) -> list[OfficialRow]:
    """The members that have an official counterpart: when ``base`` is EfficientNet-B0 and
    the coefficients are the paper's (1.2, 1.1, 1.15), each member with a whole phi from 1
    to 7 beside ``efficientnet_b{phi}`` (costs at 1000 classes). Empty otherwise (another
    base or other coefficients have no official family to stand beside)."""
    if base != get_preset("efficientnet_b0").arch():
        return []
    rows = []
    for m in members:
        if (m.alpha, m.beta, m.gamma) != PAPER_COEFFICIENTS:
            continue
        if not (float(m.phi).is_integer() and 1 <= m.phi <= 7):
            continue
        name = f"efficientnet_b{int(m.phi)}"
        official = cost(get_preset(name).arch())
        rows.append(OfficialRow(m, name, official.macs, official.params))
    return rows


def comparison_markdown(rows: Sequence[OfficialRow]) -> str:
    """The official comparison as a markdown table (MACs and params side by side, with the
    member's relative difference from the official)."""
    body = [[_num(r.member.phi), r.name, short_count(r.member.macs), short_count(r.official_macs),
             f"{r.macs_difference:+.1%}", short_count(r.member.params),
             short_count(r.official_params), f"{r.params_difference:+.1%}"] for r in rows]
    return _markdown(["phi", "official", "MACs (compound)", "MACs (official)", "MACs diff",
                      "params (compound)", "params (official)", "params diff"], body)


# --------------------------------------------------------------------------- files


def write_family(members: Sequence[Member], out_dir: str | Path, *, base: Arch | None = None,
                 latencies: Sequence[float] | None = None) -> list[Path]:
    """Write ``family.md``, ``family.csv`` and ``family.json`` into ``out_dir`` (created if
    missing), each atomically (a temporary file renamed over the target, so a reader never
    sees half a file). With ``base`` and an official counterpart (`official_comparison`),
    the markdown also holds the comparison and ``official.json`` its rows. All text is
    rendered before the first file is written. Returns the paths written."""
    from nas.atomic import atomic_write

    latency = latencies is not None
    texts = {"family.md": to_markdown(members, latency=latency, latencies=latencies),
             "family.csv": to_csv(members, latency=latency, latencies=latencies),
             "family.json": json.dumps(to_json(members, latencies=latencies), indent=2) + "\n"}
    rows = official_comparison(base, members) if base is not None else []
    if rows:
        texts["family.md"] += ("\nBeside the official EfficientNet B1..B7 (difference: compound "
                               "over official, minus 1):\n\n" + comparison_markdown(rows))
        texts["official.json"] = json.dumps([r.to_dict() for r in rows], indent=2) + "\n"
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ScalingError(f"--out {out} exists and is not a folder")
    written = []
    try:
        for name, text in texts.items():
            with atomic_write(out / name, "w") as f:
                f.write(text)
            written.append(out / name)
    except OSError as err:
        raise ScalingError(f"--out: cannot write {out}: {err.strerror or err}") from None
    return written
