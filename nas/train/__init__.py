"""The candidate trainer: train an architecture briefly and read its validation accuracy.

Both the search (`nas`) and the scaling judge (`scaling`) rank architectures by the
result of `train`. It is built to be fast (device-resident data, mixed precision,
channels-last and cuDNN autotuning on CUDA, optional ``torch.compile``), honest (the
reported accuracy is the last epoch's on held-out data, EMA weights are evaluated when
EMA is on and `Result` says so) and robust (divergence and out-of-memory become typed
exceptions a search can count as failed candidates; checkpoints are atomic and resume
exactly). Two named recipes set the optimisation: `TrainConfig.proxy()` for short budgets
and search (learns in a few hundred steps) and `TrainConfig.paper()` (the EfficientNet
paper's, for training a chosen model fully); see `TrainConfig`.

Conventions
-----------
* Accuracies are fractions in [0, 1]; losses are mean cross entropy in nats per image.
  The training loss is label-smoothed (``TrainConfig.label_smoothing``), the validation
  and test losses are not.
* ``batch_size`` is the *global* batch: under DistributedDataParallel each of ``W``
  processes takes ``batch_size / W`` images per step, so the optimisation (and the
  default learning rate, which scales with ``batch_size``) does not depend on ``W``.
* Epochs are counted from 1. An epoch is one pass over the (sharded) training loader,
  which drops the last partial batch (``N // batch_size`` steps); a budget that ends
  mid-epoch ends with a shorter final epoch, which is evaluated and reported like the
  others.
* Seconds are wall-clock seconds. ``Budget.seconds`` and ``EpochStats.seconds`` count
  training steps only (not evaluation or checkpoint writing); ``Result.seconds`` is the
  whole time spent in `train`, over all resumed calls.
* Images are training images consumed (``steps * batch_size`` up to a short last batch),
  summed over all processes.
* Budgets are honoured in whole steps: ``images`` and ``epochs`` round up to the next
  step, and a budget below one step trains one step with a `UserWarning` saying so.
* Precision: ``Result.amp`` is the autocast mode that ran (``"bf16"``, ``"fp16"`` with a
  gradient scaler, or ``"off"``), resolved from ``TrainConfig.amp`` for the device;
  ``"bf16"`` on a CUDA GPU without native bf16 runs fp16 and warns.

Checkpoints
-----------
A checkpoint (``train(checkpoint=...)``) records what makes a run that run: the
architecture, the data (``Splits.info``: dataset, split seed, subset, validation share;
the split sizes; ``Splits.fingerprint()`` of the training and validation images), the
optimisation settings, world size, precision and seed. Continuing it with anything
different raises `CheckpointMismatch`, which names every difference; only the budget may
change. A run continued after its budget is met trains no further and returns its stored
result, including a stored test result when the test split is the same.

torch.compile
-------------
Dynamo caches compiled code per code object and gives up on one after
``torch._dynamo.config.recompile_limit`` graphs, running it eagerly from then on without
an error; every network `space.build_model` makes shares one ``forward``, so a process
that trains many architectures would stop compiling after the eighth. A `train` call with
``TrainConfig.compile`` therefore calls ``torch._dynamo.reset()`` before compiling. That
drops the compiled code of every function in the process: other compiled modules the
caller holds stay correct but compile again on their next call, so do not run them
concurrently with `train` in other threads. ``Result.compiled`` reports whether the
model really ran compiled, from dynamo's count of the graphs it produced during the
first training step, not from the setting.

Determinism
-----------
For a given ``seed`` a CPU run is bit-reproducible: the model is initialised after
``torch.manual_seed(seed)``, the loader's shuffling and augmentation are drawn from
generators seeded by ``(seed, epoch)``, and the global generator (dropout, stochastic
depth) is re-seeded at the start of every epoch from ``(seed, epoch, rank)``. Because
every random stream is a function of the epoch, a run resumed from a checkpoint follows
the uninterrupted run exactly, and the checkpoint needs no generator states. A
``seconds`` budget makes the run depend on timing (the learning-rate schedule follows
the fraction of the budget used, and the stopping step depends on speed). CUDA kernels
are not forced to be deterministic (``cudnn_benchmark`` chooses algorithms by speed).
`train` seeds the global torch generators; reseed afterwards if the caller relies on them.

Distributed training
--------------------
Launched with ``torchrun --nproc_per_node G script.py`` (or on several machines),
`train` joins the process group (see `nas.distributed`), wraps the model in
DistributedDataParallel, gives each rank a disjoint, equal shard of every epoch's
shuffled training images (``DeviceLoader(shard=(rank, world))``) and ``batch_size / G``
images per step, evaluates a shard of the validation (and test) split per rank and sums
the counts over ranks, so the accuracy is exact. Batch-norm statistics are per rank
while training (no SyncBatchNorm, and DistributedDataParallel does not broadcast buffers
at every forward pass); rank 0's are broadcast, in one collective, before every
evaluation, so every rank evaluates and rank 0 saves the same network.
Decisions that end the run (budget, divergence, callback) are agreed over all ranks.
Only rank 0 shows progress and writes the checkpoint; every rank reads it on resume, so
on several machines it must be on a shared file system. An out-of-memory error on one
rank cannot be recovered by the others (they wait in the next collective until the
launcher stops them).
"""

from __future__ import annotations

from .checkpoint import CheckpointMismatch
from .config import Budget, TrainConfig
from .evaluate import evaluate
from .loop import train
from .optim import RMSpropTF
from .result import Diverged, EpochStats, OutOfMemory, Result, TrainingFailed

__all__ = [
    "Budget",
    "TrainConfig",
    "EpochStats",
    "Result",
    "TrainingFailed",
    "Diverged",
    "OutOfMemory",
    "CheckpointMismatch",
    "RMSpropTF",
    "train",
    "evaluate",
]
