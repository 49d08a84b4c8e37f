"""the route table (routes, their servers) and the leases on traffic shifts

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import adapters.storage.tables

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UtcDateTime = adapters.storage.tables.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "routes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("datacenter", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routes")),
        sa.UniqueConstraint("datacenter", "key", name=op.f("uq_routes_datacenter_key")),
        sa.UniqueConstraint("datacenter", "port", name=op.f("uq_routes_datacenter_port")),
    )
    op.create_table(
        "route_servers",
        sa.Column("route_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("stack", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("per_mille", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["route_id"],
            ["routes.id"],
            name=op.f("fk_route_servers_route_id_routes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("route_id", "name", name=op.f("pk_route_servers")),
    )
    op.create_table(
        "route_leases",
        sa.Column("route", sa.String(length=400), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("token", sa.Integer(), nullable=False),
        sa.Column("expires_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("route", name=op.f("pk_route_leases")),
    )


def downgrade() -> None:
    op.drop_table("route_leases")
    op.drop_table("route_servers")
    op.drop_table("routes")
