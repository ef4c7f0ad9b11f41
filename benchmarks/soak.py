"""Soak test of a shared study under random SIGKILLs: N worker processes run M trials of a
tiny synthetic search while a killer loop SIGKILLs a random live worker K times, at random
moments, and starts a replacement each time so the study can finish. Run on SQLite and, when
``EFFNAS_TEST_POSTGRES_URL`` is set or ``--postgres URL`` is given, on PostgreSQL.

    python benchmarks/soak.py                      # 4 workers, 40 trials, 6 kills
    python benchmarks/soak.py --workers 4 --trials 40 --kills 6 --postgres postgresql+psycopg://effnas@127.0.0.1:5432/effnas

Give a PostgreSQL password through ``PGPASSFILE`` / ``PGPASSWORD`` (or in
``EFFNAS_TEST_POSTGRES_URL``); it is never printed. Each backend gets a study of its own
(``soak-<random>``, deleted from PostgreSQL afterwards).

The study: dataset ``synthetic:240:4:16`` (240 images, 4 classes, 16 px), a 3-choice tiny
space, 1 epoch on 160 images, one thread per worker, heartbeats shortened to 1 s with a 3 s
grace period (``EFFNAS_HEARTBEAT_INTERVAL``/``EFFNAS_GRACE_PERIOD``). Workers are started
exactly as ``nas search --workers`` starts them: ``python -m nas.search.worker -`` with the
JSON settings on stdin.

Printed per backend, read from the storage and the run's ``search.log`` once every worker
has exited:

requested
    M, the ``--trials`` count.
completed
    trials that count toward M: COMPLETE or PRUNED (`nas.search.study.counted_trials`).
retried
    trials marked FAIL by the heartbeat callback (their worker was killed mid-trial) and
    queued again, i.e. distinct ``failed_trial`` numbers among the retry copies Optuna's
    ``RetryHeartbeatStaleTrialCallback`` adds.
lost
    requested slots never finished: ``max(0, M - completed)``, plus trials still RUNNING or
    WAITING at the end (a killed trial nobody failed, or a retry copy nobody ran), plus retried
    trials none of whose copies was counted (a retry chain that ended in nothing).
duplicated
    work counted more than once: ``max(0, completed - M)`` (more counted trials than
    requested) + retry chains (same ``failed_trial``) with more than one counted copy (the
    same killed trial finished twice) + trial numbers counted more than once in
    ``search.log`` (the same trial finished twice) + trial numbers present twice in the
    storage. An architecture sampled twice by the sampler is not a duplicate: the search
    counts it as a trial of its own, by design.

Both lost and duplicated must be 0; the script exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l1-head_c32"
# 48 architectures: with the 8 of the tests' tiny space most of 40 trials were duplicates
# (reused, not trained), the study ended in seconds and the killer rarely found a trial training.
SPACE_YAML = f"""\
name: soak
base: {BASE}
defaults:
  kernel: [3, 5, 7]
  expand: [1, 2, 3, 4]
  width: [0.5, 0.75, 1.0, 1.25]
