"""one active traffic shift per route; when a driver last moved a shift; daemons' heartbeats

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import adapters.storage.tables

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UtcDateTime = adapters.storage.tables.UtcDateTime
ACTIVE = "state IN ('running', 'paused', 'awaiting-approval')"


def upgrade() -> None:
    with op.batch_alter_table("traffic_shifts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("route", sa.String(400), nullable=True))
        batch_op.add_column(sa.Column("last_step_at", UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("delayed_seconds", sa.Float(), nullable=False, server_default="0")
        )
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT s.id, s.state, t.datacenter, t.namespace, t.unit, t.major "
            "FROM traffic_shifts s JOIN stacks t ON t.id = s.to_stack_id ORDER BY s.id"
        )
    ).all()
    newest_active: dict[str, int] = {}
    for shift_id, state, datacenter, namespace, unit, major in rows:
        route = f"{datacenter}/{namespace}/{unit}/{major}"
        conn.execute(
            sa.text("UPDATE traffic_shifts SET route = :route WHERE id = :id"),
            {"route": route, "id": shift_id},
        )
        if state in ("running", "paused", "awaiting-approval"):
            older = newest_active.get(route)
            if older is not None:  # several active shifts on one route: the newest wins
                conn.execute(
                    sa.text("UPDATE traffic_shifts SET state = 'superseded' WHERE id = :id"),
                    {"id": older},
                )
            newest_active[route] = shift_id
    op.create_index(
        "ux_traffic_shifts_active_route",
        "traffic_shifts",
        ["route"],
        unique=True,
        sqlite_where=sa.text(ACTIVE),
        postgresql_where=sa.text(ACTIVE),
    )
    op.create_table(
        "daemons",
        sa.Column("holder", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("started_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("seen_at", UtcDateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("daemons")
    op.drop_index("ux_traffic_shifts_active_route", table_name="traffic_shifts")
    with op.batch_alter_table("traffic_shifts", schema=None) as batch_op:
        batch_op.drop_column("delayed_seconds")
        batch_op.drop_column("last_step_at")
        batch_op.drop_column("route")
