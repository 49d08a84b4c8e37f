"""`SqlLifecycle`: what the cleanup pass judges and changes, and the leases of periodic jobs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Coroutine, Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    Table,
    Text,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.storage import cleanup_queries, live_versions
from adapters.storage import tables as t
from adapters.storage.repositories.base import SqlRepository
from adapters.storage.repositories.rows import (
    _stack,
)
from adapters.storage.tables import UtcDateTime
from domain.expiration import StackView
from domain.records import (
    PendingRemoval,
    Stack,
)
from domain.states import LIVE_STATUSES, StackStatus
from domain.versions import Version

# A pass's garbage reasons, per stack, for set-based updates (`mark_garbage` creates and
# drops it; this describes it for queries).
_cleanup_reasons = Table(
    "cleanup_reasons",
    MetaData(),
    Column("stack_id", Integer, primary_key=True),
    Column("reason", Text, nullable=False),
)


_c = t.stacks.c
_JUDGED_ORDER = (_c.unit, _c.namespace, _c.datacenter, _c.id)
_JUDGED_COLUMNS = (
    *_JUDGED_ORDER,
    _c.name,
    _c.major,
    _c.minor,
    _c.patch,
    _c.status,
    _c.plan,
    _c.created_at,
    _c.expires_at,
)


def _views(rows: Sequence[Any]) -> list[tuple[str, StackView]]:
    """One object per stack, built from positions: this runs for every stack judged."""
    return [
        (
            name,
            StackView(
                id=id_,
                unit=unit,
                # not the shared cache of _version_of: it would keep up to 65,536
                # versions of stacks judged long ago
                version=Version(major, minor, patch),
                namespace=namespace,
                datacenter=datacenter,
                status=StackStatus(status),
                created_at=created_at,
                expires_at=expires_at,
                plan=plan,
            ),
        )
        for (
            unit,
            namespace,
            datacenter,
            id_,
            name,
            major,
            minor,
            patch,
            status,
            plan,
            created_at,
            expires_at,
        ) in rows
    ]


class SqlLifecycle(SqlRepository):
    async def lifecycle_batches(
        self, size: int = 2000, collected: AbstractSet[int] = frozenset()
    ) -> AsyncIterator[tuple[list[tuple[str, StackView]], dict[int, int]]]:
        """The ready and deprecated stacks (each its name and what policies judge), about
        `size` at a time, each batch holding whole groups (a unit in one namespace and
        datacenter: what policies compare), with the live dependants of each stack in it
        that has any: what one cleanup pass judges.

        Read in the order of ix_stacks_judged, each batch starting after the last row of the
        one before, so memory holds one batch however many stacks there are; stacks the
        caller changes meanwhile lie behind the reading point. Stacks in `collected` (what
        the caller turned into garbage so far) still count as live dependants, so every
        batch sees the dependencies as they were when the pass began."""
        carried: list[tuple[str, StackView]] = []  # the start of a group the last read cut
        # the next page is read while the caller judges this one (on another connection)
        reading: Awaitable[list[Any]] | None = self._read_ahead(size, None)
        try:
            while reading is not None:
                rows = await reading
                reading = None
                if len(rows) == size:  # more may follow
                    last = rows[-1]
                    reading = self._read_ahead(size, (last[0], last[1], last[2], last[3]))
                batch = carried + _views(rows)
                if not batch:
                    return
                carried = []
                if reading is not None:  # hold back the last group: its rest may follow
                    group = batch[-1][1].group
                    cut = len(batch)
                    while cut > 0 and batch[cut - 1][1].group == group:
                        cut -= 1
                    batch, carried = batch[:cut], batch[cut:]
                    if not batch:
                        continue
                ids = [view.id for _, view in batch]
                yield batch, await self._live_dependants(ids, collected)
        finally:
            if isinstance(reading, asyncio.Task):  # the caller stopped early
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reading
            elif isinstance(reading, Coroutine):
                reading.close()

    @property
    def cleanup_writers(self) -> int:
        """PostgreSQL runs two transactions of a pass's decisions side by side (the pass
        measured 25% faster on 2 cores); SQLite has one writer at a time."""
        if self._bound is None and self._engine.dialect.name == "postgresql":
            return 2
        return 1

    def _read_ahead(
        self, size: int, after: tuple[str, str, str, int] | None
    ) -> Coroutine[Any, Any, list[Any]] | asyncio.Task[list[Any]]:
        """The page after `after`, already being read on a connection of its own; inside a
        unit of work (one connection), read when awaited."""
        page = self._judged_page(size, after)
        return page if self._bound is not None else asyncio.create_task(page)

    async def _judged_page(
        self, size: int, after: tuple[str, str, str, int] | None = None
    ) -> list[Any]:
        """Up to `size` judged stacks in the order of ix_stacks_judged, after `after`."""
        query = select(*_JUDGED_COLUMNS).where(t.JUDGED_SQL).order_by(*_JUDGED_ORDER).limit(size)
        if after is not None:
            query = query.where(tuple_(*_JUDGED_ORDER) > tuple_(*after))
        async with self._connect() as conn:
            return list((await conn.execute(query)).all())

    async def _live_dependants(
        self, stack_ids: Sequence[int], collected: AbstractSet[int]
    ) -> dict[int, int]:
        live = [s.value for s in LIVE_STATUSES]
        statuses = [*live, StackStatus.GARBAGE.value]
        async with self._connect() as conn:
            if conn.dialect.name == "postgresql":
                found = await cleanup_queries.dependants(conn, stack_ids, statuses)
            else:  # SQLite probes the index for each value of an IN list
                dependant = t.stacks.alias("dependant")
                edges = t.stack_dependencies
                result = await conn.execute(
                    select(edges.c.depends_on_id, dependant.c.id, dependant.c.status)
                    .join(dependant, dependant.c.id == edges.c.stack_id)
                    .where(edges.c.depends_on_id.in_(stack_ids), dependant.c.status.in_(statuses))
                )
                found = [(depended, by, status) for depended, by, status in result.all()]
            counts: dict[int, int] = {}
            for depended, by, status in found:
                if status in live or by in collected:
                    counts[depended] = counts.get(depended, 0) + 1
        return counts

    async def garbage_due(self, since_before: datetime, announced_before: datetime) -> list[Stack]:
        """Garbage collected before `since_before` whose removal was announced before
        `announced_before`: what the reaper may remove now."""
        query = select(t.stacks).where(
            t.stacks.c.status == StackStatus.GARBAGE.value,
            t.stacks.c.updated_at <= since_before,
            t.stacks.c.announced_at <= announced_before,
        )
        async with self._connect() as conn:
            return [_stack(r) for r in (await conn.execute(query.order_by(t.stacks.c.id))).all()]

    async def pending_removals(self) -> list[PendingRemoval]:
        """Every garbage stack with the reason it was collected (its latest status row)."""
        inner = t.stack_status.alias("newer")
        latest = (
            select(func.max(inner.c.id))
            .where(inner.c.stack_id == t.stacks.c.id)
            .correlate(t.stacks)
            .scalar_subquery()
        )
        query = (
            select(t.stacks, t.stack_status.c.message.label("reason"))
            .select_from(t.stacks)
            .join(t.stack_status, t.stack_status.c.id == latest)
            .where(t.stacks.c.status == StackStatus.GARBAGE.value)
            .order_by(t.stacks.c.unit, t.stacks.c.id)
        )
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return [PendingRemoval(_stack(r), r.reason, r.updated_at) for r in rows]

    async def mark_announced(self, stack_ids: Sequence[int], at: datetime) -> int:
        """Record that these garbage stacks' removal was announced (once: the first time)."""
        count = 0
        async with self._begin() as conn:
            for start in range(0, len(stack_ids), 5000):
                result = await conn.execute(
                    update(t.stacks)
                    .where(
                        t.stacks.c.id.in_(list(stack_ids[start : start + 5000])),
                        t.stacks.c.status == StackStatus.GARBAGE.value,
                        t.stacks.c.announced_at.is_(None),
                    )
                    .values(announced_at=at)
                )
                count += int(result.rowcount or 0)
        return count

    async def extend_expiries(self, expiries: Mapping[int, datetime]) -> None:
        # a pass extends most stacks to the same moment: one UPDATE per distinct value
        by_value: dict[datetime, list[int]] = {}
        for stack_id, until in expiries.items():
            by_value.setdefault(until, []).append(stack_id)
        if not by_value:
            return
        async with self._begin() as conn:
            if conn.dialect.name == "postgresql":
                await cleanup_queries.extend_expiries(conn, by_value)
                return
            for until, ids in by_value.items():
                for start in range(0, len(ids), 5000):
                    await conn.execute(
                        update(t.stacks)
                        .where(t.stacks.c.id.in_(ids[start : start + 5000]))
                        .values(expires_at=until)
                    )

    async def mark_garbage(
        self, reasons: Mapping[int, str], at: datetime, actor: str = "nelson"
    ) -> list[int]:
        """Ready or deprecated stacks -> garbage, each with its reason in the status history
        and an audit event by `actor`, in one transaction. Returns the ids that changed
        (others moved on meanwhile).

        Set-based, so a pass that collects thousands costs a few statements. PostgreSQL
        takes arrays: one UPDATE finds the stacks by primary key, two INSERTs from unnest()
        write the rest, and no statement reads more of the table than the stacks named.
        SQLite puts the reasons in a temporary table, then one UPDATE and two INSERT ...
        SELECT do the rest."""
        if not reasons:
            return []
        async with self._begin() as conn:
            if conn.dialect.name == "postgresql":
                return await cleanup_queries.mark_garbage(conn, reasons, at, actor)
            await _stage_reasons(conn, reasons)
            marked = await _mark_staged(conn, at)
            changed = [stack_id for stack_id, _, _ in marked]
            await live_versions.refresh(conn, [(ns, unit) for _, ns, unit in marked])
            await _unstage(conn, set(reasons) - set(changed))  # moved on meanwhile
            if changed:
                await _record_staged(conn, at, actor)
            await conn.exec_driver_sql("DROP TABLE cleanup_reasons")
        return changed

    async def acquire_lease(self, name: str, holder: str, until: datetime, now: datetime) -> bool:
        """Take or renew the lease `name` until `until`; False while another holder has it."""
        async with self._begin() as conn:
            taken = await conn.execute(
                update(t.leases)
                .where(
                    t.leases.c.name == name,
                    or_(t.leases.c.holder == holder, t.leases.c.expires_at < now),
                )
                .values(holder=holder, expires_at=until)
            )
            if taken.rowcount == 1:
                return True
        try:
            async with self._begin() as conn:
                await conn.execute(
                    insert(t.leases).values(name=name, holder=holder, expires_at=until)
                )
        except IntegrityError:
            return False
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        async with self._begin() as conn:
            await conn.execute(
                delete(t.leases).where(t.leases.c.name == name, t.leases.c.holder == holder)
            )


