"""Atomic file writes: readers see the old file or the new one, never a partial one.

Every output of the project (run folders, checkpoints, plots, tables, caches) is written
through `atomic_write`: the bytes go to a hidden temporary file beside the target,
``.<name>.<8 random characters>.tmp``, which is flushed, fsynced and renamed over the
target (then the folder is fsynced, so the rename survives a power cut too). A process
killed at any moment (SIGKILL, OOM killer, a power cut) therefore leaves the target as it
was, whole, or as the new file, whole; never a truncated file under the target's name.

What a kill can leave is the temporary file. It is never mistaken for an output (it is a
dot-file with another name), and the next successful write of the same target removes
every temporary file of that target whose writer has died: each writer holds an
exclusive ``flock`` on its temporary file until the rename, the lock goes with the
process, so a temporary file whose lock can be taken belongs to nobody. A temporary file
of a live writer (another process writing the same target at the same moment) is left
alone. Without ``fcntl`` (Windows) nothing is locked and leftovers are not removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_write", "is_temporary", "remove_leftovers", "write_json_atomic"]

TMP_SUFFIX = ".tmp"
# mkstemp's names: a prefix, 8 characters of this set, the suffix.
_RANDOM = r"[a-z0-9_]{8}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temporary_pattern(name: str) -> re.Pattern[str]:
    return re.compile(re.escape(f".{name}.") + _RANDOM + re.escape(TMP_SUFFIX))


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like a temporary file of `atomic_write` (a dot-file ending
    ``.<8 random characters>.tmp``), i.e. not an output."""
    name = Path(path).name
    return re.fullmatch(r"\..+\." + _RANDOM + re.escape(TMP_SUFFIX), name) is not None


def _same_file(path: str, fd: int) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _new_temporary(path: Path) -> tuple[int, str]:
    """Create the temporary file of ``path`` and lock it (see the module docstring)."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        if fcntl is None:
            return fd, tmp
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock: write unlocked, as without fcntl
            return fd, tmp
        # Between mkstemp and flock a `remove_leftovers` may have taken the unlocked file
        # for a dead writer's and removed it: then make another.
        if _same_file(tmp, fd):
            return fd, tmp
        os.close(fd)


def remove_leftovers(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of ``path`` left by writers that died before renaming
    them (a kill mid-write); those of live writers stay. Returns the files removed."""
    if fcntl is None:
        return []
    path = Path(path)
    pattern = _temporary_pattern(path.name)
    removed = []
    try:
        entries = [e.name for e in os.scandir(path.parent) if pattern.fullmatch(e.name)]
    except OSError:
        return []
    for name in entries:
        tmp = os.path.join(path.parent, name)
        try:
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:  # renamed or removed meanwhile
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held: its writer is alive (or the file system has no flock)
                continue
            if _same_file(tmp, fd):
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                    removed.append(Path(tmp))
        finally:
            os.close(fd)
    return removed


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit flush and fsync
    it, give it the permissions a newly created file would have (``mkstemp`` makes 0600),
    rename it over ``path``, fsync the folder and remove temporary files of ``path`` left
    by killed writers (`remove_leftovers`). On any exception the temporary file is removed
    and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temporary(path)
    try:
        # The lock on the temporary file is held until it is renamed (the file is closed
        # after os.replace), so no `remove_leftovers` can take it for a dead writer's.
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            if fcntl is not None:
                os.fchmod(f.fileno(), 0o666 & ~_umask())
                os.replace(tmp, path)
        if fcntl is None:  # pragma: no cover - Windows renames no open file
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    remove_leftovers(path)


def write_json_atomic(path: str | os.PathLike, data: object) -> None:
    """Write ``data`` as indented JSON (and a final newline) to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
