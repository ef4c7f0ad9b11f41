"""Architecture descriptions: `Stage` and `Arch`, their validation, string form and JSON.

An `Arch` is the single source of truth for a network. The model builder
(`space.builder`), the cost model (`space.cost`), the string codec (here) and the
scaling rules (`scaling.scale`) all read it; none keeps its own copy of the rules.

Conventions
-----------
* Channels are output channels of a stage; the input of stage ``i`` is the output of
  stage ``i - 1`` (the stem's output for the first stage).
* ``stride`` applies to the first block of a stage only; the other ``layers - 1`` blocks
  have stride 1 and equal input and output channels.
* ``expand`` is the expansion ratio of the block's hidden width relative to its input
  channels; ``se`` is the squeeze-and-excitation ratio relative to the block's *input*
  channels (0 disables SE), as in the reference implementations.
* ``resolution`` is the square input size in pixels.
* Block kinds (``Stage.block``): ``mbconv`` (MBConv: optional 1x1 expansion, depthwise
  kxk, optional SE, linear 1x1 projection; MobileNetV2's inverted residual is an MBConv
  with ReLU6 and no SE), ``fused_mbconv`` (Fused-MBConv: kxk expansion, optional SE,
  linear 1x1 projection), ``dwsep`` (MobileNetV1's depthwise-separable block: depthwise
  kxk -> BN -> act, pointwise 1x1 -> BN -> act, never a residual; ``expand`` must be 1)
  and ``bottleneck`` (ResNet v1.5: 1x1 reduce, kxk carrying the stride, 1x1 expand, BN
  after each, the activation after the 1x1s' sum with the shortcut; no SE). For a
  bottleneck ``expand`` is ResNet's *expansion*: the output channels over the inner
  width, so ResNet-50's stages are ``expand=4`` with channels 256 .. 2048.
  `space.plan` writes down each kind's layers.
* Shortcuts: MBConv, Fused-MBConv and bottleneck blocks that keep stride 1 and their
  channel count add their input (identity); a bottleneck that changes shape adds a
  projection of its input (1x1 conv with the block's stride, then BN). Depthwise-separable
  blocks have no shortcut.

String form
-----------
One ``-``-separated token per part, each token ``_``-separated fields::

    net_r224_silu_dp0.2_eps0.00001_mom0.1-stem_c32_s2-mb_k3_s1_e1_c16_l1_se0.25-...-head_c1280_do0.2

``net``: resolution ``r``, activation name, drop-path rate ``dp``, batch-norm epsilon
``eps`` and momentum ``mom`` (PyTorch's convention); ``stem``: channels
``c`` and stride ``s``, and only where they differ from the defaults, kernel ``k`` (3
by default) and the word ``pool`` (a 3x3 stride-2 max-pool after the stem conv, as in
ResNet: ``stem_c64_s2_k7_pool``); one stage token per stage whose first field names the
block (``mb`` for MBConv, ``fmb`` for Fused-MBConv, ``ds`` for a depthwise-separable
block, ``bot`` for a ResNet bottleneck) followed by kernel ``k``, stride ``s``,
expansion ``e``, channels ``c``, layers ``l`` and SE ratio ``se``; ``head``: channels
``c`` or the word ``none`` (no head conv: ``head_none_do0``) and dropout ``do``.
Omitted optional fields take defaults (stride 1, expand 1, se 0, dp 0, do 0, silu,
stem stride 2, stem kernel 3, no stem pool, eps 0.00001, mom 0.1), so hand-written
strings can stay short; ``to_string`` writes every field except the stem's kernel and
pool at their defaults, so that strings written before those fields existed are still
what ``to_string`` writes.

Numbers are written in positional notation (``0.00005``, never ``5e-05``: the ``-`` would
split the token) with the shortest digits that read back to the same float, so
``Arch.from_string(a.to_string()) == a`` for every valid ``a``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterator

from .errors import UserError

__all__ = [
    "ACTIVATIONS",
    "BLOCK_KINDS",
    "METADATA_KEYS",
    "Arch",
    "ArchError",
    "BlockSpec",
    "Stage",
    "make_divisible",
]


class ArchError(UserError):
    """An architecture description is invalid; the message names the field and value."""

    @property
    def reason(self) -> str:
        """The message without its leading ``stage: `` / ``arch: `` location, for callers
        that name the place themselves (a token, a stage number, a file)."""
        message = str(self)
        for prefix in ("stage: ", "arch: "):
            if message.startswith(prefix):
                return message[len(prefix):]
        return message


# Block kinds: name -> short token used in the string form. A new kind adds a row here
# and a layer plan in `space.plan`; the builder and the cost model follow from the plan.
BLOCK_KINDS: dict[str, str] = {"mbconv": "mb", "fused_mbconv": "fmb", "dwsep": "ds",
                               "bottleneck": "bot"}
_TOKEN_TO_BLOCK = {token: kind for kind, token in BLOCK_KINDS.items()}

# Upper bounds far beyond any real network (EfficientNetV2-L: 25 layers in a stage, 640
# channels, 480 pixels), so that a typo or a runaway multiplier (``--depth 1e300``) is refused
# at once instead of building a description that never finishes unrolling.
MAX_LAYERS = 1000
MAX_CHANNELS = 1 << 16
MAX_RESOLUTION = 1 << 14

ACTIVATIONS = ("silu", "relu", "relu6", "hardswish", "gelu")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below 90% of it.

    This is the channel rounding of the reference EfficientNet / MobileNet code.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def _shown(value: Any) -> str:
    """``repr`` for messages, with huge integers (a runaway multiplier) in short form."""
    if _is_int(value) and abs(value) >= 10**12:
        return f"about {float(value):.3g}"
    return repr(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A real number of any type (int, float, numpy scalars), but not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    """A number (not a bool) that is a finite float; ints too large for a float are not."""
    if not _is_number(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _fmt(value: float) -> str:
    """Exact positional text for a finite number: ``6`` for 6.0, ``0.25``, ``0.00005``.

    ``repr`` gives the shortest digits that read back as the same float, but switches to
    exponent notation below 1e-4 (``5e-05``), and the ``-`` would split the arch string's
    token. The same digits written positionally by `Decimal` read back to the same float.
    """
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return format(Decimal(repr(value)), "f")


@dataclass(frozen=True)
class Stage:
    """One stage: ``layers`` blocks of one kind, the first carrying ``stride``.

    Attributes:
        block: block kind, one of ``BLOCK_KINDS`` ("mbconv", "fused_mbconv", "dwsep",
            "bottleneck"; see the module docstring).
        kernel: odd spatial kernel size of the depthwise (MBConv, dwsep), fused
            (Fused-MBConv) or middle (bottleneck) convolution.
        stride: 1 or 2, applied by the first block.
        expand: expansion ratio (>= 1): for MBConv and Fused-MBConv the hidden width over
            the block input channels; for a bottleneck the output channels over the inner
            width (ResNet's expansion, 4); exactly 1 for dwsep.
        channels: output channels.
        layers: number of blocks (>= 1).
        se: squeeze-and-excitation ratio relative to the block input channels, in [0, 1);
            0 for a bottleneck.
    """

    block: str
    kernel: int
    stride: int
    expand: float
    channels: int
    layers: int
    se: float = 0.0

    def __post_init__(self) -> None:
        where = "stage"
        if self.block not in BLOCK_KINDS:
            raise ArchError(
                f"{where}: unknown block {self.block!r}; expected one of {sorted(BLOCK_KINDS)}"
            )
        if not _is_int(self.kernel) or self.kernel <= 0 or self.kernel % 2 == 0:
            raise ArchError(f"{where}: kernel must be a positive odd integer, got {self.kernel!r}")
        if not _is_int(self.stride) or self.stride not in (1, 2):
            raise ArchError(f"{where}: stride must be 1 or 2, got {self.stride!r}")
        if not _is_finite(self.expand) or self.expand < 1:
            raise ArchError(f"{where}: expand must be a number >= 1, got {self.expand!r}")
        if not _is_int(self.channels) or not 0 < self.channels <= MAX_CHANNELS:
            raise ArchError(
                f"{where}: channels must be an integer from 1 to {MAX_CHANNELS}, got {_shown(self.channels)}")
        if not _is_int(self.layers) or not 1 <= self.layers <= MAX_LAYERS:
            raise ArchError(f"{where}: layers must be an integer from 1 to {MAX_LAYERS}, got {_shown(self.layers)}")
        if not _is_number(self.se) or not 0 <= self.se < 1:
            raise ArchError(f"{where}: se must be in [0, 1), got {self.se!r}")
        # The rules below tie two fields together, so search spaces (which check each field
        # on its own) offer only the kinds without them as block choices.
        if self.block == "dwsep" and self.expand != 1:
            raise ArchError(
                f"{where}: expand must be 1 for a dwsep block (depthwise then pointwise, no "
                f"expansion), got {self.expand!r}")
        if self.block == "bottleneck" and self.se != 0:
            raise ArchError(
                f"{where}: se must be 0 for a bottleneck block (it has no squeeze-excite), "
                f"got {self.se!r}")
        # Normalise so that e6 and e6.0 are the same description (equal, same hash, same
        # JSON); adding 0.0 turns -0.0 into 0.0, which JSON would otherwise keep.
        object.__setattr__(self, "expand", float(self.expand))
        object.__setattr__(self, "se", float(self.se) + 0.0)

    # --- scaling rules (applied by Arch.scale; kept beside the description they change) ---

    @staticmethod
    def adjust_channels(channels: int, width_mult: float) -> int:
        """Channels after width scaling: ``make_divisible(channels * width_mult, 8)``."""
        return make_divisible(channels * width_mult, 8)

    @staticmethod
    def adjust_depth(layers: int, depth_mult: float) -> int:
        """Layers after depth scaling: ``ceil(layers * depth_mult)``."""
        return int(math.ceil(layers * depth_mult))

    def expanded_channels(self, in_channels: int) -> int:
        """Hidden width of a block of this stage with ``in_channels`` inputs.

        MBConv, Fused-MBConv and dwsep: ``in_channels`` when ``expand`` is 1, else
        ``make_divisible(in_channels * expand, 8)``. Bottleneck: the inner width,
        ``channels`` when ``expand`` is 1, else ``make_divisible(channels / expand, 8)``
        (ResNet-50: 256 / 4 = 64), whatever ``in_channels`` is. Width scaling therefore
        scales a bottleneck's inner width with its output channels: the ratio ``expand``
        is kept, and the inner width is rounded to a multiple of 8 like every other
        channel count (never below 8 or 90% of the exact quotient).
        """
        if self.block == "bottleneck":
            if self.expand == 1.0:
                return self.channels
            return make_divisible(self.channels / self.expand, 8)
        if self.expand == 1.0:
            return in_channels
        return make_divisible(in_channels * self.expand, 8)

    def se_channels(self, in_channels: int) -> int:
        """Squeeze width of a block with ``in_channels`` inputs (0 when SE is off)."""
        if self.se == 0.0:
            return 0
        return max(1, int(in_channels * self.se))

    def to_token(self) -> str:
        return (
            f"{BLOCK_KINDS[self.block]}_k{self.kernel}_s{self.stride}_e{_fmt(self.expand)}"
            f"_c{self.channels}_l{self.layers}_se{_fmt(self.se)}"
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.expand.is_integer():
            d["expand"] = int(self.expand)
        return d


@dataclass(frozen=True)
class BlockSpec:
    """One concrete block of an `Arch`, after stages are unrolled.

    ``index`` is the global block index (0-based); ``drop_path`` is this block's
    stochastic-depth rate, ``arch.drop_path * index / total_blocks``, applied to the
    block's branch only when the block has a shortcut (identity or projection).
    """

    stage_index: int
    index: int
    block: str
    kernel: int
    stride: int
    in_channels: int
    expanded_channels: int
    out_channels: int
    se_channels: int
    drop_path: float

    @property
    def residual(self) -> bool:
        """An identity shortcut: stride 1 and equal channels, never for ``dwsep``."""
        return (self.block != "dwsep" and self.stride == 1
                and self.in_channels == self.out_channels)

    @property
    def projection(self) -> bool:
        """A projection shortcut (1x1 conv with the block's stride, then BN): a bottleneck
        that changes stride or channels. Other kinds have none."""
        return self.block == "bottleneck" and not self.residual


@dataclass(frozen=True)
class Arch:
    """A whole network: stem, stages, head and the training-time regularisers.

    Attributes:
        stem_channels: output channels of the stem convolution.
        stem_stride: stride of the stem convolution (1 or 2).
        stages: the stages, in order.
        head_channels: channels of the final 1x1 convolution before pooling, or None for
            no head conv (MobileNetV1, ResNet): the last stage's channels go straight to
            pooling and the classifier. `num_features` is the classifier's input either way.
        resolution: square input size in pixels used for training and costing.
        dropout: dropout rate before the classifier, in [0, 1).
        drop_path: maximum stochastic-depth rate, in [0, 1); block ``i`` of ``n`` uses
            ``drop_path * i / n``.
        activation: activation name, one of ``ACTIVATIONS``.
        bn_eps: batch-norm epsilon added to the variance, > 0. PyTorch's default 1e-5 is
            what the V1 (B0..B7) reference models use; EfficientNetV2 uses 1e-3.
        bn_momentum: batch-norm running-statistics momentum in (0, 1], PyTorch's
            convention (weight of the new batch; TensorFlow's decay 0.99 is 0.01 here).
            0.1 (PyTorch's default) in the presets, as in the torchvision references.
        stem_kernel: odd kernel size of the stem convolution (3; ResNet: 7).
        stem_pool: a 3x3 max-pool with stride 2 and padding 1 after the stem conv-BN-act
            (ResNet), which halves the side (``ceil(n / 2)``) and doubles the total stride.

    The batch-norm settings belong to the description because model families differ in
    them and a built network's outputs depend on them; they change neither MACs nor
    parameters.
    """

    stem_channels: int
    stem_stride: int
    stages: tuple[Stage, ...]
    head_channels: int
    resolution: int
    dropout: float = 0.0
    drop_path: float = 0.0
    activation: str = "silu"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    stem_kernel: int = 3
    stem_pool: bool = False

    def __post_init__(self) -> None:
        stages = tuple(self.stages)
        object.__setattr__(self, "stages", stages)
        if not stages:
            raise ArchError("arch: stages must not be empty")
        for i, stage in enumerate(stages, 1):
            if not isinstance(stage, Stage):
                raise ArchError(f"arch: stage {i} must be a Stage, got {type(stage).__name__}")
        if not _is_int(self.stem_channels) or not 0 < self.stem_channels <= MAX_CHANNELS:
            raise ArchError(
                f"arch: stem_channels must be an integer from 1 to {MAX_CHANNELS}, got {_shown(self.stem_channels)}"
            )
        if not _is_int(self.stem_stride) or self.stem_stride not in (1, 2):
            raise ArchError(f"arch: stem_stride must be 1 or 2, got {self.stem_stride!r}")
        if self.head_channels is not None and (
                not _is_int(self.head_channels) or not 0 < self.head_channels <= MAX_CHANNELS):
            raise ArchError(
                f"arch: head_channels must be an integer from 1 to {MAX_CHANNELS} (or None for "
                f"no head conv), got {_shown(self.head_channels)}"
            )
        if not _is_int(self.stem_kernel) or self.stem_kernel <= 0 or self.stem_kernel % 2 == 0:
            raise ArchError(
                f"arch: stem_kernel must be a positive odd integer, got {_shown(self.stem_kernel)}")
        if not isinstance(self.stem_pool, bool):
            raise ArchError(f"arch: stem_pool must be true or false, got {self.stem_pool!r}")
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise ArchError(f"arch: dropout must be in [0, 1), got {self.dropout!r}")
        if not _is_number(self.drop_path) or not 0 <= self.drop_path < 1:
            raise ArchError(f"arch: drop_path must be in [0, 1), got {self.drop_path!r}")
        if self.activation not in ACTIVATIONS:
            raise ArchError(
                f"arch: unknown activation {self.activation!r}; expected one of {list(ACTIVATIONS)}"
            )
        if not _is_finite(self.bn_eps) or not self.bn_eps > 0:
            raise ArchError(f"arch: bn_eps must be a positive number, got {self.bn_eps!r}")
        if not _is_number(self.bn_momentum) or not 0 < self.bn_momentum <= 1:
            raise ArchError(f"arch: bn_momentum must be in (0, 1], got {self.bn_momentum!r}")
        if not _is_int(self.resolution) or not 0 < self.resolution <= MAX_RESOLUTION:
            raise ArchError(
                f"arch: resolution must be an integer from 1 to {MAX_RESOLUTION}, got {_shown(self.resolution)}")
        if self.resolution < self.total_stride:
            raise ArchError(
                f"arch: resolution {self.resolution} is too small for the total stride "
                f"{self.total_stride}; use at least {self.total_stride}"
            )
        object.__setattr__(self, "dropout", float(self.dropout) + 0.0)
        object.__setattr__(self, "drop_path", float(self.drop_path) + 0.0)
        object.__setattr__(self, "bn_eps", float(self.bn_eps))
        object.__setattr__(self, "bn_momentum", float(self.bn_momentum))

    # --- derived facts -----------------------------------------------------------------

    @property
    def total_stride(self) -> int:
        stride = 1
        for s in self._strides():
            stride *= s
        return stride

    def _strides(self) -> tuple[int, ...]:
        """Every stride in order: the stem conv, the stem pool (2) if any, each stage."""
        pool = (2,) if self.stem_pool else ()
        return (self.stem_stride, *pool, *(s.stride for s in self.stages))

    @property
    def num_features(self) -> int:
        """Channels reaching pooling and the classifier: the head conv's, or the last
        stage's when there is no head conv."""
        return self.stages[-1].channels if self.head_channels is None else self.head_channels

    @property
    def num_blocks(self) -> int:
        return sum(stage.layers for stage in self.stages)

    def final_resolution(self, resolution: int | None = None) -> int:
        """Side of the feature map entering the head (padding ``k // 2``: ``ceil(n / s)``)."""
        size = self.resolution if resolution is None else resolution
        for stride in self._strides():
            size = -(-size // stride)
        return size

    def blocks(self) -> Iterator[BlockSpec]:
        """Unroll the stages into blocks, with channels, strides and drop-path rates."""
        total = self.num_blocks
        in_channels = self.stem_channels
        index = 0
        for stage_index, stage in enumerate(self.stages):
            for layer in range(stage.layers):
                stride = stage.stride if layer == 0 else 1
                yield BlockSpec(
                    stage_index=stage_index,
                    index=index,
                    block=stage.block,
                    kernel=stage.kernel,
                    stride=stride,
                    in_channels=in_channels,
                    expanded_channels=stage.expanded_channels(in_channels),
                    out_channels=stage.channels,
                    se_channels=stage.se_channels(in_channels),
                    drop_path=self.drop_path * index / total,
                )
                in_channels = stage.channels
                index += 1

    def replace(self, **changes: Any) -> "Arch":
        """A copy with some fields changed (validated like a new description)."""
        return dataclasses.replace(self, **changes)

    # --- scaling -----------------------------------------------------------------------

    def scale(self, *, depth: float = 1.0, width: float = 1.0, resolution: int | None = None,
              dropout: float | None = None, drop_path: float | None = None) -> "Arch":
        """This network grown (or shrunk) along depth, width and resolution.

        Args:
            depth: layer multiplier; each stage gets ``Stage.adjust_depth(layers, depth)``
                = ``ceil(layers * depth)`` layers.
            width: channel multiplier for the stem, every stage and the head conv (when
                there is one), each rounded by ``Stage.adjust_channels``
                (``make_divisible(c * width, 8)``, never below 90% of ``c * width``). Hidden
                widths follow from their rule (`Stage.expanded_channels`): a bottleneck's
                inner width is its scaled output channels over ``expand``, rounded to 8.
            resolution: the new input side in pixels (an absolute size, not a
                multiplier); unchanged when None. It must be a whole number: an int or an
                integral float such as ``300.0``. Anything else (``224.9``) is rejected
                rather than rounded, so that a computed size is rounded by its caller,
                where the rule is visible.
            dropout, drop_path: new regularisers when given (larger family members use
                more dropout in the reference); unchanged when None.

        The multipliers must be finite positive real numbers (not bools). Every mistake
        raises `ArchError` (a `UserError` and a `ValueError`) with one sentence. Block
        kinds, kernels, strides, expansion and SE ratios, the activation, the stem's
        kernel and pool, the presence of a head conv and the batch-norm settings are kept.
        Layers grow by ``ceil`` for every block kind.
        """
        for name, value in (("depth", depth), ("width", width)):
            if not _is_real(value) or not math.isfinite(value) or value <= 0:
                raise ArchError(
                    f"scale: the {name} multiplier must be a finite positive number, got {value!r}"
                )
        if resolution is not None:
            if not _is_real(resolution) or not math.isfinite(resolution):
                raise ArchError(
                    f"scale: resolution must be a whole number of pixels, got {resolution!r}"
                )
            if resolution != int(resolution):
                raise ArchError(
                    f"scale: resolution must be a whole number of pixels, got {resolution!r}; "
                    f"round it first (e.g. to {math.floor(resolution + 0.5)})"
                )
            resolution = int(resolution)
        stages = tuple(
            dataclasses.replace(
                s,
                channels=Stage.adjust_channels(s.channels, width),
                layers=Stage.adjust_depth(s.layers, depth),
            )
            for s in self.stages
        )
        return self.replace(
            stem_channels=Stage.adjust_channels(self.stem_channels, width),
            stages=stages,
            head_channels=(None if self.head_channels is None
                           else Stage.adjust_channels(self.head_channels, width)),
            resolution=self.resolution if resolution is None else resolution,
            dropout=self.dropout if dropout is None else dropout,
            drop_path=self.drop_path if drop_path is None else drop_path,
        )

    # --- string form -------------------------------------------------------------------

    def to_string(self) -> str:
        # The stem's kernel and pool are written only when they differ from the defaults,
        # so every description that existed before them keeps its string.
        stem = f"stem_c{self.stem_channels}_s{self.stem_stride}"
        if self.stem_kernel != 3:
            stem += f"_k{self.stem_kernel}"
        if self.stem_pool:
            stem += "_pool"
        head = "head_none" if self.head_channels is None else f"head_c{self.head_channels}"
        parts = [
            f"net_r{self.resolution}_{self.activation}_dp{_fmt(self.drop_path)}"
            f"_eps{_fmt(self.bn_eps)}_mom{_fmt(self.bn_momentum)}",
            stem,
            *(stage.to_token() for stage in self.stages),
            f"{head}_do{_fmt(self.dropout)}",
        ]
        return "-".join(parts)

    def __str__(self) -> str:
        return self.to_string()

    def short_label(self, *, channels: bool = False) -> str:
        """A label for tables and plots, one token per stage: ``k<kernel>e<expand>``, a leading
        ``F`` for Fused-MBConv, ``D`` for dwsep, ``B`` for bottleneck, ``c<channels>`` when
        asked, ``xN`` for N layers. Not parseable: resolution, stem, strides, SE and head are
        left out (`to_string` has them)."""
        return " ".join(
            f"{_LABEL_PREFIX[s.block]}k{s.kernel}e{s.expand:g}"
            + (f"c{s.channels}" if channels else "") + (f"x{s.layers}" if s.layers != 1 else "")
            for s in self.stages)

    @classmethod
    def from_string(cls, text: str) -> "Arch":
        """Parse the string form; raises `ArchError` naming the offending token."""
        if not isinstance(text, str) or not text.strip():
            raise ArchError("arch string is empty")
        tokens = [t for t in text.strip().split("-")]
        net: dict[str, Any] = {}
        stem: dict[str, Any] | None = None
        head: dict[str, Any] | None = None
        stages: list[Stage] = []
        for position, token in enumerate(tokens, 1):
            fields = token.split("_")
            kind = fields[0]
            if kind == "net":
                net = _parse_fields(token, fields[1:],
                                    {"r": int, "dp": float, "eps": float, "mom": float},
                                    words=ACTIVATIONS)
            elif kind == "stem":
                stem = _parse_fields(token, fields[1:], {"c": int, "s": int, "k": int},
                                     words=("pool",))
                if "c" not in stem:
                    raise ArchError(f"arch string: stem token {token!r} is missing c<n>")
            elif kind == "head":
                head = _parse_fields(token, fields[1:], {"c": int, "do": float}, words=("none",))
                if ("c" in head) == ("word" in head):
                    raise ArchError(
                        f"arch string: head token {token!r} needs either channels c<n> or the "
                        f"word 'none' (no head conv)")
            elif kind in _TOKEN_TO_BLOCK:
                values = _parse_fields(
                    token,
                    fields[1:],
                    {"k": int, "s": int, "e": float, "c": int, "l": int, "se": float},
                )
                for required in ("k", "c", "l"):
                    if required not in values:
                        raise ArchError(f"arch string: stage token {token!r} is missing {required}<n>")
                try:
                    stages.append(
                        Stage(
                            block=_TOKEN_TO_BLOCK[kind],
                            kernel=values["k"],
                            stride=values.get("s", 1),
                            expand=values.get("e", 1.0),
                            channels=values["c"],
                            layers=values["l"],
                            se=values.get("se", 0.0),
                        )
                    )
                except ArchError as err:
                    raise ArchError(f"arch string token {token!r}: {err.reason}") from None
            else:
                known = ["net", "stem", "head", *sorted(_TOKEN_TO_BLOCK)]
                raise ArchError(
                    f"arch string: unknown token {token!r} at position {position}; "
                    f"tokens start with one of {known}"
                )
        if stem is None:
            raise ArchError("arch string: missing stem token such as 'stem_c32_s2'")
        if head is None:
            raise ArchError("arch string: missing head token such as 'head_c1280_do0.2'")
        if "r" not in net:
            raise ArchError("arch string: missing resolution, e.g. a first token 'net_r224_silu'")
        return cls(
            stem_channels=stem["c"],
            stem_stride=stem.get("s", 2),
            stages=tuple(stages),
            head_channels=head.get("c"),
            resolution=net["r"],
            dropout=head.get("do", 0.0),
            drop_path=net.get("dp", 0.0),
            activation=net.get("word", "silu"),
            bn_eps=net.get("eps", 1e-5),
            bn_momentum=net.get("mom", 0.1),
            stem_kernel=stem.get("k", 3),
            stem_pool=stem.get("word") == "pool",
        )

    # --- JSON --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON form. ``head_channels`` is null when there is no head conv;
        ``stem_kernel`` and ``stem_pool`` appear only when they differ from their
        defaults (3, false), so older descriptions keep their JSON."""
        d = {
            "stem_channels": self.stem_channels,
            "stem_stride": self.stem_stride,
            "stages": [stage.to_dict() for stage in self.stages],
            "head_channels": self.head_channels,
            "resolution": self.resolution,
            "dropout": self.dropout,
            "drop_path": self.drop_path,
            "activation": self.activation,
            "bn_eps": self.bn_eps,
            "bn_momentum": self.bn_momentum,
        }
        if self.stem_kernel != 3:
            d["stem_kernel"] = self.stem_kernel
        if self.stem_pool:
            d["stem_pool"] = True
        return d

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> "Arch":
        """The description in ``data``: `to_dict`'s form, or a ``space info --json``
        document (the description under ``"arch"``).

        Run metadata that travels with a description (``nas train`` writes ``arch.json``
        with ``num_classes``, a positive int, and ``class_names``, a list of strings) is
        checked and ignored, as it does not describe the network; `METADATA_KEYS` lists
        those keys. Any other unknown key is an error, so a misspelt field never passes
        silently. Omitted optional fields take their defaults.
        """
        if not isinstance(data, dict):
            raise ArchError(f"arch JSON must be an object, got {type(data).__name__}")
        _check_metadata(data)
        # A JSON document written by `space info --json` nests the description under "arch".
        if "stages" not in data and isinstance(data.get("arch"), (dict, str)):
            inner = data["arch"]
            return cls.from_string(inner) if isinstance(inner, str) else cls.from_dict(inner)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields - set(METADATA_KEYS))
        if unknown:
            raise ArchError(f"arch JSON: unknown field {unknown[0]!r}; expected some of {sorted(fields)}")
        missing = sorted(f for f in ("stem_channels", "stem_stride", "stages", "head_channels",
                                     "resolution") if f not in data)
        if missing:
            raise ArchError(f"arch JSON: missing field {missing[0]!r}")
        if not isinstance(data["stages"], list):
            raise ArchError("arch JSON: 'stages' must be a list of stage objects")
        stage_fields = {f.name for f in dataclasses.fields(Stage)}
        stages = []
        for i, raw in enumerate(data["stages"], 1):
            if not isinstance(raw, dict):
                raise ArchError(f"arch JSON: stage {i} must be an object")
            bad = sorted(set(raw) - stage_fields)
            if bad:
                raise ArchError(f"arch JSON: stage {i} has unknown field {bad[0]!r}")
            try:
                stages.append(Stage(**raw))
            except TypeError:
                absent = sorted(stage_fields - set(raw) - {"se"})
                raise ArchError(f"arch JSON: stage {i} is missing field {absent[0]!r}") from None
            except ArchError as err:
                raise ArchError(f"arch JSON: stage {i}: {err.reason}") from None
        described = {k: v for k, v in data.items() if k in fields}
        return cls(**{**described, "stages": tuple(stages)})

    @classmethod
    def from_json(cls, text: str) -> "Arch":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ArchError(f"arch JSON is not valid JSON: {err.msg} at line {err.lineno}") from None
        return cls.from_dict(data)


# `short_label`'s prefix per block kind (MBConv, the default, has none).
_LABEL_PREFIX = {"mbconv": "", "fused_mbconv": "F", "dwsep": "D", "bottleneck": "B"}

#: Keys an arch JSON document may carry beside the description: facts about a run on it.
METADATA_KEYS = ("num_classes", "class_names")


def _check_metadata(data: dict) -> None:
    if "num_classes" in data:
        n = data["num_classes"]
        if not _is_int(n) or n < 1:
            raise ArchError(f"arch JSON: num_classes must be a positive integer, got {n!r}")
    if "class_names" in data:
        names = data["class_names"]
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise ArchError("arch JSON: class_names must be a list of strings")
        if "num_classes" in data and len(names) != data["num_classes"]:
            raise ArchError(
                f"arch JSON: class_names has {len(names)} names but num_classes is "
                f"{data['num_classes']}"
            )


_FIELD = re.compile(r"^([a-z]+?)(-?[0-9][0-9.e+-]*)$")


def _parse_fields(
    token: str, fields: list[str], spec: dict[str, type], words: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Parse ``k3``-style fields of one token into typed values."""
    values: dict[str, Any] = {}
    for field in fields:
        if field in words:
            values["word"] = field
            continue
        match = _FIELD.match(field)
        # Prefer the longest known key: "se0.25" must not read as "s" + "e0.25".
        key, raw = None, None
        for candidate in sorted(spec, key=len, reverse=True):
            if field.startswith(candidate) and len(field) > len(candidate):
                rest = field[len(candidate):]
                if rest[0].isdigit() or rest[0] in ".-":
                    key, raw = candidate, rest
                    break
        if key is None or match is None:
            expected = ", ".join(f"{k}<n>" for k in spec) + (f" or one of {list(words)}" if words else "")
            raise ArchError(f"arch string token {token!r}: unknown field {field!r}; expected {expected}")
        try:
            value = spec[key](raw)
        except ValueError:
            raise ArchError(
                f"arch string token {token!r}: field {key!r} needs a number, got {raw!r}"
            ) from None
        if key in values:
            raise ArchError(f"arch string token {token!r}: field {key!r} is given twice")
        values[key] = value
    return values
