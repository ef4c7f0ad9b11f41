"""``scaling``: grow an architecture from the command line.

    scaling scale ARCH [--depth D] [--width W] [--resolution R] [--dropout P]
                       [--drop-path P] [--json]
"""

from __future__ import annotations

import argparse
import json

from space.cost import cost
from space.command_line import make_main
from space.errors import UserError
from space.presets import resolve_arch

from .scale import scale

__all__ = ["main"]


def _number(args: argparse.Namespace, flag: str) -> float | None:
    """The float behind ``--flag``; range and finiteness are `Arch.scale`'s to check."""
    text = getattr(args, flag.lstrip("-").replace("-", "_"))
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{flag} must be a number, got {text!r}") from None


def _cmd_scale(args: argparse.Namespace) -> int:
    base = resolve_arch(args.arch)
    depth, width = _number(args, "--depth"), _number(args, "--width")
    arch = scale(base, depth=1.0 if depth is None else depth, width=1.0 if width is None else width,
                 resolution=_number(args, "--resolution"), dropout=_number(args, "--dropout"),
                 drop_path=_number(args, "--drop-path"))
    before, after = cost(base), cost(arch)
    if args.json:
        print(json.dumps({"arch": arch.to_string(), "params": after.params, "macs": after.macs,
                          "resolution": arch.resolution, "base_macs": before.macs,
                          "macs_ratio": after.macs / before.macs}))
    else:
        print(arch.to_string())
        print(f"params {before.params:,} -> {after.params:,}   MACs {before.macs:,} -> {after.macs:,} "
              f"({after.macs / before.macs:.2f}x)   resolution {base.resolution} -> {arch.resolution}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaling", description="Scale architectures.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "scale", help="scale depth, width and resolution of an architecture",
        description="Grow an architecture: layers by --depth, channels by --width, a new input "
                    "side and regularisers. Params and MACs are counted at 1000 classes. "
                    "B3 from B0: --width 1.2 --depth 1.4 --resolution 300 --dropout 0.3.")
    p.add_argument("arch", help="preset name, arch string, or arch .json file")
    p.add_argument("--depth", default=None, metavar="D",
                   help="layer multiplier, finite and > 0; each stage gets ceil(layers * D) (default 1)")
    p.add_argument("--width", default=None, metavar="W",
                   help="channel multiplier, finite and > 0; channels rounded to a multiple of 8, "
                        "never below 90%% (default 1)")
    p.add_argument("--resolution", default=None, metavar="R",
                   help="new input side in pixels, a whole number (default: unchanged)")
    p.add_argument("--dropout", default=None, metavar="P",
                   help="new dropout rate before the classifier, in [0, 1) (default: unchanged)")
    p.add_argument("--drop-path", default=None, metavar="P",
                   help="new maximum stochastic-depth rate, in [0, 1) (default: unchanged)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_scale)
    return parser


main = make_main(build_parser)
