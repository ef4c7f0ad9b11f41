"""What to train for and how: `Budget` (when to stop) and `TrainConfig` (optimiser,
schedule, regularisation, precision, device), with the two named recipes
(`TrainConfig.proxy`, `TrainConfig.paper`). Validation of every field lives here."""

from __future__ import annotations

import math
import numbers
import dataclasses
from dataclasses import dataclass
from typing import Any

from space.errors import UserError

__all__ = ["AMP_MODES", "RECIPES", "Budget", "TrainConfig", "adaptive_batch_size", "positive_int",
           "positive_number"]


def positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Budget:
    """How long to train: stop at whichever limit is reached first.

    Attributes:
        epochs: passes over the training set; may be fractional (``0.5`` trains half an
            epoch, rounded up to whole steps).
        seconds: wall-clock seconds of training steps (evaluation excluded). Checked after
            each step (every few steps on CUDA), so a run may overshoot by about one step.
        images: training images (summed over processes); checked after each step, so
            rounded up to whole batches.

    At least one must be given; each must be positive (else `UserError`, a ValueError).
    Every run takes at least one step: ``images`` below one batch, or ``epochs`` below
    one step, trains one step and `train` warns (a `UserWarning`) that it did.
    """

    epochs: float | None = None
    seconds: float | None = None
    images: int | None = None

    def __post_init__(self) -> None:
        if self.epochs is None and self.seconds is None and self.images is None:
            raise UserError(
                "Budget needs at least one limit: epochs, seconds or images "
                "(e.g. Budget(epochs=5) or Budget(seconds=600))"
            )
        if self.epochs is not None:
            object.__setattr__(self, "epochs", positive_number("Budget.epochs", self.epochs))
        if self.seconds is not None:
            object.__setattr__(self, "seconds", positive_number("Budget.seconds", self.seconds))
        if self.images is not None:
            object.__setattr__(self, "images", positive_int("Budget.images", self.images))

    def __str__(self) -> str:
        parts = [f"{name}={getattr(self, name):g}" for name in ("epochs", "seconds", "images")
                 if getattr(self, name) is not None]
        return "Budget(" + ", ".join(parts) + ")"


_OPTIMIZERS = ("rmsprop", "sgd")
_SCHEDULES = ("cosine", "linear", "exponential")
AMP_MODES = ("auto", "bf16", "fp16", "off")
RECIPES = ("proxy", "paper")

# Adaptive batch size (``batch_size=None``): the largest of these that still gives an epoch
# at least ``_MIN_STEPS_PER_EPOCH`` steps. A proxy run of a few epochs on a few thousand
# images must take a few hundred steps to learn anything; a batch of 128 on 1,400 images
# gives 10 steps an epoch.
_ADAPTIVE_BATCHES = (256, 128, 64, 32)
_MIN_STEPS_PER_EPOCH = 64


def adaptive_batch_size(num_train: int, world_size: int = 1) -> int:
    """The global batch for ``num_train`` training images when ``batch_size`` is None: the
    largest of 256, 128, 64, 32 with at least 64 steps an epoch, else 32 (the smallest that
    keeps batch-norm statistics stable), and at least one image per process."""
    for batch in _ADAPTIVE_BATCHES:
        if num_train // batch >= _MIN_STEPS_PER_EPOCH:
            return max(batch, world_size)
    return max(_ADAPTIVE_BATCHES[-1], world_size)


