"""`SqlOperations`: operations followed in chat, their messages, and handled deliveries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.storage import tables as t
from adapters.storage.repositories.base import SqlRepository
from adapters.storage.repositories.rows import (
    _operation,
)
from commands.ports import Conflict
from domain.records import (
    Operation,
    PostedMessage,
)


class SqlOperations(SqlRepository):
    async def create_operation(
        self,
        kind: str,
        title: str,
        requested_by: str,
        channel: str | None,
        stack_ids: Sequence[int],
        at: datetime | None = None,
    ) -> Operation:
        async with self._begin() as conn:
            row = (
                await conn.execute(
                    insert(t.operations)
                    .values(
                        kind=kind,
                        title=title,
                        requested_by=requested_by,
                        channel=channel,
                        created_at=at or self._now(),
                    )
                    .returning(*t.operations.c)
                )
            ).one()
            if stack_ids:
                await conn.execute(
                    insert(t.operation_stacks),
                    [{"operation_id": row.id, "stack_id": s} for s in stack_ids],
                )
        return _operation(row, stack_ids)

    async def _operations(self, conn: AsyncConnection, query: Any) -> list[Operation]:
        rows = (await conn.execute(query)).all()
        if not rows:
            return []
        links = (
            await conn.execute(
                select(t.operation_stacks.c.operation_id, t.operation_stacks.c.stack_id)
                .where(t.operation_stacks.c.operation_id.in_([r.id for r in rows]))
                .order_by(t.operation_stacks.c.stack_id)
            )
        ).all()
        stacks: dict[int, list[int]] = {}
        for link in links:
            stacks.setdefault(link.operation_id, []).append(link.stack_id)
        return [_operation(r, stacks.get(r.id, [])) for r in rows]

    async def operation(self, operation_id: int) -> Operation | None:
        async with self._connect() as conn:
            found = await self._operations(
                conn, select(t.operations).where(t.operations.c.id == operation_id)
            )
        return found[0] if found else None

    async def operations_for_stack(self, stack_id: int) -> list[Operation]:
        query = (
            select(t.operations)
            .join(t.operation_stacks, t.operation_stacks.c.operation_id == t.operations.c.id)
            .where(t.operation_stacks.c.stack_id == stack_id)
            .order_by(t.operations.c.id)
        )
        async with self._connect() as conn:
            return await self._operations(conn, query)

    async def recent_operations(self, requested_by: str, limit: int = 10) -> list[Operation]:
        query = (
            select(t.operations)
            .where(t.operations.c.requested_by == requested_by)
            .order_by(t.operations.c.id.desc())
            .limit(limit)
        )
        async with self._connect() as conn:
            return await self._operations(conn, query)

    async def finish_operation(self, operation_id: int, outcome: str, at: datetime) -> bool:
        """Mark it finished; False when it already was (another replica got there first)."""
        async with self._begin() as conn:
            changed = await conn.execute(
                update(t.operations)
                .where(t.operations.c.id == operation_id, t.operations.c.finished_at.is_(None))
                .values(finished_at=at, outcome=outcome)
            )
        return bool(changed.rowcount == 1)

    async def remember_message(self, subject: str, channel: str, ts: str) -> None:
        try:
            async with self._begin() as conn:
                await conn.execute(
                    insert(t.posted_messages).values(
                        subject=subject, channel=channel, ts=ts, posted_at=self._now()
                    )
                )
        except IntegrityError:
            raise Conflict(f"{subject} already has a message in {channel}") from None

    async def messages_for(self, subject: str) -> list[PostedMessage]:
        query = (
            select(t.posted_messages)
            .where(t.posted_messages.c.subject == subject)
            .order_by(t.posted_messages.c.id)
        )
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return [PostedMessage(r.subject, r.channel, r.ts) for r in rows]

    async def claim_delivery(self, key: str, at: datetime) -> bool:
        """True the first time `key` is seen, False for every repeat, across replicas."""
        try:
            async with self._begin() as conn:
                await conn.execute(insert(t.deliveries).values(key=key[:200], seen_at=at))
        except IntegrityError:
            return False
        return True

    async def forget_deliveries(self, before: datetime) -> int:
        async with self._begin() as conn:
            gone = await conn.execute(delete(t.deliveries).where(t.deliveries.c.seen_at < before))
        return int(gone.rowcount or 0)
