"""Named architectures: EfficientNet B0..B7, EfficientNetV2-S/M/L, a CIFAR-sized B0, and
the other baselines the EfficientNet paper scales (Table 3): MobileNetV1, MobileNetV2 and
ResNet-50.

B1..B7 are B0 grown by `Arch.scale` with the reference multipliers (`B_SERIES`), so the
whole family exists from a plain checkout, with no installation step and no plugin.
Each preset carries its metadata (what it is, where its numbers come from) beside the
factory that makes its `Arch`. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from .arch import BLOCK_KINDS, Arch, ArchError, Stage

__all__ = ["B_SERIES", "BScale", "Preset", "register_preset", "get_preset", "preset_names",
           "ResolvedArch", "resolve", "resolve_arch", "efficientnet_b0", "efficientnet_b",
           "mobilenet_v1", "mobilenet_v2", "resnet50"]


@dataclass(frozen=True)
class Preset:
    """A named architecture: a factory and what to know about it."""

    name: str
    factory: Callable[[], Arch]
    description: str
    meta: dict = field(default_factory=dict)

    def arch(self) -> Arch:
        return self.factory()


_REGISTRY: dict[str, Preset] = {}


def register_preset(name: str, factory: Callable[[], Arch], description: str, **meta) -> None:
    """Add a named architecture (a later registration under the same name replaces it)."""
    _REGISTRY[name] = Preset(name, factory, description, dict(meta))


def preset_names() -> list[str]:
    return sorted(_REGISTRY)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; KeyError with a did-you-mean and the known names when
    there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        pass
    guess = _closest(name, preset_names())
    hint = f"did you mean {guess!r}? " if guess else ""
    raise KeyError(f"unknown preset {name!r}; {hint}known presets: {', '.join(preset_names())}")


def _normalise(name: str) -> str:
    return re.sub(r"[\s_-]+", "_", str(name).strip().lower())


def _closest(name: str, names: list[str]) -> str | None:
    """The known name ``name`` most likely meant: the same up to case and '-' / '_' /
    space, else difflib's closest match (ratio >= 0.75), else None."""
    key = _normalise(name)
    if key in names:
        return key
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    return close[0] if close else None


def _mb(k: int, s: int, e: float, c: int, l: int, se: float = 0.25) -> Stage:
    return Stage("mbconv", k, s, e, c, l, se)


def _fmb(k: int, s: int, e: float, c: int, l: int) -> Stage:
    return Stage("fused_mbconv", k, s, e, c, l, 0.0)


def efficientnet_b0() -> Arch:
    """EfficientNet-B0 (Tan & Le, 2019, Table 1): the base of the B-family."""
    return Arch(
        stem_channels=32, stem_stride=2,
        stages=(
            _mb(3, 1, 1, 16, 1), _mb(3, 2, 6, 24, 2), _mb(5, 2, 6, 40, 2), _mb(3, 2, 6, 80, 3),
            _mb(5, 1, 6, 112, 3), _mb(5, 2, 6, 192, 4), _mb(3, 1, 6, 320, 1),
        ),
        head_channels=1280, resolution=224, dropout=0.2, drop_path=0.2,
    )


@dataclass(frozen=True)
class BScale:
    """The reference multipliers of one B-series member (Tan & Le 2019; the official code).

    ``width`` and ``depth`` multiply B0's channels and layers, ``resolution`` is the input
    side in pixels and ``dropout`` the rate before the classifier.
    """

    width: float
    depth: float
    resolution: int
    dropout: float


B_SERIES: dict[str, BScale] = {
    "b1": BScale(1.0, 1.1, 240, 0.2),
    "b2": BScale(1.1, 1.2, 260, 0.3),
    "b3": BScale(1.2, 1.4, 300, 0.3),
    "b4": BScale(1.4, 1.8, 380, 0.4),
    "b5": BScale(1.6, 2.2, 456, 0.4),
    "b6": BScale(1.8, 2.6, 528, 0.5),
    "b7": BScale(2.0, 3.1, 600, 0.5),
}


