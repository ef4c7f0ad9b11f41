"""Data-parallel training with torch.distributed: two CPU processes on the gloo backend."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nas import distributed
from nas.data import Splits, synthetic
from nas.train import evaluate
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


def _worker(rank: int, world: int, port: int, out: str) -> None:
    """One torchrun-like process: the environment says where the group is, and `train`
    initialises it (gloo on CPU)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
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


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs the fork start method")
def test_two_process_gloo_step_keeps_ranks_identical(tmp_path):
    # Fork rather than spawn: the children inherit the imported torch (and torch._dynamo,
    # which every optimiser imports), which saves most of the test's time.
    import torch._dynamo  # noqa: F401

    context = mp.start_processes(_worker, args=(WORLD, _free_port(), str(tmp_path)), nprocs=WORLD,
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
    model = build_model(Arch.from_string(ARCH), num_classes=4)
    model.load_state_dict(final0)
    acc, loss = evaluate(model, _data().val)
    assert acc == pytest.approx(ranks[0]["val_acc"]) and loss == pytest.approx(ranks[0]["val_loss"])

    # Only rank 0 wrote the checkpoint, atomically.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt", "rank0.pt", "rank1.pt"]
    state = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert state["world_size"] == WORLD and state["step"] == 1
