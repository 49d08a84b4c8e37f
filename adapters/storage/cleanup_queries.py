"""The cleanup pass's set-based statements on PostgreSQL.

A pass hands the database thousands of ids, names and reasons at once. They travel as one
JSON document (or one comma-separated list of ids) per statement: the driver turns a Python
list into an array literal element by element in Python, which cost the pass more than the
statements themselves; json.dumps does it in C, and the server takes the document apart."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.storage import live_versions
from domain.states import StackStatus


def id_list(ids: Sequence[int]) -> str:
    """Ids as `CAST(string_to_array(:ids, ',') AS integer[])` takes them."""
    return ",".join(map(str, ids))


# One statement marks the stacks still ready or deprecated, writes each one's reason in its
# history and an audit event naming it, and returns what changed: one round trip, however
# many stacks, and the reasons travel once. The stacks are found by primary key (the
# document is read as a handful of rows, so the planner probes rather than scans).
_MARK = text(
    "WITH r AS (SELECT * FROM json_to_recordset(CAST(:rows AS json)) AS r(id integer, why text)), "
    "marked AS (UPDATE stacks SET status = :garbage, status_message = :message, "
    "updated_at = :at, announced_at = NULL "
    "WHERE id IN (SELECT id FROM r) AND status IN ('ready', 'deprecated') "
    "RETURNING id, name, namespace, unit), "
    "history AS (INSERT INTO stack_status (stack_id, status, message, actor, at) "
    "SELECT m.id, :garbage, r.why, :actor, :at FROM marked AS m JOIN r ON r.id = m.id), "
    "audit AS (INSERT INTO audit_events (at, actor, action, target, allowed, detail) "
    "SELECT :at, :actor, 'garbage', m.name, true, r.why FROM marked AS m JOIN r ON r.id = m.id) "
    "SELECT id, namespace, unit FROM marked"
)


async def mark_garbage(
    conn: AsyncConnection, reasons: Mapping[int, str], at: datetime, actor: str
) -> list[int]:
    """`Store.mark_garbage` on PostgreSQL: one statement for the stacks, their history and
    the audit, then the `units` summary of the units touched; no statement reads more of a
    table than the stacks named."""
    rows = json.dumps([{"id": i, "why": why} for i, why in reasons.items()])
    changed = (
        await conn.execute(
            _MARK,
            {
                "garbage": StackStatus.GARBAGE.value,
                "message": "expired; `inspect` shows why",
                "at": at,
                "actor": actor,
                "rows": rows,
            },
        )
    ).all()
    await live_versions.refresh(conn, [(namespace, unit) for _, namespace, unit in changed])
    return [row[0] for row in changed]


# one index probe per stack: left to itself the planner hashes every edge for each batch,
# which grows with the square of the stacks; OFFSET 0 keeps the lateral subquery from being
# folded into a join
_DEPENDANTS = text(
    "SELECT b.id, x.id, x.status "
    "FROM unnest(CAST(string_to_array(:ids, ',') AS integer[])) AS b(id) "
    "CROSS JOIN LATERAL (SELECT s.id, s.status FROM stack_dependencies d "
    "JOIN stacks s ON s.id = d.stack_id WHERE d.depends_on_id = b.id "
    "AND s.status = ANY(CAST(:statuses AS text[])) OFFSET 0) AS x"
)


async def dependants(
    conn: AsyncConnection, stack_ids: Sequence[int], statuses: Sequence[str]
) -> list[tuple[int, int, str]]:
    """(depended-on id, dependant id, dependant status) of the dependants in `statuses`."""
    result = await conn.execute(_DEPENDANTS, {"ids": id_list(stack_ids), "statuses": statuses})
    return [(depended, by, status) for depended, by, status in result.all()]


_EXTEND = text(
    "UPDATE stacks SET expires_at = :until "
    "WHERE id = ANY(CAST(string_to_array(:ids, ',') AS integer[]))"
)


async def extend_expiries(conn: AsyncConnection, by_value: Mapping[datetime, list[int]]) -> None:
    """`Store.extend_expiries` on PostgreSQL: one UPDATE by primary key per distinct expiry,
    the ids as one string (thousands of bound parameters cost more than the update)."""
    for until, ids in by_value.items():
        await conn.execute(_EXTEND, {"until": until, "ids": id_list(ids)})


_REVISIONS = text(
    "SELECT unit, major, minor, patch, manifest_id FROM releases "
    "WHERE unit IN (SELECT json_array_elements_text(CAST(:units AS json)))"
)


async def release_revisions(
    conn: AsyncConnection, units: Sequence[str]
) -> list[tuple[str, int, int, int, int]]:
    """(unit, major, minor, patch, manifest id) of every release of these units, the names
    as one JSON document: one statement however many units a batch holds."""
    rows = await conn.execute(_REVISIONS, {"units": json.dumps(list(units))})
    return [(unit, major, minor, patch, manifest) for unit, major, minor, patch, manifest in rows]
