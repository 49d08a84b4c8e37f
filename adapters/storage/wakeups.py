"""Wake-ups for the event outbox's dispatchers: on PostgreSQL a `LISTEN nelson_outbox` on a
connection of its own, so an event written by any replica wakes every replica as soon as its
transaction commits; everywhere, `poke()` for what this process wrote. Whoever waits still
polls (a lost connection, a notification missed while reconnecting): a wake-up only makes
the next look sooner."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from adapters.storage.repositories.event_outbox import CHANNEL
from adapters.storage.urls import safe, sync_url

log = logging.getLogger("nelson.storage.wakeups")


class Wakeups:
    def __init__(self, database_url: str, *, reconnect_after: float = 2.0) -> None:
        parsed = sync_url(database_url)
        self._conninfo = (
            parsed.set(drivername="postgresql").render_as_string(hide_password=False)
            if parsed.get_backend_name() == "postgresql"
            else None
        )
        self._safe_url = safe(database_url)
        self._reconnect_after = reconnect_after
        self._event = asyncio.Event()
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin listening (PostgreSQL); returns once listening, or after a first failure."""
        if self._conninfo is None or self._task is not None:
            return
        self._task = asyncio.create_task(self._listen(self._conninfo))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 10)

    def poke(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """Until woken or `timeout` seconds passed; True when woken."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True

    async def _listen(self, conninfo: str) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    self._event.set()  # what was written while nobody listened
                    async for _ in conn.notifies():
                        self._event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: poll until it is back
                log.info("not listening for outbox events on %s: %s", self._safe_url, exc)
                self._listening.set()  # start() need not wait any longer
            await asyncio.sleep(self._reconnect_after)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
