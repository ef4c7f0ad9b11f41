"""The two named recipes, the adaptive batch size, low-noise validation and flip TTA."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from conftest import TINY
from nas.data import ImageData, Splits, make_splits, synthetic
from nas.train import Budget, TrainConfig, evaluate, train
from nas.train.config import adaptive_batch_size
from space import Arch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rows(images: torch.Tensor) -> set[bytes]:
    return {img.numpy().tobytes() for img in images}


# --- recipes ---------------------------------------------------------------------------


def test_recipes_set_their_documented_settings():
    proxy, paper = TrainConfig.proxy(), TrainConfig.paper()
    assert (proxy.recipe, proxy.optimizer, proxy.schedule, proxy.ema_decay, proxy.batch_size) == (
        "proxy", "sgd", "linear", None, None)
    assert proxy.arch_regularisers is False and paper.arch_regularisers is True
    assert (paper.recipe, paper.optimizer, paper.schedule, paper.ema_decay, paper.batch_size) == (
        "paper", "rmsprop", "cosine", 0.9999, 128)
    assert TrainConfig() == paper  # the class defaults are the paper's recipe
    # peak learning rates, by hand: sgd 0.2 x 64 / 256, rmsprop 0.016 x 128 / 256
    assert proxy.resolved_lr(64) == pytest.approx(0.05)
    assert paper.resolved_lr() == pytest.approx(0.008)
    assert TrainConfig.proxy(lr=0.3, batch_size=16).resolved_lr() == 0.3
    assert TrainConfig.for_recipe("proxy", seed=3).seed == 3
    with pytest.raises(ValueError, match="unknown recipe 'fast'"):
        TrainConfig.for_recipe("fast")


@pytest.mark.parametrize("num_train, batch", [
    (50_000, 256),   # 195 steps an epoch
    (16_384, 256),   # exactly 64 steps
    (16_383, 128),
    (4_500, 64),     # 70 steps
    (1_400, 32),     # 43 steps: below 64 even at the smallest batch
    (10, 32),
])
def test_adaptive_batch_size_keeps_epochs_long_enough(num_train, batch):
    assert adaptive_batch_size(num_train) == batch


def test_linear_schedule_decays_to_zero_after_warm_up():
    from nas.train.optim import Schedule

    s = Schedule("linear", 1.0, warmup_steps=4, steps_per_epoch=10)
    # warm-up (step + 1) / 4 times (1 - progress)
    assert s(0, 0.0) == pytest.approx(0.25)
    assert s(3, 0.3) == pytest.approx(0.7)
    assert s(9, 0.75) == pytest.approx(0.25)
    assert s(20, 1.0) == 0.0


def test_proxy_recipe_learns_within_a_few_dozen_steps_where_the_paper_recipe_does_not():
    """Synthetic 4-class data a tiny net can learn: 48 steps of the proxy recipe are far
    above chance (0.25). The paper's recipe (RMSProp at its small per-step rate, EMA 0.9999,
    batch 128 = 2 steps an epoch) does not learn in the same budget."""
    arch = Arch.from_string(TINY)
    data = Splits(train=synthetic(512, 4, 16, seed=0), val=synthetic(256, 4, 16, seed=1))
    proxy = train(arch, data, Budget(epochs=3), TrainConfig.proxy())
    assert proxy.batch_size == 32 and proxy.steps == 3 * (512 // 32)
    assert proxy.recipe == "proxy" and proxy.ema is False
    assert proxy.val_acc > 0.6
    paper = train(arch, data, Budget(epochs=3), TrainConfig.paper())
    assert paper.val_acc < proxy.val_acc - 0.2


def test_proxy_trains_without_the_architectures_regularisers():
    """Dropout 0.9 before the classifier would halve the logits' signal in every step; the
    proxy recipe leaves it out of the trained model (the description is unchanged)."""
    arch = Arch.from_string(TINY).replace(dropout=0.9, drop_path=0.5)
    data = Splits(train=synthetic(128, 4, 16, seed=0), val=synthetic(64, 4, 16, seed=1))
    off = train(arch, data, Budget(epochs=1), TrainConfig.proxy(), keep_model=True)
    dropouts = [m.p for m in off.model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [0.0] and off.arch == arch.to_string()
    on = train(arch, data, Budget(epochs=1), TrainConfig.proxy(arch_regularisers=True), keep_model=True)
    assert [m.p for m in on.model.modules() if isinstance(m, nn.Dropout)] == [0.9]


def test_result_reports_the_recipe_every_resolved_setting_and_the_standard_error():
    arch = Arch.from_string(TINY)
    data = Splits(train=synthetic(256, 4, 16, seed=0), val=synthetic(100, 4, 16, seed=1))
    r = train(arch, data, Budget(epochs=1), TrainConfig.proxy())
    assert r.config["recipe"] == "proxy" and r.config["batch_size"] == 32
    assert r.config["lr"] == pytest.approx(0.025)  # 0.2 x 32 / 256
    assert r.config["schedule"] == "linear" and r.config["amp"] == "off"
    assert json.loads(json.dumps(r.to_dict()))["config"]["optimizer"] == "sgd"
    assert r.val_size == 100
    assert r.val_acc_se == pytest.approx(math.sqrt(r.val_acc * (1 - r.val_acc) / 100))


# --- validation split ------------------------------------------------------------------


def test_val_size_is_the_same_for_every_subset_and_seed_and_never_overlaps():
    a = make_splits("synthetic:600:4:16", val_size=100, subset=50, split_seed=1, with_test=True)
    b = make_splits("synthetic:600:4:16", val_size=100, subset=400, split_seed=1)
    c = make_splits("synthetic:600:4:16", val_size=100, split_seed=1)
    assert len(a.val) == len(b.val) == len(c.val) == 100
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.val.images, c.val.images)
    assert len(a.train) == 50 and len(b.train) == 400 and len(c.train) == 500
    assert _rows(a.val.images).isdisjoint(_rows(c.train.images))  # c.train holds every other image
    assert _rows(a.val.images).isdisjoint(_rows(a.test.images))
    assert _rows(a.train.images) <= _rows(c.train.images) and _rows(b.train.images) <= _rows(c.train.images)
    # training seeds do not enter the split at all: it is the same object of data either way
    other = make_splits("synthetic:600:4:16", val_size=100, subset=50, split_seed=2)
    assert not torch.equal(other.val.images, a.val.images)


def test_default_val_size_is_2500_or_a_fifth_of_small_data():
    assert len(make_splits("synthetic:20000:10:4").val) == 2500
    assert len(make_splits("synthetic:1500:10:4").val) == 300


# --- test-time augmentation -------------------------------------------------------------


class _LeftRight(nn.Module):
    """Logits: the mean brightness of the left half and of the right half of the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[3] // 2
        return torch.stack([x[..., :half].mean((1, 2, 3)), x[..., half:].mean((1, 2, 3))], 1)


def test_flip_tta_averages_the_mirror_images_logits():
    """Label = the brighter side. Plain evaluation is always right; with flip TTA both logits
    become equal, argmax takes class 0, and the accuracy is the share of class-0 images."""
    n, side = 40, 8
    images = torch.zeros(n, 3, side, side, dtype=torch.uint8)
    labels = torch.tensor([i % 4 == 0 for i in range(n)], dtype=torch.int64)  # 10 of 40 are class 1
    for i in range(n):
        if labels[i] == 0:
            images[i, :, :, : side // 2] = 200
        else:
            images[i, :, :, side // 2:] = 200
    data = ImageData(images, labels, ("left", "right"))
    model = _LeftRight()
    plain, _ = evaluate(model, data, batch_size=16)
    flipped, _ = evaluate(model, data, batch_size=16, flip=True)
    assert plain == 1.0
    assert flipped == pytest.approx(30 / 40)
