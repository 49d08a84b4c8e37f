"""Telling "the database is unreachable" apart from a fault, saying it once, and backing off.

While the database is down every request is still answered (with `UNREACHABLE`), background
jobs log one warning and wait a little longer between attempts, and one line says when the
database answers again. Other failures keep their tracebacks: those are faults to fix."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import exc as sa_exc

from commands.ports import Clock

UNREACHABLE = "I cannot reach my database right now, so I could not do that. Try again in a minute."

FIRST_PAUSE = timedelta(seconds=1)
LONGEST_PAUSE = timedelta(seconds=10)  # a returning database is noticed this quickly


def is_outage(exc: BaseException) -> bool:
    """True for a failure to reach or keep talking to the database (refused, reset, timed out,
    server shut down), as opposed to a fault in what was asked of it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(
            current,
            sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError,
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def describe(exc: BaseException) -> str:
    """The first line of the driver's message, without SQLAlchemy's statement and links."""
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {lines[0] if lines else ''}".strip()


class OutageWatch:
    """One warning when the database stops answering, one line when it is back, and for
    background work, growing pauses between attempts while it is down."""

    def __init__(self, clock: Clock, log: logging.Logger) -> None:
        self.clock = clock
        self.log = log
        self.down = False
        self._pause = FIRST_PAUSE
        self._next_try: datetime | None = None

    def failed(self, what: str, exc: BaseException) -> None:
        if not self.down:
            self.log.warning(
                "the database is unreachable (%s while %s); retrying with backoff",
                describe(exc),
                what,
            )
            self.down = True
            self._pause = FIRST_PAUSE
        else:
            self._pause = min(self._pause * 2, LONGEST_PAUSE)
        self._next_try = self.clock.now() + self._pause

    def succeeded(self) -> None:
        if self.down:
            self.log.warning("the database is reachable again")
        self.down = False
        self._pause = FIRST_PAUSE
        self._next_try = None

    def due(self) -> bool:
        """False while backing off after a failure."""
        return self._next_try is None or self.clock.now() >= self._next_try


class OutageLines(logging.Filter):
    """On the process's log handlers: a record logged with a traceback whose cause is an
    outage (a listener or a writer that met the database going away) becomes one warning
    line naming the cause, so an outage is never a traceback, wherever it is met."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not is_outage(exc):
            return True
        record.msg = f"{record.getMessage()}: the database is unreachable ({describe(exc)})"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
