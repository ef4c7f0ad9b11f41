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
    "run_listed",
    "train_listed",
    "train_family",
    "TrainedFamily",
    "ListedRun",
    "Outcome",
    "seed_study_name",
    "mean_std",
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
             # nas report's family format; untrained, so acc is null (the report draws members with one)
             "family.json": json.dumps({"family": [{"name": f"phi{d['phi']:g}", **d, "acc": None}
                                                   for d in to_json(members, latencies=latencies)]},
                                       indent=2) + "\n"}
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


# --------------------------------------------------------------------------- training


#: Files of a trained family, in ``<out>/runs/<study>/``.
FAMILY_SPACE_FILE = "family_space.yaml"
TRAINED_STEM = "family_accuracy"


def seed_study_name(study: str, seed: int) -> str:
    """The study that trains with training seed ``seed``: ``study`` itself for seed 0 (so
    ``--seeds 1`` and the first seed of ``--seeds 3`` are the same study, and adding seeds
    later trains only the new ones), ``<study>-s<seed>`` for the others."""
    return study if seed == 0 else f"{study}-s{seed}"


@dataclass(frozen=True)
class Outcome:
    """What one candidate's training in one seed's study gave."""

    seed: int
    study: str
    trial: int | None
    state: str
    val_acc: float | None
    duplicate_of: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "study": self.study, "trial": self.trial, "state": self.state,
                "val_acc": self.val_acc, "duplicate_of": self.duplicate_of}


@dataclass
class ListedRun:
    """What `train_listed` did: ``outcomes[label]`` has one `Outcome` per seed (in seed
    order); ``num_classes`` is the dataset's (from the first study); ``run_dir`` is
    ``<out>/runs/<study>`` (the first seed's run folder, holding the space file)."""

    study: str
    run_dir: Path
    space_file: Path
    seeds: int
    num_classes: int
    outcomes: dict[str, list[Outcome]]
    written: list[Path]
    summaries: list[Any]


def _space_doc_text(header: str, name: str, description: str, base: Arch,
                    candidates: "dict[str, Arch]") -> str:
    import yaml

    doc = {"name": name, "description": description, "base": base.to_string(),
           "candidates": {label: a.to_string() for label, a in candidates.items()}}
    return f"# written by `{header}`\n" + yaml.safe_dump(doc, sort_keys=False, width=4096)


def run_listed(path: Path, text: str, settings: Sequence[Any], refused: str, *,
               progress: bool = True) -> tuple[list[Any], list[Path]]:
    """Run ``nas search`` (`nas.search.run_search`) with each of ``settings`` on the listed
    space ``text`` kept at ``path``: written there atomically when missing, else checked to be
    the same (a different one is `ScalingError` ``refused``, so a study never mixes two
    candidate lists). A `UserError` before the first study ran anything (a dataset that does
    not load, a study made with other settings) leaves the folder as it was. Returns the
    studies' summaries and the files written."""
    import dataclasses as _dc

    from nas.atomic import atomic_write
    from nas.search.runner import run_search
    from space.errors import UserError

    run_dir = path.parent
    written: list[Path] = []
    if path.exists():
        try:
            old = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"{path} cannot be read ({err}); remove it or pass another --study") from None
        if old != text:
            raise ScalingError(refused)
        created = False
    else:
        fresh = [d for d in (run_dir, *run_dir.parents) if not d.exists()]  # deepest first
        with atomic_write(path, "w") as f:
            f.write(text)
        created = True
        written.append(path)
    summaries = []
    for i, s in enumerate(settings):
        try:
            summaries.append(run_search(_dc.replace(s, space=str(path)), progress=progress))
        except UserError:
            if i == 0 and created and {p.name for p in run_dir.iterdir()} <= {path.name}:
                path.unlink(missing_ok=True)
                for folder in fresh:  # the folders this call made, if still empty
                    try:
                        folder.rmdir()
                    except OSError:
                        break
            raise
    return summaries, written


