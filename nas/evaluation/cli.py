"""The ``nas eval`` command (`add_parser`, hooked on the ``nas`` command by `nas.cli`).

    nas eval --checkpoint run/checkpoint.pt [--dataset D] [--test] [--out DIR] [--batch-size N]
             [--device D] [--arch ARCH] [--tta] [--threads T] [--data-root DIR] [--no-download]

Rebuilds the network a ``nas train`` checkpoint holds (its EMA weights when the run kept
them) and measures it on the run's validation split, remade from the split settings the
checkpoint records (dataset, split seed, validation size, subset; the images are checked
against the recorded fingerprint), or with ``--test`` on the dataset's test split. Prints
one JSON line (``top1``, ``top5``, ``loss``, ``images_per_s`` ...) and writes
``eval_<split>.json`` and ``confusion_<split>.png`` to ``--out`` (default: the checkpoint's
folder), each atomically.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from space.errors import UserError

__all__ = ["add_parser", "split_for_checkpoint"]


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {text}")
        return value
    return parse


def split_for_checkpoint(meta: dict, *, dataset: str | None, test: bool, root: str | None = None,
                         download: bool = True, checkpoint: str = "the checkpoint"):
    """The split a checkpoint's run was validated on (``test=False``) or the dataset's
    test split, as `ImageData`, remade by `nas.data.make_splits` from the split settings in
    ``meta``; ``dataset`` overrides the recorded dataset name (the same data elsewhere).
    The validation split is refused unless its data match the recorded fingerprint."""
    from ..data import make_splits

    name = dataset if dataset is not None else meta.get("dataset")
    if name is None:
        raise UserError(f"{checkpoint} records no dataset (it was trained on hand-made splits); pass --dataset")
    val_size = meta.get("val_size") if meta.get("val_size") is not None else meta.get("num_val")
    if not test and not val_size:
        raise UserError(f"{checkpoint} was trained without a validation split (val_size 0); evaluate it with --test")
    splits = make_splits(str(name), val_size=int(val_size), subset=meta.get("subset"),
                         split_seed=int(meta.get("split_seed") or 0), with_test=test, root=root, download=download)
    if splits.num_classes != int(meta["num_classes"]):
        raise UserError(f"--dataset {name} has {splits.num_classes} classes but {checkpoint} was trained "
                        f"for {meta['num_classes']}")
    if not test and meta.get("data_fingerprint") and splits.fingerprint() != meta["data_fingerprint"]:
        raise UserError(f"--dataset {name} does not hold the images {checkpoint} was trained and validated on "
                        "(their fingerprint differs), so its validation split cannot be remade; pass the "
                        "dataset it was trained on, or --test")
    return splits.test if test else splits.val


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from ..atomic import write_json_atomic
    from ..train.device import resolve_device
    from .metrics import evaluate_split
    from .plot import plot_confusion
    from .trained import load_model

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    checkpoint = Path(args.checkpoint)
    out = Path(args.out) if args.out is not None else checkpoint.parent
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    dev = resolve_device(args.device)
    loaded = load_model(args.arch, checkpoint, device=dev)
    meta = loaded.meta
    split = "test" if args.test else "val"
    data = split_for_checkpoint(meta, dataset=args.dataset, test=args.test, root=args.data_root,
                                download=not args.no_download, checkpoint=f"--checkpoint {checkpoint}")
    # The precision training evaluated in, where this device can run it.
    amp = str(meta.get("amp") or "off")
    if amp == "fp16" and dev.type != "cuda":
        amp = "off"
    result = evaluate_split(loaded.model, data, batch_size=args.batch_size, device=dev,
                            resolution=loaded.resolution, amp=amp, flip=args.tta,
                            progress=None if args.quiet else f"{split}")
    names = list(data.classes)
    png = out / f"confusion_{split}.png"
    record_path = out / f"eval_{split}.json"
    top = f"top-{result.k}"
    plot_confusion(result.confusion, names, png,
                   title=f"{split} split of {meta.get('dataset') if args.dataset is None else args.dataset}: "
                         f"top-1 {100 * result.top1:.1f}%, {top} {100 * result.topk:.1f}%, {result.images} images",
                   subtitle=f"% of each true class predicted as each class (rows sum to 100); {checkpoint}")
    per_class = result.per_class_accuracy()
    record = {
        "checkpoint": str(checkpoint),
        "arch": loaded.arch.to_string(),
        "weights": loaded.weights,
        "epoch": loaded.state.get("epoch"),
        "step": loaded.state.get("step"),
        "dataset": str(args.dataset if args.dataset is not None else meta.get("dataset")),
        "split": split,
        "split_seed": meta.get("split_seed"),
        "val_size": meta.get("val_size"),
        "images": result.images,
        "top1": result.top1,
        "top5": result.topk,
        "top5_k": result.k,
        "loss": result.loss,
        "images_per_s": round(result.images_per_s, 1),
        "seconds": round(result.seconds, 3),
        "batch_size": args.batch_size,
        "device": str(dev),
        "amp": amp,
        "tta": bool(args.tta),
        "resolution": loaded.resolution,
        "class_names": names,
        "per_class_acc": {n: (None if per_class[i] != per_class[i] else float(per_class[i]))
                          for i, n in enumerate(names)},
        "confusion": result.confusion.tolist(),
        "confusion_png": png.name,
    }
    if split == "val" and loaded.state.get("val_acc") is not None:
        record["train_val_acc"] = loaded.state["val_acc"]  # what training reported for these weights
    write_json_atomic(record_path, record)
    summary = {"split": split, "top1": result.top1, "top5": result.topk, "loss": round(result.loss, 6),
               "images": result.images, "images_per_s": round(result.images_per_s, 1),
               "json": str(record_path), "png": str(png)}
    if result.k < 5:
        summary["top5_k"] = result.k
    print(json.dumps(summary), flush=True)
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``eval`` on the ``nas`` command's sub-parsers (sets ``func``)."""
    p = subparsers.add_parser(
        "eval", help="measure a nas train checkpoint: top-1, top-5, images/s, confusion matrix",
        description="Measure the network of a nas train checkpoint (its EMA weights when the run kept them) on "
                    "the validation split the run held out (remade from the split settings the checkpoint "
                    "records) or, with --test, on the test split. Prints one JSON line (top1, top5, loss, "
                    "images_per_s) and writes eval_<split>.json and confusion_<split>.png (row-normalised) "
                    "to --out.")
    p.add_argument("--checkpoint", required=True, help="a nas train checkpoint (run/checkpoint.pt)")
    p.add_argument("--dataset", default=None,
                   help="the dataset (default: the one the checkpoint records); cifar10, cifar100, "
                        "synthetic[:N[:classes[:size]]] or an image folder")
    p.add_argument("--arch", default=None,
                   help="the architecture, checked against the checkpoint's (default: the checkpoint's)")
    p.add_argument("--test", action="store_true", help="evaluate on the test split instead of validation")
    p.add_argument("--out", default=None, help="folder for eval_<split>.json and confusion_<split>.png "
                                               "(default: the checkpoint's folder)")
    p.add_argument("--batch-size", type=_positive_int("--batch-size"), default=256, help="images per batch (256)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--tta", action="store_true", help="average the logits of each image and its mirror image")
    p.add_argument("--threads", type=_positive_int("--threads"), default=None, help="CPU threads (torch's choice)")
    p.add_argument("--data-root", default=None, help="folder holding or caching dataset archives")
    p.add_argument("--no-download", action="store_true", help="never download datasets")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_eval)
