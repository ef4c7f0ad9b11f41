"""How good is the proxy? The two recipes side by side, and the proxy's rank correlation.

    python benchmarks/proxy_quality.py [--data PATH] [--only recipes|calibration]
        [--samples 10] [--seeds 2] [--low epochs=4,subset=2000] [--high epochs=8,subset=4000]
        [--out runs/proxy_quality] [--threads N] [--json]

1. **Recipes.** The CIFAR-sized B0 (`efficientnet_b0_cifar`) trained for 3 epochs on 4,500
   training images of the CIFAR-10 folder, validated on 2,000 images held out of the
   training split (the test split is never read), once with ``TrainConfig.proxy()`` and
   once with ``TrainConfig.paper()``, same data, same seed, one after the other in this
   process: validation accuracy with its standard error, accuracy with flip TTA, minutes.
2. **Calibration** (`nas.calibrate`): ``--samples`` architectures drawn from
   ``mnasnet_cifar``, each trained at the search's quick proxy (``--low``, ``--seeds``
   training seeds; by default the ``quick`` budget of `nas.search.settings.BUDGETS`) and at
   a training 4x as long (``--high``: twice the images for twice the epochs); prints Spearman and Kendall rank correlation between the two with
   bootstrap 95% intervals, the seed-to-seed noise of the low fidelity and the cost ratio.
   Resumable: finished runs are kept in ``--out`` and skipped when run again.

Everything runs on the CPU threads torch is given; the figures in the README were
measured on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from nas.calibrate import calibrate, format_summary
from nas.data import make_splits
from nas.search.settings import BUDGETS
from nas.train import Budget, TrainConfig, evaluate, train
from space.presets import get_preset

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"
_QUICK = BUDGETS["quick"]
QUICK_PROXY = f"epochs={_QUICK['epochs']},subset={_QUICK['subset']}"
FOUR_TIMES_LONGER = f"epochs={2 * _QUICK['epochs']},subset={2 * _QUICK['subset']}"


def compare_recipes(data_path: str, epochs: float = 3, train_images: int = 4500,
                    val_images: int = 2000, seed: int = 0) -> list[dict]:
    splits = make_splits(data_path, val_size=val_images, subset=train_images, split_seed=0)
    arch = get_preset("efficientnet_b0_cifar").arch()
    rows = []
    for recipe in ("proxy", "paper"):
        start = time.perf_counter()
        result = train(arch, splits, Budget(epochs=epochs), TrainConfig.for_recipe(recipe, seed=seed),
                       keep_model=True, progress=sys.stderr.isatty())
        minutes = (time.perf_counter() - start) / 60
        tta, _ = evaluate(result.model, splits.val, flip=True)
        rows.append({"recipe": recipe, "val_acc": result.val_acc, "val_acc_se": result.val_acc_se,
                     "val_acc_tta": tta, "minutes": minutes, "batch_size": result.batch_size,
                     "lr": result.lr, "steps": result.steps, "train_size": len(splits.train),
                     "val_size": len(splits.val), "epochs": epochs})
        print(f"{recipe:<6} val {result.val_acc:.3f} +- {result.val_acc_se:.3f}  (flip TTA {tta:.3f})  "
              f"batch {result.batch_size}, lr {result.lr:.3g}, {result.steps} steps, {minutes:.1f} min",
              flush=True)
    return rows


def run_calibration(data_path: str, samples: int, seeds: int, low: str, high: str, out: str,
                    threads: int | None = None) -> dict:
    report = calibrate("mnasnet_cifar", data_path, samples, low, high, seeds=seeds, recipe="proxy",
                       out=out, progress=True, num_threads=threads)
    print(format_summary(report), flush=True)
    return report.to_dict()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 image folder")
    p.add_argument("--only", choices=["recipes", "calibration"], default=None)
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--low", default=QUICK_PROXY)
    p.add_argument("--high", default=FOUR_TIMES_LONGER)
    p.add_argument("--out", default="runs/proxy_quality")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's; 1 when another benchmark shares the cores)")
    p.add_argument("--json", action="store_true", help="also print one JSON object with everything")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data {args.data}", flush=True)
    figures: dict = {}
    if args.only in (None, "recipes"):
        figures["recipes"] = compare_recipes(args.data)
    if args.only in (None, "calibration"):
        figures["calibration"] = run_calibration(args.data, args.samples, args.seeds, args.low, args.high,
                                                 args.out, args.threads)
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