def train_listed(candidates: "dict[str, Arch]", base: Arch, dataset: str, *, study: str,
                 space_file: str, space_name: str, description: str, command: str,
                 seeds: int = 1, out: str | Path = ".", storage: str | None = None, workers: int = 1,
                 epochs: int | None = None, subset: Any = "budget", val_size: int | None = None,
                 recipe: str = "proxy", split_seed: int = 0, num_threads: int | None = None,
                 device: str | None = None, max_failures: int | None = None,
                 progress: bool = True) -> ListedRun:
    """Train every candidate once per training seed, through ``nas search``'s runner.

    The candidates are written as a listed search space (`space.listed.ListedSpace`) into
    ``<out>/runs/<study>/<space_file>`` and `nas.search.run_search` evaluates it with the
    grid sampler (every candidate once; storage, heartbeats and retries, ``workers``,
    duplicate detection, ``search.log``, ``trials.csv``, ``summary.txt``) with early stopping
    off, so each candidate trains its full ``epochs`` on the same split (``split_seed``).

    Seeds: a study trains every candidate with one training seed (`SearchSettings.seed`,
    and a second label naming the same network is a duplicate whose first result is
    reused), so seed ``s`` of ``range(seeds)`` is its own study, `seed_study_name` (``study``
    for seed 0, ``study-s<s>``), each reading the same space file; each is resumable on its
    own. The same call again trains only what is missing; a different candidate list under
    the same study name is refused (`ScalingError`), as is a study made with other settings
    (`UserError` from the runner).
    """
    import dataclasses as _dc

    import optuna
    import yaml
    from optuna.trial import TrialState

    from nas.search.settings import BUDGETS, SearchSettings, resolve_settings
    from nas.search.study import open_storage, study_info
    from space.listed import CANDIDATE_PARAM, ListedSpace

    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ScalingError(f"--seeds must be a whole number >= 1, got {seeds!r}")
    text = _space_doc_text(command, space_name, description, base, candidates)
    quick = BUDGETS["quick"]
    first = SearchSettings(
        space=ListedSpace.from_dict(yaml.safe_load(text), source=space_file),
        dataset=dataset, mode="reward", reward="mnas", target=None, sampler="grid",
        trials=len(candidates), study=study, storage=storage, out=out, workers=workers,
        epochs=quick["epochs"] if epochs is None else epochs,
        subset=quick["subset"] if isinstance(subset, str) and subset == "budget" else subset,
        subset_is_cap=isinstance(subset, str) and subset == "budget",
        val_size=val_size, recipe=recipe, seed=0, split_seed=split_seed, early_stop="none",
        num_threads=num_threads, device=device, max_failures=max_failures)
    per_seed = [_dc.replace(first, seed=s, study=seed_study_name(study, s)) for s in range(seeds)]
    resolved = [resolve_settings(s) for s in per_seed]  # every flag checked before writing
    run_dir = resolved[0].run_dir
    refused = (f"study {study} in {run_dir} holds other candidates ({space_file} differs: other --arch, "
               f"coefficients, --phi or targets); pass the same flags to resume it, or another --study")
    path = run_dir / space_file
    summaries, written = run_listed(path, text, per_seed, refused, progress=progress)
    outcomes: dict[str, list[Outcome]] = {label: [] for label in candidates}
    num_classes = None
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        for s, r in enumerate(resolved):
            st = optuna.load_study(study_name=r.study_name, storage=open_storage(r.storage_url))
            if num_classes is None:
                num_classes = int(study_info(st)["num_classes"])
            trials = st.get_trials(deepcopy=False)
            by_number = {t.number: t for t in trials}
            rank = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2,
                    TrialState.WAITING: 3, TrialState.FAIL: 4}
            by_label: dict[str, list] = {}
            for t in trials:
                label = t.params.get(CANDIDATE_PARAM)
                if label is not None:
                    by_label.setdefault(label, []).append(t)
            for label in candidates:
                found = sorted(by_label.get(label, []), key=lambda t: (rank.get(t.state, 5), t.number))
                if not found:
                    outcomes[label].append(Outcome(s, r.study_name, None, "not run", None))
                    continue
                t = found[0]
                a = t.user_attrs
                acc = a.get("val_acc")
                dup = a.get("duplicate_of")
                if acc is None and dup is not None and dup in by_number:
                    acc = by_number[dup].user_attrs.get("val_acc")
                ok = t.state == TrialState.COMPLETE and "infeasible" not in a and acc is not None
                outcomes[label].append(Outcome(s, r.study_name, t.number, t.state.name,
                                               float(acc) if ok else None, dup))
    finally:
        optuna.logging.set_verbosity(level)
    return ListedRun(study=study, run_dir=run_dir, space_file=path, seeds=seeds,
                     num_classes=int(num_classes), outcomes=outcomes, written=written,
                     summaries=summaries)


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1; 0 for one value; None for none)."""
    values = [float(v) for v in values]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def member_label(phi: float) -> str:
    """``phi1``, ``phi1.5``, ``phi0``: a member's candidate label."""
    return f"phi{float(phi):g}"


