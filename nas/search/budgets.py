"""Costs of a candidate (computed or measured) and the hard budgets on them.

* `candidate_costs`: MACs and params from the analytic cost model, latency and training
  step time measured when the study needs them.
* `over_budget`: the reasons a candidate breaks the hard budgets, and the Optuna
  constraint values (``cost / limit - 1``: <= 0 feasible, > 0 the relative excess).
* `smallest_reachable`: the least MACs or params of any architecture in a space, so that
  a budget no architecture meets is refused before the study starts; `largest_reachable`,
  the greatest, the hypervolume's reference point.

Units as in `nas.search.objectives`: MACs per image, a parameter count, seconds.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from space.cost import cost as arch_cost

from .objectives import cost_kind, format_quantity

__all__ = ["candidate_costs", "over_budget", "constraint_values", "smallest_reachable", "largest_reachable",
           "measure_step_time"]


def measure_step_time(arch, batch_size: int, num_classes: int, device: str | None = None, *,
                      warmup: int = 2, repeats: int = 5, channels_last: bool | None = None) -> float:
    """Median wall-clock seconds of one SGD training step (forward, backward, update) of
    ``batch_size`` random images at the architecture's resolution, in fp32.

    The same micro-benchmark times the candidates and the reference of `V2Reward`, so the
    ratio S / S_ref compares like with like (the trainer's own epoch times include data
    augmentation and evaluation, and a reference would need a whole training).
    """
    import torch

    from space.builder import build_model

    from ..train.device import resolve_device

    dev = resolve_device(device)
    model = build_model(arch, num_classes=num_classes).to(dev).train()
    x = torch.randn(batch_size, 3, arch.resolution, arch.resolution, device=dev)
    y = torch.randint(0, num_classes, (batch_size,), device=dev)
    if channels_last if channels_last is not None else dev.type in ("cuda", "cpu"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(max(0, warmup)):
        step()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def candidate_costs(arch, num_classes: int, kinds: set[str], *, device: str | None = None,
                    batch_size: int | None = None, num_threads: int | None = None) -> dict[str, float]:
    """``macs`` and ``params`` always (analytic), plus ``latency`` (one image, median of 10
    forward passes, `space.cost.measure_latency`) and ``step_time`` (`measure_step_time`)
    when in ``kinds``, measured with ``num_threads`` CPU threads (the training's: on a
    busy 2-core machine torch's default of 2 threads made a 5 ms step take 0.9 s)."""
    c = arch_cost(arch, num_classes=num_classes)
    out: dict[str, float] = {"macs": c.macs, "params": c.params}
    if not kinds & {"latency", "step_time"}:
        return out
    import torch

    from ..train.device import resolve_device

    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        if "latency" in kinds:
            from space.cost import measure_latency

            out["latency"] = measure_latency(arch, device=str(resolve_device(device)), num_classes=num_classes)
        if "step_time" in kinds:
            out["step_time"] = measure_step_time(arch, batch_size or 32, num_classes, device)
    finally:
        torch.set_num_threads(previous)
    return out


def constraint_values(costs: Mapping[str, float], budgets: Mapping[str, float]) -> dict[str, float]:
    """Optuna constraint per budget, ``cost / limit - 1``: <= 0 within the budget."""
    return {f"max_{kind}": costs[kind] / limit - 1.0 for kind, limit in budgets.items() if kind in costs}


def over_budget(costs: Mapping[str, float], budgets: Mapping[str, float]) -> list[str]:
    """One phrase per broken budget, e.g. ``"41.2M MACs over the 30M MACs budget"``."""
    return [f"{format_quantity(costs[k], k)} over the {format_quantity(limit, k)} budget"
            for k, limit in budgets.items() if k in costs and costs[k] > limit]


def smallest_reachable(space, kind: str, num_classes: int) -> tuple[float, Any]:
    """The least ``kind`` (``"macs"`` or ``"params"``) of any architecture of ``space`` at
    ``num_classes``, and one architecture that has it (see `_extreme_reachable`)."""
    return _extreme_reachable(space, kind, num_classes, largest=False)


def largest_reachable(space, kind: str, num_classes: int) -> tuple[float, Any]:
    """The greatest ``kind`` of any architecture of ``space``, and one that has it: the
    hypervolume's reference point of a study without a hard budget on that cost."""
    return _extreme_reachable(space, kind, num_classes, largest=True)


def _extreme_reachable(space, kind: str, num_classes: int, *, largest: bool) -> tuple[float, Any]:
    """The least (or greatest) ``kind`` of any architecture of ``space``.

    Why this is exact without enumerating the space: stages decode independently and, for
    either block kind, a stage's MACs and params never decrease when its kernel, expansion,
    SE ratio, layers or channels grow, nor when the previous stage's channels (its input)
    grow; stem, strides, resolution and head are fixed. So the smallest choice of every
    such field is optimal whatever the blocks are, and given those, each stage's block kind
    only changes that stage's own term. Coordinate descent over the parameters (each set in
    turn to its cheapest choice, other parameters held, repeated until nothing changes)
    therefore ends at the global minimum; tests check it against brute force. The same
    argument, mirrored, makes coordinate ascent end at the global maximum.
    """
    cost_kind(kind)
    if kind not in ("macs", "params"):
        raise ValueError(f"the reachable extremes are computed for macs or params, not {kind!r}")
    dims = space.dimensions()

    def value(params: Mapping[str, Any]) -> int:
        return getattr(arch_cost(space.decode(params), num_classes=num_classes), kind)

    params = {name: choices[0] for name, choices in dims.items()}
    best = value(params)
    for _ in range(len(dims) + 1):  # each pass that changes something improves the cost
        changed = False
        for name, choices in dims.items():
            for choice in choices:
                if choice == params[name]:
                    continue
                trial = {**params, name: choice}
                v = value(trial)
                if (v > best) if largest else (v < best):
                    best, params, changed = v, trial, True
        if not changed:
            break
    return float(best), space.decode(params)
