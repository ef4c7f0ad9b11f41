"""Shared command-line scaffolding for the ``space``, ``nas`` and ``scaling`` commands.

Every command's ``main`` goes through `cli_entry`, which gives the toolkit one behaviour
for what a user sees when something goes wrong:

* a `UserError` prints ``error: <one sentence>`` on stderr and exits with status 2, with
  no traceback;
* Python warnings print as ``warning: <message>`` on stderr (no file name, line number or
  source line);
* Ctrl-C exits with status 130 and a closed pipe (``| head``) with status 0.
"""

from __future__ import annotations

import sys
import warnings
from functools import wraps
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .errors import UserError

if TYPE_CHECKING:
    import argparse

__all__ = ["cli_entry", "make_main", "show_warning"]


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    """`warnings.showwarning` replacement: one short ``warning: ...`` line on stderr."""
    stream = sys.stderr if file is None else file
    try:
        print(f"warning: {message}", file=stream, flush=True)
    except (OSError, ValueError):  # stderr closed: a warning must never become an error
        pass


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a command-line ``main`` so user errors print one line and exit with status 2,
    and warnings print in the short ``warning: ...`` form."""

    @wraps(main)
    def wrapper(*args, **kwargs) -> int:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
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
