"""`SqlCatalogue`: manifests (with the unit catalogue they declare) and blueprints."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Table,
    and_,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.storage import tables as t
from adapters.storage.repositories.base import SqlRepository
from adapters.storage.repositories.rows import (
    _MANIFEST_COLUMNS,
    _MANIFEST_FROM,
    _blueprint,
    _manifest,
)
from commands.ports import Conflict
from domain.records import (
    BlueprintRecord,
    ManifestRecord,
    UnitRecord,
)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def _newest(conn: AsyncConnection, table: Table, key: ColumnElement[bool]) -> Row[Any] | None:
    """The newest revision of one manifest or blueprint."""
    query = select(table).where(key).order_by(table.c.revision.desc()).limit(1)
    return (await conn.execute(query)).first()


async def _add_revision(
    conn: AsyncConnection, table: Table, key: dict[str, object], revision: int, text: str, by: str
) -> tuple[int, datetime]:
    """Record revision `revision` of the document `key` names; its id and time."""
    values = {"revision": revision, "text": text, "digest": _digest(text), "registered_by": by}
    row = (
        await conn.execute(
            insert(table).values(**key, **values).returning(table.c.id, table.c.registered_at)
        )
    ).one()
    return int(row.id), row.registered_at


def _newest_of_each(table: Table, key: Column[Any]) -> Any:
    """The join condition that keeps only the newest revision of each `key`."""
    newest = select(key, func.max(table.c.revision).label("revision")).group_by(key).subquery()
    return newest, and_(newest.c[key.name] == key, newest.c.revision == table.c.revision)


class SqlCatalogue(SqlRepository):
    @asynccontextmanager
    async def _registering(self, what: str) -> AsyncIterator[AsyncConnection]:
        """A registration's transaction; two at once of the same document are a Conflict."""
        try:
            async with self._begin() as conn:
                yield conn
        except IntegrityError:
            raise Conflict(
                f"another registration of {what} happened at the same moment; send it again"
            ) from None

    async def register_manifest(
        self, repository: str, text: str, units: Sequence[UnitRecord], actor: str
    ) -> ManifestRecord:
        async with self._registering(repository) as conn:
            now = self._now()
            repo_id = await self._repository_id(conn, repository, now)
            latest = await _newest(conn, t.manifests, t.manifests.c.repository_id == repo_id)
            if latest is not None and latest.digest == _digest(text):
                return ManifestRecord(
                    latest.id,
                    repository,
                    latest.revision,
                    latest.text,
                    latest.digest,
                    latest.registered_by,
                    latest.registered_at,
                )
            await self._check_unit_owners(conn, repo_id, [u.name for u in units])
            revision = (latest.revision if latest else 0) + 1
            manifest_id, at = await _add_revision(
                conn,
                t.manifests,
                {"repository_id": repo_id, "registered_at": now},
                revision,
                text,
                actor,
            )
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
        return ManifestRecord(manifest_id, repository, revision, text, _digest(text), actor, at)

    async def _check_unit_owners(
        self, conn: AsyncConnection, repo_id: int, names: Sequence[str]
    ) -> None:
        owned = (
            await conn.execute(
                select(t.units.c.name, t.repositories.c.name.label("repository"))
                .select_from(
                    t.units.join(t.repositories, t.units.c.repository_id == t.repositories.c.id)
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

    async def register_blueprint(
        self, name: str, kind: str, text: str, actor: str
    ) -> BlueprintRecord:
        async with self._registering(f"blueprint {name}") as conn:
            now = self._now()
            latest = await _newest(conn, t.blueprints, t.blueprints.c.name == name)
            if latest is not None and latest.digest == _digest(text) and latest.kind == kind:
                return _blueprint(latest)
            revision = (latest.revision if latest else 0) + 1
            blueprint_id, at = await _add_revision(
                conn,
                t.blueprints,
                {"name": name, "kind": kind, "registered_at": now},
                revision,
                text,
                actor,
            )
        return BlueprintRecord(blueprint_id, name, kind, revision, text, _digest(text), actor, at)

    async def blueprint(self, name: str, revision: int | None = None) -> BlueprintRecord | None:
        query = select(t.blueprints).where(t.blueprints.c.name == name)
        if revision is not None:
            query = query.where(t.blueprints.c.revision == revision)
        query = query.order_by(t.blueprints.c.revision.desc()).limit(1)
        async with self._connect() as conn:
            row = (await conn.execute(query)).first()
        return _blueprint(row) if row else None

    async def blueprints(self) -> list[BlueprintRecord]:
        newest, on = _newest_of_each(t.blueprints, t.blueprints.c.name)
        query = select(t.blueprints).join(newest, on).order_by(t.blueprints.c.name)
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
        newest, on = _newest_of_each(t.manifests, t.manifests.c.repository_id)
        query = (
            select(*_MANIFEST_COLUMNS)
            .select_from(_MANIFEST_FROM)
            .join(newest, on)
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
