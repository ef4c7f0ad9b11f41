"""The error type every user-facing mistake derives from.

Command lines (see `space.command_line`) catch `UserError`, print its one-sentence message
on stderr and exit with status 2, without a traceback. Library callers can catch the
specific subclasses (`ArchError`, `SpaceError`, `DataError`, ...), all of which are also
`ValueError`s.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """A mistake in what the user asked for (bad arch string, bad file, missing data...)."""
