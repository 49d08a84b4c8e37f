"""`SqlStore`: the Store port on SQLAlchemy 2 (async), for SQLite and PostgreSQL.

It is the composite of one repository per aggregate (`adapters/storage/repositories/`), all
sharing the engine and the clock, plus the unit of work that binds them to one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from adapters.storage.migrate import upgrade as run_migrations
from adapters.storage.repositories.approvals import SqlApprovals
from adapters.storage.repositories.catalogue import SqlCatalogue
from adapters.storage.repositories.ci import SqlCiRecords
from adapters.storage.repositories.event_outbox import SqlEventOutbox
from adapters.storage.repositories.lifecycle import SqlLifecycle
from adapters.storage.repositories.locks import SqlLocks
from adapters.storage.repositories.operations import SqlOperations
from adapters.storage.repositories.routes import SqlRoutes
from adapters.storage.repositories.stacks import SqlStacks
from adapters.storage.repositories.traffic import SqlTraffic
from adapters.storage.repositories.unit_listing import SqlUnitListing
from adapters.storage.repositories.vault import SqlVaultTokens
from adapters.storage.repositories.workflow_claims import SqlWorkflowClaims
from adapters.storage.urls import async_url, safe
from commands.ports import Clock, StoreError


class SqlStore(
    SqlCatalogue,
    SqlStacks,
    SqlApprovals,
    SqlOperations,
    SqlLifecycle,
    SqlTraffic,
    SqlRoutes,
    SqlVaultTokens,
    SqlCiRecords,
    SqlLocks,
    SqlWorkflowClaims,
    SqlUnitListing,
    SqlEventOutbox,
):
    def __init__(
        self,
        engine: AsyncEngine,
        url: str,
        clock: Clock,
        connection: AsyncConnection | None = None,
    ) -> None:
        super().__init__(engine, clock, connection)
        self._url = url

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[SqlStore]:
        """Every repository bound to one connection in one transaction: committed when the
        block ends, rolled back (nothing of it written) when it raises. Inside a unit of
        work, another one joins it rather than nesting."""
        if self._bound is not None:
            yield self
            return
        async with self._engine.begin() as connection:
            yield type(self)(self._engine, self._url, self._clock, connection)

    async def close(self) -> None:
        if self._bound is None:
            await self._engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


async def open_store(url: str, *, clock: Clock, upgrade: bool = True) -> SqlStore:
    """Open the database at `url` (migrating it first unless told not to); rows are stamped
    with `clock`, the program's one clock."""
    driver_url = async_url(url)
    if upgrade:
        await asyncio.to_thread(run_migrations, url)
    postgres = driver_url.get_backend_name() == "postgresql"
    # moments arrive in UTC, which the column type then returns as they are (converting
    # each from the server's zone cost a bulk read more than decoding it)
    options = {"connect_args": {"options": "-c TimeZone=UTC"}} if postgres else {}
    engine = create_async_engine(driver_url, pool_pre_ping=True, **options)
    if driver_url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    try:
        async with engine.connect() as conn:
            await conn.execute(select(1))
    except (OperationalError, OSError) as exc:
        await engine.dispose()
        raise StoreError(f"cannot open the database at {safe(url)}: {exc}") from None
    return SqlStore(engine, url, clock)
