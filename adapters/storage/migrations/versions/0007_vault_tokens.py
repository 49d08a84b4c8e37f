"""the accessors of the Vault tokens stacks' containers hold

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import adapters.storage.tables

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UtcDateTime = adapters.storage.tables.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "vault_tokens",
        sa.Column("stack_id", sa.Integer(), nullable=False),
        sa.Column("policy", sa.String(length=300), nullable=False),
        sa.Column("accessor", sa.String(length=200), nullable=False),
        sa.Column("issued_at", UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["stack_id"],
            ["stacks.id"],
            name=op.f("fk_vault_tokens_stack_id_stacks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("stack_id", name=op.f("pk_vault_tokens")),
    )


def downgrade() -> None:
    op.drop_table("vault_tokens")
