"""Storage URLs as they may be shown: `redact` masks the password of a database URL.

Every message, log line and output file that names a study's storage goes through
`redact` (``postgresql+psycopg://user:secret@host/db`` -> ``postgresql+psycopg://user:***@host/db``),
so a password given in ``--storage`` is never printed, logged or written to a run folder.
`scrub` removes the password from any other text, and `driver_message` gives a database
error's first line that way.
A URL without a password (the password coming from ``PGPASSWORD`` or a pgpass file) is
shown unchanged.
"""

from __future__ import annotations

import re

__all__ = ["redact", "password_of", "scrub", "driver_message", "MASK"]

MASK = "***"

# scheme://user:password@host... for text that SQLAlchemy cannot parse as a URL.
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<password>[^@\s]*)@")
# user:password@host without a scheme (a --storage value missing "postgresql://").
_BARE = re.compile(r"^(?P<head>[^:/@\s]+):(?P<password>[^@\s]+)@")


def password_of(url: str) -> str | None:
    """The password in ``url`` (decoded), or None when it has none."""
    if not isinstance(url, str):
        return None
    try:
        from sqlalchemy.engine import make_url

        password = make_url(url).password
        return None if password in (None, "") else str(password)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy parses
        m = _USERINFO.search(url) or _BARE.search(url)
        return m.group("password") if m and m.group("password") else None


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (unchanged when it has none)."""
    if not isinstance(url, str):
        return url
    if password_of(url) is None:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        text = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", url)
        return _BARE.sub(lambda m: f"{m.group('head')}:{MASK}@", text)


def scrub(text: str, url: str | None) -> str:
    """``text`` with the password of ``url`` (as given and URL-encoded) and any
    ``scheme://user:password@`` in it masked."""
    from urllib.parse import quote

    password = password_of(url) if url is not None else None
    if password:
        for form in {password, quote(password, safe=""), quote(password)}:
            if form:
                text = text.replace(form, MASK)
    return _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@" if m.group("password") else m.group(0), text)


def driver_message(err: BaseException, url: str) -> str:
    """The first line of the database driver's message in ``err`` (found through SQLAlchemy's
    ``orig`` and the exception's causes), without SQLAlchemy's wrapping, a trailing period or
    the password of ``url``."""
    seen = set()
    while getattr(err, "orig", None) is None and id(err) not in seen and (err.__cause__ or err.__context__):
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    inner = getattr(err, "orig", None) or err
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    text = lines[0] if lines else type(inner).__name__
    text = re.sub(r"^\([\w.]+\)\s*", "", text)  # "(psycopg.OperationalError) ..."
    text = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", text)
    return scrub(text, url).rstrip(".")
