"""``TrainConfig(compile=...)``: every architecture trained in a long-lived process really
runs compiled, and `Result.compiled` says whether it did."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch import nn

from nas.data import Splits, synthetic
from nas.train import Budget, TrainConfig, train
from space import Arch, build_model
from space.errors import UserError

# A torch.compile backend that only counts the graphs dynamo hands it and runs them as
# they are: dynamo's capture (and its per-code-object cache and recompile limit) is the
# real one, without paying for a compiler.
COUNTING = "effnas_test_counting"
GRAPHS: list[int] = []


def _counting_backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
    GRAPHS.append(len(gm.graph.nodes))
    return gm.forward


if COUNTING not in torch._dynamo.list_backends(exclude_tags=()):
    torch._dynamo.register_backend(_counting_backend, name=COUNTING)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> Splits:
    return Splits(train=synthetic(64, 4, 16, seed=0), val=synthetic(32, 4, 16, seed=1))


def _arch(i: int) -> Arch:
    """Architectures that differ in their parameter shapes: each needs its own graph."""
    return Arch.from_string(f"net_r16_silu-stem_c8_s1-mb_k3_s2_e2_c{16 + 8 * (i % 3)}_l1_se0.25-head_c{32 + 8 * i}")


def _config(compile) -> TrainConfig:
    return TrainConfig(batch_size=32, optimizer="sgd", warmup_epochs=0.0, ema_decay=None, compile=compile)


def test_compile_survives_more_architectures_than_the_recompile_limit(data):
    """Every model `build_model` makes shares one ``forward`` code object, and dynamo gives
    up on a code object (running it eagerly, silently) after ``recompile_limit`` graphs.
    With the limit at 1 the second architecture would run eagerly without the reset."""
    with torch._dynamo.config.patch(recompile_limit=1):
        for i in range(3):
            before = len(GRAPHS)
            result = train(_arch(i), data, Budget(images=32), _config(COUNTING))
            assert len(GRAPHS) > before, f"architecture {i} ran eagerly"
            assert result.compiled, i


def test_compiled_says_false_when_nothing_was_compiled(data):
    arch = _arch(0)
    plain = train(arch, data, Budget(images=32), _config(False))
    assert plain.compiled is False and plain.to_dict()["compiled"] is False

    class Opaque(nn.Module):
        """A forward dynamo is told to leave alone: compiling it produces no graph."""

        def __init__(self):
            super().__init__()
            self.net = build_model(arch, num_classes=4)
            self.arch = arch

        @torch.compiler.disable
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    before = len(GRAPHS)
    with pytest.warns(UserWarning, match="torch.compile produced no graph"):
        opaque = train(Opaque(), data, Budget(images=32), _config(COUNTING))
    assert len(GRAPHS) == before and opaque.compiled is False


def test_compile_accepts_true_false_or_a_backend_name():
    assert TrainConfig(compile="aot_eager").compile == "aot_eager"
    assert TrainConfig(compile=True).compile is True
    with pytest.raises(UserError, match="no_such_backend"):
        TrainConfig(compile="no_such_backend")
    for bad in ("", 1, None):
        with pytest.raises(UserError, match="TrainConfig.compile"):
            TrainConfig(compile=bad)


@pytest.mark.slow
def test_ten_architectures_in_one_process_all_run_compiled_with_inductor(data, monkeypatch):
    """The default backend (inductor, which compiles C++ on the CPU): the 9th and 10th
    architectures ran eagerly before `train` reset dynamo. Inductor's entry point is
    counted independently of `Result.compiled`."""
    import torch._inductor.compile_fx as compile_fx_module

    calls: list[int] = []
    real = compile_fx_module.compile_fx

    def counting_compile_fx(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(compile_fx_module, "compile_fx", counting_compile_fx)
    compiled = []
    for i in range(10):
        before = len(calls)
        result = train(_arch(i), data, Budget(images=32), _config(True))
        compiled.append((i, result.compiled, len(calls) > before))
    assert compiled == [(i, True, True) for i in range(10)]