@dataclass(frozen=True)
class TrainConfig:
    """How to train (everything but the budget and the data).

    Two named recipes set every field at once, documented side by side:

    ====================  =============================  ===================================
    setting               ``TrainConfig.proxy()``        ``TrainConfig.paper()`` (= default)
    ====================  =============================  ===================================
    use                   search, calibration, short     training a found or scaled model
                          budgets (learns in a few       fully (the EfficientNet paper's
                          hundred steps)                 recipe, 350 epochs there)
    optimizer             SGD, Nesterov momentum 0.9     RMSProp (TF), decay 0.9, mom. 0.9
    batch size            adapted to the data            128
                          (`adaptive_batch_size`)
    peak learning rate    0.2 x batch / 256              0.016 x batch / 256
    schedule              warm-up, then linear to 0      warm-up, then cosine to 0
    warm-up               0.3 epochs                     1 epoch
    weight decay          5e-5                           1e-5
    label smoothing       0.1                            0.1
    EMA of the weights    off                            0.9999 (warm-up adjusted)
    dropout, drop path    off (``arch_regularisers``     the architecture's
                          False)
    ====================  =============================  ===================================

    ``proxy`` is what `nas train` and the search use by default: a few hundred steps are too
    few for EMA (it would average the early, bad weights), for regularisers meant for 350
    epochs, or for RMSProp's small per-step learning rate.

    Attributes:
        recipe: the name of the recipe the other settings came from (``"proxy"`` or
            ``"paper"``); a label reported in `Result`, the settings themselves are the
            other fields (a recipe with overrides keeps its name).
        batch_size: global images per step (split evenly over distributed processes);
            ``None`` adapts it to the number of training images (`adaptive_batch_size`)
            so that short runs on small data still take enough steps.
        optimizer: ``"rmsprop"`` (the EfficientNet paper's: TensorFlow-style RMSProp,
            decay 0.9, momentum 0.9, epsilon 1e-3, see `RMSpropTF`) or ``"sgd"`` (Nesterov
            momentum 0.9).
        lr: peak learning rate; ``None`` scales with the (resolved) batch size: rmsprop
            ``0.016 * batch_size / 256`` (the paper), sgd ``0.2 * batch_size / 256``
            (measured on B0-cifar proxy runs: benchmarks/proxy_quality.py).
        weight_decay: L2 penalty on convolution and linear weights (batch-norm parameters
            and biases are not decayed); ``None`` means 1e-5 for rmsprop (the paper) and
            5e-5 for sgd (the usual value for mobile-size networks trained with SGD; CIFAR
            ResNet recipes use 5e-4, which over-regularises these small nets on short runs).
        schedule: ``"cosine"`` decays to 0 over the budget: the fraction of the budget used
            is the largest of the epochs, images and seconds fractions, so it anneals
            fully whichever limit ends the run. ``"linear"`` decays linearly to 0 over the
            same fraction (with the warm-up: the one-cycle shape of fast CIFAR
            recipes). ``"exponential"`` is the paper's
            ``0.97 ** floor(epoch / 2.4)`` (staircase).
        warmup_epochs: linear warm-up from ``lr / warmup_steps`` to ``lr`` over this many
            epochs, multiplied onto the schedule (0 disables it). One epoch by default:
            enough to keep the first steps at the batch-scaled rate stable, short next to
            proxy runs of several epochs.
        label_smoothing: for the training loss.
        ema_decay: exponential moving average of the weights (and batch-norm statistics)
            updated every step with decay ``min(ema_decay, (1 + n) / (10 + n))`` after ``n``
            updates, so that a short proxy run averages roughly its last tenth of steps
            rather than its initialisation.
            Evaluation then uses the EMA weights (``Result.ema`` is True). ``None`` disables
            EMA. Default 0.9999 as in the paper.
        grad_clip: clip the global gradient norm to this value; ``None`` disables it.
        amp: ``"auto"`` is bf16 autocast on CUDA GPUs with native bf16 (Ampere or newer,
            ROCm), else fp16 with a gradient scaler; off on other devices. ``"bf16"``
            works on the CPU and on CUDA GPUs with native bf16; on older GPUs it runs
            fp16 with a gradient scaler and warns. ``"fp16"`` needs CUDA, ``"off"``
            trains in fp32. ``Result.amp`` says which ran.
        channels_last: NHWC memory format; ``None`` means True on CUDA and CPU (on this
            project's 2-core Xeon, B0-cifar trains about 1.5-1.8x faster in NHWC than in
            NCHW: benchmarks/train_throughput.py), False on other devices.
        compile: wrap the model in ``torch.compile``: False, True (torch's default
            backend, inductor, which on the CPU needs a C++ compiler) or the name of a
            backend (``torch._dynamo.list_backends(exclude_tags=())``, e.g.
            ``"aot_eager"``). The first step pays for compiling; a compiled `train` resets
            torch._dynamo first (see `nas.train`), and ``Result.compiled`` says whether a
            graph was really compiled.
        cudnn_benchmark: let cuDNN choose convolution algorithms by timing (CUDA only;
            restored when `train` returns).
        augment: random-crop (4-pixel padding) and horizontal-flip augmentation of the
            training images.
        arch_regularisers: train with the architecture's dropout and drop-path rates
            (True), or with both off (False; the description is unchanged, only the
            trained model omits them).
        eval_flip: test-time augmentation: evaluate on each image and its mirror image
            and average the logits (validation and test).
        eval_batch_size: images per evaluation batch (global); ``None`` means
            ``2 * batch_size``.
        seed: seeds initialisation, data order, augmentation, dropout and stochastic depth.
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``...; ``None`` picks CUDA when available.
            Under distributed training the GPU is ``cuda:LOCAL_RANK``.
        num_threads: CPU threads for intra-op parallelism during `train` (restored after);
            ``None`` leaves the setting alone.
    """

    recipe: str = "paper"
    batch_size: int | None = 128
    optimizer: str = "rmsprop"
    lr: float | None = None
    weight_decay: float | None = None
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    ema_decay: float | None = 0.9999
    grad_clip: float | None = None
    amp: str = "auto"
    channels_last: bool | None = None
    compile: bool | str = False
    cudnn_benchmark: bool = True
    augment: bool = True
    arch_regularisers: bool = True
    eval_flip: bool = False
    eval_batch_size: int | None = None
    seed: int = 0
    device: str | None = None
    num_threads: int | None = None

    @classmethod
    def proxy(cls, **overrides: Any) -> "TrainConfig":
        """The recipe for short budgets and search (see the table above); keyword
        arguments override single settings."""
        settings: dict[str, Any] = dict(
            recipe="proxy", batch_size=None, optimizer="sgd", lr=None, weight_decay=5e-5,
            schedule="linear", warmup_epochs=0.3, label_smoothing=0.1, ema_decay=None,
            arch_regularisers=False)
        return cls(**{**settings, **overrides})

    @classmethod
    def paper(cls, **overrides: Any) -> "TrainConfig":
        """The EfficientNet paper's recipe (the class defaults); keyword arguments override
        single settings."""
        return cls(**{"recipe": "paper", **overrides})

    @classmethod
    def for_recipe(cls, name: str, **overrides: Any) -> "TrainConfig":
        """`proxy` or `paper` by name."""
        if name not in RECIPES:
            raise UserError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
        return cls.proxy(**overrides) if name == "proxy" else cls.paper(**overrides)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise UserError(f"TrainConfig.recipe must be one of {RECIPES}, got {self.recipe!r}")
        if self.batch_size is not None:
            positive_int("TrainConfig.batch_size", self.batch_size)
        if self.optimizer not in _OPTIMIZERS:
            raise UserError(f"TrainConfig.optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in _SCHEDULES:
            raise UserError(f"TrainConfig.schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
        if self.amp not in AMP_MODES:
            raise UserError(f"TrainConfig.amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.lr is not None:
            positive_number("TrainConfig.lr", self.lr)
        if self.weight_decay is not None and (
            isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, numbers.Real)
            or not math.isfinite(self.weight_decay) or self.weight_decay < 0
        ):
            raise UserError(f"TrainConfig.weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if (isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, numbers.Real)
                or not math.isfinite(self.warmup_epochs) or self.warmup_epochs < 0):
            raise UserError(f"TrainConfig.warmup_epochs must be a number >= 0, got {self.warmup_epochs!r}")
        if not isinstance(self.label_smoothing, numbers.Real) or not 0 <= self.label_smoothing < 1:
            raise UserError(f"TrainConfig.label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.ema_decay is not None and (
            isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, numbers.Real)
            or not 0 < self.ema_decay < 1
        ):
            raise UserError(f"TrainConfig.ema_decay must be in (0, 1) or None, got {self.ema_decay!r}")
        if self.grad_clip is not None:
            positive_number("TrainConfig.grad_clip", self.grad_clip)
        if self.eval_batch_size is not None:
            positive_int("TrainConfig.eval_batch_size", self.eval_batch_size)
        if self.num_threads is not None:
            positive_int("TrainConfig.num_threads", self.num_threads)
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise UserError(f"TrainConfig.seed must be an integer >= 0, got {self.seed!r}")
        if not isinstance(self.compile, (bool, str)) or self.compile == "":
            raise UserError(f"TrainConfig.compile must be True, False or a torch.compile backend name, "
                            f"got {self.compile!r}")
        if isinstance(self.compile, str):
            import torch._dynamo  # only for a backend name: importing dynamo takes a while

            known = torch._dynamo.list_backends(exclude_tags=())
            if self.compile not in known:
                raise UserError(f"TrainConfig.compile: {self.compile!r} is not a torch.compile backend "
                                f"(known: {', '.join(known)})")

    def resolved_batch_size(self, num_train: int, world_size: int = 1) -> int:
        """``batch_size``, or `adaptive_batch_size` for ``num_train`` training images."""
        if self.batch_size is not None:
            return int(self.batch_size)
        return adaptive_batch_size(num_train, world_size)

    def resolved_lr(self, batch_size: int | None = None) -> float:
        """The peak learning rate: ``lr``, or the default scaled with ``batch_size`` (the
        resolved batch; default ``self.batch_size``)."""
        if self.lr is not None:
            return float(self.lr)
        batch = self.batch_size if batch_size is None else batch_size
        if batch is None:
            raise ValueError("resolved_lr needs the resolved batch size when batch_size is None")
        base = 0.016 if self.optimizer == "rmsprop" else 0.2
        return base * batch / 256

    def to_dict(self) -> dict[str, Any]:
        """Every setting, JSON-ready."""
        return dataclasses.asdict(self)

    def resolved_weight_decay(self) -> float:
        """``weight_decay``, or the optimiser's default (1e-5 rmsprop, 5e-5 sgd)."""
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return 1e-5 if self.optimizer == "rmsprop" else 5e-5
