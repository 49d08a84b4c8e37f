"""cheaper writes to `stacks` for the cleanup pass at scale

Every index of `stacks` gets a new entry for each row an UPDATE moves, unless PostgreSQL can
update the row in place (a HOT update: no indexed column changes and the page has room).
- `ix_stacks_release_id` served no query (releases are never deleted): dropped.
- `ix_stacks_status_expires_at` indexed `expires_at`, which no query filters on, so every
  expiry the pass extends rewrote every index entry of the stack: replaced by
  `ix_stacks_status_id`, which answers the queries by status alone (garbage due, unclaimed
  workflows) in id order.
- a fill factor of 90 on `stacks` (80 on the small `live_versions`, whose rows the store
  updates in place) leaves room in each page for updated rows (new pages only; existing
  pages get it as they are rewritten).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28 00:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_stacks_release_id", table_name="stacks")
    op.drop_index("ix_stacks_status_expires_at", table_name="stacks")
    op.create_index("ix_stacks_status_id", "stacks", ["status", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE stacks SET (fillfactor = 90)")
        op.execute("ALTER TABLE live_versions SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE stacks RESET (fillfactor)")
        op.execute("ALTER TABLE live_versions RESET (fillfactor)")
    op.drop_index("ix_stacks_status_id", table_name="stacks")
    op.create_index("ix_stacks_status_expires_at", "stacks", ["status", "expires_at"])
    op.create_index("ix_stacks_release_id", "stacks", ["release_id"])
