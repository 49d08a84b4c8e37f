"""API tokens for CI: name, scope and the SHA-256 digest of the token (never the token);
the GitHub deployments the bot reports on, so a restart still reports their outcome

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import adapters.storage.tables

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UtcDateTime = adapters.storage.tables.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("namespaces", sa.Text(), nullable=False),
        sa.Column("rights", sa.String(length=20), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("digest", name=op.f("uq_api_tokens_digest")),
    )
    op.create_table(
        "github_deployments",
        sa.Column("repository", sa.String(length=200), nullable=False),
        sa.Column("deployment_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("environment", sa.String(length=200), nullable=False),
        sa.Column("stack_ids", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("reported", sa.String(length=20), nullable=True),
        sa.PrimaryKeyConstraint("repository", "deployment_id", name=op.f("pk_github_deployments")),
    )


def downgrade() -> None:
    op.drop_table("github_deployments")
    op.drop_table("api_tokens")
