"""The error type every user-facing mistake derives from.

Command lines catch `UserError`, print its one-sentence message on stderr and exit with
status 2, without a traceback. Library callers can catch the specific subclasses
(`ArchError`, `SpaceError`, `DataError`, ...), all of which are also `ValueError`s.
"""

from __future__ import annotations

import sys
from functools import wraps
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    import argparse

__all__ = ["UserError", "cli_entry", "make_main"]


class UserError(ValueError):
    """A mistake in what the user asked for (bad arch string, bad file, missing data...)."""


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a command-line ``main`` so user errors print one line and exit with status 2."""

    @wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return int(main(*args, **kwargs) or 0)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # e.g. `space sample ... | head`
            return 0

    return wrapper


def make_main(build_parser: Callable[[], "argparse.ArgumentParser"]) -> Callable[..., int]:
    """A command-line ``main(argv=None)`` for a parser whose sub-commands set ``func``."""

    @cli_entry
    def main(argv: Sequence[str] | None = None) -> int:
        args = build_parser().parse_args(argv)
        return args.func(args)

    return main
