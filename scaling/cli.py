"""``scaling``: grow an architecture from the command line.

    scaling scale ARCH [--depth D] [--width W] [--resolution R] [--dropout P]
                       [--drop-path P] [--json]
    scaling family --arch ARCH (--coefficients FILE | --alpha A --beta B --gamma G)
                   --phi 1..7 [--max-resolution R] [--later-stage-depth K]
                   [--resolution-multiple 8] [--dropout P] [--product-tolerance T]
                   [--latency] [--json] [--out DIR]
    scaling family ... --train --dataset D [--epochs E] [--subset N] [--val-size N]
                   [--recipe proxy|paper] [--seeds K] [--study NAME] [--storage URL]
                   [--workers K] [--threads T] [--device D] [--into-study NAME]
                   [--out DIR] [--quiet] [--json]
    scaling compare --arch ARCH --dataset D --macs-factor 4 [--seeds 3] [--steps 3]
                   [--coefficients FILE | --alpha A --beta B --gamma G] [--tolerance 0.05]
                   [same training flags] [--out DIR] [--json]
    scaling target --arch ARCH (--macs 2G | --params 10M)
                   (--coefficients FILE | --alpha A --beta B --gamma G)
                   [--tolerance 0.02] [same options as family] [--json]
    scaling grid --arch ARCH --dry-run [--step 0.05] [--tolerance 0.1]
                 [--max-coefficient 2] [--json]
    scaling grid --arch ARCH --dataset D [--step 0.05] [--tolerance 0.1]
                 [--max-coefficient 2] [--epochs E] [--subset N] [--val-size N]
                 [--recipe proxy|paper] [--seed S] [--storage URL] [--study NAME]
                 [--workers K] [--threads T] [--device D] [--out DIR] [--quiet] [--json]

ARCH is a preset name, an arch string or an arch .json file. Coefficients come either from
the three flags or from a JSON file holding an object with numeric ``"alpha"``, ``"beta"``
and ``"gamma"`` (other keys, such as a grid study's accuracy, are ignored). ``--phi`` takes
a comma-separated list of values, fractions (``1.5``, ``3/2``) and ranges ``A..B``
(step 1) or ``A..B:STEP``: ``1..7``, ``0,0.5,1``, ``0..2:0.25``. Quantities take k, M, G (or
B) and T: ``--macs 400M``, ``--params 10M``.

The library does the work (`scaling.compound`, `scaling.family`); this module parses, calls
and prints. Every mistake is one sentence on stderr and exit status 2 (`UserError`), and
``--out`` files are written whole or not at all.

``scaling grid`` without ``--dry-run`` trains the phi = 1 member of every grid point
(`scaling.grid.run_grid`): the members go into ``<out>/runs/<study>/grid_space.yaml`` as a
listed search space, and ``nas search``'s runner evaluates it with the grid sampler (every
point once; storage, heartbeats, retries, ``--workers``, duplicate detection, progress and
``search.log`` / ``trials.csv`` / ``summary.txt`` exactly as ``nas search``). The point with
the highest reward ``ACC * (MACs / T)^-0.07``, ``T`` = twice the base's MACs, wins; its
coefficients go to ``coefficients.json`` (which ``--coefficients`` reads) beside
``grid_accuracy.png`` / ``.svg``. The same command again resumes the study (only missing or
failed points train); a different grid under the same ``--study`` is refused. The study is
named ``<base name>-grid`` by default. Exit status 1 when no point has finished training.

``scaling family --train`` trains every member the same way (`scaling.family.train_family`:
``runs/<study>/family_space.yaml``, candidates ``phi0``, ``phi1``...; study
``<base name>-family`` by default) and writes ``family.json`` (``nas report``'s family
format, accuracy the mean over seeds), ``family.md`` / ``.csv`` and
``family_accuracy.png`` / ``.svg`` there; ``--into-study NAME`` also writes ``family.json``
into ``runs/NAME/`` so ``nas report --study NAME`` overlays it on the searched front.
``--seeds K`` trains each member with training seeds 0..K-1, seed s > 0 in its own study
``<study>-s<s>`` (a study has one training seed). ``scaling compare`` is
`scaling.compare.run_compare`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any

from space.cost import cost
from space.command_line import make_main
from space.errors import UserError
from space.presets import resolve_arch

from .compound import DEFAULT_PRODUCT_TOLERANCE, ScalingError, grid_points, solve_phi
from .family import (comparison_markdown, family, measure_latencies, official_comparison,
                     short_count, to_json, to_markdown, write_family)
from .scale import scale

__all__ = ["main"]

# The quick search budget's epochs and subset (nas.search.settings.BUDGETS), for the help
# text only: importing nas.search costs a few hundred milliseconds at every start.
_QUICK = {"epochs": 4, "subset": 2000}


def _number(args: argparse.Namespace, flag: str) -> float | None:
    """The float behind ``--flag``; range and finiteness are `Arch.scale`'s to check."""
    text = getattr(args, flag.lstrip("-").replace("-", "_"))
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{flag} must be a number, got {text!r}") from None


