"""Data-parallel training with torch.distributed: two CPU processes on the gloo backend."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from nas import distributed
from nas.data import DeviceLoader, Splits, synthetic
from space import Arch, build_model

ARCH = "net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c16_l1_se0.25-fmb_k3_s2_e2_c24_l1-head_c32"
WORLD = 2
TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data() -> Splits:
    # 31 validation images: shards of 16 and 15, so the reduced accuracy must weigh them.
    return Splits(train=synthetic(64, 4, 16, seed=0), val=synthetic(31, 4, 16, seed=1))


def _env(rank: int, world: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    """One torchrun-like process: the environment says where the group is, and `train`
    initialises it (gloo on CPU)."""
    _env(rank, world, port)
    from nas.train import Budget, TrainConfig, train

    out_dir = Path(out)
    torch.manual_seed(100 + rank)  # different initial weights on each rank: DDP copies rank 0's
    model = build_model(Arch.from_string(ARCH), num_classes=4)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    config = TrainConfig(batch_size=32, optimizer="sgd", lr=0.1, warmup_epochs=0, ema_decay=None,
                         device="cpu")
    try:
        result = train(model, _data(), Budget(images=32), config, checkpoint=out_dir / "ck.pt")
        assert dist.is_initialized() and dist.get_world_size() == world
        torch.save({
            "initial": initial,
            "final": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "val_acc": result.val_acc,
            "val_loss": result.val_loss,
            "steps": result.steps,
            "images_seen": result.images_seen,
            "world_size": result.world_size,
        }, out_dir / f"rank{rank}.pt")
    finally:
        distributed.cleanup()


def test_setup_is_a_no_op_without_a_world(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.setup("cpu") is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.setup("cpu") is None
    assert not dist.is_initialized()


needs_gloo = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
needs_fork = pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs the fork start method")


def _launch(worker, tmp_path: Path) -> None:
    """Run ``worker(rank, WORLD, port, out)`` in WORLD processes and wait for all of them.

    Fork rather than spawn: the children inherit the imported torch (and torch._dynamo,
    which every optimiser imports), which saves most of the test's time."""
    import torch._dynamo  # noqa: F401

    context = mp.start_processes(worker, args=(WORLD, _free_port(), str(tmp_path)), nprocs=WORLD,
                                 join=False, start_method="fork")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"distributed training did not finish within {TIMEOUT_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()


@needs_gloo
@needs_fork
def test_two_process_gloo_step_keeps_ranks_identical(tmp_path):
    _launch(_worker, tmp_path)

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for r in ranks:
        assert r["steps"] == 1 and r["images_seen"] == 32 and r["world_size"] == WORLD
    # The ranks started from different weights; DDP made them rank 0's and kept them equal.
    assert any(not torch.equal(ranks[0]["initial"][k], ranks[1]["initial"][k]) for k in ranks[0]["initial"])
    final0, final1 = ranks[0]["final"], ranks[1]["final"]
    for key in final0:
        assert torch.equal(final0[key], final1[key]), key
    params = [k for k in final0 if k.endswith("weight") and final0[k].is_floating_point()]
    assert any(not torch.equal(final0[k], ranks[0]["initial"][k]) for k in params)

    # Validation accuracy is reduced over the two shards: the same on both ranks and equal
    # to an unsharded evaluation of the final weights.
    assert ranks[0]["val_acc"] == ranks[1]["val_acc"]
    model = build_model(Arch.from_string(ARCH), num_classes=4).eval()
    model.load_state_dict(final0)
    val = _data().val
    with torch.no_grad():  # synthetic images carry no statistics: inputs are (x / 255 - 0.5) / 0.5
        logits = model((val.images.float() / 255 - 0.5) / 0.5).double()
    acc = (logits.argmax(1) == val.labels).double().mean().item()
    loss = F.cross_entropy(logits, val.labels).item()
    assert ranks[0]["val_acc"] == pytest.approx(acc, abs=1e-12)
    assert ranks[0]["val_loss"] == pytest.approx(loss, rel=1e-5)

    # Only rank 0 wrote the checkpoint, atomically.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt", "rank0.pt", "rank1.pt"]
    state = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert state["meta"]["world_size"] == WORLD and state["step"] == 1


@contextlib.contextmanager
def _counting_collectives():
    """Within the block, every torch.distributed collective appends its name to the list."""
    names: list[str] = []
    real = {name: getattr(dist, name) for name in (
        "broadcast", "all_reduce", "reduce", "all_gather", "all_gather_into_tensor", "scatter",
        "broadcast_object_list", "_broadcast_coalesced") if hasattr(dist, name)}

    def counting(name, fn):
        def counted(*args, **kwargs):
            names.append(name)
            return fn(*args, **kwargs)
        return counted

    for name, fn in real.items():
        setattr(dist, name, counting(name, fn))
    try:
        yield names
    finally:
        for name, fn in real.items():
            setattr(dist, name, fn)


