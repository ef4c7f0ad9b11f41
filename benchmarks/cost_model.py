"""Analytic cost model vs thop: agreement on sampled architectures and the speed ratio.

    python benchmarks/cost_model.py [--samples 200] [--spaces mnasnet mnasnet_cifar v2 v2_cifar] [--json]

For each shipped search space it draws ``--samples`` architectures (seeded), builds each
on the meta device (shapes only) and compares thop's Conv2d + Linear multiply-adds and
the parameter count with `space.cost`. Then it times `cost` against thop's profiling of
EfficientNet-B0 at 224 on a real CPU model, side by side in one run, and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

from space import build_model, cost, get_preset
from space.cost import _cost
from space.search import SearchSpace
from space.thop_reference import thop_conv_linear_macs


def agreement(space_name: str, samples: int, seed: int) -> dict:
    space = SearchSpace.load(space_name)
    rng = np.random.default_rng(seed)
    mismatches = []
    start = time.perf_counter()
    for _ in range(samples):
        arch = space.sample(rng)
        with torch.device("meta"):
            model = build_model(arch)
        c = cost(arch)
        thop_macs = thop_conv_linear_macs(model, arch.resolution)
        params = sum(p.numel() for p in model.parameters())
        if c.macs != thop_macs or c.params != params:
            mismatches.append({"arch": arch.to_string(), "macs": c.macs, "thop_macs": thop_macs,
                               "params": c.params, "built_params": params})
    return {"space": space_name, "samples": samples, "mismatches": len(mismatches),
            "examples": mismatches[:3], "seconds": round(time.perf_counter() - start, 1)}


def speed(repeats: int) -> dict:
    arch = get_preset("efficientnet_b0").arch()
    model = build_model(arch).eval()
    thop_times, cost_times = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        thop_conv_linear_macs(model, 224, device="cpu")
        thop_times.append(time.perf_counter() - t0)
        _cost.cache_clear()  # time the computation, not the cache
        t0 = time.perf_counter()
        cost(arch)
        cost_times.append(time.perf_counter() - t0)
    thop_s, cost_s = statistics.median(thop_times), statistics.median(cost_times)
    return {"thop_seconds": thop_s, "cost_seconds": cost_s, "ratio": thop_s / cost_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--spaces", nargs="+", default=SearchSpace.names())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)

    rows = []
    for name in args.spaces:
        row = agreement(name, args.samples, args.seed)
        rows.append(row)
        if not args.json:
            print(f"{name:<16} {row['samples']:>4} samples  {row['mismatches']} mismatches "
                  f"(MACs and params vs thop on the built model)  [{row['seconds']} s]", flush=True)
    s = speed(args.repeats)
    if args.json:
        print(json.dumps({"agreement": rows, "speed": s}))
    else:
        print(f"B0 at 224: thop profile {s['thop_seconds'] * 1e3:.1f} ms, cost() "
              f"{s['cost_seconds'] * 1e6:.0f} us, ratio {s['ratio']:.0f}x (median of {args.repeats})")
    return 1 if any(r["mismatches"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
