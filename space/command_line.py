"""Shared command-line scaffolding for the ``space``, ``nas`` and ``scaling`` commands.

Every command's ``main`` goes through `cli_entry`, which gives the toolkit one behaviour
for what a user sees when something goes wrong:

* a `UserError` prints ``error: <one sentence>`` on stderr and exits with status 2, with
  no traceback;
* Python warnings print as ``warning: <message>`` on stderr (no file name, line number or
  source line);
* Ctrl-C exits with status 130 and a closed pipe (``| head``) with status 0.

`make_main` also turns argparse's own refusals (an unknown command or flag, a missing
required flag, a value its ``type`` or ``choices`` reject) into a `UserError`, so they read
the same: one ``error: ...`` line naming the flag, status 2, no usage block.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import warnings
from functools import wraps
from typing import Any, Callable, Sequence

from .errors import UserError

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


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def usage_sentence(prog: str, message: str) -> str:
    """argparse's error ``message`` for the parser ``prog`` as one sentence that names the flag
    (``argument --epochs: --epochs must be positive, got 0`` -> ``--epochs must be positive,
    got 0``)."""
    message = " ".join(message.split())
    m = re.fullmatch(r"argument (\S+?)(?:/\S+)?: (.*)", message)
    if m is None:
        required = re.fullmatch(r"the following arguments are required: (.*)", message)
        if required:
            names = required.group(1)
            if names == "command":
                return f"{prog} needs a command; see `{prog} --help`"
            return f"{prog} needs {names}; see `{prog} --help`"
        return f"{prog}: {message}"
    flag, rest = m.groups()
    choice = re.fullmatch(r"invalid choice: '(.*)' \(choose from (.*)\)", rest)
    if choice:
        word, options = choice.groups()
        names = re.findall(r"'([^']*)'", options)
        if flag == "command":
            return f"{prog} has no command {word!r}{_did_you_mean(word, names)}; the commands are {', '.join(names)}"
        return f"{flag} {word!r} is not one of {', '.join(names)}{_did_you_mean(word, names)}"
    typed = re.fullmatch(r"invalid (int|float) value: (.*)", rest)
    if typed:
        kind, value = typed.groups()
        return f"{flag} must be a {'whole ' if kind == 'int' else ''}number, got {value}"
    if rest in ("expected one argument", "expected at least one argument"):
        return (f"{flag} needs a value; write {flag}=VALUE for a value that starts with '-'")
    other = re.fullmatch(r"not allowed with argument (\S+?)(?:/\S+)?", rest)
    if other:
        return f"give {other.group(1)} or {flag}, not both"
    if flag in rest:
        return rest
    return f"{flag}: {rest}"


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` and its sub-parsers raise `UserError` (see `usage_sentence`) where
    argparse would print its usage block and exit."""

    def error(message: str) -> None:
        raise UserError(usage_sentence(parser.prog, message))

    parser.error = error  # type: ignore[method-assign]
    for sub in _subparsers(parser).values():
        _one_line_errors(sub)


def make_main(build_parser: Callable[[], "argparse.ArgumentParser"]) -> Callable[..., int]:
    """A command-line ``main(argv=None)`` for a parser whose sub-commands set ``func``.
    Every refusal of argparse's is a `UserError` too (`usage_sentence`); ``--help`` still
    prints and exits 0."""

    @cli_entry
    def main(argv: Sequence[str] | None = None) -> int:
        parser = build_parser()
        _one_line_errors(parser)
        args, extra = parser.parse_known_args(argv)
        if extra:
            sub = _subparsers(parser).get(getattr(args, "command", None) or "")
            prog = sub.prog if sub is not None else parser.prog
            known = [o for a in (sub or parser)._actions for o in a.option_strings]
            hint = _did_you_mean(extra[0], known) if extra[0].startswith("-") else ""
            raise UserError(f"{prog} does not take {' '.join(extra)}{hint}; see `{prog} --help`")
        return args.func(args)

    return main