# -- mark_garbage on SQLite, step by step: the reasons staged in a temporary table ----------


async def _stage_reasons(conn: AsyncConnection, reasons: Mapping[int, str]) -> None:
    """A temporary table of this connection holds the reasons; one an earlier failure left
    is emptied first."""
    await conn.exec_driver_sql(
        "CREATE TEMPORARY TABLE IF NOT EXISTS cleanup_reasons "
        "(stack_id INTEGER PRIMARY KEY, reason TEXT NOT NULL)"
    )
    await conn.execute(delete(_cleanup_reasons))
    await conn.execute(
        insert(_cleanup_reasons),
        [{"stack_id": i, "reason": r} for i, r in reasons.items()],
    )


async def _mark_staged(conn: AsyncConnection, at: datetime) -> list[tuple[int, str, str]]:
    """Staged stacks still ready or deprecated become garbage: (id, namespace, unit) of each."""
    marked = await conn.execute(
        update(t.stacks)
        .where(
            t.stacks.c.id.in_(select(_cleanup_reasons.c.stack_id)),
            t.stacks.c.status.in_([StackStatus.READY.value, StackStatus.DEPRECATED.value]),
        )
        .values(
            status=StackStatus.GARBAGE.value,
            status_message="expired; `inspect` shows why",
            updated_at=at,
            announced_at=None,
        )
        .returning(t.stacks.c.id, t.stacks.c.namespace, t.stacks.c.unit)
    )
    return [(r[0], r[1], r[2]) for r in marked.all()]


