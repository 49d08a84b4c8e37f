"""indexes for `units` and for the cleanup pass at scale

`units` counts the live stacks of every unit and version in a namespace: a partial index over
the live stacks holding every column it reads answers it in order without touching the table.
The cleanup pass walks the ready and deprecated stacks one unit, namespace and datacenter at a
time: a partial index over just those stacks, in that order, lets it read them in batches.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JUDGED = sa.text("status IN ('ready', 'deprecated')")
LIVE = sa.text("status IN ('pending', 'deploying', 'warming', 'ready', 'deprecated')")


def upgrade() -> None:
    op.create_index(
        "ix_stacks_live_versions",
        "stacks",
        ["namespace", "unit", "major", "minor", "patch", "datacenter"],
        postgresql_where=LIVE,
        sqlite_where=LIVE,
    )
    op.create_index(
        "ix_stacks_judged",
        "stacks",
        ["unit", "namespace", "datacenter", "id"],
        postgresql_where=JUDGED,
        sqlite_where=JUDGED,
    )


def downgrade() -> None:
    op.drop_index("ix_stacks_judged", table_name="stacks")
    op.drop_index("ix_stacks_live_versions", table_name="stacks")
