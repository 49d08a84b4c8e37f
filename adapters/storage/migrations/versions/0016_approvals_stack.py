"""approvals looked up by stack: the traffic tick settles decided approvals

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28 01:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_approvals_stack_id", "approvals", ["stack_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_approvals_stack_id", table_name="approvals")
