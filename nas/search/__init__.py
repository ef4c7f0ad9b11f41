"""How architectures are searched: objectives and rewards, early stopping, and (to come) the
Optuna study that ties them to the trainer.

* `nas.search.objectives`: the rewards of MnasNet / EfficientNet (``ACC * (X / T) ** w``) and
  EfficientNetV2 (``A * S ** w * P ** v``), cost kinds and their units, Pareto fronts and
  hypervolume.
* `nas.search.early_stop`: MO-ASHA-style early stopping for multi-objective studies (Optuna
  cannot prune them), from per-epoch accuracies stored in trial user attributes.
"""
