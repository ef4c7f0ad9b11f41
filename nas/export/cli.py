"""The ``nas export`` command (`add_parser`, hooked on the ``nas`` command by `nas.cli`).

    nas export (--arch baseline.json|PRESET|ARCH | --checkpoint run/checkpoint.pt | both)
               [--num-classes N] [--format onnx|torchscript] --out FILE

Builds the network (the checkpoint's architecture and weights, its EMA weights when the
run kept them), checks the written format against PyTorch on random images, writes the
file atomically and prints what it wrote and the largest difference it measured.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

from space.errors import UserError

__all__ = ["add_parser"]


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {text}")
        return value
    return parse


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    fmt = args.format
    if fmt is None:
        from .export import format_for_path

        fmt = format_for_path(out)
        if fmt is None:
            raise UserError(f"--out {out}: give --format onnx or torchscript (the name's suffix does not say which)")
    if out.is_dir():
        example = out / ("model.onnx" if fmt == "onnx" else "model.pt")
        raise UserError(f"--out {out} is a folder; give a file path such as {example}")
    for parent in out.parents:  # the nearest existing folder above --out must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {out}: {parent} is a file, so nothing can be written under it; "
                                "give another path")
            break
    if fmt == "onnx":
        from .export import require_onnx_tools

        require_onnx_tools()  # before the model is built: fail fast

    import torch

    from ..evaluation.trained import load_model
    from .export import export_model

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.arch, args.checkpoint, num_classes=args.num_classes, device="cpu")
    if loaded.checkpoint is None:
        warnings.warn("no --checkpoint: the exported model has random weights", UserWarning, stacklevel=1)
    metadata = {"producer": "effnas", "arch": loaded.arch.to_string(), "num_classes": loaded.num_classes,
                "resolution": loaded.resolution, "weights": loaded.describe_weights(),
                "input": f"images: float32 (batch, 3, {loaded.resolution}, {loaded.resolution}), "
                         "normalised as in training ((x / 255 - mean) / std)",
                "output": f"logits: float32 (batch, {loaded.num_classes})"}
    if loaded.class_names is not None:
        metadata["class_names"] = json.dumps(list(loaded.class_names))
    report = export_model(loaded.model, out, fmt, resolution=loaded.resolution, metadata=metadata)
    kind = f"ONNX opset {report.opset}" if fmt == "onnx" else "TorchScript"
    print(f"wrote {out} ({kind}, {_size(report.size)}): {loaded.num_classes} classes, input "
          f"(batch, 3, {loaded.resolution}, {loaded.resolution}), {loaded.describe_weights()}", flush=True)
    relative = report.max_abs_diff / report.logit_scale if report.logit_scale > 0 else 0.0
    print(f"checked with {report.runtime} on {report.checked_batch} random images: largest absolute difference "
          f"from PyTorch {report.max_abs_diff:.3g}, {relative:.2g} of the largest logit {report.logit_scale:.3g} "
          f"(tolerance {report.tolerance:.3g})", flush=True)
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``export`` on the ``nas`` command's sub-parsers (sets ``func``)."""
    p = subparsers.add_parser(
        "export", help="write a network as ONNX or TorchScript, checked against PyTorch",
        description="Write a network to a file that runs without effnas: ONNX (needs pip install "
                    "'effnas[export]'; checked with ONNX Runtime) or TorchScript (checked with "
                    "torch.jit.load). The weights are a nas train checkpoint's (its EMA weights when the "
                    "run kept them); without --checkpoint they are random. The input is float32 images "
                    "(batch, 3, R, R) normalised as in training, with a free batch size; the output is "
                    "the logits. The file is written only once its outputs match PyTorch's.")
    p.add_argument("--arch", default=None,
                   help="preset name, arch string, or arch .json file (baseline.json, a run's arch.json); "
                        "optional with --checkpoint, which records its architecture")
    p.add_argument("--checkpoint", default=None, help="a nas train checkpoint (run/checkpoint.pt)")
    p.add_argument("--num-classes", type=_positive_int("--num-classes"), default=None,
                   help="classifier outputs without --checkpoint (default: the arch file's, else 1000)")
    p.add_argument("--format", choices=["onnx", "torchscript"], default=None,
                   help="default: from --out's suffix (.onnx; .pt, .ts for TorchScript)")
    p.add_argument("--out", required=True, help="the file to write (model.onnx, model.pt)")
    p.add_argument("--threads", type=_positive_int("--threads"), default=None, help="CPU threads (torch's choice)")
    p.set_defaults(func=_cmd_export)