async def _unstage(conn: AsyncConnection, stack_ids: AbstractSet[int]) -> None:
    """Drop the reasons of these stacks: only what changed gets history and audit."""
    if stack_ids:
        await conn.execute(
            delete(_cleanup_reasons).where(_cleanup_reasons.c.stack_id.in_(list(stack_ids)))
        )


async def _record_staged(conn: AsyncConnection, at: datetime, actor: str) -> None:
    """A status-history row and an audit event per staged stack, each with its reason."""
    reason, stack_id = _cleanup_reasons.c.reason, _cleanup_reasons.c.stack_id
    await conn.execute(
        insert(t.stack_status).from_select(
            ["stack_id", "status", "message", "actor", "at"],
            select(
                stack_id,
                literal(StackStatus.GARBAGE.value),
                reason,
                literal(actor),
                literal(at, UtcDateTime()),
            ),
        )
    )
    await conn.execute(
        insert(t.audit_events).from_select(
            ["at", "actor", "action", "target", "allowed", "detail"],
            select(
                literal(at, UtcDateTime()),
                literal(actor),
                literal("garbage"),
                t.stacks.c.name,
                literal(True),
                reason,
            ).join_from(_cleanup_reasons, t.stacks, t.stacks.c.id == stack_id),
        )
    )
