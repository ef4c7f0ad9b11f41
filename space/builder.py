"""`build_model(arch)`: one decode path from an `Arch` to a PyTorch module."""

from __future__ import annotations

import math

import torch
from torch import nn

from .arch import Arch
from .blocks import Block, ConvBNAct, layer_module
from .plan import block_plan, head_plan, stem_plan

__all__ = ["EfficientNet", "build_model"]


class EfficientNet(nn.Module):
    """Stem, stages of blocks, head conv, global average pool, dropout, linear classifier.

    ``forward_features`` returns the head's feature map (N, head_channels, h, w).
    Works at any input resolution and in either memory format.
    """

    def __init__(self, arch: Arch, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        bn = {"bn_eps": arch.bn_eps, "bn_momentum": arch.bn_momentum}
        self.stem = ConvBNAct(stem_plan(arch, in_channels), arch.activation, **bn)
        stages: list[list[nn.Module]] = [[] for _ in arch.stages]
        for spec in arch.blocks():
            layers = nn.Sequential(*(layer_module(l, arch.activation, **bn) for l in block_plan(spec)))
            stages[spec.stage_index].append(Block(layers, spec.residual, spec.drop_path))
        self.stages = nn.Sequential(*(nn.Sequential(*blocks) for blocks in stages))
        self.head = ConvBNAct(head_plan(arch), arch.activation, **bn)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(arch.dropout)
        self.classifier = nn.Linear(arch.head_channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                # The reference bound 1/sqrt(out_features) is fine for 1000 classes but makes
                # a 10-class head's initial logits ~10x larger (cross entropy ~3.6 instead of
                # ln 10 = 2.3), which costs proxy runs their first epochs. 1/sqrt(in_features)
                # is nearly the reference at ImageNet size (0.028 vs 0.032 for B0) and keeps
                # initial logits O(1) for any class count.
                bound = 1.0 / math.sqrt(m.in_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.dropout(x))


def build_model(arch: Arch, num_classes: int = 1000, in_channels: int = 3) -> EfficientNet:
    """Build the network an `Arch` describes.

    Args:
        arch: the description; ``arch.dropout`` and ``arch.drop_path`` set the
            regularisers, ``arch.resolution`` is not needed (any input size works).
        num_classes: classifier outputs.
        in_channels: image channels.

    Batch-norm epsilon and momentum come from ``arch.bn_eps`` / ``arch.bn_momentum``
    (the one place they are set; ``arch.replace(bn_eps=1e-3)`` changes them).
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return EfficientNet(arch, num_classes, in_channels)
