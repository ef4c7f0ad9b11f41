"""The training loop: `train` and the run object behind it (set-up, epochs, checkpoints).

See the package docstring (`nas.train`) for the conventions on batches, epochs, seconds,
determinism and distributed training."""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch._dynamo
import torch.distributed as dist
from torch import nn

from space.arch import Arch
from space.builder import build_model
from space.cost import cost as arch_cost
from space.errors import UserError

from .. import distributed as ddp
from ..data import DeviceLoader, Splits
from .checkpoint import CHECKPOINT_FORMAT, check_meta, load_checkpoint, save_checkpoint
from .config import Budget, TrainConfig
from .device import autocast, default_channels_last, first_line, grad_scaler, is_oom, resolve_amp, resolve_device
from .evaluate import evaluate_loader, image_side, model_arch, split_shard
from .optim import EMA, SGD_MOMENTUM, RMSpropTF, Schedule
from .result import Diverged, EpochStats, OutOfMemory, Result

__all__ = ["train"]

# Steps between reads of the training losses (each read waits for the device).
_CPU_CHECK_EVERY = 1
_DEVICE_CHECK_EVERY = 16


def _describe(arch: Arch | None, net: nn.Module) -> str:
    return arch.to_string() if arch is not None else type(net).__name__


def _dynamo_graphs() -> int:
    """Graphs torch.compile has produced in this process (dynamo's own count)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _standard_error(acc: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on ``n`` images."""
    if n <= 0 or not math.isfinite(acc):
        return float("nan")
    return math.sqrt(max(acc * (1.0 - acc), 0.0) / n)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank * 7_919 + 12_345) % (2**63 - 1)


@dataclass
class _Where:
    """Where the run is, for failure messages."""

    phase: str = "setting up"
    epoch: int = 0
    step: int = 0


