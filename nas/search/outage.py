"""Riding out a storage that stops answering in the middle of a study.

A PostgreSQL server restarted, a failover, a network blip: every Optuna call then raises
SQLAlchemy's ``OperationalError`` (or ``InterfaceError``). The trials already finished are
committed in the database and safe; only the trial in flight is in doubt. So a search loop
catches those errors (`is_unreachable`), and `Outage.wait` sleeps with doubling delays (1, 2,
4 ... 30 s) and lets the loop try again, for at most ``patience`` seconds in all
(``EFFNAS_STORAGE_PATIENCE``, default `DEFAULT_PATIENCE`); then it raises
`StorageUnreachable`, a `UserError` of one sentence. When the storage answers again, the
trial that was in flight is still RUNNING in it with an old heartbeat: the next check fails
it and queues it again (`nas.search.stale`), so nothing is counted twice or lost.

`keep_beating` makes the heartbeat thread of a trial survive the outage: Optuna's thread
records a heartbeat every interval and dies on the first exception (printing a traceback),
after which a live trial would look dead to every other worker once the storage is back.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

import optuna

from space.errors import UserError

from .storage_url import driver_message, redact

__all__ = ["DEFAULT_PATIENCE", "PATIENCE_ENV", "Outage", "StorageUnreachable", "is_unreachable",
           "keep_beating", "storage_patience"]

PATIENCE_ENV = "EFFNAS_STORAGE_PATIENCE"
DEFAULT_PATIENCE = 600.0  # seconds: a server restart or a failover, not a lost server
MAX_DELAY = 30.0


class StorageUnreachable(UserError):
    """The storage did not answer for longer than the patience."""


def storage_patience() -> float:
    """Seconds a search waits for its storage: ``EFFNAS_STORAGE_PATIENCE`` or the default."""
    text = os.environ.get(PATIENCE_ENV, "").strip()
    if not text:
        return DEFAULT_PATIENCE
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise UserError(f"{PATIENCE_ENV} must be a number of seconds of at least 0, got {text!r}")
    return value


def is_unreachable(err: BaseException) -> bool:
    """Whether ``err`` (or an error it wraps) says the database could not be talked to."""
    import sqlalchemy.exc as sa

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError)):
            return True
        if isinstance(err, sa.DBAPIError) and err.connection_invalidated:
            return True
        err = err.__cause__ or err.__context__
    return False


class Outage:
    """Call `wait(err)` after each failed storage call and `ok()` after each good pass.

    ``clock``, ``sleep`` and ``say`` are seams for tests; ``say`` gets the two progress
    lines (outage begun, storage back)."""

    def __init__(self, url: str, patience: float | None = None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, say: Callable[[str], None] | None = None):
        self.url = url
        self.patience = storage_patience() if patience is None else patience
        self._clock, self._sleep = clock, sleep
        self._say = say if say is not None else (lambda line: print(line, file=sys.stderr, flush=True))
        self.since: float | None = None
        self._delay = 1.0
        self.outages = 0

    def ok(self) -> None:
        if self.since is not None:
            self._say(f"storage {redact(self.url)} answers again after {self._clock() - self.since:.0f} s")
            self.since, self._delay = None, 1.0

    def wait(self, err: BaseException) -> None:
        """Sleep before the next try; raise `StorageUnreachable` once ``patience`` is spent."""
        now = self._clock()
        reason = driver_message(err, self.url)
        if self.since is None:
            self.since = now
            self.outages += 1
            self._say(f"storage {redact(self.url)} does not answer ({reason}); retrying for up to "
                      f"{self.patience:.0f} s ({PATIENCE_ENV})")
        waited = now - self.since
        if waited >= self.patience:
            raise StorageUnreachable(
                f"the storage {redact(self.url)} has not answered for {waited:.0f} s ({reason}); the finished "
                f"trials are kept in it, so run the same command again once it is back (or raise "
                f"{PATIENCE_ENV})") from None
        self._sleep(min(self._delay, self.patience - waited))
        self._delay = min(2 * self._delay, MAX_DELAY)


def keep_beating(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """Make ``storage``'s heartbeats skip a beat, rather than end the heartbeat thread,
    when the database does not answer; returns ``storage``."""
    backend = getattr(storage, "_backend", storage)
    record = getattr(backend, "record_heartbeat", None)
    if record is None:
        return storage

    def record_heartbeat(trial_id: int) -> None:
        try:
            record(trial_id)
        except Exception as err:  # noqa: BLE001 - only outages are skipped
            if not is_unreachable(err):
                raise

    backend.record_heartbeat = record_heartbeat
    return storage