"""
DATA = "synthetic:240:4:16"
FAST_HEARTBEAT = {"EFFNAS_HEARTBEAT_INTERVAL": "1", "EFFNAS_GRACE_PERIOD": "3"}


def settings_dict(space_file: Path, out: Path, trials: int, epochs: int, storage: str, study: str) -> dict:
    return {"space": str(space_file), "out": str(out), "dataset": DATA, "epochs": epochs, "subset": 160,
            "val_size": 40, "num_threads": 1, "early_stop": "none", "trials": trials, "storage": storage,
            "study": study, "workers": 1}


def create_study(d: dict) -> None:
    """Create and seed the study once, as `run_search` does before starting workers."""
    import warnings

    from nas.search.runner import _prepare, _quiet_optuna, _study_info
    from nas.search.settings import SearchSettings
    from nas.search.study import create_or_load_study, open_storage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "each candidate trains only N steps": on purpose
        p = _prepare(SearchSettings(**d))
    with _quiet_optuna():
        create_or_load_study(p.r, lambda: _study_info(p), storage=open_storage(p.r.storage_url))


def start_worker(d: dict, index: int, log) -> subprocess.Popen:
    env = {**os.environ, **FAST_HEARTBEAT, "PYTHONWARNINGS": "ignore::UserWarning"}
    proc = subprocess.Popen([sys.executable, "-m", "nas.search.worker", "-"], stdin=subprocess.PIPE,
                            stdout=log, stderr=log, env=env, cwd=str(ROOT))
    proc.stdin.write(json.dumps({"settings": d, "index": index, "deadline": None}).encode())
    proc.stdin.close()
    return proc


def soak(backend: str, url: str, workers: int, trials: int, kills: int, epochs: int, seed: int,
         timeout: float, tmp: Path) -> dict:
    import optuna
    from optuna.trial import TrialState

    rng = random.Random(seed)
    study_name = f"soak-{uuid.uuid4().hex[:10]}"
    space = tmp / "tiny.yaml"
    space.write_text(SPACE_YAML)
    out = tmp / f"out-{backend}"
    if backend == "sqlite":
        url = f"sqlite:///{tmp / 'sqlite' / 'study.db'}"
        (tmp / "sqlite").mkdir(exist_ok=True)
    d = settings_dict(space, out, trials, epochs, url, study_name)
    started = time.monotonic()
    create_study(d)
    log = open(tmp / f"workers-{backend}.log", "ab")
    procs = [start_worker(d, i, log) for i in range(workers)]
    next_index = workers
    study = optuna.load_study(study_name=study_name, storage=url)

    def counted() -> int:
        return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))

    done_kills = 0
    deadline = started + timeout
    # Spread the kills over the run: the first at a random moment after the first trial has
    # started, then one every 0.3-1.5 s (a trial takes about 1-2 s per worker).
    while not study.get_trials(deepcopy=False) and time.monotonic() < deadline:
        time.sleep(0.1)
    next_kill = time.monotonic() + rng.uniform(0.3, 1.5)
    while any(p.poll() is None for p in procs):
        if time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            raise SystemExit(f"{backend}: the study did not finish within {timeout:.0f} s")
        if done_kills < kills and time.monotonic() >= next_kill:
            live = [p for p in procs if p.poll() is None]
            if live and counted() < trials:
                victim = rng.choice(live)
                os.kill(victim.pid, signal.SIGKILL)
                victim.wait()
                done_kills += 1
                procs.append(start_worker(d, next_index, log))  # a replacement, so the study finishes
                next_index += 1
            next_kill = time.monotonic() + rng.uniform(0.3, 1.5)
        time.sleep(0.1)
    wall = time.monotonic() - started
    log.close()

    all_trials = study.get_trials(deepcopy=False)
    counted_states = (TrialState.COMPLETE, TrialState.PRUNED)
    completed = sum(t.state in counted_states for t in all_trials)
    chains = collections.defaultdict(list)
    for t in all_trials:
        if "failed_trial" in t.system_attrs:
            chains[t.system_attrs["failed_trial"]].append(t)
    left = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in all_trials)
    dead_chains = sum(not any(t.state in counted_states for t in copies) for copies in chains.values())
    lost = max(0, trials - completed) + left + dead_chains
    numbers = collections.Counter(t.number for t in all_trials)
    log_path = out / "runs" / study_name / "search.log"
    finished_lines = collections.Counter()
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            parts = line.split()
            if len(parts) > 3 and parts[1] == "trial" and parts[3] in ("COMPLETE", "PRUNED"):
                finished_lines[int(parts[2])] += 1
    duplicated = (max(0, completed - trials)
                  + sum(sum(t.state in counted_states for t in copies) > 1 for copies in chains.values())
                  + sum(n - 1 for n in finished_lines.values() if n > 1)
                  + sum(n - 1 for n in numbers.values() if n > 1))
    if backend == "postgresql":
        optuna.delete_study(study_name=study_name, storage=url)
    return {"backend": backend, "workers": workers, "trials": trials, "kills": done_kills,
            "requested": trials, "completed": completed, "retried": len(chains), "lost": lost,
            "duplicated": duplicated, "left": left, "dead_chains": dead_chains,
            "chains": {k: [(t.number, t.state.name) for t in v] for k, v in chains.items()}, "failed": sum(t.state == TrialState.FAIL for t in all_trials),
            "worker_processes": next_index, "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--kills", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per trial (1-2 keeps it quick)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the killer's choices and moments")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per backend before giving up")
    ap.add_argument("--postgres", default=os.environ.get("EFFNAS_TEST_POSTGRES_URL", ""),
                    help="a PostgreSQL storage URL (default $EFFNAS_TEST_POSTGRES_URL); password via PGPASSFILE")
    ap.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    a = ap.parse_args(argv)
    from nas.search.storage_url import redact

    backends = []
    if a.backend in ("sqlite", "both"):
        backends.append(("sqlite", ""))
    if a.backend in ("postgresql", "both"):
        if a.postgres:
            backends.append(("postgresql", a.postgres))
        else:
            print("postgresql: skipped (no --postgres URL and EFFNAS_TEST_POSTGRES_URL is not set)", flush=True)
    ok = True
    for backend, url in backends:
        with tempfile.TemporaryDirectory(prefix=f"soak-{backend}-") as tmp:
            where = redact(url) if url else "a SQLite file"
            print(f"{backend}: {a.workers} workers x {a.trials} trials, {a.kills} SIGKILLs, on {where} ...", flush=True)
            r = soak(backend, url, a.workers, a.trials, a.kills, a.epochs, a.seed, a.timeout, Path(tmp))
        print(f"{backend}: workers {r['workers']}  trials {r['trials']}  kills {r['kills']}  |  "
              f"requested {r['requested']}  completed {r['completed']}  retried {r['retried']}  "
              f"lost {r['lost']}  duplicated {r['duplicated']}  |  FAIL rows {r['failed']}, "
              f"worker processes {r['worker_processes']}, wall {r['wall_s']:.0f} s", flush=True)
        if r["kills"] < a.kills:
            print(f"{backend}: only {r['kills']} of {a.kills} kills landed before the study finished; "
                  "raise --trials or --epochs for a longer run", flush=True)
        if r["lost"] or r["duplicated"]:
            print(f"{backend}: left RUNNING/WAITING {r['left']}, retry chains without a counted copy "
                  f"{r['dead_chains']}: {r['chains']}", flush=True)
        ok &= r["lost"] == 0 and r["duplicated"] == 0 and r["completed"] == r["requested"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