def efficientnet_b(member: str) -> Arch:
    """``efficientnet_b("b3")``: B0 scaled by the member's reference multipliers."""
    m = B_SERIES[member]
    return efficientnet_b0().scale(width=m.width, depth=m.depth, resolution=m.resolution,
                                   dropout=m.dropout)


def efficientnet_b0_cifar() -> Arch:
    """B0 for 32x32 inputs: the stem keeps stride 1, so the head sees a 2x2 map
    (total stride 16) instead of 1x1."""
    return efficientnet_b0().replace(stem_stride=1, resolution=32)


def efficientnet_v2_s() -> Arch:
    """EfficientNetV2-S (Tan & Le, 2021, Table 4), trained at 384 for evaluation."""
    return Arch(
        stem_channels=24, stem_stride=2,
        stages=(
            _fmb(3, 1, 1, 24, 2), _fmb(3, 2, 4, 48, 4), _fmb(3, 2, 4, 64, 4),
            _mb(3, 2, 4, 128, 6), _mb(3, 1, 6, 160, 9), _mb(3, 2, 6, 256, 15),
        ),
        head_channels=1280, resolution=384, dropout=0.2, drop_path=0.2, bn_eps=1e-3,
    )


def efficientnet_v2_m() -> Arch:
    """EfficientNetV2-M, as in the reference implementations, evaluated at 480."""
    return Arch(
        stem_channels=24, stem_stride=2,
        stages=(
            _fmb(3, 1, 1, 24, 3), _fmb(3, 2, 4, 48, 5), _fmb(3, 2, 4, 80, 5),
            _mb(3, 2, 4, 160, 7), _mb(3, 1, 6, 176, 14), _mb(3, 2, 6, 304, 18),
            _mb(3, 1, 6, 512, 5),
        ),
        head_channels=1280, resolution=480, dropout=0.3, drop_path=0.2, bn_eps=1e-3,
    )


def efficientnet_v2_l() -> Arch:
    """EfficientNetV2-L, as in the reference implementations, evaluated at 480."""
    return Arch(
        stem_channels=32, stem_stride=2,
        stages=(
            _fmb(3, 1, 1, 32, 4), _fmb(3, 2, 4, 64, 7), _fmb(3, 2, 4, 96, 7),
            _mb(3, 2, 4, 192, 10), _mb(3, 1, 6, 224, 19), _mb(3, 2, 6, 384, 25),
            _mb(3, 1, 6, 640, 7),
        ),
        head_channels=1280, resolution=480, dropout=0.4, drop_path=0.2, bn_eps=1e-3,
    )


def mobilenet_v1() -> Arch:
    """MobileNetV1 1.0-224 (Howard et al., 2017, Table 1), as the Keras reference builds it.

    A 3x3 stride-2 stem to 32, thirteen depthwise-separable blocks (64, 128x2, 256x2,
    512x6, 1024x2), no head conv: the 1024 channels are pooled and classified. The Keras
    reference uses ReLU6, batch norm with epsilon 1e-3 and TensorFlow momentum 0.99
    (0.01 here), dropout 1e-3 and a 1x1 conv with bias as the classifier, which has the
    parameters of a Linear layer (1024 x 1000 + 1000).
    """
    ds = partial(Stage, "dwsep", 3)
    return Arch(
        stem_channels=32, stem_stride=2,
        stages=(ds(1, 1, 64, 1), ds(2, 1, 128, 2), ds(2, 1, 256, 2), ds(2, 1, 512, 6),
                ds(2, 1, 1024, 2)),
        head_channels=None, resolution=224, dropout=0.001, activation="relu6",
        bn_eps=1e-3, bn_momentum=0.01,
    )


