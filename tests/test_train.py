"""The candidate trainer (`nas.train`) on CPU with tiny networks and synthetic data."""

from __future__ import annotations

import gc
import importlib
import math
import re
import warnings

import pytest
import torch
from torch import nn

import nas.train as nas_train
from nas.data import ImageData, Splits, synthetic
from nas.train import (
    Budget,
    Diverged,
    EpochStats,
    OutOfMemory,
    RMSpropTF,
    TrainConfig,
    TrainingFailed,
    evaluate,
    train,
)
from nas.train.device import resolve_amp
from nas.train.loop import _Run
from nas.train.optim import EMA, Schedule
from space import Arch, build_model, cost
from space.errors import UserError

ARCH = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l1-head_c32"
# With a residual block (stochastic depth) and dropout: random streams beyond the data.
REGULARISED = "net_r16_silu_dp0.2-stem_c8_s1-mb_k3_s2_e2_c16_l2_se0.25-fmb_k3_s2_e2_c24_l1-head_c32_do0.2"
# 128 training images in batches of 32: 4 steps per epoch.
FAST = TrainConfig(batch_size=32, optimizer="sgd", warmup_epochs=0.0, ema_decay=None)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread, and OpenMP threads that spin against
    other processes on a 2-core machine make them 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def arch() -> Arch:
    return Arch.from_string(ARCH)


@pytest.fixture(scope="module")
def regularised() -> Arch:
    arch = Arch.from_string(REGULARISED)
    assert any(b.residual and b.drop_path > 0 for b in arch.blocks()) and arch.dropout > 0
    return arch


@pytest.fixture(scope="module")
def small() -> Splits:
    return Splits(train=synthetic(128, 4, 16, seed=0), val=synthetic(64, 4, 16, seed=1),
                  test=synthetic(64, 4, 16, seed=2))


@pytest.fixture(scope="module")
def learnable() -> Splits:
    return Splits(train=synthetic(384, 4, 16, seed=0), val=synthetic(128, 4, 16, seed=1))


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@torch.no_grad()
def _hand_accuracy_and_loss(model: nn.Module, data: ImageData) -> tuple[float, float]:
    """Top-1 accuracy and mean cross entropy computed directly: synthetic images carry no
    statistics, so the evaluation input is (x / 255 - 0.5) / 0.5 at the stored size."""
    model.eval()
    x = (data.images.float() / 255 - 0.5) / 0.5
    logits = model(x)
    acc = (logits.argmax(1) == data.labels).double().mean().item()
    loss = torch.nn.functional.cross_entropy(logits.double(), data.labels).item()
    return acc, loss


def _history(result) -> list[tuple]:
    return [(h.epoch, h.train_loss, h.val_acc, h.val_loss, h.lr, h.images_seen) for h in result.history]


# --- descriptions ------------------------------------------------------------------------


def test_budget_validation():
    assert Budget(epochs=2).epochs == 2.0
    assert Budget(images=10, seconds=1.5).images == 10
    with pytest.raises(UserError, match="at least one"):
        Budget()
    for bad in ({"epochs": 0}, {"epochs": -1}, {"seconds": math.inf}, {"seconds": float("nan")},
                {"images": 0}, {"images": 2.5}, {"epochs": True}, {"images": "10"}):
        with pytest.raises(ValueError):
            Budget(**bad)


