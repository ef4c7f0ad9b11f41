"""`build_model` / `create_model`: one decode path from an `Arch` to a PyTorch module.

The model follows timm's conventions where they apply: `create_model(name,
num_classes=...)`, ``num_features``, ``forward_features`` / ``forward_head``,
``reset_classifier`` and ``get_classifier``. No pretrained weights ship with it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .arch import Arch
from .blocks import Block, ConvBNAct, activation_layer, layer_module
from .errors import UserError
from .plan import ACTIVATE_AFTER_ADD, block_plan, head_plan, shortcut_plan, stem_layers

__all__ = ["EfficientNet", "build_model", "create_model"]


def _check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(
            f"num_classes must be a non-negative integer (0: no classifier), got {num_classes!r}"
        )
    return num_classes


class EfficientNet(nn.Module):
    """Stem, stages of blocks, head conv, global average pool, dropout, linear classifier.

    The name is historical: any `Arch` builds, MobileNetV1/V2 and ResNet included. The
    stem is conv-BN-act with a max-pool appended when ``arch.stem_pool``; ``head`` is
    ``nn.Identity`` when the arch has no head conv.

    Attributes:
        arch: the description it was built from.
        num_features: channels of the head's output, the classifier's input
            (``arch.num_features``: the head conv's channels, or the last stage's).
        num_classes: classifier outputs; 0 means no classifier (`forward` returns the
            pooled ``(N, num_features)`` features).

    ``forward(x) == forward_head(forward_features(x))``. Works at any input resolution
    and in either memory format.
    """

    def __init__(self, arch: Arch, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        self.arch = arch
        self.num_classes = _check_num_classes(num_classes)
        self.num_features = arch.num_features
        bn = {"bn_eps": arch.bn_eps, "bn_momentum": arch.bn_momentum}
        stem_conv, *stem_rest = stem_layers(arch, in_channels)
        self.stem = ConvBNAct(stem_conv, arch.activation, **bn)
        # The pool joins the stem's Sequential (stem.3) so that stem.0 stays the conv and
        # models without a pool keep their module names.
        for layer in stem_rest:
            self.stem.append(layer_module(layer, arch.activation, **bn))
        stages: list[list[nn.Module]] = [[] for _ in arch.stages]
        for spec in arch.blocks():
            layers = nn.Sequential(*(layer_module(l, arch.activation, **bn) for l in block_plan(spec)))
            projection = shortcut_plan(spec)
            shortcut = None if projection is None else layer_module(projection, arch.activation, **bn)
            post_act = activation_layer(arch.activation) if spec.block in ACTIVATE_AFTER_ADD else None
            stages[spec.stage_index].append(
                Block(layers, spec.residual, spec.drop_path, shortcut=shortcut, post_act=post_act))
        self.stages = nn.Sequential(*(nn.Sequential(*blocks) for blocks in stages))
        head = head_plan(arch)
        self.head = nn.Identity() if head is None else ConvBNAct(head, arch.activation, **bn)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(arch.dropout)
        self.classifier = self._classifier(num_classes)
        self._init_weights()

    def _classifier(self, num_classes: int, **factory: object) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        layer = nn.Linear(self.num_features, num_classes, **factory)
        _init_linear(layer)
        return layer

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
                _init_linear(m)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's feature map, ``(N, num_features, h, w)``."""
        return self.head(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout and classify a `forward_features` map; with ``pre_logits`` stop
        before the classifier and return the ``(N, num_features)`` pooled features."""
        x = self.dropout(self.pool(x).flatten(1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier for ``num_classes`` outputs (0: none, `forward` returns the
        pooled features), initialised like the builder's, on the model's device and dtype.

        ``global_pool`` exists for timm's signature; only ``"avg"`` (or None) is possible.
        """
        if global_pool not in (None, "avg"):
            raise ValueError(f"only average pooling is available, got global_pool={global_pool!r}")
        num_classes = _check_num_classes(num_classes)
        ref = self.stem[0].weight
        self.classifier = self._classifier(num_classes, device=ref.device, dtype=ref.dtype)
        self.num_classes = num_classes


def _init_linear(m: nn.Linear) -> None:
    # The reference bound 1/sqrt(out_features) is fine for 1000 classes but makes a
    # 10-class head's initial logits ~10x larger (cross entropy ~3.6 instead of ln 10 =
    # 2.3), which costs proxy runs their first epochs. 1/sqrt(in_features) is nearly the
    # reference at ImageNet size (0.028 vs 0.032 for B0) and keeps initial logits O(1) for
    # any class count.
    bound = 1.0 / math.sqrt(m.in_features)
    nn.init.uniform_(m.weight, -bound, bound)
    nn.init.zeros_(m.bias)


def _as_arch(arch: Arch | str) -> Arch:
    if isinstance(arch, Arch):
        return arch
    if isinstance(arch, str):
        from .presets import resolve_arch

        return resolve_arch(arch)
    raise TypeError(f"build_model needs an Arch, a preset name or an arch string, got {type(arch).__name__}")


def build_model(arch: Arch | str, num_classes: int = 1000, in_channels: int = 3) -> EfficientNet:
    """Build the network an `Arch` describes.

    Args:
        arch: the description, or a preset name, arch string or arch JSON file path
            (anything `space.presets.resolve_arch` reads). ``arch.dropout`` and
            ``arch.drop_path`` set the regularisers; ``arch.resolution`` is not needed
            (any input size works).
        num_classes: classifier outputs; 0 builds no classifier (timm's convention).
        in_channels: image channels.

    Batch-norm epsilon and momentum come from ``arch.bn_eps`` / ``arch.bn_momentum``
    (the one place they are set; ``arch.replace(bn_eps=1e-3)`` changes them).
    """
    return EfficientNet(_as_arch(arch), _check_num_classes(num_classes), in_channels)


def create_model(model_name: str | Arch, pretrained: bool = False, num_classes: int = 1000,
                 in_chans: int = 3, drop_rate: float | None = None,
                 drop_path_rate: float | None = None) -> EfficientNet:
    """timm-style constructor: ``create_model("efficientnet_b0", num_classes=10)``.

    Args:
        model_name: a preset name (see ``space list``), an arch string, an arch JSON
            file path, or an `Arch`.
        pretrained: must be False; no pretrained weights ship with effnas.
        num_classes: classifier outputs (0: none).
        in_chans: image channels.
        drop_rate, drop_path_rate: replace the description's dropout before the
            classifier and maximum stochastic-depth rate when given.
    """
    if pretrained:
        raise UserError("no pretrained weights ship with effnas; use pretrained=False and train "
                        "the model (e.g. with nas train)")
    arch = _as_arch(model_name)
    changes = {k: v for k, v in (("dropout", drop_rate), ("drop_path", drop_path_rate)) if v is not None}
    if changes:
        arch = arch.replace(**changes)
    return build_model(arch, num_classes=num_classes, in_channels=in_chans)