def _cmd_scale(args: argparse.Namespace) -> int:
    base = resolve_arch(args.arch)
    depth, width = _number(args, "--depth"), _number(args, "--width")
    arch = scale(base, depth=1.0 if depth is None else depth, width=1.0 if width is None else width,
                 resolution=_number(args, "--resolution"), dropout=_number(args, "--dropout"),
                 drop_path=_number(args, "--drop-path"))
    before, after = cost(base), cost(arch)
    if args.json:
        print(json.dumps({"arch": arch.to_string(), "params": after.params, "macs": after.macs,
                          "resolution": arch.resolution, "base_macs": before.macs,
                          "macs_ratio": after.macs / before.macs}))
    else:
        print(arch.to_string())
        print(f"params {before.params:,} -> {after.params:,}   MACs {before.macs:,} -> {after.macs:,} "
              f"({after.macs / before.macs:.2f}x)   resolution {base.resolution} -> {arch.resolution}")
    return 0


# --------------------------------------------------------------------------- parsing

# More members than any table would show; a typo such as 1..7000 is refused, not computed.
MAX_PHI_VALUES = 1000


def _phi_number(text: str, spec: str) -> Fraction:
    text = text.strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = Fraction(Decimal(num.strip())) / Fraction(Decimal(den.strip()))
        else:
            number = Decimal(text)
            if not number.is_finite():
                raise ValueError
            value = Fraction(number)
    except (InvalidOperation, ValueError, ZeroDivisionError):
        raise ScalingError(f"--phi {spec!r}: {text!r} is not a finite number; write values such "
                           f"as 1..7, 1,2,3, 1.5 or 3/2") from None
    if value < 0:
        raise ScalingError(f"--phi {spec!r}: phi must be >= 0, got {text}")
    return value


def parse_phis(spec: str) -> list[float]:
    """The phi values of a ``--phi`` argument, ascending without repeats.

    Comma-separated items, each a number (``1.5``, ``3/2``) or a range ``A..B`` (step 1)
    or ``A..B:STEP``, both ends included when the step lands on ``B``. Ranges are stepped
    in exact decimal arithmetic, so ``0..1:0.1`` gives 0.3 and not 0.30000000000000004.
    """
    values: set[Fraction] = set()
    for item in str(spec).split(","):
        item = item.strip()
        if not item:
            raise ScalingError(f"--phi {spec!r} has an empty item; write values such as 1..7 or 1,2,3")
        if ".." in item:
            ends, _, step_text = item.partition(":")
            start_text, _, stop_text = ends.partition("..")
            start, stop = _phi_number(start_text, spec), _phi_number(stop_text, spec)
            step = _phi_number(step_text, spec) if step_text else Fraction(1)
            if step <= 0:
                raise ScalingError(f"--phi {spec!r}: the step of a range must be > 0")
            if stop < start:
                raise ScalingError(f"--phi {spec!r}: the range {item} is empty (it ends before it starts)")
            count = math.floor((stop - start) / step) + 1
            if count + len(values) > MAX_PHI_VALUES:
                raise ScalingError(f"--phi {spec!r} names more than {MAX_PHI_VALUES} values")
            values.update(start + i * step for i in range(count))
        else:
            values.add(_phi_number(item, spec))
        if len(values) > MAX_PHI_VALUES:
            raise ScalingError(f"--phi {spec!r} names more than {MAX_PHI_VALUES} values")
    return [float(v) for v in sorted(values)]


def _coefficients_file(path_text: str) -> tuple[float, float, float]:
    path = Path(path_text)
    where = f"--coefficients {path_text}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScalingError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise ScalingError(f"{where} is a folder, not a JSON file") from None
    except OSError as err:
        raise ScalingError(f"{where}: cannot read it ({err.strerror})") from None
    except UnicodeDecodeError:
        raise ScalingError(f"{where} is not UTF-8 text") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ScalingError(f"{where} is not valid JSON: {err.msg} at line {err.lineno}") from None
    if not isinstance(doc, dict):
        raise ScalingError(f'{where} must hold a JSON object such as {{"alpha": 1.2, "beta": 1.1, '
                           f'"gamma": 1.15}}')
    values = []
    for key in ("alpha", "beta", "gamma"):
        value = doc.get(key)
        if value is None:
            raise ScalingError(f"{where} has no {key!r}; it needs numeric alpha, beta and gamma")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ScalingError(f"{where}: {key!r} must be a number, got {value!r}")
        values.append(float(value))
    return values[0], values[1], values[2]


