"""Analytic cost model: MACs, parameters and activation memory from an `Arch` alone.

Conventions
-----------
* ``macs`` counts multiply-accumulates of convolutions (including the squeeze-excite
  1x1 convolutions and projection shortcuts) and the classifier, one image at
  ``resolution``: for a convolution,
  ``out_h * out_w * out_channels * in_channels / groups * k * k``; for the classifier,
  ``in_features * out_features``. Biases, batch norm, activations, pooling, the SE gate
  multiply, max-pooling and residual additions are not counted. This is the convention behind the
  EfficientNet paper's "FLOPS" (B0: 0.39 B) and equals what ``thop`` attributes to the
  model's ``Conv2d`` and ``Linear`` modules. FLOPs in the strict sense are ``2 * macs``.
* ``params`` counts every trainable parameter, batch-norm affine parameters included,
  exactly as ``sum(p.numel() for p in build_model(arch).parameters())``.
* Activation memory is an estimate in bytes for ``batch`` images at ``bytes_per_element``
  (4 for fp32): ``peak_activation_bytes`` is the largest set of tensors alive at once in
  inference (a layer's input, its output and a held residual input);
  ``train_activation_bytes`` is the sum of the tensors kept for the backward pass (the
  outputs of each convolution, normalisation and activation, SE gates and residual sums).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from functools import lru_cache

from .arch import Arch
from .plan import (ACTIVATE_AFTER_ADD, Conv, Layer, MaxPool, SqueezeExcite, block_plan, head_plan,
                   shortcut_plan, stem_layers)

__all__ = ["Cost", "PartCost", "cost", "measure_latency"]


@dataclass(frozen=True)
class PartCost:
    """Cost of one part of the network (``stem``, ``s1`` ... ``sN``, ``head``).

    ``stage_index`` is the 0-based index into ``arch.stages`` for a stage, None for the
    stem and the head (which includes the classifier).
    """

    name: str
    macs: int
    params: int
    out_channels: int
    out_resolution: int
    stage_index: int | None = None


@dataclass(frozen=True)
class Cost:
    """Analytic cost of an architecture (see the module docstring for conventions)."""

    macs: int
    params: int
    peak_activation_bytes: int
    train_activation_bytes: int
    resolution: int
    num_classes: int
    parts: tuple[PartCost, ...]

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6


def _side(size: int, stride: int) -> int:
    return -(-size // stride)


class _Counter:
    """Walks plan layers, tracking the feature-map side and the running totals."""

    def __init__(self, side: int, channels: int):
        self.side = side
        self.channels = channels
        self.macs = 0
        self.params = 0
        self.peak = 0  # elements
        self.saved = 0  # elements

    def layer(self, layer: Layer, held: int = 0) -> None:
        in_elems = self.side * self.side * self.channels
        if isinstance(layer, Conv):
            side = _side(self.side, layer.stride)
            per_position = layer.in_channels // layer.groups * layer.kernel * layer.kernel
            out_elems = side * side * layer.out_channels
            self.macs += out_elems * per_position
            self.params += layer.out_channels * per_position + 2 * layer.out_channels
            self.saved += out_elems * (3 if layer.act else 2)
            self.side, self.channels = side, layer.out_channels
        elif isinstance(layer, SqueezeExcite):
            c, s = layer.channels, layer.squeeze
            self.macs += 2 * c * s
            self.params += 2 * c * s + c + s
            out_elems = in_elems
            self.saved += out_elems + 2 * (c + s)
        elif isinstance(layer, MaxPool):
            side = _side(self.side, layer.stride)
            out_elems = side * side * self.channels
            self.saved += out_elems
            self.side = side
        else:  # pragma: no cover - guarded by PLANS
            raise TypeError(f"cannot cost plan layer {layer!r}")
        self.peak = max(self.peak, in_elems + out_elems + held)


@lru_cache(maxsize=4096)
def _cost(arch: Arch, num_classes: int, resolution: int) -> tuple[int, int, int, int, tuple[PartCost, ...]]:
    counter = _Counter(resolution, 3)
    parts: list[PartCost] = []

    def close(name: str, macs0: int, params0: int, stage_index: int | None = None) -> None:
        parts.append(PartCost(name, counter.macs - macs0, counter.params - params0,
                              counter.channels, counter.side, stage_index))

    for layer in stem_layers(arch):
        counter.layer(layer)
    close("stem", 0, 0)
    marks = (counter.macs, counter.params)
    blocks = list(arch.blocks())
    for i, spec in enumerate(blocks):
        in_side, in_channels = counter.side, counter.channels
        block_in = in_side * in_side * in_channels
        projection = shortcut_plan(spec)
        held = block_in if spec.residual or projection is not None else 0
        for layer in block_plan(spec):
            counter.layer(layer, held)
        if projection is not None:
            # The shortcut reads the block input while the branch output is held; it
            # ends at the branch's side and channels, so the walk continues from there.
            out_side, out_channels = counter.side, counter.channels
            counter.side, counter.channels = in_side, in_channels
            counter.layer(projection, out_side * out_side * out_channels)
            assert (counter.side, counter.channels) == (out_side, out_channels)
        if spec.residual or projection is not None:
            # The sum, and the activation applied to it where the kind does so (ResNet).
            extra = 2 if spec.block in ACTIVATE_AFTER_ADD else 1
            counter.saved += extra * counter.side * counter.side * counter.channels
        last_of_stage = i + 1 == len(blocks) or blocks[i + 1].stage_index != spec.stage_index
        if last_of_stage:
            close(f"s{spec.stage_index + 1}", *marks, stage_index=spec.stage_index)
            marks = (counter.macs, counter.params)
    head = head_plan(arch)
    if head is not None:
        counter.layer(head)
    head_features = arch.num_features
    counter.macs += head_features * num_classes
    counter.params += head_features * num_classes + num_classes
    close("head", *marks)
    return counter.macs, counter.params, counter.peak, counter.saved, tuple(parts)


def cost(arch: Arch, num_classes: int = 1000, resolution: int | None = None,
         batch: int = 1, bytes_per_element: int = 4) -> Cost:
    """Cost of ``arch`` computed from its description, without building a model.

    Args:
        arch: the architecture.
        num_classes: classifier outputs (changes the classifier's MACs and params).
        resolution: input side in pixels; ``arch.resolution`` when omitted.
        batch: images per batch, for the activation-memory estimates only (MACs are
            per image).
        bytes_per_element: 4 for fp32, 2 for fp16/bf16 activations.
    """
    side = arch.resolution if resolution is None else int(resolution)
    if side < 1:
        raise ValueError(f"resolution must be positive, got {resolution!r}")
    macs, params, peak, saved, parts = _cost(arch, int(num_classes), side)
    scale = batch * bytes_per_element
    return Cost(macs=macs, params=params, peak_activation_bytes=peak * scale,
                train_activation_bytes=saved * scale, resolution=side,
                num_classes=int(num_classes), parts=parts)


def measure_latency(arch: Arch, device: str = "cpu", batch: int = 1, *, warmup: int = 3,
                    repeats: int = 10, resolution: int | None = None,
                    channels_last: bool = True, num_classes: int = 1000) -> float:
    """Median wall-clock seconds of one inference forward pass of ``batch`` images.

    The model is built on ``device`` in eval mode; ``warmup`` passes run first and are
    discarded, then ``repeats`` timed passes (synchronised on CUDA) give the median.
    """
    import torch

    from .builder import build_model

    side = arch.resolution if resolution is None else resolution
    dev = torch.device(device)
    model = build_model(arch, num_classes=num_classes).to(dev).eval()
    x = torch.randn(batch, 3, side, side, device=dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    times = []
    with torch.inference_mode():
        for _ in range(max(0, warmup)):
            model(x)
        sync()
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            model(x)
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times)
