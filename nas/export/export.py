"""Writing a network to a file that runs without this toolkit, and checking it does.

`export_model` writes ONNX (opset `ONNX_OPSET`, torch's ``torch.export``-based exporter,
read back by ONNX Runtime) or TorchScript (``torch.jit.trace``, read back by
``torch.jit.load``). Both take one input, ``images``: float32 of shape
``(batch, 3, resolution, resolution)``, normalised as in training (``(x / 255 - mean) /
std`` with the dataset's statistics), with a free batch size, and give ``logits`` of shape
``(batch, num_classes)``.

The file is made in memory, run on random images (a batch size other than the one it was
traced with, so the free batch axis is exercised) and compared with the PyTorch model
before anything is written; a model whose outputs differ by more than the tolerance is
refused and nothing is written. The file is then written atomically (`nas.atomic`), so an
interrupted export leaves the old file or none, never a partial one.

ONNX needs the optional extra ``effnas[export]`` (onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from space.errors import UserError

from ..atomic import atomic_write

__all__ = ["FORMATS", "ONNX_OPSET", "RELATIVE_TOLERANCE", "ExportReport", "export_model", "format_for_path",
           "require_onnx_tools", "run_onnx", "load_torchscript"]

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 18
# Outputs may differ by this fraction of the largest absolute logit (float32 rounding is
# about 1e-6 of it). Relative, because an untrained network's logits can be tiny (1e-14 for
# an untrained EfficientNet-B0, whose blocks start as identities), where any absolute
# tolerance would pass anything.
RELATIVE_TOLERANCE = 1e-4
# Protocol buffers cannot serialise a message of 2 GiB or more.
_ONNX_LIMIT = 2**31 - 1
_ONNX_TOOLS = ("onnx", "onnxruntime", "onnxscript")
_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript", ".ts": "torchscript",
             ".torchscript": "torchscript", ".jit": "torchscript"}


@dataclass(frozen=True)
class ExportReport:
    """What `export_model` wrote and how well the file matches PyTorch.

    Attributes:
        path, format: the file and ``"onnx"`` or ``"torchscript"``.
        size: bytes written.
        input_shape: ``("batch", 3, R, R)``.
        checked_batch: images in the comparison.
        max_abs_diff: the largest absolute difference between the file's logits and PyTorch's.
        logit_scale: the largest absolute logit PyTorch gave.
        tolerance: what that difference was allowed to be (`RELATIVE_TOLERANCE` of ``logit_scale``).
        runtime: what ran the file (``"onnxruntime 1.x"``, ``"torch.jit"``).
        opset: the ONNX opset (None for TorchScript).
    """

    path: Path
    format: str
    size: int
    input_shape: tuple
    checked_batch: int
    max_abs_diff: float
    logit_scale: float
    tolerance: float
    runtime: str
    opset: int | None = None


def format_for_path(path: str | Path) -> str | None:
    """The format a file name suggests (``.onnx``; ``.pt``, ``.pth``, ``.ts``,
    ``.torchscript``, ``.jit``), or None."""
    return _SUFFIXES.get(Path(path).suffix.lower())


def require_onnx_tools() -> None:
    """`UserError` (one sentence naming the install command) unless onnx, onnxruntime and
    onnxscript import."""
    missing = []
    for name in _ONNX_TOOLS:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(f"--format onnx needs the optional packages onnx, onnxruntime and onnxscript "
                        f"({', '.join(missing)} missing): pip install 'effnas[export]'")


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Silence the exporters' chatter (deprecation notices of torch.jit, torch.onnx's log
    lines about optional torchvision operators) while exporting."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*TracerWarning.*")
            yield
    finally:
        logger.setLevel(level)


def _onnx_bytes(model: nn.Module, example: torch.Tensor, metadata: Mapping[str, str]) -> bytes:
    with _quiet_exporters():
        program = torch.onnx.export(
            model, (example,), None, input_names=["images"], output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=ONNX_OPSET,
            dynamo=True, external_data=False, verbose=False, optimize=True)
    proto = program.model_proto
    proto.producer_name = "effnas"
    for key, value in metadata.items():
        proto.metadata_props.add(key=str(key), value=str(value))
    if proto.ByteSize() > _ONNX_LIMIT:
        raise UserError(f"the model is {proto.ByteSize() / 2**30:.1f} GiB, over ONNX's 2 GiB limit for one file; "
                        "export it with --format torchscript")
    return proto.SerializeToString()


def run_onnx(data: bytes | str | Path, images: np.ndarray) -> np.ndarray:
    """The logits ONNX Runtime computes for ``images`` with the model ``data`` (bytes or a file)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = data if isinstance(data, bytes) else str(data)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": images.astype(np.float32)})[0]


