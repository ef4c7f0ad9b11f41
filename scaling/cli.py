"""``scaling``: grow an architecture from the command line.

    scaling scale ARCH [--depth D] [--width W] [--resolution R] [--json]
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


def _cmd_scale(args: argparse.Namespace) -> int:
    base = resolve_arch(args.arch)
    try:
        arch = scale(base, depth=args.depth, width=args.width, resolution=args.resolution)
    except ValueError as err:  # a non-positive multiplier, a resolution below the total stride
        raise UserError(str(err)) from None
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
    p = sub.add_parser("scale", help="scale depth, width and resolution of an architecture")
    p.add_argument("arch", help="preset name, arch string, or arch .json file")
    p.add_argument("--depth", type=float, default=1.0, help="layer multiplier (ceil per stage)")
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier (rounded to 8)")
    p.add_argument("--resolution", type=int, default=None, help="new input side in pixels")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_scale)
    return parser


main = make_main(build_parser)
