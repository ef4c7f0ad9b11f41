"""``nas``: judge and search architectures.

    nas train --arch ARCH --dataset cifar10|cifar100|synthetic|PATH [--epochs E] [--subset N]
              [--recipe proxy|paper] [--val-size N] [--device D] [--test] [--out DIR] ...
    torchrun --nproc_per_node G -m nas train ...     # one model on G GPUs (DDP)
    nas calibrate --space SPACE --dataset D --samples N --low SPEC --high SPEC [--seeds K]
    nas search --space SPACE --dataset D [--mode reward|pareto] [--trials N] ...
    nas best --study NAME [--storage URL] [--json]
    nas pick --study NAME (--max-macs Q | --max-params Q | --max-latency T | --knee | --trial N)
    nas export --arch baseline.json|PRESET|ARCH [--checkpoint FILE] --format onnx|torchscript --out FILE
    nas eval --checkpoint FILE [--dataset D] [--test]
    nas report --study NAME [--storage URL] [--out DIR]

``nas train`` trains one architecture on a proxy task, shows a progress bar per epoch on
stderr, writes ``metrics.json``, ``arch.json`` and ``checkpoint.pt`` to ``--out`` and prints
one JSON line on stdout with ``val_acc`` (and ``test_acc`` with ``--test``), ``seconds`` and
``images_per_s``. The test split is read only with ``--test``. ``calibrate`` lives in
`nas.calibrate`, ``search``, ``best`` and ``pick`` in `nas.search`, ``export`` in `nas.export`,
``eval`` in `nas.evaluation`, ``report`` in `nas.report`; this module is the thin layer.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from space.command_line import make_main
from space.errors import UserError
from space.presets import resolve_arch

from .atomic import write_json_atomic
from .calibrate import add_parser as add_calibrate_parser
from .evaluation.cli import add_parser as add_eval_parser
from .export.cli import add_parser as add_export_parser
from .report.cli import add_parser as add_report_parser
from .search.cli import add_parsers as add_search_parsers

__all__ = ["main"]


def _positive(kind: type, name: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            whole = "whole " if kind is int else ""
            raise argparse.ArgumentTypeError(f"{name} must be a {whole}number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number, got {text}")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be positive, got {text}")
        return value
    return parse


def _check_out(out: Path, probe: bool = True) -> None:
    """Refuse an output path that cannot be a run folder, before any work is done. A folder
    that does not exist yet is made and removed again here, so that a path no one can
    create (under a read-only or virtual file system, say) is refused now rather than after
    the first epoch."""
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                where = "" if parent == out else f" (its parent {parent} is a file)"
                raise UserError(f"--out {out} cannot be a run folder{where}: pass a folder path")
            if not os.access(parent, os.W_OK):
                raise UserError(f"--out {out}: {parent} is not writable; pass another folder")
            break
    if not probe:
        return
    made = []
    try:
        for folder in reversed((out, *out.parents)):
            if not folder.exists():
                try:
                    folder.mkdir()
                except FileExistsError:  # made by another process meanwhile: not ours to remove
                    continue
                made.append(folder)
    except OSError as err:
        raise UserError(f"--out {out} cannot be created ({err.strerror or err}); pass another folder") from None
    finally:
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                pass


def _arch_record(arch, splits) -> dict:
    """arch.json: the description plus what it was trained for (`space info FILE` reads
    ``num_classes`` from it, so the cost it shows is that of the trained classifier)."""
    return {**arch.to_dict(), "num_classes": splits.num_classes, "class_names": list(splits.train.classes)}


def _recipe_overrides(args: argparse.Namespace) -> dict:
    """The settings given on the command line, which override the recipe's."""
    overrides = dict(device=args.device, seed=args.seed, compile=args.compile, num_threads=args.threads,
                     eval_flip=args.tta)
    for name in ("batch_size", "optimizer", "lr"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.no_ema:
        overrides["ema_decay"] = None
    elif args.ema is not None:
        overrides["ema_decay"] = args.ema
    return overrides


def _cmd_train(args: argparse.Namespace) -> int:
    from .data import make_splits
    from .train import Budget, CheckpointMismatch, TrainConfig, TrainingFailed, train

    # Everything is checked before anything is written: a refused run leaves --out as it was.
    out = Path(args.out)
    # Under torchrun only rank 0 writes, so only it tries making the folder.
    _check_out(out, probe=int(os.environ.get("RANK", "0")) == 0)
    arch = resolve_arch(args.arch)
    if args.resolution is not None:
        arch = arch.replace(resolution=args.resolution)
    if args.val_fraction is not None and not 0 < args.val_fraction < 1:
        raise UserError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    if args.val_fraction is not None and args.val_size is not None:
        raise UserError("give --val-size or --val-fraction, not both")
    if args.ema is not None and not 0 < args.ema < 1:
        raise UserError(f"--ema must be between 0 and 1, got {args.ema}")
    if args.ema is not None and args.no_ema:
        raise UserError("give --ema or --no-ema, not both")
    if args.epochs is None and args.seconds is None and args.images is None:
        args.epochs = 10
    budget = Budget(epochs=args.epochs, seconds=args.seconds, images=args.images)
    config = TrainConfig.for_recipe(args.recipe, **_recipe_overrides(args))
    splits = make_splits(args.dataset, val_size=args.val_size, val_fraction=args.val_fraction,
                         subset=args.subset, split_seed=args.split_seed, with_test=args.test,
                         root=args.data_root, download=not args.no_download,
                         names={"subset": "--subset", "val_size": "--val-size"})
    # Under torchrun every process runs this command; only rank 0 writes and prints.
    is_main = int(os.environ.get("RANK", "0")) == 0
    record = _arch_record(arch, splits)

    def write_arch(_stats=None) -> None:
        # Written once training has run (with the first checkpoint), never by a refused run.
        if is_main:
            write_json_atomic(out / "arch.json", record)

    try:
        result = train(arch, splits, budget, config, checkpoint=out / "checkpoint.pt",
                       resume=not args.restart, progress=not args.quiet, evaluate_test=args.test,
                       callback=write_arch)
    except CheckpointMismatch as err:
        raise UserError(f"--out {out}: its checkpoint {err.reason}; pass --restart to start over "
                        "there, or choose another --out") from None
    except TrainingFailed as err:
        raise UserError(f"training failed: {err}") from None
    summary = {
        "arch": arch.to_string(),
        "dataset": args.dataset,
        "val_acc": result.val_acc,
        "val_acc_se": round(result.val_acc_se, 4),
        "best_val_acc": result.best_val_acc,
        "epochs": round(result.epochs, 4),
        "seconds": round(result.seconds, 2),
        "images_per_s": round(result.images_per_s, 1),
        "images_seen": result.images_seen,
        "params": result.params,
        "macs": result.macs,
        "device": result.device,
        "recipe": result.recipe,
        "batch_size": result.batch_size,
        "lr": round(result.lr, 6),
        "seed": args.seed,
        "split_seed": args.split_seed,
        "train_size": len(splits.train),
        "val_size": len(splits.val),
    }
    if args.test:
        summary["test_acc"] = result.test_acc
    metrics = dict(summary, history=[h.to_dict() for h in result.history], result=result.to_dict())
    if is_main:
        write_arch()
        write_json_atomic(out / "metrics.json", metrics)
        print(json.dumps(summary), flush=True)
    return 0


def _non_negative_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    from .data.load import DEFAULT_VAL_SIZE
    from .train import TrainConfig
    from .train.config import RECIPES

    parser = argparse.ArgumentParser(prog="nas", description="Train and search architectures.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one architecture on a proxy task",
                       description="Train one architecture; the final JSON line goes to stdout.")
    t.add_argument("--arch", required=True, help="preset name, arch string, or arch .json file")
    t.add_argument("--dataset", required=True,
                   help="cifar10, cifar100, synthetic, or a folder <root>/{train,test}/<class>/<image>")
    t.add_argument("--epochs", type=_positive(float, "--epochs"), default=None,
                   help="epochs to train (default 10 when no other budget is given)")
    t.add_argument("--seconds", type=_positive(float, "--seconds"), default=None, help="wall-clock budget")
    t.add_argument("--images", type=_positive(int, "--images"), default=None, help="budget in training images seen")
    t.add_argument("--recipe", choices=list(RECIPES), default="proxy",
                   help="proxy (default): SGD, one-cycle, no EMA or regularisers, batch adapted to the "
                        "data, learns in a few hundred steps; paper: the EfficientNet paper's RMSProp "
                        "recipe, for training a chosen model fully. Flags below override single settings")
    t.add_argument("--subset", type=_positive(int, "--subset"), default=None,
                   help="train on a stratified subset of N images (drawn after the validation split)")
    t.add_argument("--val-size", type=_non_negative_int("--val-size"), default=None,
                   help=f"validation images held out of the training split before --subset is drawn, the "
                        f"same for every subset and seed (default {DEFAULT_VAL_SIZE}, at most a fifth of it)")
    t.add_argument("--val-fraction", type=float, default=None,
                   help="the validation split as a share of the training split instead of --val-size")
    t.add_argument("--batch-size", type=_positive(int, "--batch-size"), default=None,
                   help="global batch (default: proxy adapts it to the data, paper 128)")
    t.add_argument("--optimizer", choices=["rmsprop", "sgd"], default=None,
                   help="default: the recipe's (proxy sgd, paper rmsprop)")
    t.add_argument("--lr", type=_positive(float, "--lr"), default=None,
                   help="peak learning rate (default: the recipe's, scaled with the batch size)")
    t.add_argument("--ema", type=float, default=None,
                   help=f"EMA decay of the weights (default: proxy none, paper {TrainConfig.ema_decay}, "
                        "warm-up adjusted)")
    t.add_argument("--no-ema", action="store_true", help="evaluate the raw weights, no EMA")
    t.add_argument("--tta", action="store_true",
                   help="evaluate each image and its mirror image and average the logits")
    t.add_argument("--threads", type=_positive(int, "--threads"), default=None,
                   help="CPU threads (default: torch's choice)")
    t.add_argument("--resolution", type=_positive(int, "--resolution"), default=None,
                   help="train at this input side instead of the arch's")
    t.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--seed", type=_non_negative_int("--seed"), default=0,
                   help="training seed: initialisation, data order, augmentation (default 0)")
    t.add_argument("--split-seed", type=_non_negative_int("--split-seed"), default=0,
                   help="seed of the subset and validation draws, kept apart from --seed so runs "
                        "with different training seeds are measured on the same images (default 0)")
    t.add_argument("--test", action="store_true", help="also evaluate on the test split (final report only)")
    t.add_argument("--out", default="runs/train", help="output folder (default runs/train)")
    t.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --out")
    t.add_argument("--data-root", default=None, help="folder holding or caching dataset archives")
    t.add_argument("--no-download", action="store_true", help="never download datasets")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    add_calibrate_parser(sub)
    add_search_parsers(sub)
    add_export_parser(sub)
    add_eval_parser(sub)
    add_report_parser(sub)
    return parser


main = make_main(build_parser)
