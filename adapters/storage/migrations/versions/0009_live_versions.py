"""live_versions: what `units` shows per unit, kept as changes happen

One row per unit with live stacks in a namespace, per datacenter and for all of them
together (datacenter "*"): its live stacks, its versions with one, and its three newest
versions, so that `units` reads one row per unit instead of counting every live stack.
Filled here from the stacks there are; the store rewrites a unit's rows with every change
that makes one of its stacks live or no longer live.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 21:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "status IN ('pending', 'deploying', 'warming', 'ready', 'deprecated')"
KEPT = 3
ALL = "*"


def _dotted(version: tuple[int, int, int]) -> str:
    return "{}.{}.{}".format(*version)


def upgrade() -> None:
    summary = op.create_table(
        "live_versions",
        sa.Column("namespace", sa.String(200), nullable=False),
        sa.Column("datacenter", sa.String(100), nullable=False),
        sa.Column("unit", sa.String(100), nullable=False),
        sa.Column("stacks", sa.Integer, nullable=False),
        sa.Column("versions", sa.Integer, nullable=False),
        sa.Column("newest", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "unit", "datacenter", name="pk_live_versions"),
    )
    op.create_index(
        "ix_live_versions_namespace_datacenter_unit",
        "live_versions",
        ["namespace", "datacenter", "unit"],
    )
    rows = op.get_bind().execute(
        sa.text(
            "SELECT namespace, unit, datacenter, major, minor, patch, count(*) FROM stacks "
            f"WHERE {LIVE} GROUP BY namespace, unit, datacenter, major, minor, patch"
        )
    )
    found: dict[tuple[str, str, str], tuple[int, set[tuple[int, int, int]]]] = {}
    for namespace, unit, datacenter, major, minor, patch, count in rows:
        for dc in (datacenter, ALL):
            stacks, versions = found.get((namespace, unit, dc), (0, set()))
            versions.add((major, minor, patch))
            found[(namespace, unit, dc)] = (stacks + count, versions)
    fresh: list[dict[str, Any]] = [
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
    if fresh:
        op.bulk_insert(summary, fresh)
    if op.get_bind().dialect.name == "postgresql":  # plans for rewrites need its size now
        op.execute("ANALYZE live_versions")


def downgrade() -> None:
    op.drop_index("ix_live_versions_namespace_datacenter_unit", table_name="live_versions")
    op.drop_table("live_versions")
