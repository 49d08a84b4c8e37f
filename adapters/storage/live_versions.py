"""The `live_versions` summary: per unit in a namespace, and per datacenter of it, how many
live stacks it has, in how many versions, and the newest few of them: what `units` shows.

Counting the live stacks of every unit at each `units` reads a row per live stack (tens of
thousands at 10k units); the summary holds one row per unit and datacenter. It is rewritten
for the (namespace, unit) pairs a change touches, inside the transaction of every change that
makes a stack live or no longer live (a deploy creating stacks, a status change across the
live boundary, the cleanup pass marking garbage), from the live stacks of just those pairs,
so it always says what counting the stacks would."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.storage import tables as t
from domain.records import LiveUnit
from domain.versions import Version

KEPT = t.LIVE_VERSIONS_KEPT  # newest versions a row keeps; asking for more counts the stacks
ALL = t.LIVE_VERSIONS_ALL  # the datacenter of the row that sums a namespace's datacenters

FEW = 8  # pairs rewritten one by one on SQLite; more go through a temporary table
_s = t.stacks.c
# what `refresh` rewrites, on SQLite (it creates and drops the table; this describes it)
_pairs = Table(
    "summary_pairs",
    MetaData(),
    Column("namespace", Text, primary_key=True),
    Column("unit", Text, primary_key=True),
)
_ON_PAIRS = and_(_s.namespace == _pairs.c.namespace, _s.unit == _pairs.c.unit)
_GROUPED = (_s.namespace, _s.unit, _s.datacenter, _s.major, _s.minor, _s.patch)


def summarize(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Summary rows from (namespace, unit, datacenter, major, minor, patch, live stacks)."""
    found: dict[tuple[str, str, str], tuple[int, set[tuple[int, int, int]]]] = {}
    for namespace, unit, datacenter, major, minor, patch, count in rows:
        for dc in (datacenter, ALL):
            stacks, versions = found.get((namespace, unit, dc), (0, set()))
            versions.add((major, minor, patch))
            found[(namespace, unit, dc)] = (stacks + count, versions)
    return [
        {
            "namespace": namespace,
            "unit": unit,
            "datacenter": dc,
            "stacks": stacks,
            "versions": len(versions),
            "newest": " ".join(map(_dotted, sorted(versions, reverse=True)[:KEPT])),
        }
        for (namespace, unit, dc), (stacks, versions) in found.items()
    ]


def _dotted(version: tuple[int, int, int]) -> str:
    return "{}.{}.{}".format(*version)


async def refresh(conn: AsyncConnection, pairs: Iterable[tuple[str, str]]) -> None:
    """Rewrite the summary of these (namespace, unit) pairs from their live stacks, in the
    caller's transaction, after it changed them."""
    keys = sorted(set(pairs))
    if not keys:
        return
    if conn.dialect.name == "postgresql":
        document = json.dumps([{"namespace": ns, "unit": unit} for ns, unit in keys])
        for statement in (_LOCK_PAIRS, _REFRESH_PAIRS):
            await conn.execute(statement, {"pairs": document})
        return
    # SQLite: the caller wrote the stacks first, so it holds the database's write lock.
    summary = t.live_versions
    if len(keys) <= FEW:  # a deploy or a status change: a few probes by key
        for namespace, unit in keys:
            rows = await conn.execute(
                select(*_GROUPED, func.count())
                .where(_s.namespace == namespace, _s.unit == unit, t.LIVE_SQL)
                .group_by(*_GROUPED)
            )
            fresh = summarize(rows.all())
            await conn.execute(
                delete(summary).where(summary.c.namespace == namespace, summary.c.unit == unit)
            )
            if fresh:
                await conn.execute(insert(summary), fresh)
        return
    # Many (a cleanup pass): the pairs go to a temporary table of this connection (SQLite
    # reads a long IN list of row values by scanning), one join counts them, one statement
    # each rewrites.
    await conn.exec_driver_sql(
        "CREATE TEMPORARY TABLE IF NOT EXISTS summary_pairs "
        "(namespace TEXT NOT NULL, unit TEXT NOT NULL, PRIMARY KEY (namespace, unit))"
    )
    await conn.execute(delete(_pairs))  # one an earlier failure left
    await conn.execute(insert(_pairs), [{"namespace": ns, "unit": unit} for ns, unit in keys])
    rows = await conn.execute(
        select(*_GROUPED, func.count())
        .join_from(
            _pairs, t.stacks, and_(_s.namespace == _pairs.c.namespace, _s.unit == _pairs.c.unit)
        )
        .where(t.LIVE_SQL)
        .group_by(*_GROUPED)
    )
    fresh = summarize(rows.all())
    await conn.execute(
        delete(summary).where(
            tuple_(summary.c.namespace, summary.c.unit).in_(
                select(_pairs.c.namespace, _pairs.c.unit)
            )
        )
    )
    if fresh:
        await conn.execute(insert(summary), fresh)
    await conn.exec_driver_sql("DROP TABLE summary_pairs")


