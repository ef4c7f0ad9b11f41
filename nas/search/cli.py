"""The ``nas search`` and ``nas best`` commands: their flags (`add_parsers`, hooked on the
``nas`` command by `nas.cli`) and what they print. A thin layer over `run_search` and
`write_outputs`.

    nas search --space NAME|FILE --dataset D [--budget quick|full] [--mode reward|pareto] [--reward mnas|v2] [--hard]
               [--objectives acc,macs] [--target-macs 400M | --target-params 5M | --target-latency 5ms]
               [--trials N] [--timeout S] [--sampler tpe|nsga2|random|grid] [--storage URL] [--study NAME]
               [--recipe proxy|paper] [--epochs E] [--subset N] [--val-size N] [--seed S]
               [--split-seed S] [--enqueue PRESET|ARCH|FILE ...] [--max-macs Q] [--max-params Q]
               [--max-latency T] [--early-stop none|asha|median|hyperband] [--min-epochs R] [--eta H]
               [--workers K] [--out DIR] [--threads T] [--device D] [--quiet]
    nas best --study NAME [--storage URL] [--out DIR] [--json]
    nas pick --study NAME [--storage URL] [--out DIR]
             (--max-macs Q | --max-params Q | --max-latency T | --knee | --trial N | --reset)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from space.errors import UserError

__all__ = ["add_parsers"]


def _number(kind: type, name: str, minimum: float):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a {'whole ' if kind is int else ''}number, "
                                             f"got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be at least {minimum:g}, got {text}")
        return value
    return parse


def _settings(args: argparse.Namespace):
    from .settings import settings_for_budget

    targets = [(k, getattr(args, f"target_{k}")) for k in ("macs", "params", "latency")
               if getattr(args, f"target_{k}") is not None]
    overrides = {k: getattr(args, k) for k in ("lr", "batch_size") if getattr(args, k) is not None}
    sized = {k: v for k, v in (("trials", args.trials), ("epochs", args.epochs)) if v is not None}
    if args.trials is None and args.sampler == "grid":
        sized["trials"] = None  # every grid point (resolve_settings counts them)
    if args.subset is not None:
        sized["subset"] = args.subset if args.subset > 0 else None
        sized["subset_is_cap"] = False  # asked for: more than the data is refused
    return settings_for_budget(
        args.budget, **sized, space=args.space, dataset=args.dataset, mode=args.mode, reward=args.reward, hard=args.hard,
        objectives=tuple(o.strip() for o in args.objectives.split(",")) if args.objectives else None,
        target=targets[0] if targets else None, timeout=args.timeout,
        sampler=args.sampler, storage=args.storage, study=args.study, recipe=args.recipe,
        val_size=args.val_size,
        seed=args.seed, split_seed=args.split_seed, enqueue=tuple(args.enqueue or ()),
        max_macs=args.max_macs, max_params=args.max_params, max_latency=args.max_latency,
        early_stop=args.early_stop, min_epochs=args.min_epochs, eta=args.eta, num_threads=args.threads,
        device=args.device, out=args.out, workers=args.workers, max_failures=args.max_failures,
        train_overrides=overrides)


def _cmd_search(args: argparse.Namespace) -> int:
    from .results import BASELINE_FILE
    from .runner import run_search

    summary = run_search(_settings(args), progress=not args.quiet)
    print(summary.table(), flush=True)
    if summary.baseline is not None and summary.run_dir is not None:
        print(f"wrote {summary.run_dir / BASELINE_FILE}", flush=True)
    return 0


def _cmd_best(args: argparse.Namespace) -> int:
    from .results import BASELINE_FILE, write_outputs

    study = _open_study(args)
    summary = write_outputs(study, args.out)  # refreshed: the study may have moved on
    if summary.baseline is None:
        raise UserError(f"study {args.study} has no finished feasible trial yet, so no baseline")
    if args.json:
        sys.stdout.write((summary.run_dir / BASELINE_FILE).read_text(encoding="utf-8"))
        sys.stdout.flush()
    else:
        print(summary.table(), flush=True)
    return 0


def _open_study(args: argparse.Namespace):
    from .settings import STUDY_NAME_RE
    from .study import load_existing_study

    if not STUDY_NAME_RE.match(args.study):
        raise UserError(f"--study must be letters, digits, '_', '-' or '.', got {args.study!r}")
    url = args.storage or f"sqlite:///{(Path(args.out) / 'runs' / args.study / 'study.db').resolve()}"
    return load_existing_study(args.study, url)


_PICK_FLAGS = {"max_macs": "--max-macs", "max_params": "--max-params", "max_latency": "--max-latency",
               "knee": "--knee", "trial": "--trial", "reset": "--reset"}


def _pick_rule(args: argparse.Namespace) -> dict | None:
    """The rule the flags give (None for --reset); exactly one flag must be given."""
    from .pick import budget_rule

    given = [flag for name, flag in _PICK_FLAGS.items() if getattr(args, name) not in (None, False)]
    if len(given) != 1:
        choices = ", ".join(_PICK_FLAGS.values())
        if not given:
            raise UserError(f"nas pick needs one rule: {choices}")
        raise UserError(f"give one rule, not {' and '.join(given)}")
    if args.reset:
        return None
    if args.knee:
        return {"rule": "knee"}
    if args.trial is not None:
        return {"rule": "trial", "number": args.trial}
    kind = next(k for k in ("macs", "params", "latency") if getattr(args, f"max_{k}") is not None)
    return budget_rule(kind, getattr(args, f"max_{kind}"))


def _describe_choice(summary) -> str:
    """``trial 7 (acc 0.812, 18.2M MACs): <rule>`` for the chosen baseline."""
    from .objectives import COST_KINDS, format_quantity

    b = summary.baseline
    parts = []
    for name in summary.objectives:
        value = b.get(name)
        if value is None:
            continue
        parts.append(format_quantity(value, name) if name in COST_KINDS else f"{name} {value:.4g}")
    if summary.mode == "reward":
        parts += [f"acc {b['val_acc']:.4g}"] if b.get("val_acc") is not None else []
        parts += [format_quantity(b[k], k) for k in ("macs", "params") if b.get(k) is not None]
    return f"trial {b['number']} ({', '.join(parts)}): {summary.rule}"


def _cmd_pick(args: argparse.Namespace) -> int:
    from .pick import pick, reset_pick
    from .results import BASELINE_FILE

    rule = _pick_rule(args)  # flags first: a bad call opens nothing
    study = _open_study(args)
    summary = pick(study, rule, args.out) if rule is not None else reset_pick(study, args.out)
    if summary.baseline is None:
        print(f"study {args.study}: the stored pick is forgotten; no finished feasible trial yet, so no baseline",
              flush=True)
        return 0
    lead = "picked " if rule is not None else "reset to the search's rule: "
    print(lead + _describe_choice(summary), flush=True)
    print(f"wrote {summary.run_dir / BASELINE_FILE}", flush=True)
    return 0


def add_parsers(subparsers: Any) -> None:
    """Register ``search``, ``best`` and ``pick`` on the ``nas`` command's sub-parsers (each
    sets ``func``, which returns the exit status)."""
    from .settings import BUDGETS, EARLY_STOPS, MODES, REWARDS, SAMPLERS

    quick, full = BUDGETS["quick"], BUDGETS["full"]

    p = subparsers.add_parser(
        "search", help="search a space for a baseline architecture (an Optuna study)",
        description="Search a space of MBConv / Fused-MBConv stages with an Optuna study: each trial "
                    "trains a candidate briefly (the proxy recipe) and scores it by a reward (reward "
                    "mode) or by accuracy and costs (pareto mode). The study lives in --storage "
                    "(default <out>/runs/<study>/study.db); the same command again resumes it and adds "
                    "only the missing trials. Writes baseline.json, trials.csv, summary.txt and "
                    "search.log to <out>/runs/<study>/.")
    p.add_argument("--space", required=True, help="shipped space name (space list) or a space file")
    p.add_argument("--dataset", required=True,
                   help="cifar10, cifar100, synthetic[:N[:classes[:size]]], or an image folder")
    p.add_argument("--mode", choices=MODES, default="reward",
                   help="reward (default): maximise one reward; pareto: accuracy vs costs")
    p.add_argument("--reward", choices=REWARDS, default="mnas",
                   help="mnas (default): ACC*(X/T)^w; v2: A*S^-0.07*P^-0.05 with step time S and params P "
                        "relative to the space's base architecture")
    p.add_argument("--hard", action="store_true",
                   help="MnasNet's hard constraint (w = 0 under the target, -1 over) instead of the soft -0.07")
    p.add_argument("--objectives", default=None,
                   help="pareto mode: acc and 1-3 of macs, params, latency, step_time (default acc,macs)")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--target-macs", default=None,
                   help="target T of the mnas reward (default: the base architecture's MACs), e.g. 30M; "
                        "in pareto mode baseline.json is the most accurate front member under it")
    t.add_argument("--target-params", default=None, help="T in parameters instead, e.g. 1.5M")
    t.add_argument("--target-latency", default=None, help="T as measured latency, e.g. 5ms")
    p.add_argument("--budget", choices=list(BUDGETS), default="quick",
                   help=f"quick (default: {quick['trials']} trials of {quick['epochs']} epochs on "
                        f"{quick['subset']} images, minutes on a CPU) or full ({full['trials']} trials of "
                        f"{full['epochs']} epochs on every training image, for a GPU); --trials, --epochs "
                        "and --subset override it")
    p.add_argument("--trials", type=_number(int, "--trials", 1), default=None,
                   help="trials to finish (complete, pruned, infeasible; failed ones are retried) (--budget's)")
    p.add_argument("--timeout", type=_number(float, "--timeout", 1), default=None,
                   help="seconds after which no new trial starts")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                   help="tpe (default), nsga2, random, or grid: every point of the space once (for small "
                        "spaces such as a listed space's candidates; --trials defaults to, and is capped at, "
                        "the number of points)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL, e.g. postgresql+psycopg://user@host/db with the password in "
                        "PGPASSWORD or a pgpass file; a password is never shown "
                        "(default sqlite <out>/runs/<study>/study.db)")
    p.add_argument("--study", default=None, help="study name (default <space>-<mode>); also the run folder")
    p.add_argument("--recipe", choices=["proxy", "paper"], default="proxy", help="training recipe (proxy)")
    p.add_argument("--epochs", type=_number(int, "--epochs", 1), default=None,
                   help="proxy epochs per candidate (--budget's)")
    p.add_argument("--subset", type=_number(int, "--subset", 0), default=None,
                   help="training images per candidate, 0 for all (--budget's)")
    p.add_argument("--val-size", type=_number(int, "--val-size", 1), default=None,
                   help="validation images, the same for every candidate (default 2500, at most a fifth)")
    p.add_argument("--seed", type=_number(int, "--seed", 0), default=0,
                   help="training seed of every candidate and the sampler's seed (0)")
    p.add_argument("--split-seed", type=_number(int, "--split-seed", 0), default=0,
                   help="seed of the validation and subset draws (0)")
    p.add_argument("--enqueue", nargs="+", action="extend", default=None, metavar="ARCH",
                   help="architectures to try first: presets (efficientnet_b0_cifar), arch strings, arch "
                        "JSON files or JSON lists of those; each must be in the space")
    p.add_argument("--max-macs", default=None, help="hard budget: candidates over it are never trained (e.g. 40M)")
    p.add_argument("--max-params", default=None, help="hard budget on parameters (e.g. 3M)")
    p.add_argument("--max-latency", default=None, help="hard budget on measured latency (e.g. 5ms)")
    p.add_argument("--early-stop", choices=[*EARLY_STOPS, "mo-asha"], default="asha",
                   help="asha (default; MO-ASHA in pareto mode), median, hyperband (reward mode) or none")
    p.add_argument("--min-epochs", type=_number(int, "--min-epochs", 1), default=1,
                   help="first early-stopping rung, in epochs (1)")
    p.add_argument("--eta", type=_number(int, "--eta", 2), default=3, help="early-stopping reduction factor (3)")
    p.add_argument("--workers", type=_number(int, "--workers", 1), default=1,
                   help="processes working on the study at once; CPU threads are split between them (1)")
    p.add_argument("--max-failures", type=_number(int, "--max-failures", 1), default=None,
                   help="stop after this many failed trials in one run (default --trials)")
    p.add_argument("--lr", type=_number(float, "--lr", 0), default=None, help="override the recipe's peak learning rate")
    p.add_argument("--batch-size", type=_number(int, "--batch-size", 1), default=None,
                   help="override the recipe's batch size")
    p.add_argument("--out", default=".", help="folder holding runs/<study>/ (default: the working directory)")
    p.add_argument("--threads", type=_number(int, "--threads", 1), default=None, help="CPU threads (torch's choice)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_search)

    b = subparsers.add_parser(
        "best", help="the baseline a search study found so far",
        description="Read a search study, rewrite <out>/runs/<study>/baseline.json, trials.csv and "
                    "summary.txt, and print the summary (or, with --json, baseline.json).")
    b.add_argument("--study", required=True, help="study name")
    b.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite <out>/runs/<study>/study.db)")
    b.add_argument("--out", default=".", help="folder holding runs/<study>/ (default: the working directory)")
    b.add_argument("--json", action="store_true", help="print baseline.json exactly")
    b.set_defaults(func=_cmd_best)

    k = subparsers.add_parser(
        "pick", help="choose a search study's baseline by a budget, the knee, or a trial number",
        description="Choose the baseline of a search study by a rule of your own and keep it: the rule "
                    "is stored in the study, so `nas best` (and a resumed `nas search`) show the same "
                    "choice, re-applied as the study grows. Rewrites <out>/runs/<study>/baseline.json, "
                    "trials.csv and summary.txt, and prints the choice and why. Give exactly one rule.")
    k.add_argument("--study", required=True, help="study name")
    k.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite <out>/runs/<study>/study.db)")
    k.add_argument("--out", default=".", help="folder holding runs/<study>/ (default: the working directory)")
    k.add_argument("--max-macs", default=None, metavar="Q",
                   help="the most accurate front member (reward mode: the highest reward) at or under "
                        "Q MACs, e.g. 20M")
    k.add_argument("--max-params", default=None, metavar="Q", help="the same under a parameter budget, e.g. 3M")
    k.add_argument("--max-latency", default=None, metavar="T",
                   help="the same under a measured latency, e.g. 5ms (the study must have measured it)")
    k.add_argument("--knee", action="store_true", help="the knee of the front (pareto mode)")
    k.add_argument("--trial", type=_number(int, "--trial", 0), default=None, metavar="N",
                   help="trial N (complete, feasible, not a duplicate)")
    k.add_argument("--reset", action="store_true",
                   help="forget the stored pick: the search's own rule applies again")
    k.set_defaults(func=_cmd_pick)
