"""What every SQL repository shares: the engine, the clock, and where its statements run.

A repository made by `SqlStore` runs each method in a transaction of its own. Inside
`SqlStore.unit_of_work()` the same repositories are bound to one connection in one open
transaction: `_begin()` and `_connect()` then hand out that connection and leave committing
(or rolling back) to the unit of work, so every write it holds lands together or not at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from commands.ports import Clock


class SqlRepository:
    def __init__(
        self, engine: AsyncEngine, clock: Clock, connection: AsyncConnection | None = None
    ) -> None:
        self._engine = engine
        self._clock = clock  # the program's one clock: every row is stamped by it
        self._bound = connection  # the unit of work's connection, if any

    def _now(self) -> datetime:
        return self._clock.now()

    def _begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection in a transaction: its own, or the unit of work's."""
        if self._bound is not None:
            return _joined(self._bound)
        return self._engine.begin()

    def _connect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection to read with: its own, or the unit of work's (which sees its writes)."""
        if self._bound is not None:
            return _joined(self._bound)
        return self._engine.connect()


@asynccontextmanager
async def _joined(connection: AsyncConnection) -> AsyncIterator[AsyncConnection]:
    yield connection  # the unit of work commits or rolls back, not the statement
