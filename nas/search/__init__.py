"""How architectures are searched: an Optuna study over a search space, judged by the proxy
trainer, scored by a reward or a Pareto front, with early stopping in both modes.

One module per job:

* `nas.search.settings`: `SearchSettings`, everything a study is asked for, validated.
* `nas.search.objectives`: the rewards of MnasNet / EfficientNet (``ACC * (X / T) ** w``) and
  EfficientNetV2 (``A * S ** w * P ** v``), cost kinds and their units, Pareto fronts and
  hypervolume.
* `nas.search.budgets`: a candidate's costs, hard budgets, the smallest reachable cost of a space.
* `nas.search.early_stop`: MO-ASHA-style early stopping for multi-objective studies (Optuna
  cannot prune them), from per-epoch accuracies stored in trial user attributes.
* `nas.search.study`: storage, sampler, pruner, creating or resuming a study, seeding it.
* `nas.search.trial`: one trial, from suggested parameters to stored values.
* `nas.search.results`: the summary, the baseline pick (best reward, budget, knee) and the
  files a study writes (baseline.json, trials.csv, summary.txt).
* `nas.search.runner`: `run_search`, progress, the log, worker processes.
* `nas.search.cli`: the ``nas search`` and ``nas best`` sub-commands.
"""

from .results import SearchSummary, pick_knee, write_outputs
from .runner import run_search, search
from .settings import SearchSettings

__all__ = ["SearchSettings", "SearchSummary", "pick_knee", "run_search", "search", "write_outputs"]
