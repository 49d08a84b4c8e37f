"""`SqlUnitListing`: `units` a page at a time.

One statement reads the page: the page's unit names from the unique index on `units.name`
(after a name, or skipping `offset` entries), then those units, each joined by key to its
`live_versions` row; a second counts the catalogue (and, for a page that starts after a
name, the units before it). Neither reads more rows than the page and the index entries
before it."""

from __future__ import annotations

from sqlalchemy import and_, func, literal, select

from adapters.storage import live_versions
from adapters.storage import tables as t
from adapters.storage.repositories.base import SqlRepository
from domain.records import LiveUnit, UnitPage, UnitRecord


class SqlUnitListing(SqlRepository):
    async def unit_page(
        self,
        namespace: str,
        datacenter: str | None,
        *,
        limit: int,
        after: str | None = None,
        offset: int = 0,
        newest: int = 3,
    ) -> UnitPage:
        units, summary = t.units.c, t.live_versions.c
        where = live_versions.ALL if datacenter is None else datacenter
        # the page's names first, from the index on units.name alone: an offset then skips
        # index entries, not joined rows
        names = select(units.name).order_by(units.name).limit(limit)
        counted = select(func.count()).select_from(t.units)
        if after is not None:
            names = names.where(units.name > after)
            before = counted.where(units.name <= after)
            counts = select(counted.scalar_subquery(), before.scalar_subquery())
        else:
            names = names.offset(offset)
            counts = select(counted.scalar_subquery(), literal(offset))
        chosen = names.subquery()
        page = (
            select(
                units.name,
                t.repositories.c.name,
                units.kind,
                units.description,
                units.manifest_revision,
                summary.stacks,
                summary.versions,
                summary.newest,
            )
            .select_from(
                chosen.join(t.units, units.name == chosen.c.name)
                .join(t.repositories, units.repository_id == t.repositories.c.id)
                .outerjoin(
                    t.live_versions,
                    and_(
                        summary.namespace == namespace,
                        summary.datacenter == where,
                        summary.unit == units.name,
                    ),
                )
            )
            .order_by(units.name)
        )
        async with self._connect() as conn:
            rows = (await conn.execute(page)).all()
            total, skipped = (await conn.execute(counts)).one()
        shown = min(newest, live_versions.KEPT)
        found = tuple(
            (
                UnitRecord(name, repository, kind, description, revision),
                None
                if stacks is None
                else LiveUnit(stacks, versions, live_versions.newest_of(text)[:shown]),
            )
            for name, repository, kind, description, revision, stacks, versions, text in rows
        )
        return UnitPage(units=found, total=int(total), before=min(int(skipped), int(total)))