# PostgreSQL: two statements whatever the number of pairs, the pairs as one JSON document
_PAIRS = "json_to_recordset(CAST(:pairs AS json)) AS k(namespace text, unit text)"
# Two transactions changing stacks of one unit would each count without the other's change:
# the second waits here until the first commits, then counts after it. Taken in one order,
# so that passes touching many units cannot deadlock each other.
_LOCK_PAIRS = text(
    "SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT DISTINCT "
    f"hashtextextended(k.namespace || '/' || k.unit, 20) AS h FROM {_PAIRS} ORDER BY h) AS l"
)
# Counted where the stacks are: per datacenter and version, the same summed over the
# datacenters ("*"), then a row per datacenter with its newest versions. One probe of
# ix_stacks_live_versions per pair (OFFSET 0 keeps the planner from reading every live
# stack instead). Only what changed is written: rows are updated where they differ (in
# place: no indexed column changes) or inserted, and the rows of the pairs that the fresh
# count no longer has (no live stack left there) are deleted, in the same statement.
# A cleanup pass changes one datacenter's row of a unit and its "*" row, not the others;
# deleting every row and inserting it again cost a new entry in both indexes for each row,
# and a uniqueness check against the row just deleted. The rows left empty are found by
# looking each existing row up in the fresh rows (a hashed NOT IN), not by probing the
# stacks again for each.
_REFRESH_PAIRS = text(
    "WITH per_dc AS (SELECT s.namespace, s.unit, s.datacenter, s.major, s.minor, s.patch, "
    f"count(*) AS n FROM {_PAIRS} CROSS JOIN LATERAL (SELECT namespace, unit, datacenter, "
    "major, minor, patch FROM stacks WHERE namespace = k.namespace AND unit = k.unit "
    f"AND {t.LIVE_SQL.text} OFFSET 0) AS s GROUP BY 1, 2, 3, 4, 5, 6), "
    f"everywhere AS (SELECT namespace, unit, CAST('{ALL}' AS varchar) AS datacenter, major, "
    "minor, patch, sum(n) AS n FROM per_dc GROUP BY 1, 2, 4, 5, 6 "
    "UNION ALL SELECT * FROM per_dc), "
    "fresh AS MATERIALIZED (SELECT namespace, unit, datacenter, "
    "CAST(sum(n) AS integer) AS stacks, "
    "CAST(count(*) AS integer) AS versions, array_to_string((array_agg("
    "concat_ws('.', major, minor, patch) ORDER BY major DESC, minor DESC, patch DESC))"
    f"[1:{KEPT}], ' ') AS newest FROM everywhere GROUP BY 1, 2, 3), "
    "written AS (INSERT INTO live_versions AS v "
    "(namespace, unit, datacenter, stacks, versions, newest) "
    "SELECT * FROM fresh ON CONFLICT (namespace, unit, datacenter) DO UPDATE SET "
    "stacks = excluded.stacks, versions = excluded.versions, newest = excluded.newest "
    "WHERE (v.stacks, v.versions, v.newest) "
    "IS DISTINCT FROM (excluded.stacks, excluded.versions, excluded.newest) RETURNING 1) "
    f"DELETE FROM live_versions AS v USING {_PAIRS} "
    "WHERE v.namespace = k.namespace AND v.unit = k.unit "
    "AND (v.namespace, v.unit, v.datacenter) NOT IN "
    "(SELECT namespace, unit, datacenter FROM fresh)"
)


def rebuild(conn: Connection) -> None:
    """Recount the whole summary (for data loaded around the store, as the benches do)."""
    conn.execute(delete(t.live_versions))
    rows = conn.execute(select(*_GROUPED, func.count()).where(t.LIVE_SQL).group_by(*_GROUPED))
    fresh = summarize(rows.all())
    for start in range(0, len(fresh), 10_000):
        conn.execute(insert(t.live_versions), fresh[start : start + 10_000])


@functools.lru_cache(maxsize=65536)
def newest_of(shown: str) -> tuple[Version, ...]:
    # immutable: one tuple per distinct text, so repeated listings build no Versions
    return tuple(Version(*map(int, v.split("."))) for v in shown.split())


async def read(
    conn: AsyncConnection, namespace: str, datacenter: str | None, newest: int
) -> dict[str, LiveUnit]:
    """What `Store.live_units` answers, from the summary (`newest` at most KEPT)."""
    summary = t.live_versions.c
    where = ALL if datacenter is None else datacenter
    rows = await conn.execute(
        select(summary.unit, summary.stacks, summary.versions, summary.newest).where(
            summary.namespace == namespace, summary.datacenter == where
        )
    )
    if newest < KEPT:
        return {
            unit: LiveUnit(stacks, versions, newest_of(shown)[:newest])
            for unit, stacks, versions, shown in rows.all()
        }
    return {
        unit: LiveUnit(stacks, versions, newest_of(shown))
        for unit, stacks, versions, shown in rows.all()
    }
