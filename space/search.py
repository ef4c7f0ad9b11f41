"""Search spaces: per-stage choices around a base architecture (MnasNet / EfficientNet style).

A `SearchSpace` is declared in a small YAML, JSON or TOML file (or a Python dict) and
turns a set of choices into an `Arch`. The space never builds its own network: every
sampled or suggested point is decoded into a plain `Arch`, so the builder, the cost
model and the scaling rules apply unchanged.

File format
-----------
::

    name: mnasnet                     # optional; defaults to the file name ("custom" for dicts)
    description: ...                  # optional free text
    base: efficientnet_b0             # a preset name (space.presets.get_preset), or an arch
                                      # string (Arch.from_string; it contains '-')
    defaults:                         # optional: choices applied to every stage
      kernel: [3, 5]
      expand: [1, 4, 6]
      se: [0, 0.25]
      layers: [-1, 0, 1]
      width: [0.75, 1.0, 1.25]
    stages:                           # optional per-stage overrides, keyed by 1-based stage
      1: {expand: 1, layers: 0}       # number (JSON / TOML keys "1" work too)

Top-level keys are exactly ``name``, ``description``, ``base``, ``defaults`` and ``stages``.
The base may also be given as an `Arch.to_dict` mapping (handy from Python).

Per-stage fields, all optional (a missing field keeps the base stage's value and is not
a search dimension); a list is a set of choices, a scalar a fixed value:

==========  =====================================================================
``block``   block kind, one of ``mbconv``, ``fused_mbconv`` (`SEARCH_BLOCK_KINDS`)
``kernel``  kernel size (positive odd integer)
``expand``  expansion ratio (number >= 1)
``se``      squeeze-and-excitation ratio in [0, 1) (0 turns SE off)
``layers``  integer *delta* added to the base stage's layers; the result is clamped
            to at least 1
``width``   positive channel multiplier of the base stage's channels, applied with
            `Stage.adjust_channels` (``make_divisible(c * w, 8)``, the 90% rule).
            Like `scaling.scale`, a width of 1.0 also rounds channels that are not a
            multiple of 8; omit ``width`` to keep the base channels exactly.
==========  =====================================================================

A stage override replaces the default of the same field for that stage only. Stride,
stem, head, resolution, dropout, drop path, activation and batch-norm settings always
come from the base.
Every choice is checked at load time through `Stage` validation, so a bad value (kernel
4, se 1.5, ...) is reported by `SpaceError` when the space is loaded, naming the file,
the field and the value. Choices within one list must be distinct.

Parameters
----------
A search point is a dict of parameters named ``s{i}.{field}`` with the 1-based stage
index ``i`` (``s3.kernel``, ``s3.layers``, ``s3.width``). Only fields with more than one
choice are parameters (see `SearchSpace.dimensions`); the values are the choices
themselves (``s3.layers`` is the delta, ``s3.width`` the multiplier). `decode` turns a
complete parameter dict into an `Arch`, deterministically; `suggest` asks an Optuna
trial for each parameter with ``trial.suggest_categorical`` (define-by-run) and decodes.

Size
----
Each field changes exactly one attribute of its own stage (``width`` changes
``channels``) and stages decode independently, so `SearchSpace.size` -- the exact
number of distinct architectures -- is the product over stages of the number of
distinct decoded `Stage` values, which in turn is the product over fields of the number
of distinct decoded attribute values. Choices that decode alike (a ``layers`` delta
clamped to 1, two widths rounding to the same channel count) are counted once.

Shipped spaces (``SearchSpace.names()``) live in ``space/spaces/*.yaml``.

Listed spaces
-------------
A file whose top level has ``candidates`` (a mapping of label -> preset name, arch string
or arch mapping) instead of ``defaults`` / ``stages`` is a *listed* space:
`SearchSpace.load` returns a `space.listed.ListedSpace`, with the same interface (one
categorical parameter ``candidate`` over the labels; ``decode({"candidate": label})`` is
that architecture). ``nas search --space shortlist.yaml --sampler grid`` evaluates a
hand-made shortlist, each candidate once; ``scaling grid`` writes one for its grid points.
See `space.listed` for the format and its checks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from .arch import BLOCK_KINDS, Arch, ArchError, Stage, _is_int, _is_number
from .errors import UserError
from .presets import _looks_like_arch_string, get_preset

__all__ = ["FIELDS", "SEARCH_BLOCK_KINDS", "SearchSpace", "SpaceError"]


class SpaceError(UserError):
    """A search space (file, dict or parameter set) is invalid; the message says where."""


#: Per-stage fields, in the order their parameters are suggested and sampled.
FIELDS: tuple[str, ...] = ("block", "kernel", "expand", "se", "layers", "width")

#: Block kinds a ``block`` choice may name. The other kinds of `BLOCK_KINDS` tie two fields
#: together (``dwsep`` needs expand 1, ``bottleneck`` se 0), which choices checked one field
#: at a time against the base stage cannot guarantee for every combination. A stage of
#: such a kind in the base keeps its kind; its other fields are searched as usual.
SEARCH_BLOCK_KINDS: tuple[str, ...] = ("mbconv", "fused_mbconv")

_TOP_LEVEL = ("name", "description", "base", "defaults", "stages")
_SUFFIXES = (".yaml", ".yml", ".json", ".toml")
_SHIPPED_DIR = "spaces"


def _decode_field(base: Stage, field: str, value: Any) -> tuple[str, Any]:
    """The `Stage` attribute a field choice sets, and its decoded value (unvalidated)."""
    if field == "layers":
        return "layers", max(1, base.layers + value)
    if field == "width":
        return "channels", Stage.adjust_channels(base.channels, value)
    if field in ("expand", "se"):
        return field, float(value)
    return field, value


def _check_choice(base: Stage, field: str, value: Any) -> str | None:
    """Why ``value`` is not a valid choice of ``field`` on ``base``, or None when it is."""
    if field == "block":
        if not isinstance(value, str) or value not in SEARCH_BLOCK_KINDS:
            if isinstance(value, str) and value in BLOCK_KINDS:
                return (f"block {value!r} cannot be a search choice (its fields depend on each "
                        f"other); choose from {sorted(SEARCH_BLOCK_KINDS)}")
            return f"block must be one of {sorted(SEARCH_BLOCK_KINDS)}"
    elif field == "layers":
        if not _is_int(value):
            return "layers must be an integer delta on the base stage's layers"
        return None  # clamped to >= 1, always a valid Stage
    elif field == "width":
        if not _is_number(value) or not math.isfinite(value) or value <= 0:
            return "width must be a positive channel multiplier"
    elif not _is_number(value):
        return f"{field} must be a number"
    try:
        attr, decoded = _decode_field(base, field, value)
        dataclasses.replace(base, **{attr: decoded})
    except ArchError as err:
        return err.reason
    except (OverflowError, ValueError):
        return f"{field} is out of range"
    return None


def _same_choice(a: Any, b: Any) -> bool:
    """Equality of choice values that keeps strings, bools and numbers apart."""
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    return False


def _fmt_value(value: Any) -> str:
    return repr(value)


class SpaceFacts:
    """What every kind of search space states about itself, from the ``_name``,
    ``_description``, ``_base`` and ``_source`` its constructor sets."""

    _name: str
    _description: str
    _base: Arch
    _source: str

    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str:
        return self._description

    @property
    def base(self) -> Arch:
        """The reference architecture: the choices' base (a listed space: its ``base``, else
        its first candidate); the default MACs target is its cost."""
        return self._base

    @property
    def source(self) -> str:
        """Where the space came from (the file, or "space dict")."""
        return self._source


class SearchSpace(SpaceFacts):
    """Per-stage choices around a base `Arch`; see the module docstring for the format.

    Build one with `SearchSpace.load` (a shipped name or a file) or
    `SearchSpace.from_dict`. Instances are immutable.
    """

    def __init__(self, *, name: str, description: str, base: Arch, base_spec: Any,
                 defaults: Mapping[str, tuple], overrides: Mapping[int, Mapping[str, tuple]],
                 source: str = "<dict>"):
        # Prefer `from_dict` / `load`: they validate. This constructor trusts its input.
        self._name = name
        self._description = description
        self._base = base
        self._base_spec = base_spec
        self._source = source
        self._defaults = MappingProxyType(dict(defaults))
        self._overrides = MappingProxyType(
            {i: MappingProxyType(dict(o)) for i, o in sorted(overrides.items())}
        )
        per_stage = []
        for i in range(1, len(base.stages) + 1):
            merged = {**self._defaults, **self._overrides.get(i, {})}
            per_stage.append(MappingProxyType({f: merged[f] for f in FIELDS if f in merged}))
        self._choices: tuple[Mapping[str, tuple], ...] = tuple(per_stage)
        self._dims: dict[str, tuple] = {
            f"s{i}.{field}": choices
            for i, stage_choices in enumerate(self._choices, 1)
            for field, choices in stage_choices.items()
            if len(choices) > 1
        }

    # --- construction ------------------------------------------------------------------

    @staticmethod
    def names() -> list[str]:
        """Names of the spaces shipped in ``space/spaces``."""
        folder = resources.files(__package__) / _SHIPPED_DIR
        if not folder.is_dir():
            return []
        return sorted(p.name.rsplit(".", 1)[0] for p in folder.iterdir()
                      if p.name.endswith((".yaml", ".yml")))

    @classmethod
    def load(cls, name_or_path: str | Path) -> "SearchSpace":
        """A shipped space by name (``mnasnet``, ``v2_cifar``, ...) or a ``.yaml``, ``.yml``,
        ``.json`` or ``.toml`` file. A file with a top-level ``candidates`` key is a listed
        space and loads as a `space.listed.ListedSpace` (same interface)."""
        if isinstance(name_or_path, str) and name_or_path in cls.names():
            folder = resources.files(__package__) / _SHIPPED_DIR
            for suffix in (".yaml", ".yml"):
                entry = folder / f"{name_or_path}{suffix}"
                if entry.is_file():
                    with resources.as_file(entry) as path:
                        return cls._load_file(Path(path))
        if not isinstance(name_or_path, (str, Path)):
            raise SpaceError(
                f"search space must be a shipped name or a file path, got {name_or_path!r}"
            )
        if not str(name_or_path).strip():
            raise SpaceError("search space must be a shipped name or a file path, got ''")
        path = Path(name_or_path)
        if path.suffix.lower() not in _SUFFIXES:
            if not path.exists() and len(path.parts) == 1:
                raise SpaceError(
                    f"unknown search space {str(name_or_path)!r}; shipped spaces are "
                    f"{', '.join(cls.names())}, or give a path to a {'/'.join(_SUFFIXES)} file"
                )
            raise SpaceError(
                f"space file {str(path)!r}: unsupported file type {path.suffix!r}; "
                f"use one of {', '.join(_SUFFIXES)}"
            )
        return cls._load_file(path)

    @classmethod
    def _load_file(cls, path: Path) -> "SearchSpace":
        where = f"space file {str(path)!r}"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise SpaceError(f"{where} does not exist") from None
        except OSError as err:
            raise SpaceError(f"{where} cannot be read: {err.strerror or err}") from None
        suffix = path.suffix.lower()
        try:
            if suffix in (".yaml", ".yml"):
                import yaml

                try:
                    data = yaml.safe_load(raw.decode("utf-8"))
                except yaml.YAMLError as err:
                    mark = getattr(err, "problem_mark", None)
                    at = f" at line {mark.line + 1}" if mark is not None else ""
                    problem = getattr(err, "problem", None) or "syntax error"
                    raise SpaceError(f"{where} is not valid YAML: {problem}{at}") from None
            elif suffix == ".json":
                try:
                    data = json.loads(raw.decode("utf-8"))
                except json.JSONDecodeError as err:
                    raise SpaceError(
                        f"{where} is not valid JSON: {err.msg} at line {err.lineno}"
                    ) from None
            else:
                try:
                    import tomllib
                except ModuleNotFoundError:  # Python < 3.11
                    import tomli as tomllib
                try:
                    data = tomllib.loads(raw.decode("utf-8"))
                except tomllib.TOMLDecodeError as err:
                    raise SpaceError(f"{where} is not valid TOML: {err}") from None
        except UnicodeDecodeError:
            raise SpaceError(f"{where} is not UTF-8 text") from None
        from .listed import ListedSpace, is_listed

        if is_listed(data):
            # A list of named candidates: read again by ListedSpace, which also refuses a
            # label written twice (which the parse above would have kept silently).
            return ListedSpace.load_file(path)
        return cls.from_dict(data, source=where, default_name=path.name.rsplit(".", 1)[0])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "space dict",
                  default_name: str = "custom") -> "SearchSpace":
        """A space from its dict form (what the files hold); validates everything.

        ``source`` names the origin in error messages.
        """
        where = source
        if not isinstance(data, Mapping):
            raise SpaceError(
                f"{where} must be a mapping with keys {list(_TOP_LEVEL)}, "
                f"got {type(data).__name__}"
            )
        unknown = [k for k in data if k not in _TOP_LEVEL]
        if unknown:
            raise SpaceError(
                f"{where}: unknown top-level key {unknown[0]!r}; expected some of {list(_TOP_LEVEL)}"
            )
        name = data.get("name", default_name)
        if not isinstance(name, str) or not name:
            raise SpaceError(f"{where}: name must be a non-empty string, got {name!r}")
        description = data.get("description", "")
        if description is None:
            description = ""
        if not isinstance(description, str):
            raise SpaceError(f"{where}: description must be a string, got {description!r}")
        if "base" not in data:
            raise SpaceError(
                f"{where}: missing key 'base' (a preset name such as 'efficientnet_b0' "
                f"or an arch string)"
            )
        base_spec = data["base"]
        base = _resolve_base(base_spec, where)

        defaults_raw = data.get("defaults") or {}
        if not isinstance(defaults_raw, Mapping):
            raise SpaceError(f"{where}: defaults must be a mapping of field -> choices, "
                             f"got {defaults_raw!r}")
        defaults: dict[str, tuple] = {}
        for field, value in defaults_raw.items():
            # A default applies to every stage: check it against each of them.
            defaults[field] = _parse_choices(
                value, field, base.stages, f"{where}: defaults.{field}"
            )

        stages_raw = data.get("stages") or {}
        if not isinstance(stages_raw, Mapping):
            raise SpaceError(
                f"{where}: stages must be a mapping from 1-based stage number to field "
                f"choices, got {type(stages_raw).__name__}"
            )
        n = len(base.stages)
        overrides: dict[int, dict[str, tuple]] = {}
        for key, fields in stages_raw.items():
            number = _stage_number(key)
            if number is None or not 1 <= number <= n:
                raise SpaceError(
                    f"{where}: stage number {key!r} is out of range; the base has stages 1..{n}"
                )
            if number in overrides:
                raise SpaceError(f"{where}: stage {number} is given twice")
            if fields is None:
                fields = {}
            if not isinstance(fields, Mapping):
                raise SpaceError(
                    f"{where}: stages.{number} must be a mapping of field -> choices, got {fields!r}"
                )
            overrides[number] = {
                field: _parse_choices(value, field, (base.stages[number - 1],),
                                      f"{where}: stages.{number}.{field}")
                for field, value in fields.items()
            }
        return cls(name=name, description=description, base=base, base_spec=base_spec,
                   defaults=defaults, overrides=overrides, source=where)

    def to_dict(self) -> dict[str, Any]:
        """The dict form; ``SearchSpace.from_dict(space.to_dict()) == space``.

        Fixed values are written as scalars, choices as lists.
        """
        def out(choices: tuple) -> Any:
            return choices[0] if len(choices) == 1 else list(choices)

        base = self._base_spec
        if isinstance(base, Mapping):
            base = self._base.to_dict()
        d: dict[str, Any] = {"name": self._name, "description": self._description,
                             "base": base}
        if self._defaults:
            d["defaults"] = {f: out(c) for f, c in self._defaults.items()}
        if self._overrides:
            d["stages"] = {i: {f: out(c) for f, c in o.items()}
                           for i, o in self._overrides.items()}
        return d

    # --- facts -------------------------------------------------------------------------

    @property
    def num_stages(self) -> int:
        return len(self._base.stages)

    @property
    def choices(self) -> tuple[Mapping[str, tuple], ...]:
        """Per stage (0-based tuple index), field -> choices for every declared field,
        fixed ones included; fields not listed keep the base value."""
        return self._choices

    def dimensions(self) -> dict[str, tuple]:
        """Parameter name -> choices, for fields with more than one choice, in
        suggestion order (stage by stage, fields in `FIELDS` order)."""
        return dict(self._dims)

    def distributions(self) -> dict[str, Any]:
        """Parameter name -> ``optuna.distributions.CategoricalDistribution``, for
        ``study.ask(fixed_distributions=...)`` or ``optuna.trial.create_trial``."""
        from optuna.distributions import CategoricalDistribution

        return {name: CategoricalDistribution(list(c)) for name, c in self._dims.items()}

    def size(self) -> int:
        """Exact number of distinct architectures in the space.

        Stages decode independently and each field sets one attribute of its stage, so
        this is the product over stages and fields of the number of distinct decoded
        values (choices that decode alike count once).
        """
        total = 1
        for base_stage, stage_choices in zip(self._base.stages, self._choices):
            for field, choices in stage_choices.items():
                total *= len({_decode_field(base_stage, field, c)[1] for c in choices})
        return total

    # --- decoding ----------------------------------------------------------------------

    def decode(self, params: Mapping[str, Any]) -> Arch:
        """The `Arch` for a complete parameter dict (see `dimensions`); deterministic.

        Raises `SpaceError` for a missing or unknown parameter name, or a value that is
        not among its choices.
        """
        if not isinstance(params, Mapping):
            raise SpaceError(
                f"search space {self._name!r}: params must be a mapping of parameter name "
                f"-> value, got {type(params).__name__}"
            )
        unknown = [k for k in params if k not in self._dims]
        if unknown:
            raise SpaceError(
                f"search space {self._name!r}: unknown parameter {unknown[0]!r}; "
                f"parameters are {_short_list(self._dims)}"
            )
        missing = [k for k in self._dims if k not in params]
        if missing:
            raise SpaceError(
                f"search space {self._name!r}: missing parameter {missing[0]!r} "
                f"(choices {list(self._dims[missing[0]])})"
            )
        stages = []
        for i, (base_stage, stage_choices) in enumerate(zip(self._base.stages, self._choices), 1):
            changes: dict[str, Any] = {}
            for field, choices in stage_choices.items():
                if len(choices) == 1:
                    value = choices[0]
                else:
                    pname = f"s{i}.{field}"
                    value = _match(params[pname], choices)
                    if value is _NO_MATCH:
                        raise SpaceError(
                            f"search space {self._name!r}: parameter {pname!r} = "
                            f"{_fmt_value(params[pname])} is not among the choices {list(choices)}"
                        )
                attr, decoded = _decode_field(base_stage, field, value)
                changes[attr] = decoded
            try:
                stages.append(dataclasses.replace(base_stage, **changes))
            except ArchError as err:  # pragma: no cover - choices are validated at load
                raise SpaceError(f"search space {self._name!r}: stage {i}: {err.reason}") from None
        return self._base.replace(stages=tuple(stages))

    def suggest(self, trial: Any) -> Arch:
        """Define-by-run: ask ``trial`` (an Optuna trial) for every parameter with
        ``suggest_categorical`` under its ``s{i}.{field}`` name and decode the answer."""
        params = {name: trial.suggest_categorical(name, list(choices))
                  for name, choices in self._dims.items()}
        return self.decode(params)

    def sample_params(self, rng: Any = None) -> dict[str, Any]:
        """Uniformly random parameters. ``rng``: a ``numpy.random.Generator``, a
        ``numpy.random.RandomState``, a ``random.Random``, an int seed (fed to
        ``numpy.random.default_rng``) or None (fresh entropy)."""
        pick = _picker(rng)
        return {name: choices[pick(len(choices))] for name, choices in self._dims.items()}

    def sample(self, rng: Any = None) -> Arch:
        """A uniformly random architecture; see `sample_params` for ``rng``."""
        return self.decode(self.sample_params(rng))

    def params_of(self, arch: Arch) -> dict[str, Any]:
        """Parameters that decode to ``arch``: ``decode(params_of(a)) == a``.

        Raises `SpaceError` when ``arch`` is not in the space. When several choices
        decode alike (two widths rounding to the same channels, layer deltas clamped to
        1) the neutral one (width 1.0, layers 0) is returned if it is among them, else
        the first listed.
        """
        if not isinstance(arch, Arch):
            raise SpaceError(f"search space {self._name!r}: params_of needs an Arch, "
                             f"got {type(arch).__name__}")
        base = self._base
        if len(arch.stages) != len(base.stages):
            raise SpaceError(
                f"search space {self._name!r}: arch has {len(arch.stages)} stages, "
                f"the space has {len(base.stages)}"
            )
        if arch.replace(stages=base.stages) != base:
            raise SpaceError(
                f"search space {self._name!r}: arch differs from the base outside the stages "
                f"(stem, head, resolution, dropout, drop_path, activation or batch norm)"
            )
        params: dict[str, Any] = {}
        for i, (base_stage, stage, stage_choices) in enumerate(
                zip(base.stages, arch.stages, self._choices), 1):
            if stage.stride != base_stage.stride:
                raise SpaceError(f"search space {self._name!r}: stage {i} stride "
                                 f"{stage.stride} differs from the base's {base_stage.stride}")
            for attr in ("block", "kernel", "expand", "se", "layers", "channels"):
                field = "width" if attr == "channels" else attr
                target = getattr(stage, attr)
                choices = stage_choices.get(field)
                if choices is None:
                    if target != getattr(base_stage, attr):
                        raise SpaceError(
                            f"search space {self._name!r}: stage {i} {attr} {target!r} is "
                            f"fixed to the base's {getattr(base_stage, attr)!r}"
                        )
                    continue
                hits = [c for c in choices if _decode_field(base_stage, field, c)[1] == target]
                if not hits:
                    raise SpaceError(
                        f"search space {self._name!r}: stage {i} {attr} {target!r} is not "
                        f"reachable with {field} choices {list(choices)}"
                    )
                if len(choices) > 1:
                    neutral = _NEUTRAL.get(field)
                    params[f"s{i}.{field}"] = next(
                        (c for c in hits if _same_choice(c, neutral)), hits[0])
        return params

    # --- dunder ------------------------------------------------------------------------

    def _key(self) -> tuple:
        return (self._name, self._description, self._base,
                tuple(tuple(c.items()) for c in self._choices))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SearchSpace):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"SearchSpace(name={self._name!r}, stages={self.num_stages}, "
                f"dimensions={len(self._dims)}, size={self.size()})")


# --- helpers ---------------------------------------------------------------------------

_NO_MATCH = object()
_NEUTRAL = {"layers": 0, "width": 1.0}


def _match(value: Any, choices: Iterable[Any]) -> Any:
    for choice in choices:
        if _same_choice(value, choice):
            return choice
    return _NO_MATCH


def _short_list(names: Iterable[str], limit: int = 6) -> str:
    names = list(names)
    if not names:
        return "none (every field is fixed)"
    head = ", ".join(names[:limit])
    return head + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _stage_number(key: Any) -> int | None:
    if _is_int(key):
        return key
    if isinstance(key, str) and key.strip().isdigit():
        return int(key.strip())
    return None


def _resolve_base(spec: Any, where: str) -> Arch:
    if isinstance(spec, Mapping):
        try:
            return Arch.from_dict(dict(spec))
        except ArchError as err:
            raise SpaceError(f"{where}: base is not a valid arch: {err.reason}") from None
    if not isinstance(spec, str) or not spec.strip():
        raise SpaceError(
            f"{where}: base must be a preset name or an arch string, got {spec!r}"
        )
    if _looks_like_arch_string(spec):
        try:
            return Arch.from_string(spec)
        except ArchError as err:
            raise SpaceError(f"{where}: base {spec!r} is not a valid arch string: {err}") from None
    try:
        return get_preset(spec.strip()).arch()
    except KeyError as err:
        raise SpaceError(f"{where}: base {spec!r} not found: {err.args[0]}") from None


def _parse_choices(value: Any, field: str, stages: tuple[Stage, ...], where: str) -> tuple:
    """Validate one field's choices (a scalar or a non-empty list) against ``stages``."""
    if field not in FIELDS:
        raise SpaceError(f"{where}: unknown field {field!r}; fields are {list(FIELDS)}")
    if isinstance(value, (list, tuple)):
        choices = tuple(value)
        if not choices:
            raise SpaceError(f"{where}: the choice list is empty; give at least one value")
    elif value is None:
        raise SpaceError(f"{where}: no value given; give a value or a list of choices")
    else:
        choices = (value,)
    for choice in choices:
        for stage in stages:
            reason = _check_choice(stage, field, choice)
            if reason is not None:
                raise SpaceError(f"{where}: bad choice {choice!r}: {reason}")
    for j, choice in enumerate(choices):
        if any(_same_choice(choice, earlier) for earlier in choices[:j]):
            raise SpaceError(f"{where}: choice {choice!r} is listed twice")
    return choices


def _picker(rng: Any):
    """A function ``n -> index in [0, n)`` drawing from ``rng``."""
    import numpy as np

    if rng is None or _is_int(rng):
        rng = np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return lambda n: int(rng.integers(n))
    if isinstance(rng, np.random.RandomState):
        return lambda n: int(rng.randint(n))
    if isinstance(rng, random.Random):
        return lambda n: rng.randrange(n)
    raise TypeError(
        "rng must be a numpy.random.Generator, numpy.random.RandomState, random.Random, "
        f"an int seed or None, got {type(rng).__name__}"
    )
