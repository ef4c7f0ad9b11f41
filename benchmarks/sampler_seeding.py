"""Does the per-history seeding (`nas.search.seeding.HistorySeededSampler`) change how well a
sampler searches? Plain Optuna TPE against the same TPE made afresh per trial by
`HistorySeededSampler`, and random search, on a synthetic 64-point categorical space (six
binary choices, like benchmarks/search_quality.py's bench64) whose (accuracy, MACs) table is
drawn once from a fixed seed: no training, seconds on a CPU. Printed per sampler: the
hypervolume of the 24-trial front (reference accuracy 0, 36M MACs; units accuracy x 10^6
MACs) and the distinct architectures proposed, mean ± std over the seeds.

    python benchmarks/sampler_seeding.py [--seeds 30] [--trials 24]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.search.seeding import HistorySeededSampler  # noqa: E402

NAMES = [f"choice{i}" for i in range(6)]
REFERENCE_MACS = 36.0


def table(seed: int = 123) -> dict[int, tuple[float, float]]:
    rng = np.random.default_rng(seed)
    return {i: (float(rng.uniform(0.2, 0.4)), float(rng.uniform(10, 35))) for i in range(2 ** len(NAMES))}


def run(sampler: optuna.samplers.BaseSampler, values: dict, trials: int) -> tuple[float, int]:
    def objective(trial: optuna.Trial) -> tuple[float, float]:
        bits = [trial.suggest_categorical(n, [0, 1]) for n in NAMES]
        return values[int("".join(map(str, bits)), 2)]

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=trials)
    front = sorted((t.values[1], t.values[0]) for t in study.best_trials)  # (macs, acc), macs ascending
    hv, best = 0.0, 0.0
    for i, (macs, acc) in enumerate(front):  # staircase area up to the reference MACs
        best = max(best, acc)
        right = front[i + 1][0] if i + 1 < len(front) else REFERENCE_MACS
        hv += best * (right - macs)
    return hv, len({tuple(sorted(t.params.items())) for t in study.trials})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--trials", type=int, default=24)
    a = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    values = table()
    samplers = {
        "plain TPE": lambda s: optuna.samplers.TPESampler(seed=s),
        "history-seeded TPE": lambda s: HistorySeededSampler(lambda x: optuna.samplers.TPESampler(seed=x), s),
        "random": lambda s: optuna.samplers.RandomSampler(seed=s),
    }
    print(f"64-point synthetic space, {a.trials} trials, {a.seeds} seeds (mean ± std)")
    for label, make in samplers.items():
        results = [run(make(s), values, a.trials) for s in range(a.seeds)]
        hv = [r[0] for r in results]
        distinct = [r[1] for r in results]
        print(f"  {label:20s} hypervolume {statistics.mean(hv):.3f} ± {statistics.stdev(hv):.3f}   "
              f"distinct {statistics.mean(distinct):.1f} ± {statistics.stdev(distinct):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
