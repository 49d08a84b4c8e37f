"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 03:05:08.007506
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import adapters.storage.tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", adapters.storage.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("target", sa.String(length=300), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_target_id", ["target", "id"], unique=False)

    op.create_table(
        "deliveries",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("seen_at", adapters.storage.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_deliveries")),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("expires_at", adapters.storage.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.create_table(
        "repositories",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", adapters.storage.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repositories")),
        sa.UniqueConstraint("name", name=op.f("uq_repositories_name")),
    )
    op.create_table(
        "manifests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("registered_by", sa.String(length=100), nullable=False),
        sa.Column(
            "registered_at", adapters.storage.tables.UtcDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["repositories.id"],
            name=op.f("fk_manifests_repository_id_repositories"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manifests")),
        sa.UniqueConstraint(
            "repository_id", "revision", name=op.f("uq_manifests_repository_id_revision")
        ),
    )
    op.create_table(
        "units",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("manifest_revision", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"], ["repositories.id"], name=op.f("fk_units_repository_id_repositories")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_units")),
        sa.UniqueConstraint("name", name=op.f("uq_units_name")),
    )
    with op.batch_alter_table("units", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_units_repository_id"), ["repository_id"], unique=False)

    op.create_table(
        "releases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("unit", sa.String(length=100), nullable=False),
        sa.Column("major", sa.Integer(), nullable=False),
        sa.Column("minor", sa.Integer(), nullable=False),
        sa.Column("patch", sa.Integer(), nullable=False),
        sa.Column("image", sa.String(length=500), nullable=False),
        sa.Column("digest", sa.String(length=100), nullable=True),
        sa.Column("manifest_id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", adapters.storage.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["manifest_id"], ["manifests.id"], name=op.f("fk_releases_manifest_id_manifests")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_releases")),
        sa.UniqueConstraint(
            "unit", "major", "minor", "patch", name=op.f("uq_releases_unit_major_minor_patch")
        ),
    )
    op.create_table(
        "stacks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guid", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("unit", sa.String(length=100), nullable=False),
        sa.Column("major", sa.Integer(), nullable=False),
        sa.Column("minor", sa.Integer(), nullable=False),
        sa.Column("patch", sa.Integer(), nullable=False),
        sa.Column("datacenter", sa.String(length=100), nullable=False),
        sa.Column("namespace", sa.String(length=200), nullable=False),
        sa.Column("plan", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("status_message", sa.Text(), nullable=False),
        sa.Column("workflow_step", sa.String(length=50), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", adapters.storage.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", adapters.storage.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", adapters.storage.tables.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["release_id"], ["releases.id"], name=op.f("fk_stacks_release_id_releases")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stacks")),
        sa.UniqueConstraint("guid", name=op.f("uq_stacks_guid")),
        sa.UniqueConstraint("name", name=op.f("uq_stacks_name")),
    )
    with op.batch_alter_table("stacks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stacks_namespace_datacenter_id", ["namespace", "datacenter", "id"], unique=False
        )
        batch_op.create_index(
            "ix_stacks_namespace_status_id", ["namespace", "status", "id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_stacks_release_id"), ["release_id"], unique=False)
        batch_op.create_index("ix_stacks_status_expires_at", ["status", "expires_at"], unique=False)
        batch_op.create_index(
            "ix_stacks_unit_namespace_datacenter", ["unit", "namespace", "datacenter"], unique=False
        )

    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("stack_id", sa.Integer(), nullable=True),
        sa.Column("namespace", sa.String(length=200), nullable=False),
        sa.Column("datacenter", sa.String(length=100), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column("created_at", adapters.storage.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("deadline", adapters.storage.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=100), nullable=True),
        sa.Column("decided_at", adapters.storage.tables.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["stack_id"],
            ["stacks.id"],
            name=op.f("fk_approvals_stack_id_stacks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.create_index("ix_approvals_status_id", ["status", "id"], unique=False)

    op.create_table(
        "stack_dependencies",
        sa.Column("stack_id", sa.Integer(), nullable=False),
        sa.Column("depends_on_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["depends_on_id"],
            ["stacks.id"],
            name=op.f("fk_stack_dependencies_depends_on_id_stacks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["stack_id"],
            ["stacks.id"],
            name=op.f("fk_stack_dependencies_stack_id_stacks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("stack_id", "depends_on_id", name=op.f("pk_stack_dependencies")),
    )
    with op.batch_alter_table("stack_dependencies", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stack_dependencies_depends_on_id", ["depends_on_id"], unique=False
        )

    op.create_table(
        "stack_logs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stack_id", sa.Integer(), nullable=False),
        sa.Column("at", adapters.storage.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("step", sa.String(length=50), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["stack_id"],
            ["stacks.id"],
            name=op.f("fk_stack_logs_stack_id_stacks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stack_logs")),
    )
    with op.batch_alter_table("stack_logs", schema=None) as batch_op:
        batch_op.create_index("ix_stack_logs_stack_id_id", ["stack_id", "id"], unique=False)

    op.create_table(
        "stack_status",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stack_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("at", adapters.storage.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["stack_id"],
            ["stacks.id"],
            name=op.f("fk_stack_status_stack_id_stacks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stack_status")),
    )
    with op.batch_alter_table("stack_status", schema=None) as batch_op:
        batch_op.create_index("ix_stack_status_stack_id_id", ["stack_id", "id"], unique=False)

    op.create_table(
        "traffic_shifts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("from_stack_id", sa.Integer(), nullable=False),
        sa.Column("to_stack_id", sa.Integer(), nullable=False),
        sa.Column("policy", sa.String(length=20), nullable=False),
        sa.Column("duration_seconds", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=10), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("started_at", adapters.storage.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column(
            "paused_since", adapters.storage.tables.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("paused_seconds", sa.Integer(), nullable=False),
        sa.Column("start_new_weight", sa.Integer(), nullable=False),
        sa.Column("current_new_weight", sa.Integer(), nullable=False),
        sa.Column("updated_at", adapters.storage.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["from_stack_id"],
            ["stacks.id"],
            name=op.f("fk_traffic_shifts_from_stack_id_stacks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["to_stack_id"],
            ["stacks.id"],
            name=op.f("fk_traffic_shifts_to_stack_id_stacks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_traffic_shifts")),
    )
    with op.batch_alter_table("traffic_shifts", schema=None) as batch_op:
        batch_op.create_index("ix_traffic_shifts_state", ["state"], unique=False)
        batch_op.create_index("ix_traffic_shifts_to_stack_id", ["to_stack_id"], unique=False)

    op.create_table(
        "approval_votes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("approval_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=100), nullable=False),
        sa.Column("decision", sa.String(length=20), nullable=False),
        sa.Column("at", adapters.storage.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["approval_id"],
            ["approvals.id"],
            name=op.f("fk_approval_votes_approval_id_approvals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_votes")),
        sa.UniqueConstraint(
            "approval_id", "user_id", name=op.f("uq_approval_votes_approval_id_user_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("approval_votes")
    with op.batch_alter_table("traffic_shifts", schema=None) as batch_op:
        batch_op.drop_index("ix_traffic_shifts_to_stack_id")
        batch_op.drop_index("ix_traffic_shifts_state")

    op.drop_table("traffic_shifts")
    with op.batch_alter_table("stack_status", schema=None) as batch_op:
        batch_op.drop_index("ix_stack_status_stack_id_id")

    op.drop_table("stack_status")
    with op.batch_alter_table("stack_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_stack_logs_stack_id_id")

    op.drop_table("stack_logs")
    with op.batch_alter_table("stack_dependencies", schema=None) as batch_op:
        batch_op.drop_index("ix_stack_dependencies_depends_on_id")

    op.drop_table("stack_dependencies")
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_index("ix_approvals_status_id")

    op.drop_table("approvals")
    with op.batch_alter_table("stacks", schema=None) as batch_op:
        batch_op.drop_index("ix_stacks_unit_namespace_datacenter")
        batch_op.drop_index("ix_stacks_status_expires_at")
        batch_op.drop_index(batch_op.f("ix_stacks_release_id"))
        batch_op.drop_index("ix_stacks_namespace_status_id")
        batch_op.drop_index("ix_stacks_namespace_datacenter_id")

    op.drop_table("stacks")
    op.drop_table("releases")
    with op.batch_alter_table("units", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_units_repository_id"))

    op.drop_table("units")
    op.drop_table("manifests")
    op.drop_table("repositories")
    op.drop_table("leases")
    op.drop_table("deliveries")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_target_id")

    op.drop_table("audit_events")