def test_config_defaults_and_validation():
    c = TrainConfig()
    assert c.resolved_lr() == pytest.approx(0.016 * 128 / 256)
    assert c.resolved_weight_decay() == 1e-5
    sgd = TrainConfig(optimizer="sgd", batch_size=512)
    assert sgd.resolved_lr() == pytest.approx(0.4) and sgd.resolved_weight_decay() == 5e-5  # 0.2 x 512 / 256
    assert TrainConfig(lr=0.5).resolved_lr() == 0.5
    for bad in ({"optimizer": "adam"}, {"schedule": "step"}, {"amp": "fp8"}, {"batch_size": 0},
                {"lr": 0.0}, {"ema_decay": 1.0}, {"label_smoothing": 1.0}, {"grad_clip": -1.0},
                {"warmup_epochs": -1}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_schedules():
    cos = Schedule("cosine", 1.0, warmup_steps=0, steps_per_epoch=10)
    assert cos(0, 0.0) == pytest.approx(1.0)
    assert cos(50, 0.5) == pytest.approx(0.5)
    assert cos(99, 1.0) == pytest.approx(0.0, abs=1e-12)
    warm = Schedule("cosine", 1.0, warmup_steps=4, steps_per_epoch=10)
    assert [warm(i, 0.0) for i in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    exp = Schedule("exponential", 1.0, warmup_steps=0, steps_per_epoch=10)
    assert exp(23, 0.9) == 1.0  # 2.3 epochs: no decay yet
    assert exp(24, 0.0) == pytest.approx(0.97)  # 2.4 epochs: one decay
    assert exp(49, 0.0) == pytest.approx(0.97**2)


def _tf_rmsprop_reference(p: float, grads: list[float], lrs: list[float], *, rho: float,
                          momentum: float, eps: float, weight_decay: float) -> float:
    """TensorFlow's RMSProp (as timm's ``RMSpropTF`` implements it) on one scalar weight,
    written in TensorFlow's order of operations: the mean square starts at 1 and moves
    towards g**2 by (1 - rho), epsilon sits under the square root, the learning rate is
    folded into the momentum accumulator (so a learning rate that changes between steps
    scales only the new contribution), and the L2 penalty is added to the gradient."""
    mean_square, accumulator = 1.0, 0.0
    for raw, lr in zip(grads, lrs):
        g = raw + weight_decay * p
        mean_square += (1.0 - rho) * (g * g - mean_square)
        accumulator = momentum * accumulator + lr * g / math.sqrt(mean_square + eps)
        p -= accumulator
    return p


def test_rmsprop_tf_first_steps_by_hand():
    # p = 1, raw gradient 2.5, weight decay 0.5: g = 2.5 + 0.5 * 1 = 3.
    # ms = 1 + 0.1 * (9 - 1) = 1.8; sqrt(ms + eps) = sqrt(2.25) = 1.5;
    # mom = 0.1 * 3 / 1.5 = 0.2; p = 1 - 0.2 = 0.8.
    p = nn.Parameter(torch.tensor([1.0]))
    opt = RMSpropTF([p], lr=0.1, alpha=0.9, eps=0.45, momentum=0.9, weight_decay=0.5)
    p.grad = torch.tensor([2.5])
    opt.step()
    assert p.item() == pytest.approx(0.8, rel=1e-6)
    # Raw gradient -0.4 at p = 0.8: g = -0.4 + 0.5 * 0.8 = 0, so only momentum moves p:
    # mom = 0.9 * 0.2 = 0.18; p = 0.8 - 0.18 = 0.62 (and ms decays to 0.9 * 1.8 = 1.62).
    p.grad = torch.tensor([-0.4])
    opt.step()
    assert p.item() == pytest.approx(0.62, rel=1e-6)
    assert opt.state[p]["square_avg"].item() == pytest.approx(1.62, rel=1e-6)


@pytest.mark.parametrize("momentum, weight_decay", [(0.9, 0.01), (0.0, 0.0)])
def test_rmsprop_tf_matches_tensorflow_rmsprop(momentum, weight_decay):
    start = [0.5, -1.25, 2.0, 0.0]
    grads = [[0.3, -2.0, 0.01, 5.0], [-0.7, 1.5, 0.0, -4.0], [0.2, 0.2, -3.0, 0.5],
             [1.0, -0.05, 0.6, 0.0]]
    lrs = [0.016, 0.008, 0.012, 0.002]  # as a schedule changes it step by step
    settings = dict(rho=0.9, momentum=momentum, eps=1e-3, weight_decay=weight_decay)
    p = nn.Parameter(torch.tensor(start, dtype=torch.float64))
    opt = RMSpropTF([p], lr=0.016, alpha=0.9, eps=1e-3, momentum=momentum, weight_decay=weight_decay)
    for step, lr in zip(grads, lrs):
        opt.param_groups[0]["lr"] = lr
        p.grad = torch.tensor(step, dtype=torch.float64)
        opt.step()
    expected = [_tf_rmsprop_reference(p0, [g[i] for g in grads], lrs, **settings) for i, p0 in enumerate(start)]
    assert p.detach().tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_ema_warm_up_decay_and_buffers():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(net, decay=0.5)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net[1].num_batches_tracked += 3
    ema.update()  # n = 0: decay min(0.5, 1 / 10) = 0.1
    assert torch.allclose(ema.module[0].weight, 0.1 * start + 0.9 * (start + 1))
    assert int(ema.module[1].num_batches_tracked) == 3  # integer buffers are copied
    assert ema.updates == 1 and ema.decay_now() == pytest.approx(2 / 11)
    ema.updates = 1000
    assert ema.decay_now() == 0.5
    assert not any(p.requires_grad for p in ema.module.parameters())


# --- training ----------------------------------------------------------------------------


def test_training_learns_well_above_chance(arch, learnable):
    config = TrainConfig(batch_size=32, optimizer="sgd", lr=0.05, warmup_epochs=0, ema_decay=None)
    result = train(arch, learnable, Budget(epochs=3), config, keep_model=True)
    assert result.val_acc > 0.6, result.history  # chance is 0.25
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert len(result.history) == 3 and [h.epoch for h in result.history] == [1, 2, 3]
    assert result.epochs == 3.0 and result.steps == 36 and result.stopped_by == "epochs"
    assert result.images_seen == 3 * 384
    assert result.best_val_acc == max(h.val_acc for h in result.history) >= result.val_acc
    assert result.params == cost(arch, num_classes=4).params == sum(
        p.numel() for p in result.model.parameters())
    assert result.macs == cost(arch, num_classes=4).macs
    assert result.arch == arch.to_string() and result.resolution == 16
    assert result.device == "cpu" and result.amp == "off" and result.world_size == 1
    assert not result.ema and result.test_acc is None
    assert result.lr == 0.05 and result.weight_decay == 5e-5
    assert result.images_per_s > 0 and result.seconds >= result.train_seconds > 0
    assert all(isinstance(h, EpochStats) and 0 <= h.val_acc <= 1 for h in result.history)
    assert result.history[-1].lr < result.history[0].lr  # cosine decays
    # The reported accuracy is the returned model's, computed directly; `evaluate` agrees.
    acc, loss = _hand_accuracy_and_loss(result.model, learnable.val)
    assert result.val_acc == pytest.approx(acc, abs=1e-12) and result.val_loss == pytest.approx(loss, rel=1e-5)
    assert evaluate(result.model, learnable.val) == pytest.approx((acc, loss), rel=1e-5)
    assert result.compiled is False
    assert result.to_dict()["history"][0]["epoch"] == 1


def test_budget_in_epochs_images_and_seconds(arch, small):
    half = train(arch, small, Budget(epochs=1.5), FAST)
    assert half.steps == 6 and half.epochs == 1.5 and half.stopped_by == "epochs"
    assert [h.images_seen for h in half.history] == [128, 192]

    by_images = train(arch, small, Budget(images=70), FAST)  # rounded up to whole batches
    assert by_images.steps == 3 and by_images.images_seen == 96 and by_images.stopped_by == "images"
    assert len(by_images.history) == 1

    by_time = train(arch, small, Budget(seconds=1e-3, epochs=10), FAST)
    assert by_time.steps == 1 and by_time.stopped_by == "seconds"

    first = train(arch, small, Budget(epochs=1, images=10_000), FAST)
    assert first.stopped_by == "epochs" and first.steps == 4


def test_same_seed_same_run_and_other_seed_differs(regularised, small):
    arch = regularised
    config = TrainConfig(batch_size=32, ema_decay=0.999)  # rmsprop, EMA, warm-up, augmentation
    a = train(arch, small, Budget(epochs=2), config, keep_model=True)
    b = train(arch, small, Budget(epochs=2), config, keep_model=True)
    assert _history(a) == _history(b)
    _assert_same_weights(a.model, b.model)
    c = train(arch, small, Budget(epochs=2), TrainConfig(batch_size=32, ema_decay=0.999, seed=1),
              keep_model=True)
    assert any(not torch.equal(x, y) for x, y in zip(_weights(a.model).values(), _weights(c.model).values()))


class _Stop(Exception):
    pass


def _interrupt_after(epoch: int):
    def callback(stats: EpochStats) -> None:
        if stats.epoch == epoch:
            raise _Stop(f"interrupted after epoch {epoch}")
    return callback


def test_resume_continues_to_the_uninterrupted_result(regularised, small, tmp_path):
    arch = regularised  # dropout and stochastic depth must draw the same after a resume
    config = TrainConfig(batch_size=32, ema_decay=0.99)  # rmsprop state, EMA and schedule resume
    straight = train(arch, small, Budget(epochs=2), config, keep_model=True)

    ckpt = tmp_path / "run" / "checkpoint.pt"
    with pytest.raises(_Stop):  # e.g. a killed job: the epoch-1 checkpoint is on disk
        train(arch, small, Budget(epochs=2), config, checkpoint=ckpt, callback=_interrupt_after(1))
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    resumed = train(arch, small, Budget(epochs=2), config, checkpoint=ckpt, keep_model=True)
    assert resumed.resumed_epoch == 1 and resumed.ema
    assert _history(resumed) == _history(straight)
    assert resumed.val_acc == straight.val_acc and resumed.steps == straight.steps
    _assert_same_weights(resumed.model, straight.model)

    # A finished run resumes to its result without training.
    again = train(arch, small, Budget(epochs=2), config, checkpoint=ckpt)
    assert again.resumed_epoch == 2 and _history(again) == _history(straight)

    # resume=False starts afresh; a different run's checkpoint is refused.
    fresh = train(arch, small, Budget(epochs=1), config, checkpoint=ckpt, resume=False)
    assert fresh.resumed_epoch == 0 and len(fresh.history) == 1
    with pytest.raises(ValueError, match="batch_size"):
        train(arch, small, Budget(epochs=2), TrainConfig(batch_size=16), checkpoint=ckpt)


def test_checkpoint_is_atomic_and_loads_with_weights_only(arch, small, tmp_path, monkeypatch):
    ckpt = tmp_path / "ck.pt"
    config = TrainConfig(batch_size=32, ema_decay=0.99)
    train(arch, small, Budget(epochs=2), config, checkpoint=ckpt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]  # no temporary file left
    state = torch.load(ckpt, weights_only=True)
    for key in ("model", "optimizer", "schedule", "ema", "scaler", "epoch", "history", "train_seconds"):
        assert key in state
    assert state["epoch"] == 2 and len(state["history"]) == 2
    model = build_model(arch, num_classes=4)
    model.load_state_dict(state["ema"])
    model.load_state_dict(state["model"])

    # A write that fails half-way leaves the previous checkpoint whole and no debris.
    before = ckpt.read_bytes()
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        train(arch, small, Budget(epochs=1), config, checkpoint=ckpt, resume=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_callback_true_stops_and_exceptions_propagate(arch, small, tmp_path):
    seen: list[int] = []

    def stop_at_two(stats: EpochStats) -> bool:
        seen.append(stats.epoch)
        return stats.epoch == 2

    ckpt = tmp_path / "c.pt"
    result = train(arch, small, Budget(epochs=5), FAST, callback=stop_at_two, checkpoint=ckpt)
    assert seen == [1, 2] and len(result.history) == 2 and result.stopped_by == "callback"
    # The stop is remembered: resuming does not train further.
    again = train(arch, small, Budget(epochs=5), FAST, checkpoint=ckpt)
    assert again.stopped_by == "callback" and again.steps == result.steps

    optuna = pytest.importorskip("optuna")

    def prune(stats: EpochStats) -> None:
        raise optuna.TrialPruned(f"pruned at epoch {stats.epoch}")

    with pytest.raises(optuna.TrialPruned, match="epoch 1"):
        train(arch, small, Budget(epochs=3), FAST, callback=prune)


class _NaNAfter(nn.Module):
    """A network whose output becomes NaN after ``after`` training forward passes."""

    def __init__(self, arch: Arch, after: int):
        super().__init__()
        self.net = build_model(arch, num_classes=4)
        self.arch = arch
        self.after = after
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                out = out * float("nan")
        return out


def test_nan_loss_raises_diverged_naming_the_epoch(arch, small, tmp_path):
    model = _NaNAfter(arch, after=5)  # 4 steps per epoch: step 6 is epoch 2, step 2
    with pytest.raises(Diverged, match="epoch 2") as info:
        train(model, small, Budget(epochs=3), FAST, checkpoint=tmp_path / "d.pt")
    err = info.value
    assert isinstance(err, TrainingFailed) and err.epoch == 2 and err.step == 6
    assert "step 2 of the epoch" in str(err) and arch.to_string() in str(err)
    assert torch.load(tmp_path / "d.pt", weights_only=True)["epoch"] == 1  # the last good epoch


def test_losses_read_every_few_steps_as_on_gpus(arch, small, monkeypatch):
    """On accelerators the losses are read every few steps; the bad step is still exact
    and the statistics are those of reading every step."""
    every_step = train(arch, small, Budget(epochs=2), FAST)
    monkeypatch.setattr(nas_train.loop, "_CPU_CHECK_EVERY", 3)
    windowed = train(arch, small, Budget(epochs=2), FAST)
    assert _history(windowed) == _history(every_step)
    with pytest.raises(Diverged, match="epoch 2, step 2 of the epoch") as info:
        train(_NaNAfter(arch, after=5), small, Budget(epochs=3), FAST)  # reads after 3, 4, 7
    assert info.value.step == 6
    with pytest.raises(Diverged, match="epoch 2, step 1 of the epoch") as info:
        train(_NaNAfter(arch, after=4), small, Budget(epochs=3), FAST)  # bad: 5, 6 and 7
    assert info.value.step == 5


def test_huge_learning_rate_diverges(arch, small):
    with pytest.raises(Diverged, match="epoch 1"):
        train(arch, small, Budget(epochs=2), TrainConfig(batch_size=32, optimizer="sgd", lr=1e30,
                                                         warmup_epochs=0, ema_decay=None))


class _OOMAt(nn.Module):
    def __init__(self, arch: Arch):
        super().__init__()
        self.net = build_model(arch, num_classes=4)
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_is_mapped_after_releasing_memory(arch, small, monkeypatch):
    emptied: list[bool] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine...
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    config = TrainConfig(batch_size=64, ema_decay=0.99, device="cpu")  # ...training on the CPU
    with pytest.raises(OutOfMemory) as info:
        train(_OOMAt(arch), small, Budget(epochs=1), config)
    text = str(info.value)
    assert "batch size 64" in text and arch.to_string() in text and "epoch 1" in text
    assert isinstance(info.value, TrainingFailed) and info.value.batch_size == 64
    # The original exception and the run (model copies, optimiser, loaders) are gone
    # before the cache is emptied.
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert emptied == [True]
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is _Run]


def test_progress_bar_on_stderr_and_test_split(arch, small, capsys):
    result = train(arch, small, Budget(epochs=1), FAST, progress=True, evaluate_test=True, keep_model=True)
    err = capsys.readouterr().err
    assert "epoch 1" in err and "img_s" in err
    acc, loss = _hand_accuracy_and_loss(result.model, small.test)
    assert result.test_acc == pytest.approx(acc, abs=1e-12)
    assert result.test_loss == pytest.approx(loss, rel=1e-5)
    with pytest.raises(ValueError, match="test"):
        train(arch, Splits(small.train, small.val), Budget(epochs=1), FAST, evaluate_test=True)


def test_progress_bar_prints_each_epochs_final_line_once(arch, small, capsys):
    """tqdm writes '\\r'-separated states; each epoch's final state (the one with val_acc)
    must be written once, not once by the last refresh and again by close()."""
    train(arch, small, Budget(epochs=2), FAST, progress=True)
    segments = re.split(r"[\r\n]", capsys.readouterr().err)
    for epoch in (1, 2):
        finals = [seg for seg in segments if seg.startswith(f"epoch {epoch}:") and "val_acc=" in seg]
        assert len(finals) == 1, finals
        assert "100%" in finals[0] and "4/4" in finals[0]


def test_long_evaluation_passes_show_a_progress_bar(arch, small, capsys, monkeypatch):
    train(arch, small, Budget(epochs=1), FAST, progress=True, evaluate_test=True)
    quick = capsys.readouterr().err
    assert "validation" not in quick and "test:" not in quick  # under 2 s: no bar
    # The module (`nas.train.evaluate` the attribute is the function), as if every pass were slow:
    monkeypatch.setattr(importlib.import_module("nas.train.evaluate"), "EVAL_BAR_DELAY_S", 0.0)
    train(arch, small, Budget(epochs=1), FAST, progress=True, evaluate_test=True)
    slow = re.split(r"[\r\n]", capsys.readouterr().err)
    # One batch each (64 images, evaluation batch 64).
    assert any(seg.startswith("epoch 1 validation:") and "/1 " in seg and "batch" in seg for seg in slow)
    assert any(seg.startswith("test:") and "/1 " in seg and "batch" in seg for seg in slow)


class _AutocastSpy(nn.Module):
    """Records the autocast state each training forward pass runs under."""

    def __init__(self, arch: Arch):
        super().__init__()
        self.net = build_model(arch, num_classes=4)
        self.arch = arch
        self.seen: set[tuple[bool, torch.dtype]] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.add((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return self.net(x)


def test_module_input_bf16_and_argument_errors(arch, small):
    model = _AutocastSpy(arch)
    before = _weights(model)
    config = TrainConfig(batch_size=32, amp="bf16", ema_decay=None, grad_clip=1.0, optimizer="sgd",
                         num_threads=2)
    result = train(model, small, Budget(images=64), config)
    assert result.amp == "bf16" and result.steps == 2 and math.isfinite(result.val_loss)
    assert model.seen == {(True, torch.bfloat16)}  # really ran under bf16 autocast
    assert torch.get_num_threads() == 1  # restored
    assert any(not torch.equal(before[k], v) for k, v in _weights(model).items())  # trained in place
    with pytest.raises(ValueError, match="fp16"):
        train(arch, small, Budget(epochs=1), TrainConfig(amp="fp16", device="cpu"))
    with pytest.raises(ValueError, match="data.val is empty"):
        train(arch, Splits(small.train, small.val.subset([])), Budget(epochs=1), FAST)
    with pytest.raises(ValueError, match="outputs"):
        train(build_model(arch, num_classes=3), small, Budget(epochs=1), FAST)
    with pytest.raises(TypeError):
        train("not an arch", small, Budget(epochs=1), FAST)


_CUDA = torch.device("cuda", 0)  # only a description here: nothing runs on it


def test_bf16_on_a_gpu_without_native_bf16_falls_back_to_fp16(monkeypatch):
    monkeypatch.setattr(nas_train.device, "native_bf16", lambda dev: False)  # e.g. a V100 or T4
    with pytest.warns(UserWarning) as record:
        assert resolve_amp("bf16", _CUDA) == "fp16"
    assert len(record) == 1
    text = str(record[0].message)
    assert "bf16" in text and "fp16" in text and "\n" not in text and text.count(". ") == 0
    assert resolve_amp("auto", _CUDA) == "fp16"
    assert resolve_amp("fp16", _CUDA) == "fp16"
    assert resolve_amp("off", _CUDA) == "off"

    monkeypatch.setattr(nas_train.device, "native_bf16", lambda dev: True)  # Ampere or newer
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_amp("bf16", _CUDA) == "bf16"
        assert resolve_amp("auto", _CUDA) == "bf16"

    cpu = torch.device("cpu")
    assert [resolve_amp(m, cpu) for m in ("bf16", "auto", "off")] == ["bf16", "off", "off"]
    with pytest.raises(UserError, match="fp16"):
        resolve_amp("fp16", cpu)


def test_the_run_uses_and_reports_the_resolved_precision(arch, small, monkeypatch):
    """Whatever `resolve_amp` decides is what autocast runs, what gets a gradient scaler and
    what `Result.amp` says (here: the fp16 fallback, forced on the CPU)."""
    asked: list[str] = []
    scalers: list[object] = []
    real_scaler = nas_train.loop.grad_scaler

    def resolve(amp: str, dev: torch.device) -> str:
        asked.append(amp)
        return "fp16"

    def spy_scaler(dev: torch.device):
        scalers.append(real_scaler(dev))
        return scalers[-1]

    monkeypatch.setattr(nas_train.loop, "resolve_amp", resolve)
    monkeypatch.setattr(nas_train.loop, "grad_scaler", spy_scaler)
    model = _AutocastSpy(arch)
    result = train(model, small, Budget(images=64), TrainConfig(batch_size=32, amp="bf16", ema_decay=None))
    assert asked == ["bf16"] and result.amp == "fp16"
    assert model.seen == {(True, torch.float16)}
    assert len(scalers) == 1 and scalers[0].get_scale() > 0


def test_budget_smaller_than_one_step_warns_and_trains_one_step(arch, small, recwarn):
    with pytest.warns(UserWarning, match=r"images=10 is less than one batch of 32 images"):
        by_images = train(arch, small, Budget(images=10), FAST)
    assert by_images.steps == 1 and by_images.images_seen == 32
    # 4 steps per epoch: one step is 0.25 epochs.
    with pytest.warns(UserWarning, match=r"epochs=0.1 is less than one step \(0.25 epochs\)"):
        by_epochs = train(arch, small, Budget(epochs=0.1), FAST)
    assert by_epochs.steps == 1 and by_epochs.epochs == 0.25
    recwarn.clear()
    train(arch, small, Budget(images=32, epochs=0.25), FAST)  # exactly one step: nothing to say
    assert not [w for w in recwarn if "less than one" in str(w.message)]


def test_non_square_images_train_at_their_height_the_documented_side(arch):
    """`ImageData.side` is the stored height; a model without an `arch` trains at it,
    as `Splits.image_size` says (the trainer used to read the width)."""
    def tall(n: int, seed: int) -> ImageData:
        square = synthetic(n, 4, 12, seed=seed)
        return ImageData(square.images[:, :, :8, :].contiguous(), square.labels, square.classes)

    data = Splits(train=tall(64, 0), val=tall(32, 1))
    assert data.train.images.shape[2:] == (8, 12)  # H = 8, W = 12
    assert data.image_size == data.train.side == 8
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
    result = train(net, data, Budget(epochs=1), FAST)
    assert result.resolution == 8