@dataclass
class TrainedFamily:
    """What `train_family` did: ``rows`` (one dict per member: ``name``, ``phi``, ``arch``,
    ``macs``, ``params`` at the dataset's classes, ``acc`` (the mean over seeds, None when no
    seed finished), ``acc_std``, ``n``, ``accs``, ``depth``, ``width``, ``resolution``,
    ``trials``), the `ListedRun`, and every file written by this step."""

    study: str
    run_dir: Path
    rows: list[dict[str, Any]]
    run: ListedRun
    document: dict[str, Any]
    files: list[Path]


def default_family_study(base_name: str) -> str:
    import re

    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", f"{base_name}-family").strip("._-") or "family"
    return name[:100]


def train_family(arch: Arch | str, members: Sequence[Member], dataset: str, *, study: str | None = None,
                 seeds: int = 1, into_study: str | None = None, out: str | Path = ".",
                 name: str | None = None, **train: Any) -> TrainedFamily:
    """Train each member with the same recipe (`train_listed`: one candidate per member,
    labelled `member_label`, in ``runs/<study>/family_space.yaml``), then write into
    ``<out>/runs/<study>/``: ``family.json`` in the format ``nas report`` reads
    (`nas.report.data.load_family`: ``{"family": [{"name", "arch", "macs", "params",
    "acc"}, ...]}``, ``acc`` the mean validation accuracy over seeds, plus ``acc_std``,
    ``n``, ``accs``, ``phi`` and the trials), ``family.md`` / ``family.csv`` (mean ± std,
    n) and ``family_accuracy.png`` / ``.svg`` (accuracy vs MACs, log MACs, each point
    labelled with its phi, error bars the std over seeds). With ``into_study`` the same
    ``family.json`` also goes into ``<out>/runs/<into_study>/`` (which must exist: the
    searched study's run folder), so ``nas report --study <into_study>`` overlays it.
    ``train`` goes to `train_listed` (``epochs``, ``subset``, ``val_size``, ``recipe``,
    ``storage``, ``workers``, ``num_threads``, ``device``, ``progress``)."""
    from nas.atomic import atomic_write

    from .grid import _resolve_base

    base, base_name = _resolve_base(arch, name)
    if not members:
        raise ScalingError("--phi must name at least one value")
    study = study if study is not None else default_family_study(base_name)
    if into_study is not None:
        target_dir = Path(out) / "runs" / into_study
        if not target_dir.is_dir():
            raise ScalingError(f"--into-study {into_study}: no run folder {target_dir}; give the name of a "
                               f"study searched with `nas search --out {out}`")
        if into_study == study:
            raise ScalingError("--into-study names the family's own study; give the searched study's name")
    candidates = {member_label(m.phi): m.arch for m in members}
    coeffs = (members[0].alpha, members[0].beta, members[0].gamma)
    run = train_listed(candidates, base, dataset, study=study, space_file=FAMILY_SPACE_FILE,
                       space_name=default_family_study(base_name),
                       description=f"compound family of {base_name} with alpha, beta, gamma = "
                                   f"{coeffs[0]:g}, {coeffs[1]:g}, {coeffs[2]:g}",
                       command="scaling family --train", seeds=seeds, out=out, **train)
    rows = []
    for m in members:
        label = member_label(m.phi)
        c = cost(m.arch, num_classes=run.num_classes)
        accs = [o.val_acc for o in run.outcomes[label] if o.val_acc is not None]
        mean, std = mean_std(accs)
        rows.append({"name": label, "phi": m.phi, "arch": m.arch.to_string(), "macs": c.macs,
                     "params": c.params, "acc": mean, "acc_std": std, "n": len(accs), "accs": accs,
                     "depth": m.depth, "width": m.width, "resolution": m.resolution,
                     "trials": [o.to_dict() for o in run.outcomes[label]]})
    document = {"family": rows, "study": study, "dataset": str(dataset), "seeds": seeds,
                "alpha": coeffs[0], "beta": coeffs[1], "gamma": coeffs[2], "base": base.to_string(),
                "num_classes": run.num_classes,
                "note": "macs and params at the dataset's number of classes; acc: mean validation "
                        "accuracy over seeds (acc_std: sample standard deviation)"}
    text = json.dumps(document, indent=2) + "\n"
    files = list(run.written)
    md, csv_text = _trained_tables(rows)
    for folder, fname, content in ((run.run_dir, "family.json", text), (run.run_dir, "family.md", md),
                                   (run.run_dir, "family.csv", csv_text)):
        with atomic_write(folder / fname, "w") as f:
            f.write(content)
        files.append(folder / fname)
    if any(r["acc"] is not None for r in rows):
        files += plot_trained_family(rows, run.run_dir, title=f"{study}: accuracy vs MACs "
                                     f"(α {coeffs[0]:g}, β {coeffs[1]:g}, γ {coeffs[2]:g}; {dataset})")
    if into_study is not None:
        dest = Path(out) / "runs" / into_study / "family.json"
        with atomic_write(dest, "w") as f:
            f.write(text)
        files.append(dest)
    return TrainedFamily(study=study, run_dir=run.run_dir, rows=rows, run=run, document=document, files=files)


