"""`SqlStore`: the Store port on SQLAlchemy 2 (async), for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    delete,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from adapters.storage import tables as t
from adapters.storage.locks import LockRows
from adapters.storage.migrate import upgrade as run_migrations
from adapters.storage.tables import UtcDateTime
from adapters.storage.urls import async_url, safe
from commands.ports import Clock, Conflict, StoreError, VaultTokenRecord
from domain.expiration import StackView
from domain.records import (
    Approval,
    AuditEvent,
    BlueprintRecord,
    Daemon,
    LiveUnit,
    LogLine,
    ManifestRecord,
    NewApproval,
    NewStack,
    Operation,
    PendingRemoval,
    PostedMessage,
    Release,
    Stack,
    StackPage,
    StackQuery,
    StatusChange,
    TrafficShift,
    UnitRecord,
)
from domain.states import LIVE_STATUSES, StackStatus, check_transition
from domain.versions import Version

GUID_PREFIX_MIN = 6
ACTIVE_SHIFTS = ("running", "paused", "awaiting-approval")

# A pass's garbage reasons, per stack, for set-based updates (`mark_garbage` creates and
# drops it; this describes it for queries).
_cleanup_reasons = Table(
    "cleanup_reasons",
    MetaData(),
    Column("stack_id", Integer, primary_key=True),
    Column("reason", Text, nullable=False),
)


@functools.lru_cache(maxsize=65536)
def _version_of(major: int, minor: int, patch: int) -> Version:
    return Version(major, minor, patch)  # immutable, so one object per version is shared


def _version(row: Row[Any]) -> Version:
    return _version_of(row.major, row.minor, row.patch)


def _stack(row: Row[Any]) -> Stack:
    return Stack(
        id=row.id,
        guid=row.guid,
        name=row.name,
        release_id=row.release_id,
        unit=row.unit,
        version=_version(row),
        datacenter=row.datacenter,
        namespace=row.namespace,
        plan=row.plan,
        status=StackStatus(row.status),
        status_message=row.status_message,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
        workflow_step=row.workflow_step,
        announced_at=row.announced_at,
    )


def _release(row: Row[Any]) -> Release:
    return Release(
        id=row.id,
        unit=row.unit,
        version=_version(row),
        image=row.image,
        digest=row.digest,
        manifest_id=row.manifest_id,
        created_by=row.created_by,
        created_at=row.created_at,
    )


_MANIFEST_COLUMNS = (
    t.manifests.c.id,
    t.repositories.c.name.label("repository"),
    t.manifests.c.revision,
    t.manifests.c.text,
    t.manifests.c.digest,
    t.manifests.c.registered_by,
    t.manifests.c.registered_at,
)
_MANIFEST_FROM = t.manifests.join(
    t.repositories, t.manifests.c.repository_id == t.repositories.c.id
)


def _manifest(row: Row[Any]) -> ManifestRecord:
    return ManifestRecord(
        id=row.id,
        repository=row.repository,
        revision=row.revision,
        text=row.text,
        digest=row.digest,
        registered_by=row.registered_by,
        registered_at=row.registered_at,
    )


def _blueprint(row: Row[Any]) -> BlueprintRecord:
    return BlueprintRecord(
        id=row.id,
        name=row.name,
        kind=row.kind,
        revision=row.revision,
        text=row.text,
        digest=row.digest,
        registered_by=row.registered_by,
        registered_at=row.registered_at,
    )


def _approval(row: Row[Any], approvers: tuple[str, ...], details: str | None) -> Approval:
    return Approval(
        id=row.id,
        kind=row.kind,
        stack_id=row.stack_id,
        namespace=row.namespace,
        datacenter=row.datacenter,
        summary=row.summary,
        requested_by=row.requested_by,
        status=row.status,
        required=row.required,
        approvers=approvers,
        created_at=row.created_at,
        deadline=row.deadline,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        details=tuple(details.splitlines()) if details else (),
        reason=row.reason or "",
    )


def _operation(row: Row[Any], stack_ids: Sequence[int]) -> Operation:
    return Operation(
        id=row.id,
        kind=row.kind,
        title=row.title,
        requested_by=row.requested_by,
        channel=row.channel,
        stack_ids=tuple(stack_ids),
        created_at=row.created_at,
        finished_at=row.finished_at,
        outcome=row.outcome,
    )


class SqlStore(LockRows):
    def __init__(self, engine: AsyncEngine, url: str, clock: Clock) -> None:
        self._engine = engine
        self._url = url
        self._clock = clock  # the program's one clock: every row is stamped by it

    def _now(self) -> datetime:
        return self._clock.now()

    # -- plumbing -------------------------------------------------------------------------

    def _begin(self) -> Any:
        return self._engine.begin()

    def _connect(self) -> Any:
        return self._engine.connect()

    async def close(self) -> None:
        await self._engine.dispose()

    # -- manifests and units --------------------------------------------------------------

    async def register_manifest(
        self, repository: str, text: str, units: Sequence[UnitRecord], actor: str
    ) -> ManifestRecord:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        now = self._now()
        try:
            async with self._begin() as conn:
                repo_id = await self._repository_id(conn, repository, now)
                latest = (
                    await conn.execute(
                        select(*_MANIFEST_COLUMNS)
                        .select_from(_MANIFEST_FROM)
                        .where(t.manifests.c.repository_id == repo_id)
                        .order_by(t.manifests.c.revision.desc())
                        .limit(1)
                    )
                ).first()
                if latest is not None and latest.digest == digest:
                    return _manifest(latest)
                names = [u.name for u in units]
                owned = (
                    await conn.execute(
                        select(t.units.c.name, t.repositories.c.name.label("repository"))
                        .select_from(
                            t.units.join(
                                t.repositories, t.units.c.repository_id == t.repositories.c.id
                            )
                        )
                        .where(t.units.c.name.in_(names), t.units.c.repository_id != repo_id)
                    )
                ).all()
                if owned:
                    taken = ", ".join(f"{r.name} (declared by {r.repository})" for r in owned)
                    raise Conflict(
                        f"unit names already belong to another repository: {taken}; "
                        "a unit is declared by one repository only"
                    )
                revision = (latest.revision if latest else 0) + 1
                manifest_id = (
                    await conn.execute(
                        insert(t.manifests)
                        .values(
                            repository_id=repo_id,
                            revision=revision,
                            text=text,
                            digest=digest,
                            registered_by=actor,
                            registered_at=now,
                        )
                        .returning(t.manifests.c.id)
                    )
                ).scalar_one()
                await conn.execute(delete(t.units).where(t.units.c.repository_id == repo_id))
                if units:
                    await conn.execute(
                        insert(t.units),
                        [
                            {
                                "name": u.name,
                                "repository_id": repo_id,
                                "kind": u.kind,
                                "description": u.description,
                                "manifest_revision": revision,
                            }
                            for u in units
                        ],
                    )
        except IntegrityError:
            raise Conflict(
                f"another registration of {repository} happened at the same moment; send it again"
            ) from None
        return ManifestRecord(manifest_id, repository, revision, text, digest, actor, now)

    async def register_blueprint(
        self, name: str, kind: str, text: str, actor: str
    ) -> BlueprintRecord:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        now = self._now()
        try:
            async with self._begin() as conn:
                latest = (
                    await conn.execute(
                        select(t.blueprints)
                        .where(t.blueprints.c.name == name)
                        .order_by(t.blueprints.c.revision.desc())
                        .limit(1)
                    )
                ).first()
                if latest is not None and latest.digest == digest and latest.kind == kind:
                    return _blueprint(latest)
                revision = (latest.revision if latest else 0) + 1
                blueprint_id = (
                    await conn.execute(
                        insert(t.blueprints)
                        .values(
                            name=name,
                            kind=kind,
                            revision=revision,
                            text=text,
                            digest=digest,
                            registered_by=actor,
                            registered_at=now,
                        )
                        .returning(t.blueprints.c.id)
                    )
                ).scalar_one()
        except IntegrityError:
            raise Conflict(
                f"another registration of blueprint {name} happened at the same moment; "
                "send it again"
            ) from None
        return BlueprintRecord(blueprint_id, name, kind, revision, text, digest, actor, now)

    async def blueprint(self, name: str, revision: int | None = None) -> BlueprintRecord | None:
        query = select(t.blueprints).where(t.blueprints.c.name == name)
        if revision is not None:
            query = query.where(t.blueprints.c.revision == revision)
        query = query.order_by(t.blueprints.c.revision.desc()).limit(1)
        async with self._connect() as conn:
            row = (await conn.execute(query)).first()
        return _blueprint(row) if row else None

    async def blueprints(self) -> list[BlueprintRecord]:
        newest = (
            select(t.blueprints.c.name, func.max(t.blueprints.c.revision).label("revision"))
            .group_by(t.blueprints.c.name)
            .subquery()
        )
        query = (
            select(t.blueprints)
            .join(
                newest,
                and_(
                    newest.c.name == t.blueprints.c.name,
                    newest.c.revision == t.blueprints.c.revision,
                ),
            )
            .order_by(t.blueprints.c.name)
        )
        async with self._connect() as conn:
            return [_blueprint(r) for r in (await conn.execute(query)).all()]

    async def _repository_id(self, conn: AsyncConnection, name: str, now: datetime) -> int:
        found = (
            await conn.execute(select(t.repositories.c.id).where(t.repositories.c.name == name))
        ).scalar()
        if found is not None:
            return int(found)
        return int(
            (
                await conn.execute(
                    insert(t.repositories)
                    .values(name=name, created_at=now)
                    .returning(t.repositories.c.id)
                )
            ).scalar_one()
        )

    async def latest_manifest(self, repository: str) -> ManifestRecord | None:
        async with self._connect() as conn:
            row = (
                await conn.execute(
                    select(*_MANIFEST_COLUMNS)
                    .select_from(_MANIFEST_FROM)
                    .where(t.repositories.c.name == repository)
                    .order_by(t.manifests.c.revision.desc())
                    .limit(1)
                )
            ).first()
        return _manifest(row) if row else None

    async def manifest_by_id(self, manifest_id: int) -> ManifestRecord | None:
        async with self._connect() as conn:
            row = (
                await conn.execute(
                    select(*_MANIFEST_COLUMNS)
                    .select_from(_MANIFEST_FROM)
                    .where(t.manifests.c.id == manifest_id)
                )
            ).first()
        return _manifest(row) if row else None

    async def manifests(self) -> list[ManifestRecord]:
        newest = (
            select(t.manifests.c.repository_id, func.max(t.manifests.c.revision).label("revision"))
            .group_by(t.manifests.c.repository_id)
            .subquery()
        )
        query = (
            select(*_MANIFEST_COLUMNS)
            .select_from(_MANIFEST_FROM)
            .join(
                newest,
                and_(
                    newest.c.repository_id == t.manifests.c.repository_id,
                    newest.c.revision == t.manifests.c.revision,
                ),
            )
            .order_by(t.repositories.c.name)
        )
        async with self._connect() as conn:
            return [_manifest(r) for r in (await conn.execute(query)).all()]

    def _units_query(self) -> Any:
        return select(
            t.units.c.name,
            t.repositories.c.name.label("repository"),
            t.units.c.kind,
            t.units.c.description,
            t.units.c.manifest_revision,
        ).select_from(t.units.join(t.repositories, t.units.c.repository_id == t.repositories.c.id))

    async def unit(self, name: str) -> UnitRecord | None:
        async with self._connect() as conn:
            row = (await conn.execute(self._units_query().where(t.units.c.name == name))).first()
        return UnitRecord(*row) if row else None

    async def units(self) -> list[UnitRecord]:
        async with self._connect() as conn:
            rows = (await conn.execute(self._units_query().order_by(t.units.c.name))).all()
        return [UnitRecord(*row) for row in rows]

    # -- releases ---------------------------------------------------------------------------

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

    # -- stacks -----------------------------------------------------------------------------

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
        try:
            async with self._begin() as conn:
                await conn.execute(
                    insert(t.stack_dependencies).values(
                        stack_id=stack_id, depends_on_id=depends_on_stack_id
                    )
                )
        except IntegrityError:
            pass  # recorded already: adding an edge twice changes nothing

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

    # -- approvals and audit ------------------------------------------------------------------

    async def _approvals(self, conn: AsyncConnection, where: Any) -> list[Approval]:
        rows = (
            await conn.execute(select(t.approvals).where(where).order_by(t.approvals.c.id))
        ).all()
        if not rows:
            return []
        votes = (
            await conn.execute(
                select(t.approval_votes.c.approval_id, t.approval_votes.c.user_id)
                .where(
                    t.approval_votes.c.approval_id.in_([r.id for r in rows]),
                    t.approval_votes.c.decision == "approve",
                )
                .order_by(t.approval_votes.c.id)
            )
        ).all()
        by_approval: dict[int, list[str]] = {}
        for vote in votes:
            by_approval.setdefault(vote.approval_id, []).append(vote.user_id)
        details = {
            d.approval_id: d.text
            for d in await conn.execute(
                select(t.approval_details).where(
                    t.approval_details.c.approval_id.in_([r.id for r in rows])
                )
            )
        }
        return [_approval(r, tuple(by_approval.get(r.id, ())), details.get(r.id)) for r in rows]

    async def approvals(self, status: str | None = "pending") -> list[Approval]:
        where = t.approvals.c.status == status if status is not None else and_(True)
        async with self._connect() as conn:
            return await self._approvals(conn, where)

    async def approval(self, approval_id: int) -> Approval | None:
        async with self._connect() as conn:
            found = await self._approvals(conn, t.approvals.c.id == approval_id)
        return found[0] if found else None

    async def create_approval(self, new: NewApproval, at: datetime | None = None) -> Approval:
        async with self._begin() as conn:
            approval_id = (
                await conn.execute(
                    insert(t.approvals)
                    .values(
                        kind=new.kind,
                        stack_id=new.stack_id,
                        namespace=new.namespace,
                        datacenter=new.datacenter,
                        summary=new.summary,
                        requested_by=new.requested_by,
                        status="pending",
                        required=new.required,
                        created_at=at or self._now(),
                        deadline=new.deadline,
                    )
                    .returning(t.approvals.c.id)
                )
            ).scalar_one()
            if new.details:
                await conn.execute(
                    insert(t.approval_details).values(
                        approval_id=approval_id, text="\n".join(new.details)
                    )
                )
            return (await self._approvals(conn, t.approvals.c.id == approval_id))[0]

    async def vote(self, approval_id: int, user_id: str, decision: str, at: datetime) -> bool:
        """Record one person's vote; False when they had already voted (a double click)."""
        try:
            async with self._begin() as conn:
                await conn.execute(
                    insert(t.approval_votes).values(
                        approval_id=approval_id, user_id=user_id, decision=decision, at=at
                    )
                )
        except IntegrityError:
            return False
        return True

    async def decide_approval(
        self, approval_id: int, status: str, decided_by: str, at: datetime, reason: str = ""
    ) -> Approval | None:
        """Close a pending approval; None when it was no longer pending (someone else won)."""
        async with self._begin() as conn:
            changed = await conn.execute(
                update(t.approvals)
                .where(t.approvals.c.id == approval_id, t.approvals.c.status == "pending")
                .values(status=status, decided_by=decided_by, decided_at=at, reason=reason or None)
            )
            if changed.rowcount != 1:
                return None
            return (await self._approvals(conn, t.approvals.c.id == approval_id))[0]

    async def overdue_approvals(self, now: datetime) -> list[Approval]:
        async with self._connect() as conn:
            return await self._approvals(
                conn, and_(t.approvals.c.status == "pending", t.approvals.c.deadline <= now)
            )

    # -- operations and the messages that follow them --------------------------------------

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

    async def stacks_by_ids(self, stack_ids: Sequence[int]) -> list[Stack]:
        if not stack_ids:
            return []
        query = select(t.stacks).where(t.stacks.c.id.in_(list(stack_ids))).order_by(t.stacks.c.id)
        async with self._connect() as conn:
            return [_stack(r) for r in (await conn.execute(query)).all()]

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

    # -- Vault tokens -------------------------------------------------------------------------

    async def record_vault_token(
        self, stack_id: int, policy: str, accessor: str, at: datetime
    ) -> str | None:
        table = t.vault_tokens
        async with self._begin() as conn:
            before = (
                await conn.execute(select(table.c.accessor).where(table.c.stack_id == stack_id))
            ).scalar_one_or_none()
            if before is None:
                await conn.execute(
                    insert(table).values(
                        stack_id=stack_id, policy=policy, accessor=accessor, issued_at=at
                    )
                )
            else:
                await conn.execute(
                    update(table)
                    .where(table.c.stack_id == stack_id)
                    .values(policy=policy, accessor=accessor, issued_at=at)
                )
        return None if before is None or before == accessor else str(before)

    async def vault_tokens(self, stack_id: int | None = None) -> list[VaultTokenRecord]:
        table = t.vault_tokens
        query = (
            select(table, t.stacks.c.name, t.stacks.c.datacenter, t.stacks.c.status)
            .join(t.stacks, t.stacks.c.id == table.c.stack_id)
            .order_by(table.c.stack_id)
        )
        if stack_id is not None:
            query = query.where(table.c.stack_id == stack_id)
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            VaultTokenRecord(
                r.stack_id,
                r.name,
                r.datacenter,
                StackStatus(r.status),
                r.policy,
                r.accessor,
                r.issued_at,
            )
            for r in rows
        ]

    async def forget_vault_token(self, stack_id: int, accessor: str) -> None:
        table = t.vault_tokens
        async with self._begin() as conn:
            await conn.execute(
                delete(table).where(table.c.stack_id == stack_id, table.c.accessor == accessor)
            )

    # -- deliveries ---------------------------------------------------------------------------

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

    # -- lifecycle ----------------------------------------------------------------------------

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
        c = t.stacks.c
        order = (c.unit, c.namespace, c.datacenter, c.id)
        columns = (*order, c.name, c.major, c.minor, c.patch, c.status, c.plan, c.created_at)
        after: tuple[str, str, str, int] | None = None
        carried: list[tuple[str, StackView]] = []  # the start of a group the last read cut
        while True:
            query = select(*columns, c.expires_at).where(t.JUDGED_SQL).order_by(*order).limit(size)
            if after is not None:
                query = query.where(tuple_(*order) > tuple_(*after))
            async with self._connect() as conn:
                rows = (await conn.execute(query)).all()
            # one object per stack, built from positions: this runs for every stack judged
            batch = carried + [
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
            if not batch:
                return
            last = batch[-1][1]
            after = (last.unit, last.namespace, last.datacenter, last.id)
            carried = []
            if len(rows) == size:  # more may follow: hold back the last group
                cut = len(batch)
                while cut > 0 and batch[cut - 1][1].group == last.group:
                    cut -= 1
                batch, carried = batch[:cut], batch[cut:]
                if not batch:
                    continue
            ids = [view.id for _, view in batch]
            yield batch, await self._live_dependants(ids, collected)
            if len(rows) < size:
                return

    async def _live_dependants(
        self, stack_ids: Sequence[int], collected: AbstractSet[int]
    ) -> dict[int, int]:
        live = [s.value for s in LIVE_STATUSES]
        statuses = [*live, StackStatus.GARBAGE.value]
        async with self._connect() as conn:
            if conn.dialect.name == "postgresql":
                # one index probe per stack: left to itself the planner hashes every edge for
                # each batch, which grows with the square of the stacks; OFFSET 0 keeps the
                # lateral subquery from being folded into a join
                query = text(
                    "SELECT b.id, x.id, x.status FROM unnest(CAST(:ids AS integer[])) AS b(id) "
                    "CROSS JOIN LATERAL (SELECT s.id, s.status FROM stack_dependencies d "
                    "JOIN stacks s ON s.id = d.stack_id WHERE d.depends_on_id = b.id "
                    "AND s.status = ANY(CAST(:statuses AS text[])) OFFSET 0) AS x"
                )
                result = await conn.execute(query, {"ids": list(stack_ids), "statuses": statuses})
            else:  # SQLite probes the index for each value of an IN list
                dependant = t.stacks.alias("dependant")
                edges = t.stack_dependencies
                result = await conn.execute(
                    select(edges.c.depends_on_id, dependant.c.id, dependant.c.status)
                    .join(dependant, dependant.c.id == edges.c.stack_id)
                    .where(edges.c.depends_on_id.in_(stack_ids), dependant.c.status.in_(statuses))
                )
            counts: dict[int, int] = {}
            for depended, by, status in result.all():
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

    async def extend_expiries(self, expiries: Mapping[int, datetime]) -> None:
        # a pass extends most stacks to the same moment: one UPDATE per distinct value
        by_value: dict[datetime, list[int]] = {}
        for stack_id, until in expiries.items():
            by_value.setdefault(until, []).append(stack_id)
        if not by_value:
            return
        async with self._begin() as conn:
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
        garbage = StackStatus.GARBAGE.value
        async with self._begin() as conn:
            if conn.dialect.name == "postgresql":
                return await _mark_garbage_postgres(conn, reasons, at, actor)
            # a temporary table of this connection; one an earlier failure left is emptied
            await conn.exec_driver_sql(
                "CREATE TEMPORARY TABLE IF NOT EXISTS cleanup_reasons "
                "(stack_id INTEGER PRIMARY KEY, reason TEXT NOT NULL)"
            )
            await conn.execute(delete(_cleanup_reasons))
            await conn.execute(
                insert(_cleanup_reasons),
                [{"stack_id": i, "reason": r} for i, r in reasons.items()],
            )
            changed = [
                r[0]
                for r in (
                    await conn.execute(
                        update(t.stacks)
                        .where(
                            t.stacks.c.id.in_(select(_cleanup_reasons.c.stack_id)),
                            t.stacks.c.status.in_(
                                [StackStatus.READY.value, StackStatus.DEPRECATED.value]
                            ),
                        )
                        .values(
                            status=garbage,
                            status_message="expired; `inspect` shows why",
                            updated_at=at,
                            announced_at=None,
                        )
                        .returning(t.stacks.c.id)
                    )
                ).all()
            ]
            if len(changed) != len(reasons):  # keep only the reasons of what changed
                moved_on = set(reasons) - set(changed)
                await conn.execute(
                    delete(_cleanup_reasons).where(_cleanup_reasons.c.stack_id.in_(list(moved_on)))
                )
            if changed:
                reason, stack_id = _cleanup_reasons.c.reason, _cleanup_reasons.c.stack_id
                await conn.execute(
                    insert(t.stack_status).from_select(
                        ["stack_id", "status", "message", "actor", "at"],
                        select(
                            stack_id,
                            literal(garbage),
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

    # -- traffic shifts -----------------------------------------------------------------------

    async def create_shift(
        self,
        from_stack_id: int,
        to_stack_id: int,
        policy: str,
        duration_seconds: int,
        state: str,
        at: datetime,
        route: str | None = None,
    ) -> TrafficShift:
        shift, _ = await self.open_shift(
            route, from_stack_id, to_stack_id, policy, duration_seconds, state, at
        )
        return shift

    async def open_shift(
        self,
        route: str | None,
        from_stack_id: int,
        to_stack_id: int,
        policy: str,
        duration_seconds: int,
        state: str,
        at: datetime,
        start_new_weight: int = 0,
    ) -> tuple[TrafficShift, list[TrafficShift]]:
        """Record a new shift on `route`; in the same transaction every shift still active
        there becomes `superseded` (returned), so a route never has two at once."""
        for attempt in range(3):
            try:
                async with self._begin() as conn:
                    superseded: list[TrafficShift] = []
                    if route is not None:
                        changed = await conn.execute(
                            update(t.traffic_shifts)
                            .where(
                                t.traffic_shifts.c.route == route,
                                t.traffic_shifts.c.state.in_(ACTIVE_SHIFTS),
                            )
                            .values(state="superseded", updated_at=at)
                            .returning(*t.traffic_shifts.c)
                        )
                        superseded = [TrafficShift(**r._mapping) for r in changed.all()]
                    row = (
                        await conn.execute(
                            insert(t.traffic_shifts)
                            .values(
                                from_stack_id=from_stack_id,
                                to_stack_id=to_stack_id,
                                policy=policy,
                                duration_seconds=duration_seconds,
                                direction="forward",
                                state=state,
                                started_at=at if state == "running" else None,
                                last_step_at=at if state == "running" else None,
                                paused_seconds=0,
                                delayed_seconds=0.0,
                                start_new_weight=start_new_weight,
                                current_new_weight=start_new_weight,
                                updated_at=at,
                                route=route,
                            )
                            .returning(*t.traffic_shifts.c)
                        )
                    ).one()
                return TrafficShift(**row._mapping), superseded
            except IntegrityError:
                # another process opened a shift on this route at the same moment: supersede it
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def heartbeat(self, holder: str, kind: str, at: datetime) -> None:
        """Say that `holder` (a daemon) is alive at `at`."""
        async with self._begin() as conn:
            changed = await conn.execute(
                update(t.daemons).where(t.daemons.c.holder == holder).values(seen_at=at)
            )
            if changed.rowcount == 0:
                await conn.execute(
                    insert(t.daemons).values(holder=holder, kind=kind, started_at=at, seen_at=at)
                )

    async def daemons(self, seen_since: datetime) -> list[Daemon]:
        """Daemons whose last heartbeat is not older than `seen_since`, oldest first."""
        async with self._connect() as conn:
            rows = (
                await conn.execute(
                    select(t.daemons)
                    .where(t.daemons.c.seen_at >= seen_since)
                    .order_by(t.daemons.c.started_at)
                )
            ).all()
        return [Daemon(**r._mapping) for r in rows]

    async def forget_daemon(self, holder: str) -> None:
        async with self._begin() as conn:
            await conn.execute(delete(t.daemons).where(t.daemons.c.holder == holder))

    async def shift(self, shift_id: int) -> TrafficShift | None:
        async with self._connect() as conn:
            row = (
                await conn.execute(
                    select(t.traffic_shifts).where(t.traffic_shifts.c.id == shift_id)
                )
            ).first()
        return TrafficShift(**row._mapping) if row else None

    async def shifts(
        self, states: Sequence[str] = (), stack_id: int | None = None
    ) -> list[TrafficShift]:
        """Shifts in `states` (all when empty) touching `stack_id` (any when None), oldest first."""
        query = select(t.traffic_shifts).order_by(t.traffic_shifts.c.id)
        if states:
            query = query.where(t.traffic_shifts.c.state.in_(list(states)))
        if stack_id is not None:
            query = query.where(
                or_(
                    t.traffic_shifts.c.to_stack_id == stack_id,
                    t.traffic_shifts.c.from_stack_id == stack_id,
                )
            )
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return [TrafficShift(**r._mapping) for r in rows]

    async def update_shift(
        self, shift_id: int, expected_state: str | None = None, **values: Any
    ) -> TrafficShift | None:
        """Change a shift; with `expected_state`, only if it is still in that state (None
        otherwise: someone else changed it first)."""
        query = update(t.traffic_shifts).where(t.traffic_shifts.c.id == shift_id)
        if expected_state is not None:
            query = query.where(t.traffic_shifts.c.state == expected_state)
        values.setdefault("updated_at", self._now())
        async with self._begin() as conn:
            changed = await conn.execute(query.values(**values).returning(*t.traffic_shifts.c))
            row = changed.first()
        return TrafficShift(**row._mapping) if row else None

    async def audit(self, event: AuditEvent) -> None:
        async with self._begin() as conn:
            await conn.execute(
                insert(t.audit_events).values(
                    at=event.at or self._now(),
                    actor=event.actor,
                    action=event.action,
                    target=event.target,
                    allowed=event.allowed,
                    detail=event.detail,
                )
            )

    async def audit_many(self, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
        async with self._begin() as conn:
            await conn.execute(
                insert(t.audit_events),
                [
                    {
                        "at": e.at or self._now(),
                        "actor": e.actor,
                        "action": e.action,
                        "target": e.target,
                        "allowed": e.allowed,
                        "detail": e.detail,
                    }
                    for e in events
                ],
            )

    async def audit_events(self, target: str | None = None, limit: int = 100) -> list[AuditEvent]:
        query = select(t.audit_events).order_by(t.audit_events.c.id.desc()).limit(limit)
        if target is not None:
            query = query.where(t.audit_events.c.target == target)
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            AuditEvent(r.actor, r.action, r.target, r.allowed, r.detail, r.at, r.id) for r in rows
        ]


async def _mark_garbage_postgres(
    conn: AsyncConnection, reasons: Mapping[int, str], at: datetime, actor: str
) -> list[int]:
    garbage = StackStatus.GARBAGE.value
    changed = (
        await conn.execute(
            text(
                "UPDATE stacks SET status = :garbage, status_message = :message, "
                "updated_at = :at, announced_at = NULL "
                "WHERE id = ANY(CAST(:ids AS integer[])) AND status IN ('ready', 'deprecated') "
                "RETURNING id, name"
            ),
            {
                "garbage": garbage,
                "message": "expired; `inspect` shows why",
                "at": at,
                "ids": list(reasons),
            },
        )
    ).all()
    if not changed:
        return []
    ids = [row[0] for row in changed]
    why = [reasons[i] for i in ids]
    await conn.execute(
        text(
            "INSERT INTO stack_status (stack_id, status, message, actor, at) "
            "SELECT s, :garbage, r, :actor, :at "
            "FROM unnest(CAST(:ids AS integer[]), CAST(:why AS text[])) AS u(s, r)"
        ),
        {"garbage": garbage, "actor": actor, "at": at, "ids": ids, "why": why},
    )
    await conn.execute(
        text(
            "INSERT INTO audit_events (at, actor, action, target, allowed, detail) "
            "SELECT :at, :actor, 'garbage', n, true, r "
            "FROM unnest(CAST(:names AS text[]), CAST(:why AS text[])) AS u(n, r)"
        ),
        {"actor": actor, "at": at, "names": [row[1] for row in changed], "why": why},
    )
    return ids


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
    engine = create_async_engine(driver_url, pool_pre_ping=True)
    if driver_url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    try:
        async with engine.connect() as conn:
            await conn.execute(select(1))
    except (OperationalError, OSError) as exc:
        await engine.dispose()
        raise StoreError(f"cannot open the database at {safe(url)}: {exc}") from None
    return SqlStore(engine, url, clock)