def mobilenet_v2() -> Arch:
    """MobileNetV2 1.0-224 (Sandler et al., 2018, Table 2), as torchvision builds it.

    Inverted residuals are MBConv blocks with ReLU6 and no SE (an expansion-1 first block
    has no expansion conv); a 1x1 head conv to 1280, dropout 0.2, PyTorch's batch-norm
    defaults.
    """
    mb = partial(Stage, "mbconv")
    return Arch(
        stem_channels=32, stem_stride=2,
        stages=(mb(3, 1, 1, 16, 1), mb(3, 2, 6, 24, 2), mb(3, 2, 6, 32, 3), mb(3, 2, 6, 64, 4),
                mb(3, 1, 6, 96, 3), mb(3, 2, 6, 160, 3), mb(3, 1, 6, 320, 1)),
        head_channels=1280, resolution=224, dropout=0.2, activation="relu6",
    )


def resnet50() -> Arch:
    """ResNet-50 v1.5 (He et al., 2016, Table 1), as torchvision builds it.

    A 7x7 stride-2 stem to 64 with a 3x3 stride-2 max-pool, bottleneck stages of 3, 4, 6
    and 3 blocks (output channels 256 .. 2048, expansion 4, so inner widths 64 .. 512;
    the stride on the 3x3 conv), projection shortcuts where the shape changes, ReLU, no
    head conv, no dropout, PyTorch's batch-norm defaults.
    """
    bot = partial(Stage, "bottleneck", 3)
    return Arch(
        stem_channels=64, stem_stride=2, stem_kernel=7, stem_pool=True,
        stages=(bot(1, 4, 256, 3), bot(2, 4, 512, 4), bot(2, 4, 1024, 6), bot(2, 4, 2048, 3)),
        head_channels=None, resolution=224, activation="relu",
    )


register_preset("efficientnet_b0", efficientnet_b0,
                "EfficientNet-B0, the searched baseline of Tan & Le (2019)",
                source="Tan & Le 2019, Table 1", resolution=224)
for _member, _m in B_SERIES.items():
    register_preset(
        f"efficientnet_{_member}", partial(efficientnet_b, _member),
        f"EfficientNet-{_member.upper()}: B0 x width {_m.width}, depth {_m.depth}, "
        f"at {_m.resolution}px",
        source="Tan & Le 2019; reference multipliers", width=_m.width, depth=_m.depth,
        resolution=_m.resolution, dropout=_m.dropout,
    )
del _member, _m
register_preset("efficientnet_b0_cifar", efficientnet_b0_cifar,
                "EfficientNet-B0 with a stride-1 stem for 32x32 proxy work (2x2 map at the head)",
                resolution=32)
register_preset("efficientnet_v2_s", efficientnet_v2_s, "EfficientNetV2-S",
                source="Tan & Le 2021, Table 4", resolution=384)
register_preset("efficientnet_v2_m", efficientnet_v2_m, "EfficientNetV2-M",
                source="Tan & Le 2021; torchvision / timm reference configs", resolution=480)
register_preset("efficientnet_v2_l", efficientnet_v2_l, "EfficientNetV2-L",
                source="Tan & Le 2021; torchvision / timm reference configs", resolution=480)
# The EfficientNet paper's other baselines (Tan & Le 2019, Table 3). ``reference_params`` is
# the reference implementation's trainable parameter count at 1000 classes, which the
# built model equals exactly; ``reference_macs`` the published multiply-adds at 224.
register_preset("mobilenet_v1", mobilenet_v1, "MobileNetV1 1.0-224 (depthwise-separable, ReLU6)",
                source="Howard et al. 2017, Table 1; Keras applications MobileNet(alpha=1.0)",
                resolution=224, reference_params=4_231_976, reference_macs=569_000_000)
register_preset("mobilenet_v2", mobilenet_v2, "MobileNetV2 1.0-224 (inverted residuals, ReLU6)",
                source="Sandler et al. 2018, Table 2; torchvision mobilenet_v2",
                resolution=224, reference_params=3_504_872, reference_macs=300_000_000)
register_preset("resnet50", resnet50, "ResNet-50 v1.5 (bottlenecks, stride on the 3x3)",
                source="He et al. 2016, Table 1; torchvision resnet50",
                resolution=224, reference_params=25_557_032, reference_macs=4_100_000_000)


