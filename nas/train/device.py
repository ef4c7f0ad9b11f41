"""Device and precision: which device to train on, autocast and gradient scaling,
memory format, and recognising out-of-memory errors."""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch

from space.errors import UserError

from .result import TrainingFailed

__all__ = ["autocast", "default_channels_last", "first_line", "grad_scaler", "is_oom",
           "native_bf16", "resolve_amp", "resolve_device"]

_OOM_TYPES: tuple[type[BaseException], ...] = tuple(
    {t for t in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError) if t}
)
_OOM_TEXT = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def is_oom(err: BaseException) -> bool:
    if isinstance(err, TrainingFailed):
        return False
    if isinstance(err, _OOM_TYPES):
        return True
    return isinstance(err, RuntimeError) and any(t in str(err) for t in _OOM_TEXT)


_DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(name: str | None) -> torch.device:
    """The torch device for ``name`` (None: CUDA when available, else the CPU). A name
    torch does not know, a device type other than cpu / cuda / mps, or a device this
    machine does not have is a `UserError` naming ``--device``."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"--device {name!r} is not a device name; use cpu, cuda or cuda:N") from None
    if dev.type not in _DEVICE_TYPES:
        raise UserError(f"--device {name!r}: training runs on cpu, cuda or cuda:N, not {dev.type}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name!r}: CUDA is not available on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UserError(f"--device {name!r}: this machine has {count} CUDA device"
                            f"{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"--device {name!r}: MPS is not available on this machine; use --device cpu")
    return dev


def default_channels_last(dev: torch.device) -> bool:
    # oneDNN (CPU) and cuDNN both run depthwise and 1x1 convolutions faster in NHWC.
    return dev.type in ("cuda", "cpu")


def native_bf16(dev: torch.device) -> bool:
    """bf16 in hardware (Ampere or newer, or ROCm), not emulated through fp32."""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_properties(dev).major >= 8


def resolve_amp(amp: str, dev: torch.device) -> str:
    """The autocast mode a run on ``dev`` really uses for ``TrainConfig.amp``: ``"bf16"``,
    ``"fp16"`` or ``"off"``.

    ``"auto"`` is bf16 on CUDA GPUs with native bf16, fp16 on older CUDA GPUs, off
    elsewhere. ``"bf16"`` on a CUDA GPU without native bf16 becomes ``"fp16"`` (with a
    gradient scaler) and warns: there, torch's autocast would turn itself off and train
    in fp32 while the run claimed bf16. ``"fp16"`` off CUDA is a `UserError`.
    """
    if amp == "auto":
        if dev.type == "cuda":
            return "bf16" if native_bf16(dev) else "fp16"
        return "off"
    if amp == "fp16" and dev.type != "cuda":
        raise UserError(f"amp='fp16' needs a CUDA device (got {dev}); use 'bf16' or 'off'")
    if amp == "bf16" and dev.type == "cuda" and not native_bf16(dev):
        warnings.warn(f"{dev} has no native bf16, so amp='bf16' trains with fp16 autocast and a "
                      "gradient scaler instead", UserWarning, stacklevel=3)
        return "fp16"
    return amp


def autocast(amp: str, dev: torch.device) -> contextlib.AbstractContextManager:
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=dev.type, dtype=dtype)


def grad_scaler(dev: torch.device) -> Any:
    scaler_cls = getattr(torch.amp, "GradScaler", None)
    if scaler_cls is not None:
        return scaler_cls(dev.type)
    return torch.cuda.amp.GradScaler()  # pragma: no cover - torch < 2.3
