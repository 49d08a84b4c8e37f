"""`SqlCatalogue`: manifests (with the unit catalogue they declare) and blueprints."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    delete,
    func,
    insert,
    select,
)
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


class SqlCatalogue(SqlRepository):
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
