"""A search space that is a list of named candidates: `ListedSpace`.

Where `space.search.SearchSpace` builds architectures from per-stage choices, a listed
space simply names them: a hand-made shortlist to compare, or the members a tool generated
(``scaling grid`` writes one with the phi = 1 member of every alpha, beta, gamma grid
point). It has the same interface as `SearchSpace` (name, description, base, source,
`dimensions`, `distributions`, `size`, `decode`, `suggest`, `sample_params`, `sample`,
`params_of`, `to_dict`), so ``nas search`` runs on it unchanged; with ``--sampler grid``
every candidate is evaluated exactly once.

File format (YAML, JSON or TOML; loaded by `SearchSpace.load`, which recognises the key
``candidates``)::

    name: shortlist                   # optional; defaults to the file name
    description: ...                  # optional free text
    base: efficientnet_b0_cifar       # optional: a preset name, an arch string or an arch
                                      # mapping; the reference of the mnas reward's default
                                      # target and of the v2 reward (default: the first
                                      # candidate)
    candidates:                       # label -> architecture, at least one
      b0: efficientnet_b0_cifar       # a preset name,
      wide: net_r32_silu-stem_c32_s1-...   # an arch string,
      small: {resolution: 32, ...}    # or an arch mapping (`Arch.to_dict`)

Top-level keys are exactly ``name``, ``description``, ``base`` and ``candidates``. Labels
are non-empty strings, each given once (a label written twice in the file is refused, not
silently replaced); quote labels YAML would read as numbers (``"1.5"``). Every
architecture is checked when the space is loaded, and a bad one is a `SpaceError` naming the
file and the label. Two labels may name the same architecture (a study evaluates it once
and reuses the result for the other: see `nas.search.trial`).

Parameters: one categorical dimension, ``candidate``, whose choices are the labels in file
order. `decode({"candidate": label})` is that label's `Arch`; `params_of(arch)` is the
first label whose architecture equals ``arch`` (a `SpaceError` when none does). `size` is
the number of distinct architectures.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .arch import Arch, ArchError
from .presets import _looks_like_arch_string, get_preset
from .search import SpaceError, SpaceFacts, _picker, _resolve_base

__all__ = ["ListedSpace", "CANDIDATE_PARAM", "is_listed"]

#: The one parameter of a listed space.
CANDIDATE_PARAM = "candidate"

_TOP_LEVEL = ("name", "description", "base", "candidates")


def is_listed(data: Any) -> bool:
    """True when a parsed space file describes a listed space (it has ``candidates``)."""
    return isinstance(data, Mapping) and "candidates" in data


def _resolve_candidate(spec: Any, where: str, label: str) -> Arch:
    if isinstance(spec, Arch):
        return spec
    if isinstance(spec, Mapping):
        try:
            return Arch.from_dict(dict(spec))
        except ArchError as err:
            raise SpaceError(f"{where}: candidate {label!r} is not a valid arch: {err.reason}") from None
        except (TypeError, ValueError) as err:
            raise SpaceError(f"{where}: candidate {label!r} is not a valid arch: {err}") from None
    if not isinstance(spec, str) or not spec.strip():
        raise SpaceError(f"{where}: candidate {label!r} must be a preset name, an arch string or an "
                         f"arch mapping, got {spec!r}")
    if _looks_like_arch_string(spec):
        try:
            return Arch.from_string(spec.strip())
        except ArchError as err:
            raise SpaceError(f"{where}: candidate {label!r} is not a valid arch string: {err}") from None
    try:
        return get_preset(spec.strip()).arch()
    except KeyError as err:
        raise SpaceError(f"{where}: candidate {label!r}: {spec!r} is neither an arch string nor a "
                         f"preset ({err.args[0]})") from None


class _UniqueKeyLoader:
    """A YAML safe loader that refuses a key written twice in one mapping (PyYAML keeps the
    last one silently, which would drop a candidate without a word)."""

    _cls = None

    @classmethod
    def get(cls):
        if cls._cls is None:
            import yaml

            class Loader(yaml.SafeLoader):
                pass

            def construct_mapping(loader, node, deep=False):
                loader.flatten_mapping(node)
                seen = set()
                for key_node, _ in node.value:
                    key = loader.construct_object(key_node, deep=deep)
                    try:
                        duplicate = key in seen
                    except TypeError:  # an unhashable key: the base constructor says why
                        break
                    if duplicate:
                        raise _DuplicateKey(key, key_node.start_mark.line + 1)
                    seen.add(key)
                return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

            Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
            cls._cls = Loader
        return cls._cls


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int | None):
        super().__init__(key)
        self.key, self.line = key, line


def _json_pairs(pairs):
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key, None)
        seen.add(key)
    return dict(pairs)


class ListedSpace(SpaceFacts):
    """Named candidate architectures; see the module docstring for the format.

    Build one with `ListedSpace.from_dict`, `ListedSpace.load_file` or `SearchSpace.load`
    (which dispatches here for files with ``candidates``). Instances are immutable.
    """

    def __init__(self, *, name: str, description: str, base: Arch, base_spec: Any,
                 candidates: Mapping[str, Arch], source: str = "<dict>"):
        # Prefer `from_dict` / `load_file`: they validate. This constructor trusts its input.
        self._name = name
        self._description = description
        self._base = base
        self._base_spec = base_spec
        self._source = source
        self._candidates = MappingProxyType(dict(candidates))
        self._labels = tuple(self._candidates)
        self._strings = MappingProxyType({label: arch.to_string() for label, arch in self._candidates.items()})

    # --- construction ------------------------------------------------------------------

    @classmethod
    def load_file(cls, path: str | Path) -> "ListedSpace":
        """A listed space from a ``.yaml``, ``.yml``, ``.json`` or ``.toml`` file."""
        path = Path(path)
        where = f"space file {str(path)!r}"
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise SpaceError(f"{where} does not exist") from None
        except UnicodeDecodeError:
            raise SpaceError(f"{where} is not UTF-8 text") from None
        except OSError as err:
            raise SpaceError(f"{where} cannot be read: {err.strerror or err}") from None
        suffix = path.suffix.lower()
        try:
            if suffix in (".yaml", ".yml"):
                import yaml

                try:
                    data = yaml.load(text, Loader=_UniqueKeyLoader.get())  # noqa: S506 - a SafeLoader
                except yaml.YAMLError as err:
                    mark = getattr(err, "problem_mark", None)
                    at = f" at line {mark.line + 1}" if mark is not None else ""
                    problem = getattr(err, "problem", None) or "syntax error"
                    raise SpaceError(f"{where} is not valid YAML: {problem}{at}") from None
            elif suffix == ".json":
                try:
                    data = json.loads(text, object_pairs_hook=_json_pairs)
                except json.JSONDecodeError as err:
                    raise SpaceError(f"{where} is not valid JSON: {err.msg} at line {err.lineno}") from None
            elif suffix == ".toml":
                try:
                    import tomllib
                except ModuleNotFoundError:  # Python < 3.11
                    import tomli as tomllib
                try:
                    data = tomllib.loads(text)  # TOML itself refuses a key given twice
                except tomllib.TOMLDecodeError as err:
                    raise SpaceError(f"{where} is not valid TOML: {err}") from None
            else:
                raise SpaceError(f"{where}: a listed space is a .yaml, .yml, .json or .toml file, "
                                 f"got {suffix!r}")
        except _DuplicateKey as dup:
            at = f" (line {dup.line})" if dup.line is not None else ""
            raise SpaceError(f"{where}: key {dup.key!r} is given twice{at}; every label must be "
                             f"unique") from None
        return cls.from_dict(data, source=where, default_name=path.name.rsplit(".", 1)[0])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "space dict",
                  default_name: str = "custom") -> "ListedSpace":
        """A listed space from its dict form (what the files hold); validates everything.
        ``source`` names the origin in error messages."""
        where = source
        if not isinstance(data, Mapping):
            raise SpaceError(f"{where} must be a mapping with keys {list(_TOP_LEVEL)}, "
                             f"got {type(data).__name__}")
        unknown = [k for k in data if k not in _TOP_LEVEL]
        if unknown:
            raise SpaceError(f"{where}: unknown top-level key {unknown[0]!r} for a listed space; "
                             f"expected some of {list(_TOP_LEVEL)}")
        name = data.get("name", default_name)
        if not isinstance(name, str) or not name:
            raise SpaceError(f"{where}: name must be a non-empty string, got {name!r}")
        description = data.get("description", "")
        if description is None:
            description = ""
        if not isinstance(description, str):
            raise SpaceError(f"{where}: description must be a string, got {description!r}")
        raw = data.get("candidates")
        if not isinstance(raw, Mapping):
            raise SpaceError(f"{where}: candidates must be a mapping of label -> architecture "
                             f"(a preset name, an arch string or an arch mapping), got "
                             f"{type(raw).__name__}")
        if not raw:
            raise SpaceError(f"{where}: candidates is empty; list at least one architecture")
        candidates: dict[str, Arch] = {}
        for label, spec in raw.items():
            if not isinstance(label, str) or not label.strip():
                raise SpaceError(f"{where}: candidate label {label!r} must be a non-empty string "
                                 f"(quote labels that look like numbers)")
            if label in candidates:  # pragma: no cover - a mapping cannot repeat a key
                raise SpaceError(f"{where}: candidate label {label!r} is given twice")
            candidates[label] = _resolve_candidate(spec, where, label)
        if "base" in data and data["base"] is not None:
            base_spec = data["base"]
            base = base_spec if isinstance(base_spec, Arch) else _resolve_base(base_spec, where)
        else:
            base_spec = None
            base = next(iter(candidates.values()))
        return cls(name=name, description=description, base=base, base_spec=base_spec,
                   candidates=candidates, source=where)

    def to_dict(self) -> dict[str, Any]:
        """The dict form, candidates as arch strings; ``ListedSpace.from_dict(s.to_dict())``
        equals ``s``."""
        base = self._base_spec
        if base is None or isinstance(base, (Mapping, Arch)):
            base = self._base.to_string()
        return {"name": self._name, "description": self._description, "base": base,
                "candidates": dict(self._strings)}

    # --- facts -------------------------------------------------------------------------

    @property
    def labels(self) -> tuple[str, ...]:
        """The candidates' labels, in file order."""
        return self._labels

    @property
    def candidates(self) -> Mapping[str, Arch]:
        """Label -> `Arch`, in file order."""
        return self._candidates

    def dimensions(self) -> dict[str, tuple]:
        """``{"candidate": labels}``: one categorical parameter."""
        return {CANDIDATE_PARAM: self._labels}

    def distributions(self) -> dict[str, Any]:
        """``{"candidate": CategoricalDistribution(labels)}``."""
        from optuna.distributions import CategoricalDistribution

        return {CANDIDATE_PARAM: CategoricalDistribution(list(self._labels))}

    def size(self) -> int:
        """Number of distinct architectures (labels naming the same one count once)."""
        return len(set(self._strings.values()))

    # --- decoding ----------------------------------------------------------------------

    def decode(self, params: Mapping[str, Any]) -> Arch:
        """The `Arch` of ``{"candidate": label}``; `SpaceError` for anything else."""
        if not isinstance(params, Mapping):
            raise SpaceError(f"search space {self._name!r}: params must be a mapping of parameter name "
                             f"-> value, got {type(params).__name__}")
        unknown = [k for k in params if k != CANDIDATE_PARAM]
        if unknown:
            raise SpaceError(f"search space {self._name!r}: unknown parameter {unknown[0]!r}; "
                             f"the only parameter is {CANDIDATE_PARAM!r}")
        if CANDIDATE_PARAM not in params:
            raise SpaceError(f"search space {self._name!r}: missing parameter {CANDIDATE_PARAM!r}")
        label = params[CANDIDATE_PARAM]
        if not isinstance(label, str) or label not in self._candidates:
            shown = ", ".join(self._labels[:6]) + (", ..." if len(self._labels) > 6 else "")
            raise SpaceError(f"search space {self._name!r}: candidate {label!r} is not one of its "
                             f"labels ({shown})")
        return self._candidates[label]

    def suggest(self, trial: Any) -> Arch:
        """Define-by-run: ``trial.suggest_categorical("candidate", labels)``, decoded."""
        return self.decode({CANDIDATE_PARAM: trial.suggest_categorical(CANDIDATE_PARAM, list(self._labels))})

    def sample_params(self, rng: Any = None) -> dict[str, Any]:
        """A uniformly random label; ``rng`` as `SearchSpace.sample_params` takes it."""
        pick = _picker(rng)
        return {CANDIDATE_PARAM: self._labels[pick(len(self._labels))]}

    def sample(self, rng: Any = None) -> Arch:
        """A uniformly random candidate (by label)."""
        return self.decode(self.sample_params(rng))

    def params_of(self, arch: Arch) -> dict[str, Any]:
        """``{"candidate": label}`` of the first label whose architecture equals ``arch``
        (compared by arch string); `SpaceError` when none does."""
        if not isinstance(arch, Arch):
            raise SpaceError(f"search space {self._name!r}: params_of needs an Arch, "
                             f"got {type(arch).__name__}")
        text = arch.to_string()
        for label, string in self._strings.items():
            if string == text:
                return {CANDIDATE_PARAM: label}
        raise SpaceError(f"search space {self._name!r}: the architecture is not one of its "
                         f"{len(self._labels)} candidates")

    # --- dunder ------------------------------------------------------------------------

    def _key(self) -> tuple:
        return (self._name, self._description, self._base, tuple(self._strings.items()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ListedSpace):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"ListedSpace(name={self._name!r}, candidates={len(self._labels)}, size={self.size()})"
