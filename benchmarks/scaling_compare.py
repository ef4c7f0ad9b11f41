"""The paper's Figure 8 / Table 3 experiment on a CIFAR-10 subset: depth-only, width-only,
resolution-only and compound scaling of one base to the same MACs, each trained over several
seeds with the proxy recipe (`scaling.compare.run_compare`, the engine of ``scaling compare``).

    python benchmarks/scaling_compare.py [--data DIR] [--arch ARCH]
        [--macs-factor 2] [--steps 2] [--seeds 3] [--epochs 4] [--subset 4000]
        [--val-size 1000] [--threads 2] [--out DIR] [--study NAME] [--estimate] [--json]

Every network is a candidate of a listed search space evaluated by ``nas search``'s runner
(one study per training seed), so the same command again resumes where it stopped (a killed
run loses only the trainings in flight). Prints the settings, then the table: per method and
step the multiplier(s), MACs, params, validation accuracy mean ± std over the seeds and n;
files in ``<out>/runs/<study>/`` (compare.md / .csv / .json, compare_accuracy.png / .svg).

The goal (the paper's claim): compound at least as accurate as the best single dimension at
equal MACs. Read the spread before calling a difference real: a few epochs on a few thousand
images rank networks noisily. And the proxy's limit: CIFAR images are 32 pixels, so
resolution scaling only upsamples the same pixels (the table's footer says so); the
resolution-only curve and the resolution part of compound scaling are handicapped here.

Default settings, chosen to fit about an hour on 2 CPU cores: the base is
``efficientnet_b0_cifar`` at half width and half depth (6.1M MACs at 10 classes; B0 itself,
32M MACs, trained barely faster per image on this CPU, but at 2x no compound member of it
lands near the target: its input side moves in steps of 8 pixels and 32 -> 40 costs 1.77x
alone, so the nearest is 1.65x), target 2x its MACs in 2 steps (1 + 4 x 2 = 9 networks per
seed; real MACs ratios 1.79 / 2.05 depth, 1.16 / 1.95 width, 1.74 / 2.23 resolution (the
nearest 8-pixel steps, 40 and 48 px), 1.79 / 1.99 compound), 3 seeds, 4 epochs on 4,000
images (500 steps of 32, past the proxy's "too short to rank" warning) with 2,000 validation
images (a standard error of about one point). ``--estimate`` trains the base once with the
chosen settings and projects the whole run without running it, taking training time as
proportional to MACs (an upper bound here: small networks on a CPU are not MACs-bound). On
the development machine, 2 epochs on 2,000 images took 6.8 minutes in all at 1 thread beside
another benchmark; the README gives the time of the default run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"
#: efficientnet_b0_cifar at half its width and half its depth (`scaling scale
#: efficientnet_b0_cifar --width 0.5 --depth 0.5`): 6.1M MACs at 10 classes, about a fifth of
#: B0's 32M, so three seeds of nine networks fit the hour.
B0_CIFAR_HALF = ("net_r32_silu_dp0.2_eps0.00001_mom0.1-stem_c16_s1-mb_k3_s1_e1_c8_l1_se0.25-"
                 "mb_k3_s2_e6_c16_l1_se0.25-mb_k5_s2_e6_c24_l1_se0.25-mb_k3_s2_e6_c40_l2_se0.25-"
                 "mb_k5_s1_e6_c56_l2_se0.25-mb_k5_s2_e6_c96_l2_se0.25-mb_k3_s1_e6_c160_l1_se0.25-"
                 "head_c640_do0.2")
DEFAULTS = {"arch": B0_CIFAR_HALF, "macs_factor": 2.0, "steps": 2, "seeds": 3, "epochs": 4,
            "subset": 4000, "val_size": 2000, "threads": 2}


def estimate(a: argparse.Namespace) -> dict:
    """Train the base once with the run's settings; project the run from the points' MACs."""
    import torch

    from nas.data import make_splits
    from nas.train import Budget, TrainConfig, train
    from scaling.compare import compare_points, dataset_facts
    from space.presets import resolve_arch

    base = resolve_arch(a.arch)
    num_classes, _ = dataset_facts(a.data)
    points = compare_points(base, a.macs_factor, steps=a.steps, num_classes=num_classes)
    ratios = [p.member.macs / points[0].member.macs for p in points]
    if a.threads:
        torch.set_num_threads(a.threads)
    splits = make_splits(a.data, val_size=a.val_size, subset=a.subset, split_seed=0)
    start = time.perf_counter()
    train(base, splits, Budget(epochs=a.epochs), TrainConfig.for_recipe("proxy", seed=0, num_threads=a.threads))
    seconds = time.perf_counter() - start
    total = seconds * sum(ratios) * a.seeds
    return {"base_training_s": seconds, "networks_per_seed": len(points), "macs_ratios": ratios,
            "seeds": a.seeds, "projected_s": total, "projected_min": total / 60}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DATA), help="CIFAR-10 image folder (default ../shared/datasets/cifar10)")
    ap.add_argument("--arch", default=DEFAULTS["arch"],
                    help="the base: preset, arch string or .json (default: efficientnet_b0_cifar at half width "
                         "and depth)")
    ap.add_argument("--macs-factor", type=float, default=DEFAULTS["macs_factor"])
    ap.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    ap.add_argument("--seeds", type=int, default=DEFAULTS["seeds"])
    ap.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    ap.add_argument("--subset", type=int, default=DEFAULTS["subset"])
    ap.add_argument("--val-size", type=int, default=DEFAULTS["val_size"])
    ap.add_argument("--threads", type=int, default=DEFAULTS["threads"], help="CPU threads (default 2)")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--out", default="/tmp/effnas-scaling-compare", help="folder holding runs/<study>/")
    ap.add_argument("--study", default=None, help="study name (default <arch>-compare-x<factor>)")
    ap.add_argument("--estimate", action="store_true",
                    help="train the base once and project the run's time; train nothing else")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    a = ap.parse_args(argv)

    from scaling.compare import run_compare, to_markdown
    from space.errors import UserError

    settings = {k: getattr(a, k) for k in ("data", "arch", "macs_factor", "steps", "seeds", "epochs", "subset",
                                            "val_size", "threads", "tolerance", "out")}
    if a.study:
        study = a.study
    else:
        import hashlib

        from space.presets import get_preset

        try:
            get_preset(a.arch)
            name = a.arch
        except KeyError:
            name = "b0_cifar_half" if a.arch == B0_CIFAR_HALF else \
                "arch_" + hashlib.sha1(a.arch.encode()).hexdigest()[:8]
        study = f"{name}-compare-x{a.macs_factor:g}"
    print("settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + f", study {study}, recipe proxy",
          file=sys.stderr, flush=True)
    try:
        if a.estimate:
            e = estimate(a)
            print(f"one training of the base: {e['base_training_s']:.1f} s; {e['networks_per_seed']} networks per "
                  f"seed with MACs ratios {', '.join(f'{r:.2f}' for r in e['macs_ratios'])}; x {e['seeds']} seeds: "
                  f"about {e['projected_min']:.0f} min")
            return 0
        start = time.perf_counter()
        result = run_compare(a.arch, a.data, macs_factor=a.macs_factor, seeds=a.seeds, steps=a.steps,
                             tolerance=a.tolerance, study=study, out=a.out, epochs=a.epochs, subset=a.subset,
                             val_size=a.val_size, num_threads=a.threads, recipe="proxy", progress=True)
        minutes = (time.perf_counter() - start) / 60
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps({**result.to_dict(), "settings": settings, "minutes": minutes}))
    else:
        print(to_markdown(result), end="")
        print(f"\n{minutes:.1f} min this call (resumed trainings are not repeated); files in {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
