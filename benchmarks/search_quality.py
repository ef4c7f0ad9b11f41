"""How good is the search? Samplers, MO-ASHA and the found baseline on a real evaluator.

The evaluator is real training (the proxy recipe) on a subset of a CIFAR-10 image folder,
fixed split, over a small space around B0-cifar (`BENCH_SPACE`, 64 architectures: stages 2-6
may drop a layer, stage 6 may expand 4x instead of 6x). Every architecture is trained at most
once, with training seed 0, and its per-epoch accuracies are kept in ``<out>/evaluations.json``:
a study that proposes it again replays those epochs through the same trial code (MO-ASHA and
the pruners see them one epoch at a time, exactly as in a live run), so every study ranks
the same deterministic function of the architecture and the figures below compare the
samplers, not training noise. The "seeds" are the sampler's seeds. Training epochs are
counted as if every candidate had been trained (replayed epochs count; a duplicate inside a
study, which the search never retrains, does not).

Printed, each as mean ± standard deviation over the seeds:
- Pareto mode (accuracy, MACs), ``--trials`` trials each, B0-cifar enqueued: hypervolume
  (reference point: accuracy 0, MACs 1.1x the space's largest) of Optuna's default sampler
  (TPE), NSGA-II and random search, at equal trials and at equal trained epochs (the fewest
  any no-early-stop study trained); the same with MO-ASHA, the fraction of epochs it saved
  and its hypervolume as a share of the unpruned study's.
- Reward mode (mnas, T = B0-cifar's MACs): best reward of TPE vs random.
- The found baseline (the default sampler's Pareto study, most accurate front member at no
  more MACs than B0-cifar) beside B0-cifar, both retrained with fresh seeds (not the search's
  seed 0, so the winner's luck in the search does not count).
- Per-trial overhead outside training (sampling, decode, cost model, storage writes, MO-ASHA)
  as a share of an average candidate's training time.

Usage: ``python benchmarks/search_quality.py [--data FOLDER] [--seeds 3] [--trials 24]
[--out DIR] [--json]``; re-running with the same ``--out`` reuses its evaluations.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import optuna

import nas.train as train_pkg
from nas.atomic import write_json_atomic
from nas.search import search
from nas.search.objectives import hypervolume
from nas.train.result import EpochStats
from space import Arch
from space.cost import cost
from space.presets import get_preset
from space.search import SearchSpace

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "cifar10"

BENCH_SPACE = {
    "name": "bench64",
    "description": "B0-cifar with stages 2-6 keeping or dropping one layer and stage 6 expanding 4x or 6x "
                   "(64 architectures, 20-32M MACs; B0-cifar is the largest).",
    "base": "efficientnet_b0_cifar",
    "stages": {2: {"layers": [-1, 0]}, 3: {"layers": [-1, 0]}, 4: {"layers": [-1, 0]},
               5: {"layers": [-1, 0]}, 6: {"layers": [-1, 0], "expand": [4, 6]}},
}
B0 = "efficientnet_b0_cifar"
EVAL_SEED = 0  # the training seed of every evaluation inside the studies
RETRAIN_SEEDS = (1, 2)  # fresh seeds for the baseline-vs-B0 comparison
SAMPLERS = ("tpe", "nsga2", "random")


class MemoTrainer:
    """Stands in for `nas.train.train` during the studies: the first request for an
    architecture trains it for the whole budget (seed `EVAL_SEED`) and stores its epochs;
    every request then replays the stored epochs through the caller's callback (which may
    raise TrialPruned) and returns the stored result."""

    def __init__(self, path: Path, real_train):
        self.path = path
        self.real_train = real_train
        self.store: dict = json.loads(path.read_text()) if path.exists() else {}
        self.trained_seconds: dict[int, float] = {}  # trial-independent: id of call -> seconds
        self.calls: list[tuple[float, float]] = []  # (wall start, real training seconds) per call

    def __call__(self, arch, data, budget, config, *, callback=None, **kwargs):
        key = f"{arch.to_string()}|epochs={budget.epochs}"
        start = time.perf_counter()
        trained = 0.0
        if key not in self.store:
            epochs: list[dict] = []
            config = dataclasses.replace(config, seed=EVAL_SEED)
            t0 = time.perf_counter()
            result = self.real_train(arch, data, budget, config,
                                     callback=lambda s: epochs.append(dataclasses.asdict(s)), progress=False)
            trained = time.perf_counter() - t0
            self.store[key] = {"epochs": epochs, "result": {
                "val_acc": result.val_acc, "val_acc_se": result.val_acc_se, "epochs": result.epochs,
                "seconds": result.seconds, "images_per_s": result.images_per_s,
                "batch_size": result.batch_size, "recipe": result.recipe}}
            write_json_atomic(self.path, self.store)
        self.calls.append((start, trained))
        rec = self.store[key]
        for e in rec["epochs"]:
            if callback is not None:
                callback(EpochStats(**e))
        return SimpleNamespace(**rec["result"])


@contextlib.contextmanager
def patched_train(memo: MemoTrainer):
    saved = train_pkg.train
    train_pkg.train = memo
    try:
        yield
    finally:
        train_pkg.train = saved


def space_max_macs(space: SearchSpace) -> float:
    dims = space.dimensions()
    return max(cost(space.decode(dict(zip(dims, combo))), num_classes=10).macs
               for combo in itertools.product(*dims.values()))


def trial_rows(storage: str, study: str) -> list[dict]:
    """Finished trials in order: accuracy, MACs, epochs trained (0 for a duplicate)."""
    st = optuna.load_study(study_name=study, storage=storage)
    rows = []
    for t in sorted(st.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            continue
        ua = t.user_attrs
        accs = ua.get("epoch_acc") or []
        dup = "duplicate_of" in ua
        rows.append({"number": t.number, "state": t.state.name, "macs": float(ua["macs"]),
                     "acc": float(accs[-1]) if accs else (float(t.values[0]) if t.values and t.state.name == "COMPLETE" else 0.0),
                     "complete": t.state.name == "COMPLETE" and not ua.get("infeasible"),
                     "epochs": 0 if dup else len(accs), "reward": ua.get("reward"),
                     "wall": (t.datetime_complete - t.datetime_start).total_seconds()})
    return rows


def front_hv(rows: list[dict], ref: tuple[float, float]) -> float:
    pts = [(r["acc"], r["macs"]) for r in rows if r["complete"]]
    return hypervolume(pts, ref, ("maximize", "minimize")) if pts else 0.0


def hv_within_epochs(rows: list[dict], ref, budget: int) -> float:
    used, kept = 0, []
    for r in rows:
        if used + r["epochs"] > budget:
            break
        used += r["epochs"]
        kept.append(r)
    return front_hv(kept, ref)


def mean_sd(xs) -> str:
    xs = list(xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.4f} ± {sd:.4f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 image folder")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--subset", type=int, default=1500)
    ap.add_argument("--val-size", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="/tmp/effnas-search-quality")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore", UserWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    space = SearchSpace.from_dict(BENCH_SPACE)
    b0_macs = float(cost(get_preset(B0).arch(), num_classes=10).macs)
    ref = (0.0, 1.1 * space_max_macs(space))
    memo = MemoTrainer(out / "evaluations.json", train_pkg.train)
    common = dict(epochs=a.epochs, subset=a.subset, val_size=a.val_size, num_threads=a.threads,
                  trials=a.trials, enqueue=(B0,), out=str(out), progress=False)
    report: dict = {"space": BENCH_SPACE["name"], "space_size": space.size(), "data": a.data,
                    "epochs": a.epochs, "subset": a.subset, "val_size": a.val_size, "trials": a.trials,
                    "seeds": a.seeds, "reference": ref, "studies": {}}
    t_start = time.perf_counter()

    def run(name: str, **kw) -> list[dict]:
        t0 = time.perf_counter()
        n_before = len(memo.store)
        summary = search(space, a.data, study=name, **common, **kw)
        rows = trial_rows(summary.storage, name)
        report["studies"][name] = {"rows": rows, "baseline": summary.baseline and summary.baseline.get("arch")}
        print(f"  {name}: {len(rows)} trials, {sum(r['epochs'] for r in rows)} epochs, "
              f"{len(memo.store) - n_before} newly trained, {time.perf_counter() - t0:.0f} s "
              f"(evaluations so far {len(memo.store)}/{space.size()})", file=sys.stderr, flush=True)
        return rows

    with patched_train(memo):
        pareto = {}
        for seed in range(a.seeds):
            for sampler in SAMPLERS:
                for es in ("none", "asha"):
                    pareto[sampler, es, seed] = run(f"pareto-{sampler}-{es}-s{seed}", mode="pareto",
                                                    objectives=("acc", "macs"), sampler=sampler, early_stop=es,
                                                    seed=seed, target=("macs", b0_macs))
        reward = {}
        for seed in range(a.seeds):
            for sampler in ("tpe", "random"):
                reward[sampler, seed] = run(f"reward-{sampler}-s{seed}", mode="reward", reward="mnas",
                                            sampler=sampler, early_stop="none", seed=seed,
                                            target=("macs", b0_macs))
    search_minutes = (time.perf_counter() - t_start) / 60

    # -- Pareto figures ----------------------------------------------------------------
    equal_epochs = min(sum(r["epochs"] for r in rows) for (s, es, _), rows in pareto.items() if es == "none")
    lines = [f"search quality: space {BENCH_SPACE['name']} ({space.size()} architectures around {B0}), "
             f"{a.data}", f"  evaluator: proxy recipe, {a.epochs} epochs on {a.subset} training images, "
             f"{a.val_size} validation images, training seed {EVAL_SEED}; {len(memo.store)} architectures "
             f"trained", f"  {a.trials} trials per study, {a.seeds} sampler seeds, B0-cifar enqueued; "
             f"hypervolume reference (acc 0, {ref[1] / 1e6:.2f}M MACs), units acc x MACs / 1e6", "",
             f"  {'sampler':<8} {'HV@trials':>17} {'HV@' + str(equal_epochs) + ' epochs':>17} "
             f"{'MO-ASHA HV':>17} {'HV kept':>8} {'epochs saved':>13}"]
    figures: dict = {"pareto": {}, "reward": {}}
    for sampler in SAMPLERS:
        hv = [front_hv(pareto[sampler, "none", s], ref) / 1e6 for s in range(a.seeds)]
        hv_e = [hv_within_epochs(pareto[sampler, "none", s], ref, equal_epochs) / 1e6 for s in range(a.seeds)]
        hv_es = [front_hv(pareto[sampler, "asha", s], ref) / 1e6 for s in range(a.seeds)]
        ep = [sum(r["epochs"] for r in pareto[sampler, "none", s]) for s in range(a.seeds)]
        ep_es = [sum(r["epochs"] for r in pareto[sampler, "asha", s]) for s in range(a.seeds)]
        kept = [x / y for x, y in zip(hv_es, hv)]
        saved = [1 - x / y for x, y in zip(ep_es, ep)]
        figures["pareto"][sampler] = {"hv": hv, "hv_equal_epochs": hv_e, "hv_moasha": hv_es, "epochs": ep,
                                      "epochs_moasha": ep_es, "hv_kept": kept, "epochs_saved": saved}
        lines.append(f"  {sampler:<8} {mean_sd(hv):>17} {mean_sd(hv_e):>17} {mean_sd(hv_es):>17} "
                     f"{statistics.fmean(kept):>8.1%} {statistics.fmean(saved):>13.1%}")

    lines.append("")
    for sampler in ("tpe", "random"):
        best = [max(r["reward"] or 0.0 for r in reward[sampler, s]) for s in range(a.seeds)]
        figures["reward"][sampler] = best
        lines.append(f"  reward mode, best mnas reward, {sampler:<7} {mean_sd(best)}")

    # -- the found baseline beside B0-cifar, retrained with fresh seeds ------------------
    from nas.data import make_splits

    splits = make_splits(a.data, val_size=a.val_size, subset=a.subset, split_seed=0)
    config = train_pkg.TrainConfig.proxy(num_threads=a.threads)
    found = [report["studies"][f"pareto-tpe-none-s{s}"]["baseline"] for s in range(a.seeds)]
    retrained: dict[str, list[float]] = {}
    for arch in dict.fromkeys([get_preset(B0).arch().to_string(), *[f for f in found if f]]):
        retrained[arch] = [train_pkg.train(Arch.from_string(arch), splits,
                                           train_pkg.Budget(epochs=a.epochs),
                                           dataclasses.replace(config, seed=sd)).val_acc for sd in RETRAIN_SEEDS]
    b0_string = get_preset(B0).arch().to_string()
    lines.append("")
    lines.append(f"  baseline vs B0-cifar, retrained with seeds {RETRAIN_SEEDS} (mean val acc):")
    lines.append(f"    B0-cifar          {b0_macs / 1e6:6.2f}M MACs  {statistics.fmean(retrained[b0_string]):.4f}")
    figures["baseline"] = {"b0": {"macs": b0_macs, "accs": retrained[b0_string]}, "found": []}
    for s, f in enumerate(found):
        if not f:
            continue
        m = float(cost(Arch.from_string(f), num_classes=10).macs)
        same = " (B0-cifar itself)" if f == b0_string else ""
        lines.append(f"    found, seed {s}     {m / 1e6:6.2f}M MACs  {statistics.fmean(retrained[f]):.4f}{same}")
        figures["baseline"]["found"].append({"seed": s, "arch": f, "macs": m, "accs": retrained[f]})

    # -- per-trial overhead --------------------------------------------------------------
    walls = [r["wall"] for rows in [*pareto.values(), *reward.values()] for r in rows]
    replay_calls = [c for c in memo.calls if c[1] == 0.0]
    train_secs = [rec["result"]["seconds"] for rec in memo.store.values()]
    n_calls = len(memo.calls)
    real = sum(c[1] for c in memo.calls)
    overhead = (sum(walls) - real) / max(len(walls), 1)
    mean_train = statistics.fmean(train_secs)
    lines.append("")
    lines.append(f"  per-trial overhead outside training: {overhead * 1000:.0f} ms per trial "
                 f"({len(walls)} trials, {n_calls} training calls of which {len(replay_calls)} replayed) "
                 f"= {overhead / mean_train:.2%} of a candidate's mean training time ({mean_train:.1f} s)")
    lines.append(f"  total {search_minutes:.1f} min of studies")
    figures["overhead_s"] = overhead
    figures["overhead_fraction"] = overhead / mean_train
    report["figures"] = figures
    print("\n".join(lines))
    write_json_atomic(out / "search_quality.json", report)
    if a.json:
        print(json.dumps({"search_quality": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