@dataclass(frozen=True)
class ResolvedArch:
    """What a reference to an architecture named: the description, the preset name when
    it was one, and the run metadata of an arch JSON file (``num_classes``,
    ``class_names``: what ``nas train`` trained it for), None where absent."""

    arch: Arch
    preset: str | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None


# Token kinds that open an arch string's tokens; a '-'-joined text without any of them
# (``efficientnet-b0``) is a misspelt name, not a malformed arch string.
_TOKEN_KINDS = frozenset({"net", "stem", "head", *BLOCK_KINDS.values()})
_SPACE_FILE_SUFFIXES = (".yaml", ".yml", ".toml")
_EXAMPLE = "'net_r224_silu-stem_c32_s2-mb_k3_s1_e1_c16_l1-head_c1280'"


def _looks_like_arch_string(ref: str) -> bool:
    return "-" in ref and any(token.split("_")[0] in _TOKEN_KINDS for token in ref.split("-"))


def _sample_hint(ref: str) -> str:
    return f"draw architectures from it with `space sample {ref} -n 5`"


def resolve(ref: str) -> ResolvedArch:
    """Resolve a preset name, a path to an arch JSON file, or an arch string.

    A JSON file may be `Arch.to_dict`'s form (with ``nas train``'s ``num_classes`` and
    ``class_names`` beside it) or a ``space info --json`` document. Raises `ArchError`
    (a `UserError`) with one sentence when ``ref`` is none of these: a misspelt preset
    name gets a did-you-mean, and a search space (a shipped space name or a space file)
    is named as one, with the ``space sample`` command that draws from it.
    """
    if not isinstance(ref, str):
        raise TypeError(f"an architecture reference is a string, got {type(ref).__name__}")
    ref = ref.strip()
    # Arch strings never contain a path separator or a file suffix.
    if (ref.lower().endswith((".json", *_SPACE_FILE_SUFFIXES)) or "/" in ref or "\\" in ref
            or Path(ref).is_file()):
        return _resolve_file(ref)
    if _looks_like_arch_string(ref):
        return ResolvedArch(Arch.from_string(ref))
    if ref in _REGISTRY:
        return ResolvedArch(get_preset(ref).arch(), preset=ref)
    from .search import SearchSpace  # here: space.search imports this module

    if _normalise(ref) in SearchSpace.names():
        raise ArchError(
            f"{ref!r} is a search space, not an architecture; {_sample_hint(_normalise(ref))}"
        )
    guess = _closest(ref, preset_names())
    if guess is not None:
        raise ArchError(f"unknown architecture {ref!r}; did you mean {guess!r}?")
    raise ArchError(
        f"unknown architecture {ref!r}: not a preset ({', '.join(preset_names())}), "
        f"not an arch string such as {_EXAMPLE}, and not a .json file"
    )


def _resolve_file(ref: str) -> ResolvedArch:
    path = Path(ref)
    if not path.is_file():
        raise ArchError(f"arch file not found: {ref}")
    if path.suffix.lower() in _SPACE_FILE_SUFFIXES:
        raise ArchError(f"{ref} is a search-space file, not an architecture; {_sample_hint(ref)}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ArchError(f"cannot read arch file {ref}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ArchError(f"{ref}: arch JSON is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ArchError(f"{ref}: arch JSON is not valid JSON: {err.msg} at line {err.lineno}") from None
    # A search space's file form always names its base; a description never has "base".
    if isinstance(data, dict) and "base" in data:
        raise ArchError(f"{ref} is a search-space file, not an architecture; {_sample_hint(ref)}")
    try:
        arch = Arch.from_dict(data)
    except ArchError as err:
        raise ArchError(f"{ref}: {err}") from None
    names = data.get("class_names")
    return ResolvedArch(arch, num_classes=data.get("num_classes"),
                        class_names=tuple(names) if names is not None else None)


def resolve_arch(ref: str) -> Arch:
    """The `Arch` behind a preset name, an arch JSON file or an arch string; see `resolve`."""
    return resolve(ref).arch
