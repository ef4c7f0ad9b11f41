"""A model to evaluate or export: built from an architecture, with the weights of a ``nas
train`` checkpoint when one is given (`load_model`).

A ``nas train`` checkpoint (`nas.train.checkpoint`, format 2) holds the network's state
under ``"model"`` and, when the run kept an exponential moving average, the averaged
network under ``"ema"``; training reports the accuracy of the EMA weights when there are
any, so those are the weights loaded here. Its ``"meta"`` records the architecture string
(``"arch"``), ``"num_classes"``, the training ``"resolution"`` and the data split
(``"dataset"``, ``"split_seed"``, ``"val_size"``, ``"subset"``, ``"data_fingerprint"``).
Dropout and stochastic depth do nothing in eval mode and hold no weights, so an
architecture that differs from the checkpoint's only in those rates is the same network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from space.arch import Arch, ArchError
from space.errors import UserError
from space.presets import resolve

__all__ = ["LoadedModel", "load_model", "same_network"]


@dataclass
class LoadedModel:
    """A network in eval mode and what is known about it.

    Attributes:
        model: the network (eval mode, float32, on the device asked for).
        arch: its description (the checkpoint's when one was loaded).
        num_classes: classifier outputs.
        resolution: the input side it was trained (or is described) at.
        weights: ``"ema"`` or ``"raw"`` (a checkpoint's), or ``"random"`` (no checkpoint).
        checkpoint: the checkpoint file, or None.
        meta: the checkpoint's ``"meta"`` (empty without one).
        state: the checkpoint's counters: ``epoch``, ``step``, ``images_seen``, and the last
            epoch's ``val_acc`` when recorded (empty without one).
        class_names: the class names when known (the run's ``arch.json`` or the arch file), else None.
    """

    model: nn.Module
    arch: Arch
    num_classes: int
    resolution: int
    weights: str
    checkpoint: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None

    def describe_weights(self) -> str:
        if self.checkpoint is None:
            return "random initialisation (no --checkpoint)"
        kind = "EMA weights" if self.weights == "ema" else "weights"
        return f"{kind} of {self.checkpoint} (epoch {self.state.get('epoch')}, step {self.state.get('step')})"


def same_network(a: Arch, b: Arch) -> bool:
    """Whether ``a`` and ``b`` are the same network in eval mode (they may differ in dropout
    and drop-path rates)."""
    return a.replace(dropout=0.0, drop_path=0.0).to_string() == b.replace(dropout=0.0, drop_path=0.0).to_string()


def _read_checkpoint(path: Path, flag: str) -> dict[str, Any]:
    from nas.train.checkpoint import CheckpointMismatch, load_checkpoint

    if not path.is_file():
        raise UserError(f"{flag} {path}: no such file" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        return load_checkpoint(path, torch.device("cpu"))
    except CheckpointMismatch as err:
        raise UserError(f"{flag} {path} {err.reason}") from None


def _class_names_beside(path: Path, arch: Arch, num_classes: int) -> tuple[str, ...] | None:
    """Class names from the run's ``arch.json`` (written by ``nas train`` beside its checkpoint)."""
    record = path.parent / "arch.json"
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        names = data.get("class_names")
        recorded = Arch.from_dict(data)
    except (OSError, ValueError, AttributeError, ArchError):
        return None
    if isinstance(names, list) and len(names) == num_classes and same_network(recorded, arch):
        return tuple(str(n) for n in names)
    return None


def load_model(arch_ref: str | None = None, checkpoint: str | Path | None = None, *,
               num_classes: int | None = None, device: str | torch.device = "cpu",
               flags: dict[str, str] | None = None) -> LoadedModel:
    """The network of ``arch_ref`` (a preset name, arch string or arch JSON file such as
    ``baseline.json``) and/or ``checkpoint`` (a ``nas train`` checkpoint), in eval mode.

    With a checkpoint the architecture and class count are the checkpoint's; an
    ``arch_ref`` or ``num_classes`` that disagrees is refused. Without one the weights are
    random and the class count is ``num_classes``, else the arch file's ``num_classes``,
    else 1000 (`space.build_model`'s). ``flags``: how errors name the arguments (default
    ``--arch``, ``--checkpoint``, ``--num-classes``). Errors are `UserError`, one sentence.
    """
    from space import build_model

    names = {"arch": "--arch", "checkpoint": "--checkpoint", "num_classes": "--num-classes", **(flags or {})}
    if arch_ref is None and checkpoint is None:
        raise UserError(f"give {names['arch']} or {names['checkpoint']} (or both)")
    if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) < 1):
        raise UserError(f"{names['num_classes']} must be at least 1, got {num_classes}")
    given = resolve(arch_ref) if arch_ref is not None else None
    if checkpoint is None:
        assert given is not None
        classes = num_classes if num_classes is not None else (given.num_classes or 1000)
        model = build_model(given.arch, num_classes=int(classes)).eval()
        class_names = given.class_names if given.class_names and len(given.class_names) == classes else None
        return LoadedModel(model.to(device), given.arch, int(classes), given.arch.resolution, "random",
                           class_names=class_names)

    path = Path(checkpoint)
    state = _read_checkpoint(path, names["checkpoint"])
    meta = dict(state["meta"])
    try:
        arch = Arch.from_string(str(meta.get("arch")))
    except ArchError:
        raise UserError(f"{names['checkpoint']} {path} was trained from a module, not an architecture "
                        f"description ({meta.get('arch')!r}), so it cannot be rebuilt here") from None
    if given is not None and not same_network(given.arch, arch):
        raise UserError(f"{names['checkpoint']} {path} holds another architecture than {names['arch']} {arch_ref} "
                        f"(it was trained as {arch.to_string()}); omit {names['arch']} to use the checkpoint's")
    classes = int(meta["num_classes"])
    if num_classes is not None and int(num_classes) != classes:
        raise UserError(f"{names['num_classes']} {num_classes} differs from the {classes} classes "
                        f"{names['checkpoint']} {path} was trained for; omit {names['num_classes']}")
    weights = "ema" if state.get("ema") is not None else "raw"
    model = build_model(arch, num_classes=classes)
    try:
        model.load_state_dict(state["ema"] if weights == "ema" else state["model"])
    except RuntimeError as err:
        raise UserError(f"{names['checkpoint']} {path}: its weights do not fit {arch.to_string()} "
                        f"({str(err).splitlines()[0]})") from None
    model = model.eval().to(device)
    history = state.get("history") or []
    counters = {k: state.get(k) for k in ("epoch", "step", "images_seen")}
    if history:
        counters["val_acc"] = history[-1].get("val_acc")
    resolution = int(meta.get("resolution") or arch.resolution)
    return LoadedModel(model, arch, classes, resolution, weights, checkpoint=path, meta=meta, state=counters,
                       class_names=_class_names_beside(path, arch, classes))
