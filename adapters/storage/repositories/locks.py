"""`SqlLocks`: locks (a unit) and freezes (a namespace) that hold deploys and traffic
shifts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Row

from adapters.storage import tables as t
from adapters.storage.repositories.base import SqlRepository
from domain.locks import Lock, NewLock


def _lock(row: Row[Any]) -> Lock:
    return Lock(
        id=row.id,
        kind=row.kind,
        unit=row.unit,
        namespace=row.namespace,
        datacenter=row.datacenter,
        reason=row.reason,
        created_by=row.created_by,
        created_at=row.created_at,
        until=row.until,
    )


class SqlLocks(SqlRepository):
    async def add_lock(self, new: NewLock) -> Lock:
        async with self._begin() as conn:
            result = await conn.execute(
                insert(t.locks)
                .values(
                    kind=new.kind,
                    unit=new.unit,
                    namespace=new.namespace,
                    datacenter=new.datacenter,
                    reason=new.reason,
                    created_by=new.created_by,
                    created_at=new.created_at,
                    until=new.until,
                )
                .returning(t.locks)
            )
            return _lock(result.one())

    async def locks(self) -> list[Lock]:
        async with self._connect() as conn:
            rows = await conn.execute(select(t.locks).order_by(t.locks.c.id))
            return [_lock(row) for row in rows]

    async def remove_locks(self, lock_ids: Sequence[int]) -> list[Lock]:
        """Remove these locks; returns those that were there (another replica may have
        removed some meanwhile)."""
        if not lock_ids:
            return []
        async with self._begin() as conn:
            rows = await conn.execute(
                delete(t.locks).where(t.locks.c.id.in_(list(lock_ids))).returning(t.locks)
            )
            return [_lock(row) for row in rows]
