"""`SqlStacks`: releases and their stacks: status and its history, logs, dependency edges."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from adapters.storage import cleanup_queries, live_versions
from adapters.storage import tables as t
from adapters.storage.repositories.base import SqlRepository
from adapters.storage.repositories.rows import (
    _release,
    _stack,
    _version_of,
)
from commands.ports import Conflict, StoreError
from domain.records import (
    LiveUnit,
    LogLine,
    NewStack,
    Release,
    Stack,
    StackPage,
    StackQuery,
    StatusChange,
)
from domain.states import LIVE_STATUSES, StackStatus, check_transition
from domain.versions import Version

GUID_PREFIX_MIN = 6


class SqlStacks(SqlRepository):
    def _release_where(self, unit: str, version: Version) -> Any:
        return and_(
            t.releases.c.unit == unit,
            t.releases.c.major == version.major,
            t.releases.c.minor == version.minor,
            t.releases.c.patch == version.patch,
        )

    async def release(self, unit: str, version: Version) -> Release | None:
        async with self._connect() as conn:
            row = (
                await conn.execute(select(t.releases).where(self._release_where(unit, version)))
            ).first()
        return _release(row) if row else None

    async def releases(self, unit: str) -> list[Release]:
        query = (
            select(t.releases)
            .where(t.releases.c.unit == unit)
            .order_by(
                t.releases.c.major.desc(), t.releases.c.minor.desc(), t.releases.c.patch.desc()
            )
        )
        async with self._connect() as conn:
            return [_release(r) for r in (await conn.execute(query)).all()]

    async def release_revisions(self, units: Sequence[str]) -> dict[tuple[str, Version], int]:
        c = t.releases.c
        found: dict[tuple[str, Version], int] = {}
        names = sorted(set(units))
        async with self._connect() as conn:
            if conn.dialect.name == "postgresql":
                rows = await cleanup_queries.release_revisions(conn, names)
                return {(u, Version(ma, mi, pa)): manifest for u, ma, mi, pa, manifest in rows}
            for start in range(0, len(names), 500):  # bound the statement's parameters
                query = select(c.unit, c.major, c.minor, c.patch, c.manifest_id).where(
                    c.unit.in_(names[start : start + 500])
                )
                for unit, major, minor, patch, manifest_id in (await conn.execute(query)).all():
                    found[(unit, Version(major, minor, patch))] = manifest_id
        return found

    async def create_deployment(
        self,
        release: Release | None,
        unit: str,
        version: Version,
        image: str,
        manifest_id: int,
        stacks: Sequence[NewStack],
        actor: str,
    ) -> tuple[Release, list[Stack]]:
        now = self._now()
        try:
            async with self._begin() as conn:
                if release is None:
                    row = (
                        await conn.execute(
                            insert(t.releases)
                            .values(
                                unit=unit,
                                major=version.major,
                                minor=version.minor,
                                patch=version.patch,
                                image=image,
                                digest=None,
                                manifest_id=manifest_id,
                                created_by=actor,
                                created_at=now,
                            )
                            .returning(*t.releases.c)
                        )
                    ).one()
                    release = _release(row)
                created: list[Stack] = []
                for new in stacks:
                    row = (
                        await conn.execute(
                            insert(t.stacks)
                            .values(
                                guid=new.guid,
                                name=new.name,
                                release_id=release.id,
                                unit=new.unit,
                                major=new.version.major,
                                minor=new.version.minor,
                                patch=new.version.patch,
                                datacenter=new.datacenter,
                                namespace=new.namespace,
                                plan=new.plan,
                                status=StackStatus.PENDING.value,
                                status_message="waiting for a workflow slot",
                                workflow_step=None,
                                created_by=new.created_by,
                                created_at=now,
                                updated_at=now,
                                expires_at=new.expires_at,
                            )
                            .returning(*t.stacks.c)
                        )
                    ).one()
                    created.append(_stack(row))
                if created:
                    await conn.execute(
                        insert(t.stack_status),
                        [
                            {
                                "stack_id": s.id,
                                "status": StackStatus.PENDING.value,
                                "message": f"deploy of {unit} {version} requested",
                                "actor": actor,
                                "at": now,
                            }
                            for s in created
                        ],
                    )
                    await live_versions.refresh(conn, {(s.namespace, s.unit) for s in created})
        except IntegrityError:
            raise Conflict(
                f"{unit} {version} was released at the same moment by someone else"
            ) from None
        return release, created

    async def set_release_digest(self, release_id: int, digest: str) -> None:
        async with self._begin() as conn:
            current = (
                await conn.execute(select(t.releases.c.digest).where(t.releases.c.id == release_id))
            ).scalar()
            if current and current != digest:
                raise Conflict(
                    f"release {release_id} is pinned to {current}; it cannot change to {digest}"
                )
            await conn.execute(
                update(t.releases).where(t.releases.c.id == release_id).values(digest=digest)
            )

    async def stack(self, ref: str) -> Stack | None:
        ref = ref.strip()
        if not ref:
            return None
        async with self._connect() as conn:
            row = (
                await conn.execute(
                    select(t.stacks).where(or_(t.stacks.c.name == ref, t.stacks.c.guid == ref))
                )
            ).first()
            if row is None and len(ref) >= GUID_PREFIX_MIN and ref.isalnum():
                rows = (
                    await conn.execute(
                        select(t.stacks).where(t.stacks.c.guid.startswith(ref)).limit(2)
                    )
                ).all()
                row = rows[0] if len(rows) == 1 else None
        return _stack(row) if row else None

    async def stack_by_id(self, stack_id: int) -> Stack | None:
        async with self._connect() as conn:
            row = (await conn.execute(select(t.stacks).where(t.stacks.c.id == stack_id))).first()
        return _stack(row) if row else None

    async def list_stacks(self, query: StackQuery) -> StackPage:
        conditions = []
        if query.namespace is not None:
            conditions.append(t.stacks.c.namespace == query.namespace)
        if query.datacenter is not None:
            conditions.append(t.stacks.c.datacenter == query.datacenter)
        if query.unit is not None:
            conditions.append(t.stacks.c.unit == query.unit)
        if query.statuses:
            conditions.append(t.stacks.c.status.in_([s.value for s in query.statuses]))
        where = and_(True, *conditions)
        async with self._connect() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(t.stacks).where(where))
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(t.stacks)
                    .where(where)
                    .order_by(t.stacks.c.id.desc())
                    .limit(query.limit)
                    .offset(query.offset)
                )
            ).all()
        return StackPage(stacks=tuple(_stack(r) for r in rows), total=int(total), query=query)

    async def live_units(
        self, namespace: str, datacenter: str | None = None, newest: int = 3
    ) -> dict[str, LiveUnit]:
        if newest <= live_versions.KEPT:  # one row per unit, kept by every change
            async with self._connect() as conn:
                return await live_versions.read(conn, namespace, datacenter, newest)
        # read in order from ix_stacks_live_versions alone; versions ascend within a unit, so
        # walking backwards meets each unit's newest first, and only those become Versions
        columns = (t.stacks.c.unit, t.stacks.c.major, t.stacks.c.minor, t.stacks.c.patch)
        query = (
            select(*columns, func.count())
            .where(t.stacks.c.namespace == namespace, t.LIVE_SQL)
            .group_by(*columns)
        )
        if datacenter is not None:
            query = query.where(t.stacks.c.datacenter == datacenter)
        async with self._connect() as conn:
            rows = (await conn.execute(query.order_by(*columns))).all()
        found: dict[str, LiveUnit] = {}
        unit, stacks, versions, shown = "", 0, 0, list[Version]()
        for name, major, minor, patch, count in reversed(rows):
            if name != unit:
                if unit:
                    found[unit] = LiveUnit(stacks, versions, tuple(shown))
                unit, stacks, versions, shown = name, 0, 0, []
            stacks += count
            versions += 1
            if versions <= newest:
                shown.append(_version_of(major, minor, patch))
        if unit:
            found[unit] = LiveUnit(stacks, versions, tuple(shown))
        return found

    async def live_stacks(
        self, unit: str, version: Version, datacenter: str, namespace: str
    ) -> list[Stack]:
        query = select(t.stacks).where(
            t.stacks.c.unit == unit,
            t.stacks.c.namespace == namespace,
            t.stacks.c.datacenter == datacenter,
            t.stacks.c.major == version.major,
            t.stacks.c.minor == version.minor,
            t.stacks.c.patch == version.patch,
            t.stacks.c.status.in_([s.value for s in LIVE_STATUSES]),
        )
        async with self._connect() as conn:
            return [_stack(r) for r in (await conn.execute(query.order_by(t.stacks.c.id))).all()]

    async def change_status(
        self,
        stack_id: int,
        status: StackStatus,
        message: str,
        actor: str,
        at: datetime | None = None,
    ) -> Stack:
        at = at or self._now()
        async with self._begin() as conn:
            current = (
                await conn.execute(
                    select(t.stacks.c.status).where(t.stacks.c.id == stack_id).with_for_update()
                )
            ).scalar()
            if current is None:
                raise StoreError(f"there is no stack with id {stack_id}")
            check_transition(StackStatus(current), status)
            # Only move from the status we read: a concurrent change makes this a no-op.
            changed = await conn.execute(
                update(t.stacks)
                .where(t.stacks.c.id == stack_id, t.stacks.c.status == current)
                .values(
                    status=status.value, status_message=message, updated_at=at, announced_at=None
                )
            )
            if changed.rowcount != 1:
                raise Conflict(f"stack {stack_id} changed status at the same moment; try again")
            await conn.execute(
                insert(t.stack_status).values(
                    stack_id=stack_id, status=status.value, message=message, actor=actor, at=at
                )
            )
            row = (await conn.execute(select(t.stacks).where(t.stacks.c.id == stack_id))).one()
            if StackStatus(current).is_live != status.is_live:
                await live_versions.refresh(conn, [(row.namespace, row.unit)])
        return _stack(row)

    async def set_workflow_step(self, stack_id: int, step: str | None) -> None:
        async with self._begin() as conn:
            await conn.execute(
                update(t.stacks)
                .where(t.stacks.c.id == stack_id)
                .values(workflow_step=step, updated_at=self._now())
            )

    async def set_expiry(self, stack_id: int, expires_at: datetime | None) -> None:
        async with self._begin() as conn:
            await conn.execute(
                update(t.stacks).where(t.stacks.c.id == stack_id).values(expires_at=expires_at)
            )

    async def status_history(self, stack_id: int) -> list[StatusChange]:
        query = (
            select(t.stack_status)
            .where(t.stack_status.c.stack_id == stack_id)
            .order_by(t.stack_status.c.id)
        )
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            StatusChange(r.stack_id, StackStatus(r.status), r.message, r.actor, r.at) for r in rows
        ]

    async def append_log(
        self, stack_id: int, message: str, step: str | None = None, at: datetime | None = None
    ) -> None:
        async with self._begin() as conn:
            await conn.execute(
                insert(t.stack_logs).values(
                    stack_id=stack_id, message=message, step=step, at=at or self._now()
                )
            )

    async def logs(self, stack_id: int, limit: int = 200) -> list[LogLine]:
        query = (
            select(t.stack_logs)
            .where(t.stack_logs.c.stack_id == stack_id)
            .order_by(t.stack_logs.c.id.desc())
            .limit(limit)
        )
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return [LogLine(r.stack_id, r.at, r.message, r.step) for r in reversed(rows)]

    async def add_dependency(self, stack_id: int, depends_on_stack_id: int) -> None:
        if stack_id == depends_on_stack_id:
            raise StoreError("a stack cannot depend on itself")
        edges = t.stack_dependencies.c
        known = select(edges.stack_id).where(
            edges.stack_id == stack_id, edges.depends_on_id == depends_on_stack_id
        )
        try:
            async with self._begin() as conn:
                if (await conn.execute(known)).first() is None:  # adding it twice changes nothing
                    await conn.execute(
                        insert(t.stack_dependencies).values(
                            stack_id=stack_id, depends_on_id=depends_on_stack_id
                        )
                    )
        except IntegrityError:
            if self._bound is None:
                async with self._connect() as conn:
                    if (await conn.execute(known)).first() is not None:
                        return  # another writer recorded it at the same moment
            raise StoreError(
                f"cannot record that stack {stack_id} depends on stack {depends_on_stack_id}: "
                "one of them does not exist"
            ) from None

    async def dependencies(self, stack_id: int) -> list[Stack]:
        query = (
            select(t.stacks)
            .join(t.stack_dependencies, t.stack_dependencies.c.depends_on_id == t.stacks.c.id)
            .where(t.stack_dependencies.c.stack_id == stack_id)
            .order_by(t.stacks.c.id)
        )
        async with self._connect() as conn:
            return [_stack(r) for r in (await conn.execute(query)).all()]

    async def dependents(self, stack_id: int) -> list[Stack]:
        query = (
            select(t.stacks)
            .join(t.stack_dependencies, t.stack_dependencies.c.stack_id == t.stacks.c.id)
            .where(t.stack_dependencies.c.depends_on_id == stack_id)
            .order_by(t.stacks.c.id)
        )
        async with self._connect() as conn:
            return [_stack(r) for r in (await conn.execute(query)).all()]

    async def stacks_by_ids(self, stack_ids: Sequence[int]) -> list[Stack]:
        if not stack_ids:
            return []
        query = select(t.stacks).where(t.stacks.c.id.in_(list(stack_ids))).order_by(t.stacks.c.id)
        async with self._connect() as conn:
            return [_stack(r) for r in (await conn.execute(query)).all()]

    async def release_stacks(self, unit: str, version: Version) -> list[Stack]:
        """Every stack of one release, in every namespace and datacenter, oldest first."""
        query = select(t.stacks).where(
            t.stacks.c.unit == unit,
            t.stacks.c.major == version.major,
            t.stacks.c.minor == version.minor,
            t.stacks.c.patch == version.patch,
        )
        async with self._connect() as conn:
            return [_stack(r) for r in (await conn.execute(query.order_by(t.stacks.c.id))).all()]