def train(arch_or_model: Arch | nn.Module, data: Splits, budget: Budget,
          config: TrainConfig = TrainConfig(), *,
          callback: Callable[[EpochStats], bool | None] | None = None,
          checkpoint: str | os.PathLike | None = None, resume: bool = True,
          progress: bool = False, evaluate_test: bool = False,
          keep_model: bool = False) -> Result:
    """Train an architecture (or a module) on ``data.train`` and measure it on ``data.val``.

    Args:
        arch_or_model: an `Arch` (built with `space.build_model` after seeding, at
            ``arch.resolution``) or an ``nn.Module`` taking ``(N, 3, H, W)`` images and
            returning ``(N, num_classes)`` logits, trained in place (at its
            ``arch.resolution`` when it has an ``arch`` attribute, else the data's size).
        data: train / validation (/ test) splits of uint8 images.
        budget: when to stop (whichever limit comes first).
        config: optimisation, precision and device settings.
        callback: called after every epoch's evaluation with its `EpochStats`. Returning
            True stops training after that epoch (``stopped_by="callback"``); an exception
            it raises (such as ``optuna.TrialPruned``) propagates, after the epoch's
            checkpoint is written. Under distributed training it runs on every process
            (training stops when any returns True; an exception on one process leaves
            the others waiting, so raise on all or none).
        checkpoint: file written atomically at the end of every epoch (by rank 0); with
            ``resume=True`` an existing file is loaded first and training continues from
            it to the same result as an uninterrupted run (a run whose budget is already
            met returns its result without training). A checkpoint of another run is
            refused with `CheckpointMismatch` (a `UserError`), naming what differs: the
            architecture, the data (dataset name, split seed, subset, validation share
            from ``data.info`` when present, split sizes and a fingerprint of the
            training and validation images), the resolution, batch size, world size,
            optimiser and its settings, schedule, regularisation, precision (the resolved
            autocast mode) or seed; so is an older checkpoint format, or a file that is
            not a checkpoint. The budget may differ (raise it to train on). Loaded with
            ``torch.load(weights_only=True)``.
        resume: continue from ``checkpoint`` when it exists (False starts afresh and
            overwrites it).
        progress: on stderr (rank 0): a progress bar per epoch with the loss and images
            per second, its last line completed with the validation accuracy; a bar for
            evaluation passes that take more than 2 s; and, when continuing from a
            checkpoint, one line first: ``"resuming from epoch N of M"`` (``N`` epochs
            done, ``M`` in all, ``" of M"`` left out for a time budget) or ``"already
            finished at epoch N"``.
        evaluate_test: also measure ``data.test`` once with the final weights. The result
            is stored in the checkpoint, and a later call that trains no further on the
            same test split returns it without evaluating again.
        keep_model: return the trained network in ``Result.model``.

    Raises:
        Diverged: the training loss became NaN or infinite (names the epoch and step).
        OutOfMemory: the device ran out of memory (names batch size and architecture).
        CheckpointMismatch: ``checkpoint`` is of another run (see above).
        UserError: (a ValueError) inconsistent arguments: empty splits, ``evaluate_test``
            without a test split, fp16 off CUDA, a model whose ``num_classes`` differs from
            the data's.

    Warns:
        UserWarning: a budget below one step (it trains one step); ``amp="bf16"`` on a
            CUDA GPU without native bf16 (it trains in fp16); a training split smaller than
            one batch per process.
    """
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a Budget, got {type(budget).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if isinstance(arch_or_model, Arch):
        arch, desc = arch_or_model, arch_or_model.to_string()
    elif isinstance(arch_or_model, nn.Module):
        arch = model_arch(arch_or_model)
        desc = _describe(arch, arch_or_model)
    else:
        raise TypeError(f"arch_or_model must be an Arch or a torch.nn.Module, got {type(arch_or_model).__name__}")

    if config.batch_size is None:  # adapted to the data, resolved once for the whole run
        config = dataclasses.replace(config, batch_size=config.resolved_batch_size(
            len(data.train) if getattr(data, "train", None) is not None else 0, ddp.env_world_size()))

    where = _Where()
    prev_threads = torch.get_num_threads()
    prev_benchmark = torch.backends.cudnn.benchmark
    oom_text: str | None = None
    device_text = str(config.device or "")
    run: _Run | None = None
    try:
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        run = _Run(arch_or_model, arch, desc, data, budget, config, callback,
                   checkpoint, resume, progress, evaluate_test, keep_model, where)
        device_text = str(run.dev)
        return run.run()
    except Exception as err:  # noqa: BLE001 - re-raised unless it is an OOM
        if not is_oom(err):
            raise
        oom_text = first_line(err)
        run = None  # drop the model, optimiser and data held by the run
    finally:
        if torch.get_num_threads() != prev_threads:
            torch.set_num_threads(prev_threads)
        torch.backends.cudnn.benchmark = prev_benchmark
    # The OOM exception (and with it the frames holding the model, optimiser and
    # activations) is gone here, so the memory can actually be released.
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    on = f" on {device_text}" if device_text else ""
    raise OutOfMemory(
        f"out of memory{on} while {where.phase} (epoch {where.epoch}, step {where.step}) with "
        f"batch size {config.batch_size}: {desc}; try a smaller batch size or resolution "
        f"[{oom_text}]",
        arch=desc, batch_size=config.batch_size, epoch=where.epoch,
    )


class _Run:
    """One call of `train`: set-up, the epoch loop, checkpoints."""

    def __init__(self, arch_or_model: Arch | nn.Module, arch: Arch | None, desc: str,
                 data: Splits, budget: Budget, config: TrainConfig,
                 callback: Callable[[EpochStats], bool | None] | None,
                 checkpoint: str | os.PathLike | None, resume: bool, progress: bool,
                 evaluate_test: bool, keep_model: bool, where: _Where):
        self.t_start = time.perf_counter()
        self.budget, self.config, self.callback = budget, config, callback
        self.arch, self.desc, self.where = arch, desc, where
        self.progress, self.evaluate_test, self.keep_model = progress, evaluate_test, keep_model
        self.path = Path(checkpoint) if checkpoint is not None else None
        self.resume = resume

        for name in ("train", "val"):
            split = getattr(data, name, None)
            if split is None or int(split.labels.shape[0]) == 0:
                raise UserError(f"data.{name} is empty; train needs training and validation images")
        if evaluate_test and (data.test is None or int(data.test.labels.shape[0]) == 0):
            raise UserError("evaluate_test=True but data.test is empty or None "
                             "(make the splits with with_test=True)")
        self.data = data
        self.num_classes = int(data.num_classes)

        # --- device, process group, precision ---
        dev = resolve_device(config.device)
        self.info = ddp.setup(dev.type)
        if dev.type == "cuda":
            index = self.info.local_rank if self.info is not None else (
                dev.index if dev.index is not None else torch.cuda.current_device())
            dev = torch.device("cuda", index)
            torch.backends.cudnn.benchmark = bool(config.cudnn_benchmark)
        self.dev = dev
        self.world = self.info.world_size if self.info is not None else 1
        self.rank = self.info.rank if self.info is not None else 0
        self.is_main = self.rank == 0
        if config.batch_size % self.world:
            raise UserError(f"batch_size {config.batch_size} is not divisible by the world size {self.world}")
        self.local_batch = config.batch_size // self.world
        self.amp = resolve_amp(config.amp, dev)
        self.channels_last = (default_channels_last(dev) if config.channels_last is None
                              else bool(config.channels_last))

        # --- model ---
        torch.manual_seed(config.seed)
        if isinstance(arch_or_model, Arch):
            built = arch_or_model if config.arch_regularisers else arch_or_model.replace(
                dropout=0.0, drop_path=0.0)
            net = build_model(built, num_classes=self.num_classes)
        else:
            net = arch_or_model
            declared = getattr(net, "num_classes", None)
            if isinstance(declared, int) and declared != self.num_classes:
                raise UserError(f"the model has {declared} outputs but the data has {self.num_classes} classes")
        net = net.to(dev)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.resolution = arch.resolution if arch is not None else image_side(data.train)
        self.params = sum(p.numel() for p in net.parameters() if p.requires_grad)
        self.macs = arch_cost(arch, num_classes=self.num_classes).macs if arch is not None else None

        # --- optimiser, EMA, scaler ---
        self.lr = config.resolved_lr(config.batch_size)
        self.weight_decay = config.resolved_weight_decay()
        decay = [p for p in net.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in net.parameters() if p.requires_grad and p.ndim <= 1]
        groups = [g for g in ({"params": decay, "weight_decay": self.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
        if not groups:
            raise UserError("the model has no trainable parameters")
        if config.optimizer == "rmsprop":
            self.opt: torch.optim.Optimizer = RMSpropTF(groups, lr=self.lr)
        else:
            self.opt = torch.optim.SGD(groups, lr=self.lr, momentum=SGD_MOMENTUM, nesterov=True)
        self.scaler = grad_scaler(dev) if self.amp == "fp16" else None

        # --- the module that trains: DDP (which copies rank 0's weights to all), then compile ---
        model: nn.Module = net
        if self.info is not None:
            # Batch-norm statistics stay per rank while training (DDP would otherwise broadcast
            # rank 0's buffers before every forward pass, one collective per step);
            # `_validate` broadcasts them once before each evaluation instead.
            model = nn.parallel.DistributedDataParallel(
                net, device_ids=[dev.index] if dev.type == "cuda" else None,
                gradient_as_bucket_view=True, broadcast_buffers=False)
        self.ema = EMA(net, config.ema_decay) if config.ema_decay is not None else None
        if config.compile:
            # Dynamo caches compiled code per code object, and every network `build_model`
            # makes shares one `forward`: after `recompile_limit` (8) architectures in a
            # process it silently runs them eagerly. Starting each compiled run from an
            # empty cache keeps every architecture compiled (and frees the old graphs).
            torch._dynamo.reset()
            backend = "inductor" if config.compile is True else config.compile
            model = torch.compile(model, backend=backend)
        self.model = model
        self.compiled = False
        self._probe_compile = bool(config.compile)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

        # --- data ---
        shard = (self.rank, self.world) if self.world > 1 else None
        common = dict(device=dev, resolution=self.resolution, channels_last=self.channels_last)
        self.train_loader = DeviceLoader(
            data.train, self.local_batch, train=True, seed=config.seed, shard=shard,
            pad=4 if config.augment else 0, flip=config.augment, **common)
        self.steps_per_epoch = len(self.train_loader)
        per_rank = len(data.train) // self.world
        if self.steps_per_epoch == 0:
            raise UserError(f"the training split has {len(data.train)} images, too few for "
                            f"{self.world} processes")
        if per_rank < self.local_batch:
            warnings.warn(
                f"the training split has {per_rank} images per process, fewer than a batch of "
                f"{self.local_batch}: every step uses all of them (the learning rate is still the "
                f"one for batch size {config.batch_size})", stacklevel=3)
        eval_batch = config.eval_batch_size or 2 * config.batch_size
        self.eval_batch = max(1, eval_batch // self.world)
        self.val_loader = DeviceLoader(split_shard(data.val, self.rank, self.world), self.eval_batch,
                                       train=False, **common)

        # --- schedule and budget in steps ---
        self.schedule = Schedule(config.schedule, self.lr,
                                  round(config.warmup_epochs * self.steps_per_epoch), self.steps_per_epoch)
        self.max_steps = (math.ceil(budget.epochs * self.steps_per_epoch - 1e-9)
                          if budget.epochs is not None else None)
        if self.is_main:
            self._warn_if_below_one_step()
        # Read the losses (non-finite check, clock, progress bar) every step on the CPU,
        # every few steps on accelerators, where reading a value waits for the device.
        self.check_every = _CPU_CHECK_EVERY if dev.type == "cpu" else _DEVICE_CHECK_EVERY

        # --- counters (restored by a checkpoint) ---
        self.epoch = 0
        self.step = 0
        self.images_seen = 0
        self.train_seconds = 0.0
        self.prior_seconds = 0.0
        self.history: list[EpochStats] = []
        self.stopped_by = ""
        self.resumed_epoch = 0
        self.last_lr = 0.0
        # The test result of the weights at `step`: {"acc", "loss", "step", "data"}, where
        # "data" is the test split's fingerprint; stored so that re-running a finished run
        # does not evaluate the test split again.
        self.test_result: dict[str, Any] | None = None
        self._fingerprint: str | None = None
        if self.path is not None and resume and self.path.exists():
            self._load()

    # --- checkpoints ---------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        """What makes two runs the same run: a checkpoint whose meta differs is refused.
        The order is the order in which `CheckpointMismatch` names differences."""
        c = self.config
        info = self.data.info
        if self._fingerprint is None:  # hashes every image: once per call
            self._fingerprint = self.data.fingerprint()
        return {
            "arch": self.desc,
            "num_classes": self.num_classes,
            "num_train": int(self.data.train.labels.shape[0]),
            "num_val": int(self.data.val.labels.shape[0]),
            "dataset": info.dataset if info is not None else None,
            "split_seed": info.split_seed if info is not None else None,
            "subset": info.subset if info is not None else None,
            "val_size": info.val_size if info is not None else None,
            "data_fingerprint": self._fingerprint,
            "resolution": self.resolution,
            "batch_size": c.batch_size,
            "world_size": self.world,
            "optimizer": c.optimizer,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "schedule": c.schedule,
            "warmup_epochs": float(c.warmup_epochs),
            "label_smoothing": float(c.label_smoothing),
            "ema_decay": c.ema_decay,
            "grad_clip": c.grad_clip,
            "augment": c.augment,
            "arch_regularisers": c.arch_regularisers,
            "amp": self.amp,
            "seed": c.seed,
        }

    def _save(self) -> None:
        if self.path is None or not self.is_main:
            return
        self.where.phase = "writing the checkpoint"
        state = {
            "format": CHECKPOINT_FORMAT,
            "meta": self._meta(),
            "budget": dataclasses.asdict(self.budget),
            "model": self.net.state_dict(),
            "optimizer": self.opt.state_dict(),
            "schedule": {"step": self.step, "last_lr": self.last_lr},
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "step": self.step,
            "images_seen": self.images_seen,
            "train_seconds": self.train_seconds,
            "seconds": self.prior_seconds + (time.perf_counter() - self.t_start),
            "history": [h.to_dict() for h in self.history],
            "stopped_by": self.stopped_by,
            "test": self.test_result,
        }
        save_checkpoint(state, self.path)

    def _load(self) -> None:
        assert self.path is not None
        state = load_checkpoint(self.path, self.dev)
        check_meta(self.path, state["meta"], self._meta())
        self.net.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.module.load_state_dict(state["ema"])
            self.ema.updates = int(state["ema_updates"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.images_seen = int(state["images_seen"])
        self.train_seconds = float(state["train_seconds"])
        self.prior_seconds = float(state["seconds"])
        self.history = [EpochStats(**h) for h in state["history"]]
        self.stopped_by = str(state["stopped_by"])
        self.last_lr = float(state["schedule"]["last_lr"])
        self.resumed_epoch = self.epoch
        self.test_result = state["test"]

    # --- budget ----------------------------------------------------------------------------

    def _warn_if_below_one_step(self) -> None:
        # A step is the smallest unit of training, so a smaller budget is rounded up to one
        # step; only this case warns, as it can multiply what was asked for many times over
        # (larger budgets are rounded up by less than one batch, as documented in Budget).
        b, batch = self.budget, self.config.batch_size
        if b.images is not None and b.images < batch:
            warnings.warn(f"Budget.images={b.images} is less than one batch of {batch} images; "
                          f"training one step ({batch} images)", UserWarning, stacklevel=4)
        if b.epochs is not None and b.epochs * self.steps_per_epoch < 1 - 1e-9:
            warnings.warn(f"Budget.epochs={b.epochs:g} is less than one step "
                          f"({1 / self.steps_per_epoch:g} epochs); training one step",
                          UserWarning, stacklevel=4)

    def _progress(self, elapsed: float) -> float:
        fractions = [0.0]
        if self.max_steps is not None:
            fractions.append(self.step / self.max_steps)
        if self.budget.images is not None:
            fractions.append(self.images_seen / self.budget.images)
        if self.budget.seconds is not None:
            fractions.append(elapsed / self.budget.seconds)
        return max(fractions)

    def _counted_stop(self) -> str:
        if self.max_steps is not None and self.step >= self.max_steps:
            return "epochs"
        if self.budget.images is not None and self.images_seen >= self.budget.images:
            return "images"
        return ""

    # --- the loop ----------------------------------------------------------------------------

    def _planned_epochs(self) -> int | None:
        """Epochs the budget allows in all (the last may be short); None for a time budget."""
        limits = []
        if self.max_steps is not None:
            limits.append(self.max_steps)
        if self.budget.images is not None:
            batch = self.config.batch_size
            limits.append(self.step + max(0, -(-(self.budget.images - self.images_seen) // batch)))
        return -(-min(limits) // self.steps_per_epoch) if limits else None

    def run(self) -> Result:
        self.elapsed = self.train_seconds
        if self.stopped_by != "callback":  # a budget may have been raised since the checkpoint
            self.stopped_by = self._counted_stop()
            if self.budget.seconds is not None and self.train_seconds >= self.budget.seconds:
                self.stopped_by = self.stopped_by or "seconds"
        if self.progress and self.is_main and self.resumed_epoch:
            if self.stopped_by:
                print(f"already finished at epoch {self.epoch}", file=sys.stderr, flush=True)
            else:
                total = self._planned_epochs()
                of = f" of {total}" if total is not None else ""
                print(f"resuming from epoch {self.epoch}{of}", file=sys.stderr, flush=True)
        while not self.stopped_by:
            self._train_epoch()
        return self._result()

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        probe = self._probe_compile
        if probe:
            graphs = _dynamo_graphs()
        with autocast(self.amp, self.dev):
            logits = self.model(images)
        if probe:
            self._compile_verdict(_dynamo_graphs() > graphs)
        loss = self.criterion(logits.float(), labels)
        self.opt.zero_grad(set_to_none=True)
        clip = self.config.grad_clip
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if clip is not None:
                self.scaler.unscale_(self.opt)
                nn.utils.clip_grad_norm_(self.net.parameters(), clip)
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(self.net.parameters(), clip)
            self.opt.step()
        if self.ema is not None:
            self.ema.update()
        return loss.detach()

    def _compile_verdict(self, compiled: bool) -> None:
        self._probe_compile = False
        self.compiled = compiled
        if not compiled and self.is_main:
            warnings.warn(f"torch.compile produced no graph for {self.desc}, so it trains without compiling "
                          "(TORCH_LOGS=graph_breaks,recompiles says why)", UserWarning, stacklevel=2)

    def _train_epoch(self) -> None:
        self.test_result = None  # of the weights before this epoch
        self.epoch += 1
        epoch = self.epoch
        steps_left = self.steps_per_epoch
        if self.max_steps is not None:
            steps_left = min(steps_left, self.max_steps - self.step)
        if self.budget.images is not None:
            steps_left = min(steps_left, -(-(self.budget.images - self.images_seen) // self.config.batch_size))
        bar = None
        if self.progress and self.is_main:
            from tqdm import tqdm

            bar = tqdm(total=steps_left, desc=f"epoch {epoch}", unit="step", file=sys.stderr,
                       leave=True, dynamic_ncols=True)
        try:
            stats = self._run_epoch(epoch, bar)
        finally:
            if bar is not None:
                bar.close()
        self.history.append(stats)
        self._save()
        if self.callback is not None:
            self.where.phase = "running the callback"
            verdict = bool(self.callback(stats))
            if self.info is not None:  # stop on every rank if any rank's callback says so
                flag = torch.tensor([1.0 if verdict else 0.0], device=self.dev)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                verdict = bool(flag.item() > 0)
            if verdict and not self.stopped_by:
                self.stopped_by = "callback"
                self._save()  # remember that the run is over

    def _run_epoch(self, epoch: int, bar: Any) -> EpochStats:
        """Train one epoch (or what the budget leaves of it) and evaluate."""
        cfg = self.config
        self.where.phase, self.where.epoch = "training", epoch
        self.train_loader.set_epoch(epoch - 1)
        torch.manual_seed(_epoch_seed(cfg.seed, epoch, self.rank))
        self.model.train()

        losses = torch.zeros(self.check_every, dtype=torch.float32, device=self.dev)
        pending = 0  # steps whose loss is in `losses` but not yet read
        loss_sum, loss_count, epoch_steps, epoch_images = 0.0, 0, 0, 0
        t0 = time.perf_counter()

        def check() -> None:
            """Read the pending losses; raise on a non-finite one; read the clock."""
            nonlocal pending, loss_sum, loss_count
            values = losses[:pending].tolist()
            bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
            first_bad = self.step - pending + bad + 1 if bad is not None else math.inf
            elapsed = self.train_seconds + (time.perf_counter() - t0)
            if self.info is not None:  # agree on the first bad step and the slowest clock
                control = torch.tensor([first_bad, -elapsed], dtype=torch.float64, device=self.dev)
                dist.all_reduce(control, op=dist.ReduceOp.MIN)
                first_bad, elapsed = control[0].item(), -control[1].item()
            if math.isfinite(first_bad):
                bad_step = int(first_bad)
                in_epoch = bad_step - (self.step - epoch_steps)
                value = values[bad] if bad is not None else float("nan")
                raise Diverged(
                    f"training diverged: non-finite loss ({value}) at epoch {epoch}, step {in_epoch} "
                    f"of the epoch (global step {bad_step}); {self.desc}, batch size {cfg.batch_size}, "
                    f"lr {self.last_lr:.4g}",
                    arch=self.desc, batch_size=cfg.batch_size, epoch=epoch, step=bad_step)
            loss_sum += sum(values)
            loss_count += len(values)
            self.elapsed = elapsed
            if bar is not None and pending:
                dt = time.perf_counter() - t0
                bar.set_postfix(loss=f"{loss_sum / max(1, loss_count):.4f}",
                                img_s=f"{epoch_images * self.world / max(dt, 1e-9):.0f}", refresh=False)
                bar.update(pending)
            pending = 0

        for images, labels in self.train_loader:
            lr = self.schedule(self.step, self._progress(self.elapsed))
            for group in self.opt.param_groups:
                group["lr"] = lr
            self.last_lr = lr
            losses[pending] = self._train_step(images, labels)
            pending += 1
            n = int(labels.shape[0])
            self.step += 1
            epoch_steps += 1
            epoch_images += n
            self.images_seen += n * self.world
            self.where.step = self.step
            stop = self._counted_stop()
            if pending == self.check_every or stop:
                check()
                if not stop and self.budget.seconds is not None and self.elapsed >= self.budget.seconds:
                    stop = "seconds"
            if stop:
                self.stopped_by = stop
                break
        if pending:
            check()
        if not self.stopped_by and self.budget.seconds is not None and self.elapsed >= self.budget.seconds:
            self.stopped_by = "seconds"
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        seconds = time.perf_counter() - t0
        self.train_seconds += seconds
        self.elapsed = self.train_seconds

        if self.info is not None:  # mean training loss over all processes
            totals = torch.tensor([loss_sum, float(loss_count)], dtype=torch.float64, device=self.dev)
            dist.all_reduce(totals)
            loss_sum, loss_count = totals.tolist()
        train_loss = loss_sum / loss_count if loss_count else float("nan")

        self.where.phase = "evaluating"
        t1 = time.perf_counter()
        val_acc, val_loss = self._validate()
        eval_seconds = time.perf_counter() - t1
        stats = EpochStats(
            epoch=epoch, train_loss=train_loss, val_acc=val_acc, val_loss=val_loss,
            images_per_s=epoch_images * self.world / seconds if seconds > 0 else float("nan"),
            seconds=seconds, lr=self.last_lr, images_seen=self.images_seen, eval_seconds=eval_seconds)
        if bar is not None:
            # No refresh: close() writes the final state, and a refresh here would write it twice.
            bar.set_postfix(loss=f"{train_loss:.4f}", val_acc=f"{val_acc:.4f}",
                            img_s=f"{stats.images_per_s:.0f}", refresh=False)
        return stats

    def _eval_module(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.net

    def _bar(self, desc: str) -> str | None:
        return desc if self.progress and self.is_main else None

    def _validate(self) -> tuple[float, float]:
        module = self._eval_module()
        if self.info is not None:
            ddp.broadcast_buffers(module)
        acc, loss, _ = evaluate_loader(module, self.val_loader, self.dev, self.amp, self.info,
                                       progress=self._bar(f"epoch {self.epoch} validation"),
                                       flip=self.config.eval_flip)
        return acc, loss

    def _test(self) -> tuple[float, float]:
        """The test accuracy and loss of the final weights: the stored ones when this
        checkpoint's weights were already tested on this test split, else measured (and
        stored in the checkpoint)."""
        assert self.data.test is not None
        key = self.data.test.fingerprint()
        stored = self.test_result
        if stored is not None and stored["step"] == self.step and stored["data"] == key:
            return float(stored["acc"]), float(stored["loss"])
        self.where.phase = "testing"
        module = self._eval_module()
        if self.info is not None:
            ddp.broadcast_buffers(module)
        loader = DeviceLoader(split_shard(self.data.test, self.rank, self.world), self.eval_batch,
                              device=self.dev, train=False, resolution=self.resolution,
                              channels_last=self.channels_last)
        acc, loss, _ = evaluate_loader(module, loader, self.dev, self.amp, self.info,
                                       progress=self._bar("test"), flip=self.config.eval_flip)
        self.test_result = {"acc": acc, "loss": loss, "step": self.step, "data": key}
        self._save()
        return acc, loss

    def _result(self) -> Result:
        test_acc = test_loss = None
        if self.evaluate_test:
            test_acc, test_loss = self._test()
        self._eval_module().eval()
        if self.history:
            last = self.history[-1]
            best = max(self.history, key=lambda h: (h.val_acc, -h.epoch))
            val_acc, val_loss, best_acc, best_epoch = last.val_acc, last.val_loss, best.val_acc, best.epoch
        else:  # pragma: no cover - a budget always allows one step
            val_acc = val_loss = best_acc = float("nan")
            best_epoch = 0
        return Result(
            val_acc=val_acc, best_val_acc=best_acc, best_epoch=best_epoch, val_loss=val_loss,
            epochs=self.step / self.steps_per_epoch, steps=self.step,
            seconds=self.prior_seconds + (time.perf_counter() - self.t_start),
            train_seconds=self.train_seconds, images_seen=self.images_seen,
            images_per_s=self.images_seen / self.train_seconds if self.train_seconds > 0 else 0.0,
            history=list(self.history), ema=self.ema is not None, device=str(self.dev),
            stopped_by=self.stopped_by, test_acc=test_acc, test_loss=test_loss,
            params=self.params, macs=self.macs, arch=self.arch.to_string() if self.arch else None,
            resolution=self.resolution, batch_size=self.config.batch_size, lr=self.lr,
            weight_decay=self.weight_decay, amp=self.amp, world_size=self.world,
            val_acc_se=_standard_error(val_acc, len(self.data.val)), val_size=len(self.data.val),
            recipe=self.config.recipe,
            config={**self.config.to_dict(), "lr": self.lr, "weight_decay": self.weight_decay,
                    "amp": self.amp},
            compiled=self.compiled, resumed_epoch=self.resumed_epoch,
            model=self._eval_module() if self.keep_model else None,
        )