class _BatchNormFirst(nn.Module):
    """Batch norm straight on the input images: a rank's running mean then depends on its
    own batches alone, which the test can recompute."""

    num_classes = 4

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.bn(x))


BN_CONFIG = dict(batch_size=32, optimizer="sgd", lr=0.1, warmup_epochs=0, ema_decay=None, augment=False,
                 device="cpu")


def _bn_worker(rank: int, world: int, port: int, out: str) -> None:
    """Train one epoch; record the buffers just before and after the broadcast that precedes
    the evaluation, and the collectives that broadcast issued."""
    _env(rank, world, port)
    from nas.train import Budget, TrainConfig, train

    real_broadcast_buffers = distributed.broadcast_buffers
    seen: list[dict] = []

    def spy(module: nn.Module, src: int = 0) -> None:
        before = {k: v.clone() for k, v in module.state_dict().items()}
        with _counting_collectives() as names:
            real_broadcast_buffers(module, src)
        seen.append({"before": before, "after": {k: v.clone() for k, v in module.state_dict().items()},
                     "collectives": names})

    distributed.broadcast_buffers = spy
    try:
        train(_BatchNormFirst(), _data(), Budget(epochs=1), TrainConfig(**BN_CONFIG))
        torch.save(seen, Path(out) / f"bn{rank}.pt")
    finally:
        distributed.cleanup()


@needs_gloo
@needs_fork
def test_batch_norm_statistics_stay_per_rank_until_one_broadcast_before_evaluation(tmp_path):
    _launch(_bn_worker, tmp_path)
    seen = [torch.load(tmp_path / f"bn{r}.pt", weights_only=True) for r in range(WORLD)]
    assert [len(s) for s in seen] == [1, 1]  # one evaluation, one broadcast before it

    # Each rank's running mean before the broadcast is the momentum-0.1 average of the
    # channel means of its own shard's batches (64 images, 16 per rank and step: 2 steps).
    data = _data()
    for rank in range(WORLD):
        loader = DeviceLoader(data.train, 16, device="cpu", train=True, seed=0, shard=(rank, WORLD),
                              pad=0, flip=False, resolution=16, channels_last=True)
        loader.set_epoch(0)
        running = torch.zeros(3, dtype=torch.float64)
        steps = 0
        for images, _ in loader:
            running = 0.9 * running + 0.1 * images.double().mean(dim=(0, 2, 3))
            steps += 1
        assert steps == 2
        before = seen[rank][0]["before"]["bn.running_mean"].double()
        assert torch.allclose(before, running, atol=1e-6), (rank, before, running)
    assert not torch.allclose(seen[0][0]["before"]["bn.running_mean"], seen[1][0]["before"]["bn.running_mean"])

    # After the broadcast every rank holds rank 0's statistics, sent in one collective.
    for rank in range(WORLD):
        assert seen[rank][0]["collectives"] == ["broadcast"]
        for key, value in seen[0][0]["before"].items():
            assert torch.equal(seen[rank][0]["after"][key], value), (rank, key)


def _buffers_worker(rank: int, world: int, port: int, out: str) -> None:
    _env(rank, world, port)
    dist.init_process_group("gloo", init_method="env://")
    try:
        results = []
        for src in (0, 1):
            module = _MixedBuffers(rank)
            with _counting_collectives() as names:
                distributed.broadcast_buffers(module, src)
            results.append({"buffers": dict(module.named_buffers()), "collectives": names})
        torch.save(results, Path(out) / f"buffers{rank}.pt")
    finally:
        distributed.cleanup()


class _MixedBuffers(nn.Module):
    """Buffers of several dtypes, shapes and memory layouts whose values say which rank made them."""

    def __init__(self, rank: int):
        super().__init__()
        self.register_buffer("f32", torch.tensor([1.5, -2.0, 3.25]) * (rank + 1))
        self.register_buffer("f64", torch.arange(4, dtype=torch.float64).reshape(2, 2) + 10 * rank)
        self.register_buffer("count", torch.tensor(7 + rank))
        self.register_buffer("mask", torch.tensor([True, False, bool(rank), True]))
        self.register_buffer("bf16", torch.tensor([0.5, 0.25], dtype=torch.bfloat16) * (rank + 2))
        self.register_buffer("nhwc", (torch.arange(24.0).reshape(1, 2, 3, 4) + 100 * rank).to(
            memory_format=torch.channels_last))


@needs_gloo
@needs_fork
def test_broadcast_buffers_is_one_collective_for_buffers_of_any_dtype(tmp_path):
    _launch(_buffers_worker, tmp_path)
    got = [torch.load(tmp_path / f"buffers{r}.pt", weights_only=True) for r in range(WORLD)]
    for src in (0, 1):
        expected = dict(_MixedBuffers(src).named_buffers())
        for rank in range(WORLD):
            assert got[rank][src]["collectives"] == ["broadcast"], (rank, src)
            buffers = got[rank][src]["buffers"]
            for key, value in expected.items():
                assert buffers[key].dtype == value.dtype and torch.equal(buffers[key], value), (rank, src, key)
