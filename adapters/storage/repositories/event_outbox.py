"""`SqlEventOutbox`: the durable event outbox, handed out once across replicas.

On PostgreSQL a claim selects pending rows `FOR UPDATE SKIP LOCKED`, so replicas claiming at
the same moment take different rows without waiting for each other, and a write wakes the
other replicas with `NOTIFY nelson_outbox` (sent when its transaction commits; see
`adapters/storage/wakeups.py`). SQLite has one serving replica (bot/replicas.py): there the
same statements simply run one after the other.

Order within a key: a claim keeps a row only if every earlier unfinished row of its key was
selected by the same claim. A row another replica holds (locked now, or claimed and not yet
done) is unfinished and not selected, so the later rows of its key wait for it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, or_, select, text, update
from sqlalchemy.engine import Row

from adapters.storage import tables as t
from adapters.storage.repositories.base import SqlRepository
from commands.repositories import OutboxEvent

_c = t.event_outbox.c
CHANNEL = "nelson_outbox"  # the LISTEN/NOTIFY channel on PostgreSQL


def _event(row: Row[Any]) -> OutboxEvent:
    return OutboxEvent(
        row.id, row.key, row.kind, json.loads(row.payload), row.created_at, row.attempts
    )


class SqlEventOutbox(SqlRepository):
    async def add_outbox_event(self, key: str, kind: str, payload: Mapping[str, Any]) -> int:
        async with self._begin() as conn:
            new = await conn.execute(
                insert(t.event_outbox)
                .values(
                    key=key[:100],
                    kind=kind,
                    payload=json.dumps(dict(payload), sort_keys=True),
                    created_at=self._now(),
                    attempts=0,
                )
                .returning(_c.id)
            )
            if conn.dialect.name == "postgresql":
                await conn.execute(text(f"NOTIFY {CHANNEL}"))  # delivered at commit
            return int(new.scalar_one())

    async def claim_outbox_events(
        self, holder: str, ttl: timedelta, limit: int = 50
    ) -> list[OutboxEvent]:
        now = self._now()
        async with self._begin() as conn:
            rows = list(
                await conn.execute(
                    select(t.event_outbox)
                    .where(
                        _c.done_at.is_(None),
                        or_(_c.claimed_until.is_(None), _c.claimed_until <= now),
                    )
                    .order_by(_c.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            if not rows:
                return []
            chosen = {row.id for row in rows}
            keys = {row.key for row in rows}
            # every unfinished event of these keys: a key another holder still holds an
            # event of stays with that holder (it gave an earlier one back and is about to
            # give the rest back too); otherwise an event is taken only after every earlier
            # one of its key is taken with it
            pending = list(
                await conn.execute(
                    select(_c.key, _c.id, _c.holder, _c.claimed_until)
                    .where(_c.done_at.is_(None), _c.key.in_(keys))
                    .order_by(_c.id)
                )
            )
            blocked = {
                key
                for key, _, by, until in pending
                if by != holder and until is not None and until > now
            }
            last = max(chosen)
            kept: set[int] = set()
            for key, event_id, _, _ in pending:
                if event_id > last:
                    break  # in id order: nothing after this was chosen
                if key in blocked:
                    continue
                if event_id in chosen:
                    kept.add(event_id)
                else:
                    blocked.add(key)  # held elsewhere, or waiting to be retried
            if not kept:
                return []
            await conn.execute(
                update(t.event_outbox)
                .where(_c.id.in_(kept))
                .values(holder=holder, claimed_until=now + ttl, attempts=_c.attempts + 1)
            )
            return [_event(row) for row in rows if row.id in kept]

    async def finish_outbox_event(self, event_id: int, holder: str) -> bool:
        async with self._begin() as conn:
            done = await conn.execute(
                update(t.event_outbox)
                .where(_c.id == event_id, _c.holder == holder, _c.done_at.is_(None))
                .values(done_at=self._now())
            )
            return done.rowcount == 1

    async def retry_outbox_event(self, event_id: int, holder: str, after: timedelta) -> None:
        async with self._begin() as conn:
            await conn.execute(
                update(t.event_outbox)
                .where(_c.id == event_id, _c.holder == holder, _c.done_at.is_(None))
                .values(claimed_until=self._now() + after)
            )

    async def outbox_backlog(self) -> list[OutboxEvent]:
        async with self._connect() as conn:
            rows = await conn.execute(
                select(t.event_outbox).where(_c.done_at.is_(None)).order_by(_c.id)
            )
            return [_event(row) for row in rows]

    async def forget_outbox_events(self, before: datetime) -> int:
        async with self._begin() as conn:
            gone = await conn.execute(delete(t.event_outbox).where(_c.created_at < before))
            return int(gone.rowcount or 0)