def format_acc(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def _trained_tables(rows: Sequence[dict[str, Any]]) -> tuple[str, str]:
    body = [[r["name"], _num(r["phi"]), _num(r["depth"]), _num(r["width"]), str(r["resolution"]),
             short_count(r["params"]), short_count(r["macs"]), format_acc(r["acc"], r["acc_std"], r["n"]),
             str(r["n"])] for r in rows]
    md = _markdown(["member", "phi", "depth ×", "width ×", "resolution", "params", "MACs",
                    "val acc (mean ± std)", "n"], body)
    buffer = io.StringIO()
    columns = ["name", "phi", "depth", "width", "resolution", "params", "macs", "acc", "acc_std", "n", "arch"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return md, buffer.getvalue()


def plot_trained_family(rows: Sequence[dict[str, Any]], folder: Path, *, title: str,
                        stem: str = TRAINED_STEM) -> list[Path]:
    """Accuracy vs MACs (log) of the trained members, each labelled with its phi, error
    bars the std over seeds; ``<stem>.png`` and ``.svg`` in ``folder``."""
    from nas.report.style import cost_axis, new_figure, save_figure

    done = sorted((r for r in rows if r["acc"] is not None), key=lambda r: r["macs"])
    fig = new_figure(6.4, 4.6)
    ax = fig.subplots()
    ax.errorbar([r["macs"] for r in done], [r["acc"] for r in done], yerr=[r["acc_std"] or 0 for r in done],
                fmt="-s", color="#17becf", ecolor="#555555", capsize=3, markersize=5, lw=1.4,
                label="compound family (mean ± std over seeds)")
    for r in done:
        ax.annotate(f"φ{r['phi']:g}", (r["macs"], r["acc"]), xytext=(4, 6), textcoords="offset points",
                    fontsize=8)
    cost_axis(ax, "macs", span=ax.get_xlim())
    ax.set_xlabel("MACs per image (log scale)")
    ax.set_ylabel("validation accuracy")
    ax.grid(True, which="both", lw=0.4, alpha=0.5)
    ax.legend(loc="best", fontsize=8, frameon=False)
    ax.set_title(title, fontsize=9.5, loc="left")
    return save_figure(fig, folder, stem)