def _coefficients(args: argparse.Namespace) -> tuple[tuple[float, float, float], str | None]:
    """(alpha, beta, gamma) from ``--coefficients`` or the three flags, and the file (if any)."""
    flags = {name: getattr(args, name) for name in ("alpha", "beta", "gamma")}
    given = [f"--{name}" for name, value in flags.items() if value is not None]
    if args.coefficients is not None:
        if given:
            raise ScalingError(f"give either --coefficients or --alpha/--beta/--gamma, not both "
                               f"(got --coefficients and {', '.join(given)})")
        return _coefficients_file(args.coefficients), args.coefficients
    if len(given) != 3:
        missing = [f"--{n}" for n, v in flags.items() if v is None]
        raise ScalingError(f"give --coefficients FILE or all of --alpha, --beta and --gamma "
                           f"(missing {', '.join(missing)})")
    values = tuple(_float(flags[name], f"--{name}") for name in ("alpha", "beta", "gamma"))
    return values, None  # type: ignore[return-value]


def _float(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ScalingError(f"{flag} must be a number, got {text!r}") from None


def _int(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ScalingError(f"{flag} must be a whole number, got {text!r}") from None


def _arch(args: argparse.Namespace):
    if args.arch is None:
        raise ScalingError("give the baseline with --arch (a preset name, an arch string or a .json file)")
    return resolve_arch(args.arch)


def _compound_options(args: argparse.Namespace) -> dict[str, Any]:
    tolerance = _float(args.product_tolerance, "--product-tolerance")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ScalingError(f"--product-tolerance must be a finite number >= 0, got {args.product_tolerance!r}")
    dropout = None if args.dropout is None else _float(args.dropout, "--dropout")
    return {"resolution_multiple": _int(args.resolution_multiple, "--resolution-multiple"),
            "max_resolution": _int(args.max_resolution, "--max-resolution"),
            "later_stage_depth": _int(args.later_stage_depth, "--later-stage-depth"),
            "dropout": dropout, "tolerance": tolerance}


def _in_file(err: UserError, source: str | None) -> ScalingError:
    """A coefficient error from a file names the file, not the flags it did not use."""
    message = str(err)
    if source is not None and message.startswith("--alpha/--beta/--gamma: "):
        message = f"--coefficients {source}: " + message[len("--alpha/--beta/--gamma: "):]
    elif source is not None and message.startswith(("--alpha ", "--beta ", "--gamma ")):
        key, rest = message[2:].split(" ", 1)
        message = f"--coefficients {source}: {key} {rest}"
    return ScalingError(message)


# --------------------------------------------------------------------------- commands


def _cmd_family(args: argparse.Namespace) -> int:
    base = _arch(args)
    (alpha, beta, gamma), source = _coefficients(args)
    options = _compound_options(args)
    if args.phi is None:
        raise ScalingError("give the members with --phi, such as --phi 1..7 or --phi 0,1,2")
    phis = parse_phis(args.phi)
    try:
        members = family(base, alpha, beta, gamma, phis, **options)
    except ScalingError as err:
        raise _in_file(err, source) from None
    if args.train:
        return _cmd_family_train(args, members)
    for flag in ("dataset", "into_study", "seeds", "study", "storage", "epochs", "subset", "val_size"):
        if getattr(args, flag) is not None:
            raise ScalingError(f"--{flag.replace('_', '-')} needs --train")
    # Everything is computed before anything is printed or written.
    latencies = measure_latencies(members) if args.latency else None
    rows = official_comparison(base, members)
    if args.out is not None:
        written = write_family(members, args.out, base=base, latencies=latencies)
        if not args.json:
            print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    if args.json:
        print(json.dumps(to_json(members, latencies=latencies)))
        return 0
    print(to_markdown(members, latency=args.latency, latencies=latencies), end="")
    if rows:
        print("\nBeside the official EfficientNet B1..B7 (difference: compound over official, minus 1):\n")
        print(comparison_markdown(rows), end="")
    return 0


def _train_options(args: argparse.Namespace) -> dict[str, Any]:
    """The training flags shared by ``family --train`` and ``compare``."""
    if args.dataset is None:
        raise ScalingError("give the dataset to train on with --dataset (cifar10, cifar100, "
                           "synthetic[:N[:C[:S]]] or an image folder)")
    subset: Any = "budget"
    if args.subset is not None:
        subset = _int(args.subset, "--subset")
        if subset < 0:
            raise ScalingError(f"--subset must be a whole number >= 0 (0: every image), got {args.subset!r}")
        subset = None if subset == 0 else subset
    epochs = _int(args.epochs, "--epochs")
    if epochs is not None and epochs < 1:
        raise ScalingError(f"--epochs must be a whole number >= 1, got {args.epochs!r}")
    seeds = _int(args.seeds, "--seeds") if args.seeds is not None else 1
    if seeds < 1:
        raise ScalingError(f"--seeds must be a whole number >= 1, got {args.seeds!r}")
    workers = _int(args.workers, "--workers")
    if workers < 1:
        raise ScalingError(f"--workers must be a whole number >= 1, got {args.workers!r}")
    return {"epochs": epochs, "subset": subset, "val_size": _int(args.val_size, "--val-size"),
            "recipe": args.recipe, "storage": args.storage, "workers": workers,
            "num_threads": _int(args.threads, "--threads"), "device": args.device,
            "progress": not args.quiet, "seeds": seeds}


def _cmd_family_train(args: argparse.Namespace, members) -> int:
    """``scaling family --train``: `scaling.family.train_family`."""
    from .family import format_acc, train_family

    options = _train_options(args)
    seeds = options.pop("seeds")
    result = train_family(args.arch, members, args.dataset, study=args.study, seeds=seeds,
                          into_study=args.into_study, out=args.out if args.out is not None else ".",
                          **options)
    if args.json:
        print(json.dumps(result.document))
    else:
        print(f"family of {len(result.rows)} members trained with the same recipe over {seeds} "
              f"seed{'s' if seeds != 1 else ''}; study {result.study} in {result.run_dir}\n")
        print("| member | phi | resolution | params | MACs | val acc (mean ± std) | n |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in result.rows:
            print(f"| {r['name']} | {r['phi']:g} | {r['resolution']} | {short_count(r['params'])} | "
                  f"{short_count(r['macs'])} | {format_acc(r['acc'], r['acc_std'], r['n'])} | {r['n']} |")
        print(f"\nwrote {', '.join(str(p) for p in result.files)}")
    missing = [r["name"] for r in result.rows if r["n"] < seeds]
    if missing and not args.json:
        print(f"not every seed of {', '.join(missing)} finished; run the same command again to resume")
    return 0 if not missing else 1


def _cmd_compare(args: argparse.Namespace) -> int:
    """``scaling compare``: `scaling.compare.run_compare`."""
    from .compare import DEFAULT_TOLERANCE, METHODS, footer, run_compare, to_markdown
    from .family import PAPER_COEFFICIENTS

    if args.arch is None:
        raise ScalingError("give the baseline with --arch (a preset name, an arch string or a .json file)")
    if args.macs_factor is None:
        raise ScalingError("give the MACs target as a multiple of the base's with --macs-factor, such as 4")
    factor = _float(args.macs_factor, "--macs-factor")
    if not math.isfinite(factor) or factor <= 1:
        raise ScalingError(f"--macs-factor must be a number > 1 (scaling only grows a network), got "
                           f"{args.macs_factor!r}")
    steps = _int(args.steps, "--steps")
    if steps < 1:
        raise ScalingError(f"--steps must be a whole number >= 1, got {args.steps!r}")
    tolerance = _float(args.tolerance, "--tolerance")
    if not math.isfinite(tolerance) or not 0 <= tolerance < 1:
        raise ScalingError(f"--tolerance must be a fraction in [0, 1), got {args.tolerance!r}")
    if args.coefficients is None and all(getattr(args, n) is None for n in ("alpha", "beta", "gamma")):
        coefficients, source = PAPER_COEFFICIENTS, None
    else:
        coefficients, source = _coefficients(args)
    product_tolerance = _float(args.product_tolerance, "--product-tolerance")
    options = _train_options(args)
    seeds = options.pop("seeds")
    _arch(args)  # a bad --arch is one sentence before anything loads
    try:
        result = run_compare(args.arch, args.dataset, macs_factor=factor, seeds=seeds, steps=steps,
                             coefficients=coefficients, tolerance=tolerance,
                             resolution_multiple=_int(args.resolution_multiple, "--resolution-multiple"),
                             product_tolerance=product_tolerance, study=args.study, out=args.out, **options)
    except ScalingError as err:
        raise _in_file(err, source) from None
    if result.caveat and args.json:
        print(result.caveat, file=sys.stderr)  # without --json it is the table's footer
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        alpha, beta, gamma = result.coefficients
        print(f"depth-only, width-only, resolution-only and compound (alpha {alpha:g}, beta {beta:g}, gamma "
              f"{gamma:g}) scaling to {factor:g}x the base's MACs in {steps} step{'s' if steps != 1 else ''}, "
              f"each trained over {seeds} seed{'s' if seeds != 1 else ''}; study {result.study} in "
              f"{result.run_dir}\n")
        print(to_markdown(result), end="")
        finals = [r for r in result.rows if r["step"] == steps and r["acc_mean"] is not None]
        if len(finals) == len(METHODS):
            best = max(finals, key=lambda r: r["acc_mean"])
            accs = ", ".join(f"{r['method']} {r['acc_mean']:.4f}" for r in finals)
            tied = [r["method"] for r in finals if r["acc_mean"] == best["acc_mean"]]
            verdict = f"most accurate: {best['method']}" if len(tied) == 1 else f"tied: {', '.join(tied)}"
            print(f"\nat the target (mean accuracy): {accs}; {verdict} (compare the spread before "
                  f"calling a difference real)")
        print(f"\nwrote {', '.join(str(p) for p in result.files)}")
    missing = [r["label"] for r in result.rows if r["n"] < seeds]
    if missing:
        print(f"not every seed of {', '.join(missing)} finished; run the same command again to resume",
              file=sys.stderr)
    return 0 if not missing else 1


def _cmd_target(args: argparse.Namespace) -> int:
    base = _arch(args)
    (alpha, beta, gamma), source = _coefficients(args)
    options = _compound_options(args)
    if (args.macs is None) == (args.params is None):
        raise ScalingError("give exactly one target, --macs (such as 2G) or --params (such as 10M)")
    # Imported here: nas.search's package import costs a few hundred milliseconds.
    from nas.search.objectives import parse_quantity

    kind = "macs" if args.macs is not None else "params"
    text = args.macs if kind == "macs" else args.params
    try:
        target = parse_quantity(text, kind)
    except UserError as err:
        raise ScalingError(f"--{kind}: {err}") from None
    tolerance = _float(args.tolerance, "--tolerance")
    product_tolerance = options.pop("tolerance")
    try:
        solution = solve_phi(base, alpha, beta, gamma, tolerance=tolerance,
                             product_tolerance=product_tolerance, **{kind: target}, **options)
    except ScalingError as err:
        raise _in_file(err, source) from None
    m = solution.member
    if args.json:
        print(json.dumps(solution.to_dict()))
        return 0
    verdict = ("within" if solution.hit else "NOT within") + f" {solution.tolerance:.0%} of the target"
    print(f"phi {m.phi:g}: {kind} {getattr(m, kind):,} vs target {target:,.0f} "
          f"({solution.gap:+.2%}, {verdict})")
    if not solution.hit:
        print("no member lands within the tolerance (layers, channels and pixels are rounded, so "
              "the cost moves in steps); this is the nearest")
    print(f"depth x{m.depth:.4g}  width x{m.width:.4g}  resolution {m.resolution}  "
          f"params {short_count(m.params)}  MACs {short_count(m.macs)} ({m.macs_ratio:.2f}x the base)")
    print(m.arch.to_string())
    return 0


def _cmd_grid(args: argparse.Namespace) -> int:
    if not args.dry_run:
        return _cmd_grid_train(args)
    base = _arch(args)
    points = grid_points(base, step=_float(args.step, "--step"),
                         tolerance=_float(args.tolerance, "--tolerance"),
                         max_coefficient=_float(args.max_coefficient, "--max-coefficient"))
    if args.json:
        print(json.dumps([p.to_dict() for p in points]))
        return 0
    if not points:
        print("no grid point meets the constraint; widen --tolerance or refine --step")
        return 0
    print("| alpha | beta | gamma | product | MACs ratio |")
    print("| --- | --- | --- | --- | --- |")
    for p in points:
        print(f"| {p.alpha:g} | {p.beta:g} | {p.gamma:g} | {p.product:.4f} | {p.macs_ratio:.3f} |")
    print(f"\n{len(points)} points with |alpha * beta^2 * gamma^2 - 2| <= {_float(args.tolerance, '--tolerance'):g}; "
          f"MACs ratio: the base grown at phi = 1 over the base")
    return 0


def _cmd_grid_train(args: argparse.Namespace) -> int:
    """``scaling grid`` without ``--dry-run``: train every point (`scaling.grid.run_grid`)."""
    if args.arch is None:
        raise ScalingError("give the baseline with --arch (a preset name, an arch string or a .json file)")
    if args.dataset is None:
        raise ScalingError("give the dataset to train the grid on with --dataset (cifar10, cifar100, "
                           "synthetic[:N[:C[:S]]] or an image folder), or pass --dry-run to only list the points")
    from .grid import TARGET_FACTOR, run_grid

    subset: Any = "budget"
    if args.subset is not None:
        subset = _int(args.subset, "--subset")
        subset = None if subset == 0 else subset
    result = run_grid(
        args.arch, args.dataset, step=_float(args.step, "--step"),
        tolerance=_float(args.tolerance, "--tolerance"),
        max_coefficient=_float(args.max_coefficient, "--max-coefficient"),
        out=args.out, study=args.study, storage=args.storage,
        workers=_int(args.workers, "--workers"), epochs=_int(args.epochs, "--epochs"), subset=subset,
        val_size=_int(args.val_size, "--val-size"), recipe=args.recipe, seed=_int(args.seed, "--seed"),
        num_threads=_int(args.threads, "--threads"), device=args.device, progress=not args.quiet)
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0 if result.chosen is not None else 1
    rows = result.rows
    print(f"grid: {len(rows)} points, each the base grown at phi = 1; study {result.study} in {result.run_dir}")
    print(f"reward: ACC * (MACs / T)^-0.07 with T = {TARGET_FACTOR:g} x the base's MACs = "
          f"{short_count(result.target_macs)} (EfficientNet's soft reward: a point whose rounding spends "
          f"more than {TARGET_FACTOR:g}x the MACs is penalised, so it does not win by its extra MACs alone)\n")
    print("| point | alpha | beta | gamma | product | MACs ratio | val acc | reward | trial |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        mark = " **chosen**" if result.chosen is not None and r.label == result.chosen.label else ""
        acc = f"{r.val_acc:.4f}" if r.val_acc is not None else "-"
        reward = f"{r.reward:.4f}" if r.reward is not None else "-"
        trial = "-" if r.trial is None else f"{r.trial}" + (f" (= {r.duplicate_of})" if r.duplicate_of is not None else "")
        if r.reward is None and r.trial is not None:
            trial += f" {r.state.lower()}"
        print(f"| {r.label}{mark} | {r.alpha:g} | {r.beta:g} | {r.gamma:g} | {r.product:.4f} | "
              f"{r.macs_ratio:.3f} | {acc} | {reward} | {trial} |")
    c = result.chosen
    if c is None:
        print("\nno grid point has finished training yet; run the same command again to resume")
        return 1
    evaluated = result.coefficients["evaluated"]
    print(f"\nchose alpha {c.alpha:g}, beta {c.beta:g}, gamma {c.gamma:g}: the highest reward, {c.reward:.4f} "
          f"(accuracy {c.val_acc:.4f} at {c.macs_ratio:.2f}x the base's MACs, trial {c.trial}), "
          f"of {evaluated} evaluated point{'s' if evaluated != 1 else ''}")
    best_acc = max((r for r in rows if r.val_acc is not None), key=lambda r: r.val_acc)
    if best_acc.val_acc > c.val_acc:
        print(f"the most accurate point, alpha {best_acc.alpha:g}, beta {best_acc.beta:g}, gamma {best_acc.gamma:g} "
              f"(accuracy {best_acc.val_acc:.4f}), spends {best_acc.macs_ratio:.2f}x the MACs, which the reward "
              f"penalises below the choice")
    if evaluated < len(rows):
        print(f"{len(rows) - evaluated} points are not evaluated (failed or not run); run the same command "
              f"again to finish them")
    print(f"wrote {', '.join(str(p) for p in result.files)}")
    return 0


def _add_arch_and_coefficients(p: argparse.ArgumentParser, *, coefficients: bool = True) -> None:
    p.add_argument("--arch", default=None, metavar="ARCH",
                   help="the baseline: preset name, arch string, or arch .json file")
    if not coefficients:
        return
    p.add_argument("--coefficients", default=None, metavar="FILE",
                   help='JSON object with numeric "alpha", "beta" and "gamma" (other keys ignored)')
    p.add_argument("--alpha", default=None, metavar="A", help="depth coefficient, >= 1")
    p.add_argument("--beta", default=None, metavar="B", help="width coefficient, >= 1")
    p.add_argument("--gamma", default=None, metavar="G", help="resolution coefficient, >= 1")
    p.add_argument("--product-tolerance", default=str(DEFAULT_PRODUCT_TOLERANCE), metavar="T",
                   help="how far alpha * beta^2 * gamma^2 may be from 2, absolute (default %(default)s)")
    p.add_argument("--resolution-multiple", default="8", metavar="N",
                   help="round the input side to a multiple of N pixels (default 8)")
    p.add_argument("--max-resolution", default=None, metavar="R",
                   help="cap the input side at R pixels (EfficientNetV2 uses 480)")
    p.add_argument("--later-stage-depth", default=None, metavar="K",
                   help="put all extra layers into the last K stages, in proportion to their "
                        "layers (default: every stage, ceil(layers * alpha^phi))")
    p.add_argument("--dropout", default=None, metavar="P",
                   help="dropout of every member (default: grows with phi as B0..B7's does)")


def _add_train_flags(p: argparse.ArgumentParser, *, study_default: str, unit: str = "network",
                     seeds: bool = True, dataset_note: str = "") -> None:
    """The training flags of family --train, compare and grid: ``unit`` names what is trained
    in the help; ``seeds`` adds --seeds K (several studies), else --seed S (one)."""
    p.add_argument("--dataset", default=None, metavar="D",
                   help="train on D: cifar10, cifar100, synthetic[:N[:C[:S]]] or an image folder" + dataset_note)
    p.add_argument("--epochs", default=None, metavar="E",
                   help=f"training epochs per {unit} (default: the quick budget's, {_QUICK['epochs']})")
    p.add_argument("--subset", default=None, metavar="N",
                   help=f"training images per {unit}, 0 for all (default: the quick budget's, {_QUICK['subset']})")
    p.add_argument("--val-size", default=None, metavar="N",
                   help=f"validation images, the same for every {unit} (default 2500, at most a fifth)")
    p.add_argument("--recipe", choices=["proxy", "paper"], default="proxy", help="training recipe (proxy)")
    if seeds:
        p.add_argument("--seeds", default=None, metavar="K",
                       help="train every network K times with training seeds 0..K-1 (default 1); seed s > 0 "
                            "is the study <study>-s<s>")
    else:
        p.add_argument("--seed", default="0", metavar="S", help=f"training seed of every {unit} (0)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage URL (default sqlite <out>/runs/<study>/study.db)")
    p.add_argument("--study", default=None, metavar="NAME",
                   help=f"study name, also the run folder (default {study_default})")
    p.add_argument("--workers", default="1", metavar="K", help=f"processes training {unit}s at once (1)")
    p.add_argument("--threads", default=None, metavar="T", help="CPU threads for training (torch's choice)")
    p.add_argument("--device", default=None, metavar="D", help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaling", description="Scale architectures.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "scale", help="scale depth, width and resolution of an architecture",
        description="Grow an architecture: layers by --depth, channels by --width, a new input "
                    "side and regularisers. Params and MACs are counted at 1000 classes. "
                    "B3 from B0: --width 1.2 --depth 1.4 --resolution 300 --dropout 0.3.")
    p.add_argument("arch", help="preset name, arch string, or arch .json file")
    p.add_argument("--depth", default=None, metavar="D",
                   help="layer multiplier, finite and > 0; each stage gets ceil(layers * D) (default 1)")
    p.add_argument("--width", default=None, metavar="W",
                   help="channel multiplier, finite and > 0; channels rounded to a multiple of 8, "
                        "never below 90%% (default 1)")
    p.add_argument("--resolution", default=None, metavar="R",
                   help="new input side in pixels, a whole number (default: unchanged)")
    p.add_argument("--dropout", default=None, metavar="P",
                   help="new dropout rate before the classifier, in [0, 1) (default: unchanged)")
    p.add_argument("--drop-path", default=None, metavar="P",
                   help="new maximum stochastic-depth rate, in [0, 1) (default: unchanged)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_scale)

    p = sub.add_parser(
        "family", help="compound-scale a baseline into a family of members",
        description="Grow a baseline by depth alpha^phi, width beta^phi and resolution "
                    "gamma^phi for each --phi, as a markdown table (or JSON). For B0 with "
                    "1.2, 1.1, 1.15 the official B1..B7 stand beside it.")
    _add_arch_and_coefficients(p)
    p.add_argument("--phi", default=None, metavar="SPEC",
                   help="values of phi: 1..7, 1,2,3, 1.5, 0..2:0.25")
    p.add_argument("--latency", action="store_true",
                   help="measure CPU latency of each member (builds each model; slow)")
    p.add_argument("--json", action="store_true", help="print a JSON list of members")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="also write family.md, family.csv and family.json into DIR; with --train the "
                        "folder holding runs/<study>/ (default: the working directory)")
    p.add_argument("--train", action="store_true",
                   help="train each member with the same recipe (a listed space evaluated by nas "
                        "search's runner, resumable) and write family.json with accuracies and "
                        "family_accuracy.png/.svg into <out>/runs/<study>/")
    _add_train_flags(p, study_default="<base name>-family")
    p.add_argument("--into-study", default=None, metavar="NAME",
                   help="with --train, also write family.json into <out>/runs/NAME/ (the searched "
                        "study whose baseline was scaled) so `nas report --study NAME` overlays it")
    p.set_defaults(func=_cmd_family)

    p = sub.add_parser(
        "target", help="the compound member whose MACs or params meet a target",
        description="Solve for the phi whose real MACs (or params) land within --tolerance of "
                    "the target; when none does, the nearest member and how far it is.")
    _add_arch_and_coefficients(p)
    p.add_argument("--macs", default=None, metavar="Q", help="MACs target, such as 2G or 400M")
    p.add_argument("--params", default=None, metavar="Q", help="parameter target, such as 10M")
    p.add_argument("--tolerance", default="0.02", metavar="F",
                   help="relative tolerance on the target (default 0.02)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_target)

    p = sub.add_parser(
        "grid", help="the alpha, beta, gamma grid under alpha * beta^2 * gamma^2 ~ 2",
        description="Every grid point with each coefficient >= 1 and "
                    "|alpha * beta^2 * gamma^2 - 2| <= --tolerance names the base grown at phi = 1. "
                    "With --dry-run: list them with their real MACs ratios. Otherwise train each "
                    "with nas's trainer as a resumable Optuna study (a listed search space, the grid "
                    "sampler; storage, workers and retries as `nas search`), choose the highest "
                    "reward ACC * (MACs / T)^-0.07 with T = 2x the base's MACs, and write "
                    "coefficients.json and grid_accuracy.png/.svg into <out>/runs/<study>/. The "
                    "same command again resumes the study.")
    _add_arch_and_coefficients(p, coefficients=False)
    p.add_argument("--dry-run", action="store_true", help="list the points; train nothing")
    _add_train_flags(p, study_default="<base name>-grid", unit="point", seeds=False,
                     dataset_note=" (required without --dry-run)")
    p.add_argument("--out", default=".", metavar="DIR",
                   help="folder holding runs/<study>/ (default: the working directory)")
    p.add_argument("--step", default="0.05", metavar="S", help="grid step (default 0.05)")
    p.add_argument("--tolerance", default=str(DEFAULT_PRODUCT_TOLERANCE), metavar="T",
                   help="absolute tolerance of the product around 2 (default %(default)s)")
    p.add_argument("--max-coefficient", default="2", metavar="C",
                   help="largest value of each coefficient (default 2)")
    p.add_argument("--json", action="store_true",
                   help="with --dry-run a JSON list of {alpha, beta, gamma, product, macs_ratio}; "
                        "otherwise one JSON object: the chosen coefficients (coefficients.json) and "
                        "\"points\", a row per grid point")
    p.set_defaults(func=_cmd_grid)

    p = sub.add_parser(
        "compare", help="depth-, width-, resolution-only and compound scaling at equal MACs, trained",
        description="Grow the base to --macs-factor x its MACs by depth only, width only, resolution "
                    "only (each the smallest multiplier whose real MACs reach the target within "
                    "--tolerance) and by compound scaling (solve_phi), with --steps points per method "
                    "from the base to the target; train every network over --seeds seeds with the "
                    "same recipe through nas search's runner (resumable); print a table (markdown; "
                    "compare.md/.csv/.json) and plot accuracy vs MACs per method "
                    "(compare_accuracy.png/.svg) in <out>/runs/<study>/. On 32-pixel images "
                    "resolution scaling only upsamples: the output says so.")
    _add_arch_and_coefficients(p, coefficients=False)
    p.add_argument("--coefficients", default=None, metavar="FILE",
                   help='JSON object with numeric "alpha", "beta" and "gamma" (default: 1.2, 1.1, 1.15)')
    p.add_argument("--alpha", default=None, metavar="A", help="compound depth coefficient (1.2)")
    p.add_argument("--beta", default=None, metavar="B", help="compound width coefficient (1.1)")
    p.add_argument("--gamma", default=None, metavar="G", help="compound resolution coefficient (1.15)")
    p.add_argument("--product-tolerance", default=str(DEFAULT_PRODUCT_TOLERANCE), metavar="T",
                   help="how far alpha * beta^2 * gamma^2 may be from 2, absolute (default %(default)s)")
    p.add_argument("--macs-factor", default=None, metavar="F", help="MACs target as a multiple (> 1) of the base's")
    p.add_argument("--steps", default="3", metavar="N",
                   help="points per method from the base to the target, MACs factor^(i/N) (default 3)")
    p.add_argument("--tolerance", default="0.05", metavar="F",
                   help="relative tolerance of each point's real MACs on its target (default 0.05)")
    p.add_argument("--resolution-multiple", default="8", metavar="N",
                   help="round the input side to a multiple of N pixels (default 8)")
    _add_train_flags(p, study_default="<base name>-compare")
    p.set_defaults(seeds="3")
    p.add_argument("--out", default=".", metavar="DIR",
                   help="folder holding runs/<study>/ (default: the working directory)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: the settings, \"columns\" and \"rows\" (one per network)")
    p.set_defaults(func=_cmd_compare)
    return parser


main = make_main(build_parser)