def _torchscript_bytes(model: nn.Module, example: torch.Tensor, metadata: Mapping[str, str]) -> bytes:
    with _quiet_exporters(), torch.no_grad():
        traced = torch.jit.trace(model, (example,), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={"effnas.json": json.dumps(dict(metadata), indent=2)})
    return buffer.getvalue()


def load_torchscript(data: bytes | str | Path) -> tuple[torch.jit.ScriptModule, dict]:
    """A TorchScript file written by `export_model` (bytes or a path) and its metadata."""
    extra = {"effnas.json": ""}
    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    with _quiet_exporters():
        module = torch.jit.load(source, map_location="cpu", _extra_files=extra)
    text = extra["effnas.json"]
    meta = json.loads(text.decode() if isinstance(text, bytes) else text) if text else {}
    return module, meta


def export_model(model: nn.Module, path: str | Path, fmt: str, *, resolution: int,
                 metadata: Mapping[str, str] | None = None, in_channels: int = 3, seed: int = 0,
                 check_batch: int = 3) -> ExportReport:
    """Write ``model`` (put in eval mode, on the CPU, float32) to ``path`` as ``fmt``,
    after checking that the file's outputs match the model's on ``check_batch`` random
    images; see the module docstring. ``metadata`` (strings) goes into the file: ONNX
    ``metadata_props``, TorchScript's extra file ``effnas.json``. Raises `UserError` when
    the outputs differ by more than the tolerance (nothing is written) or ONNX's packages
    are missing."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "onnx":
        require_onnx_tools()
    path = Path(path)
    model = model.eval().to(device="cpu", dtype=torch.float32, memory_format=torch.contiguous_format)
    gen = torch.Generator().manual_seed(seed)
    shape = (in_channels, resolution, resolution)
    example = torch.randn(2, *shape, generator=gen)
    images = torch.randn(check_batch, *shape, generator=gen)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    with torch.no_grad():
        expected = model(images).float()
    if fmt == "onnx":
        import onnxruntime

        data = _onnx_bytes(model, example, meta)
        got = torch.from_numpy(run_onnx(data, images.numpy()))
        runtime = f"onnxruntime {onnxruntime.__version__}"
    else:
        data = _torchscript_bytes(model, example, meta)
        loaded, _ = load_torchscript(data)
        with torch.no_grad():
            got = loaded(images).float()
        runtime = "torch.jit.load"
    if got.shape != expected.shape:
        raise UserError(f"the exported {fmt} model gives logits of shape {tuple(got.shape)} for a batch of "
                        f"{check_batch}, PyTorch {tuple(expected.shape)}, so nothing was written to {path}")
    diff = float((got - expected).abs().max())
    scale = float(expected.abs().max())
    tolerance = RELATIVE_TOLERANCE * scale if scale > 0 else 1e-12
    if not diff <= tolerance:
        raise UserError(f"the exported {fmt} model's outputs differ from PyTorch's by up to {diff:.3g} "
                        f"(tolerance {tolerance:.3g}), so nothing was written to {path}")
    with atomic_write(path) as f:
        f.write(data)
    return ExportReport(path=path, format=fmt, size=len(data), input_shape=("batch", *shape),
                        checked_batch=check_batch, max_abs_diff=diff, logit_scale=scale, tolerance=tolerance,
                        runtime=runtime, opset=ONNX_OPSET if fmt == "onnx" else None)
