"""``space``: inspect architectures and search spaces from the command line.

    space info NAME_OR_ARCH [--json] [--num-classes N] [--resolution R]
    space sample SPACE -n N [--seed S] [--json]
    space list

None of these imports torch, so the command starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import textwrap

from .arch import Arch
from .cost import Cost, cost
from .command_line import make_main
from .errors import UserError
from .presets import get_preset, preset_names, resolve

__all__ = ["main"]


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def info_dict(arch: Arch, c: Cost, name: str | None = None) -> dict:
    """What ``space info --json`` prints: the arch string and dict, params, MACs, memory."""
    stages = []
    for part in c.parts:
        row = {"part": part.name, "params": part.params, "macs": part.macs,
               "out_channels": part.out_channels, "out_resolution": part.out_resolution}
        if part.stage_index is not None:
            row.update(arch.stages[part.stage_index].to_dict())
        stages.append(row)
    return {
        "name": name,
        "arch": arch.to_string(),
        "spec": arch.to_dict(),
        "params": c.params,
        "macs": c.macs,
        "resolution": c.resolution,
        "num_classes": c.num_classes,
        "peak_activation_bytes": c.peak_activation_bytes,
        "train_activation_bytes": c.train_activation_bytes,
        "parts": stages,
    }


def _print_info(arch: Arch, c: Cost, name: str | None) -> None:
    title = name or "architecture"
    print(f"{title}: input {c.resolution}x{c.resolution}, {c.num_classes} classes")
    print(f"arch: {arch.to_string()}")
    header = f"{'part':<6}{'block':<14}{'k':>3}{'s':>3}{'e':>5}{'se':>6}{'ch':>6}{'layers':>8}{'out':>6}{'params':>14}{'MACs':>16}"
    print(header)
    print("-" * len(header))
    for part in c.parts:
        if part.stage_index is not None:
            s = arch.stages[part.stage_index]
            expand = int(s.expand) if s.expand.is_integer() else s.expand
            cells = (s.block, s.kernel, s.stride, expand, s.se, s.channels, s.layers)
        elif part.name == "stem":
            cells = ("conv+maxpool" if arch.stem_pool else "conv", arch.stem_kernel,
                     arch.stem_stride, "-", "-", part.out_channels, 1)
        elif arch.head_channels is None:
            cells = ("linear", "-", "-", "-", "-", arch.num_features, 1)
        else:
            cells = ("conv+linear", 1, 1, "-", "-", arch.head_channels, 1)
        block, k, stride, e, se, ch, layers = cells
        print(f"{part.name:<6}{block:<14}{k:>3}{stride:>3}{e!s:>5}{se!s:>6}{ch:>6}{layers:>8}"
              f"{part.out_resolution:>6}{part.params:>14,}{part.macs:>16,}")
    print("-" * len(header))
    print(f"params {c.params:,} ({c.mparams:.2f} M)   MACs {c.macs:,} ({c.gmacs:.3f} G)   "
          f"peak activations {_human_bytes(c.peak_activation_bytes)} (fp32, batch 1, inference)")


def _cmd_info(args: argparse.Namespace) -> int:
    if args.num_classes is not None and args.num_classes < 1:
        raise UserError(f"--num-classes must be at least 1, got {args.num_classes}")
    if args.resolution is not None and args.resolution < 1:
        raise UserError(f"--resolution must be at least 1 pixel, got {args.resolution}")
    found = resolve(args.arch)
    arch = found.arch
    if args.resolution is not None:
        arch = arch.replace(resolution=args.resolution)
    # An arch.json from `nas train` knows the classifier it was trained with.
    num_classes = args.num_classes or found.num_classes or 1000
    c = cost(arch, num_classes=num_classes)
    name = found.preset
    if args.json:
        print(json.dumps(info_dict(arch, c, name)))
    else:
        _print_info(arch, c, name)
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from .search import SearchSpace

    if args.n < 1:
        raise UserError(f"-n must be at least 1, got {args.n}")
    if args.num_classes < 1:
        raise UserError(f"--num-classes must be at least 1, got {args.num_classes}")
    if args.seed is not None and args.seed < 0:
        raise UserError(f"--seed must be a whole number >= 0, got {args.seed}")
    space = SearchSpace.load(args.space)
    import numpy as np

    rng = np.random.default_rng(args.seed)
    for _ in range(args.n):
        params = space.sample_params(rng)
        arch = space.decode(params)
        c = cost(arch, num_classes=args.num_classes)
        if args.json:
            print(json.dumps({"arch": arch.to_string(), "params": c.params, "macs": c.macs,
                              "resolution": c.resolution, "choices": params}))
        else:
            print(f"{c.params:>12,} params {c.gmacs:>8.3f} GMACs  {arch.to_string()}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .search import SearchSpace

    print("presets:")
    for name in preset_names():
        preset = get_preset(name)
        print(f"  {name:<24}{preset.description}")
    print("search spaces:")
    for name in SearchSpace.names():
        space = SearchSpace.load(name)
        print(f"  {name:<16}{space.size():>24,} architectures")
        # Whole descriptions, wrapped: a cut one loses what the space varies.
        print(textwrap.fill(" ".join(space.description.split()), width=92,
                            initial_indent=" " * 6, subsequent_indent=" " * 6))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="space", description="Inspect architectures, presets and search spaces.")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser(
        "info", help="stages, params and MACs of a preset, arch string or arch JSON file",
        description="One row per stage with params and MACs (multiply-adds) for one image at "
                    "the arch's resolution, the totals and the peak activation memory. "
                    "For a search space, use `space sample`.")
    info.add_argument("arch", help="preset name (see `space list`), arch string, or path to an "
                                   "arch .json (Arch.to_dict, nas train's arch.json, or "
                                   "space info --json output)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--num-classes", type=int, default=None,
                      help="classifier outputs (default: the arch .json's num_classes, else 1000)")
    info.add_argument("--resolution", type=int, default=None, help="cost at this input side instead")
    info.set_defaults(func=_cmd_info)

    sample = sub.add_parser("sample", help="draw random architectures from a search space")
    sample.add_argument("space", help="shipped space name or path to a .yaml/.json/.toml space file")
    sample.add_argument("-n", type=int, default=5, help="how many (default 5)")
    sample.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")
    sample.add_argument("--json", action="store_true", help="one JSON object per line")
    sample.add_argument("--num-classes", type=int, default=1000, help="classifier outputs for costing")
    sample.set_defaults(func=_cmd_sample)

    lst = sub.add_parser("list", help="list presets and shipped search spaces")
    lst.set_defaults(func=_cmd_list)
    return parser


main = make_main(build_parser)
