"""work a dead replica leaves after a stack is ready or a rollback is approved

- `ix_stacks_workflow_step` (partial: only rows with a step): the takeover finds ready stacks
  whose traffic handover (`workflow_step = 'route'`) was not finished.
- `approvals.acted_at`: when an approved rollback was carried out; any replica's traffic tick
  carries out those approved and not acted on (`ix_approvals_kind_status` finds them).

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-28 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from adapters.storage.tables import UtcDateTime

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STEP = sa.text("workflow_step IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_stacks_workflow_step",
        "stacks",
        ["workflow_step"],
        postgresql_where=STEP,
        sqlite_where=STEP,
    )
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("acted_at", UtcDateTime(timezone=True), nullable=True))
    op.create_index("ix_approvals_kind_status", "approvals", ["kind", "status"])
    # rollbacks approved before this revision were carried out by their replica then
    op.execute("UPDATE approvals SET acted_at = decided_at WHERE status = 'approved'")


def downgrade() -> None:
    op.drop_index("ix_approvals_kind_status", table_name="approvals")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("acted_at")
    op.drop_index("ix_stacks_workflow_step", table_name="stacks")
