"""``nas export``: a trained (or untrained) network as an ONNX or TorchScript file that runs
without this toolkit, checked against PyTorch before it is written (`export_model`).

Importing the package (as the ``nas`` command does to register ``nas export``) does not
import torch; the names below load `nas.export.export` on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FORMATS", "ONNX_OPSET", "ExportReport", "export_model", "format_for_path", "load_torchscript",
           "run_onnx"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
