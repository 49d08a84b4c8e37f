"""The database schema (SQLAlchemy Core). Migrations in migrations/versions/ create it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, whatever the database keeps (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; give a timezone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        if moment.tzinfo is UTC:
            return moment
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

repositories = Table(
    "repositories",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
)

manifests = Table(
    "manifests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("repository_id", ForeignKey("repositories.id"), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("registered_by", String(100), nullable=False),
    Column("registered_at", UtcDateTime, nullable=False),
    UniqueConstraint("repository_id", "revision"),
)

blueprints = Table(
    "blueprints",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("registered_by", String(100), nullable=False),
    Column("registered_at", UtcDateTime, nullable=False),
    UniqueConstraint("name", "revision"),
)

units = Table(
    "units",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("repository_id", ForeignKey("repositories.id"), nullable=False, index=True),
    Column("kind", String(20), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("manifest_revision", Integer, nullable=False),
)

releases = Table(
    "releases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("unit", String(100), nullable=False),
    Column("major", Integer, nullable=False),
    Column("minor", Integer, nullable=False),
    Column("patch", Integer, nullable=False),
    Column("image", String(500), nullable=False),
    Column("digest", String(100)),
    Column("manifest_id", ForeignKey("manifests.id"), nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # A unit's version is released once: the same version always means the same image.
    UniqueConstraint("unit", "major", "minor", "patch"),
)

# statuses as SQL text: a partial index and the queries that use it must spell the condition
# alike (a bound parameter would not match it). LIVE_SQL is domain.states.LIVE_STATUSES.
JUDGED_SQL = text("status IN ('ready', 'deprecated')")
LIVE_SQL = text("status IN ('pending', 'deploying', 'warming', 'ready', 'deprecated')")

stacks = Table(
    "stacks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("guid", String(32), nullable=False, unique=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("release_id", ForeignKey("releases.id"), nullable=False),
    Column("unit", String(100), nullable=False),
    Column("major", Integer, nullable=False),
    Column("minor", Integer, nullable=False),
    Column("patch", Integer, nullable=False),
    Column("datacenter", String(100), nullable=False),
    Column("namespace", String(200), nullable=False),
    Column("plan", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("status_message", Text, nullable=False, default=""),
    Column("workflow_step", String(50)),
    Column("created_by", String(100), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime),
    Column("announced_at", UtcDateTime),  # garbage: when its removal was announced
    # `stacks in <ns> [at <dc>]`, newest first (ids grow with time)
    Index("ix_stacks_namespace_datacenter_id", "namespace", "datacenter", "id"),
    # `stacks in <ns> status <s>` and the workflow's "what is pending"
    Index("ix_stacks_namespace_status_id", "namespace", "status", "id"),
    # a unit's stacks at a target (deploy checks, dependencies, traffic)
    Index("ix_stacks_unit_namespace_datacenter", "unit", "namespace", "datacenter"),
    # stacks of a status in any namespace (garbage due, unclaimed workflows), in id order;
    # `expires_at` is in no index, so extending an expiry can update the row in place
    Index("ix_stacks_status_id", "status", "id"),
    # `units`: live stacks per unit and version, read in order from the index alone
    Index(
        "ix_stacks_live_versions",
        "namespace",
        "unit",
        "major",
        "minor",
        "patch",
        "datacenter",
        postgresql_where=LIVE_SQL,
        sqlite_where=LIVE_SQL,
    ),
    # ready stacks whose traffic handover was not finished (their replica died): taken over;
    # partial, so the many rows with no step cost no index entry
    Index(
        "ix_stacks_workflow_step",
        "workflow_step",
        postgresql_where=text("workflow_step IS NOT NULL"),
        sqlite_where=text("workflow_step IS NOT NULL"),
    ),
    # the cleanup pass reads the stacks it judges in batches of whole groups, in this order
    Index(
        "ix_stacks_judged",
        "unit",
        "namespace",
        "datacenter",
        "id",
        postgresql_where=JUDGED_SQL,
        sqlite_where=JUDGED_SQL,
    ),
)

stack_status = Table(
    "stack_status",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("stack_id", ForeignKey("stacks.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(20), nullable=False),
    Column("message", Text, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index("ix_stack_status_stack_id_id", "stack_id", "id"),
)

stack_logs = Table(
    "stack_logs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("stack_id", ForeignKey("stacks.id", ondelete="CASCADE"), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("step", String(50)),
    Column("message", Text, nullable=False),
    Index("ix_stack_logs_stack_id_id", "stack_id", "id"),
)

stack_dependencies = Table(
    "stack_dependencies",
    metadata,
    Column("stack_id", ForeignKey("stacks.id", ondelete="CASCADE"), primary_key=True),
    Column("depends_on_id", ForeignKey("stacks.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_stack_dependencies_depends_on_id", "depends_on_id"),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(50), nullable=False),
    Column("stack_id", ForeignKey("stacks.id", ondelete="CASCADE")),
    Column("namespace", String(200), nullable=False),
    Column("datacenter", String(100), nullable=False),
    Column("summary", Text, nullable=False),
    Column("requested_by", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("required", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("deadline", UtcDateTime),
    Column("decided_by", String(100)),
    Column("decided_at", UtcDateTime),
    Column("reason", Text),  # why it was rejected, in the rejecter's words
    # when what an approved rollback asks was carried out (or found impossible): any replica's
    # tick carries out the approved ones without it, once
    Column("acted_at", UtcDateTime),
    Index("ix_approvals_status_id", "status", "id"),
    Index("ix_approvals_kind_status", "kind", "status"),
    # the traffic tick looks up the approvals of the shifts awaiting one
    Index("ix_approvals_stack_id", "stack_id"),
)

# what the approval request shows besides its summary (lines joined by newlines)
approval_details = Table(
    "approval_details",
    metadata,
    Column("approval_id", ForeignKey("approvals.id", ondelete="CASCADE"), primary_key=True),
    Column("text", Text, nullable=False),
)

approval_votes = Table(
    "approval_votes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("approval_id", ForeignKey("approvals.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", String(100), nullable=False),
    Column("decision", String(20), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    # a double click never counts twice
    UniqueConstraint("approval_id", "user_id"),
)

ACTIVE_SHIFT = "state IN ('running', 'paused', 'awaiting-approval')"

traffic_shifts = Table(
    "traffic_shifts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("from_stack_id", ForeignKey("stacks.id", ondelete="CASCADE"), nullable=False),
    Column("to_stack_id", ForeignKey("stacks.id", ondelete="CASCADE"), nullable=False),
    Column("policy", String(20), nullable=False),
    Column("duration_seconds", Integer, nullable=False),
    Column("direction", String(10), nullable=False),
    Column("state", String(20), nullable=False),
    Column("started_at", UtcDateTime),
    Column("paused_since", UtcDateTime),
    Column("paused_seconds", Integer, nullable=False, default=0),
    Column("start_new_weight", Integer, nullable=False, default=0),  # per mille
    Column("current_new_weight", Integer, nullable=False, default=0),  # per mille
    Column("updated_at", UtcDateTime, nullable=False),
    # "<datacenter>/<namespace>/<unit>/<major>": one active shift per route (index below)
    Column("route", String(400)),
    Column("last_step_at", UtcDateTime),  # when a driver last moved (or held) the weights
    Column("delayed_seconds", Float, nullable=False, default=0.0),  # time no driver ran
    Index("ix_traffic_shifts_to_stack_id", "to_stack_id"),
    Index("ix_traffic_shifts_state", "state"),
    Index(
        "ux_traffic_shifts_active_route",
        "route",
        unique=True,
        sqlite_where=text(ACTIVE_SHIFT),
        postgresql_where=text(ACTIVE_SHIFT),
    ),
)

# A process that drives shifts and cleanups (`nelson serve`, `nelson console`) says it is
# alive here, so a one-shot `nelson run` can tell whether anything will move a shift.
daemons = Table(
    "daemons",
    metadata,
    Column("holder", String(200), primary_key=True),
    Column("kind", String(50), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("seen_at", UtcDateTime, nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("action", String(50), nullable=False),
    Column("target", String(300), nullable=False),
    Column("allowed", Boolean, nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Index("ix_audit_events_target_id", "target", "id"),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

# one row per stack some replica drives (or drove: rows of finished stacks are given up)
workflow_claims = Table(
    "workflow_claims",
    metadata,
    Column("stack_id", ForeignKey("stacks.id", ondelete="CASCADE"), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("token", Integer, nullable=False),  # grows on every takeover: the fencing token
    Column("expires_at", UtcDateTime, nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("seen_at", UtcDateTime, nullable=False),
)

operations = Table(
    "operations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("title", Text, nullable=False),
    Column("requested_by", String(100), nullable=False),
    Column("channel", String(100)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("outcome", String(20)),
    Index("ix_operations_requested_by_id", "requested_by", "id"),
)

operation_stacks = Table(
    "operation_stacks",
    metadata,
    Column("operation_id", ForeignKey("operations.id", ondelete="CASCADE"), primary_key=True),
    Column("stack_id", ForeignKey("stacks.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_operation_stacks_stack_id", "stack_id"),
)

posted_messages = Table(
    "posted_messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("subject", String(100), nullable=False),
    Column("channel", String(100), nullable=False),
    Column("ts", String(40), nullable=False),
    Column("posted_at", UtcDateTime, nullable=False),
    UniqueConstraint("subject", "channel"),
)

# The Vault token each Docker-engine stack's containers got: only its accessor (enough to
# renew and revoke it), never the token itself.
vault_tokens = Table(
    "vault_tokens",
    metadata,
    Column("stack_id", ForeignKey("stacks.id", ondelete="CASCADE"), primary_key=True),
    Column("policy", String(300), nullable=False),
    Column("accessor", String(200), nullable=False),
    Column("issued_at", UtcDateTime, nullable=False),
)

# `units` per unit in a namespace: its live stacks, its versions with one, the newest few
# ("1.2.3 1.2.0", newest first), per datacenter and, under datacenter "*", all together.
# Rewritten with every change across the live boundary (adapters/storage/live_versions.py).
LIVE_VERSIONS_KEPT = 3
LIVE_VERSIONS_ALL = "*"

live_versions = Table(
    "live_versions",
    metadata,
    # in this order, the key is also what a change rewrites: one unit's rows in a namespace
    Column("namespace", String(200), primary_key=True),
    Column("unit", String(100), primary_key=True),
    Column("datacenter", String(100), primary_key=True),
    Column("stacks", Integer, nullable=False),
    Column("versions", Integer, nullable=False),
    Column("newest", String(200), nullable=False),
    # what `units` reads: one namespace and datacenter ("*" for all), one row per unit
    Index("ix_live_versions_namespace_datacenter_unit", "namespace", "datacenter", "unit"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("namespaces", Text, nullable=False),  # comma-separated
    Column("rights", String(20), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

github_deployments = Table(
    "github_deployments",
    metadata,
    Column("repository", String(200), primary_key=True),
    Column("deployment_id", BigInteger, primary_key=True, autoincrement=False),
    Column("environment", String(200), nullable=False),
    Column("stack_ids", Text, nullable=False),  # comma-separated
    Column("created_at", UtcDateTime, nullable=False),
    Column("reported", String(20), nullable=True),
)

# Locks (a unit) and freezes (a namespace): deploys and traffic shifts there are refused
# while one is active (`until` still ahead, or none).
locks = Table(
    "locks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("unit", String(100), nullable=True),
    Column("namespace", String(200), nullable=True),
    Column("datacenter", String(100), nullable=True),
    Column("reason", Text, nullable=False, server_default=""),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("until", UtcDateTime, nullable=True),
)

# The route table: routers (HAProxy) are projections of these rows. A port serves one route of
# a datacenter, so two replicas opening routes at once never get the same one.
routes = Table(
    "routes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("datacenter", String(100), nullable=False),
    Column("key", String(400), nullable=False),
    Column("port", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("datacenter", "key"),
    UniqueConstraint("datacenter", "port"),
)

route_servers = Table(
    "route_servers",
    metadata,
    Column("route_id", ForeignKey("routes.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(300), primary_key=True),
    Column("stack", String(200), nullable=False),
    Column("address", String(300), nullable=False),
    Column("weight", Integer, nullable=False),  # the router's weight for this server
    Column("per_mille", Integer, nullable=False),  # the stack's share of the route
)

# one row per route whose shift some replica drives (or drove); the token is the fence
route_leases = Table(
    "route_leases",
    metadata,
    Column("route", String(400), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("token", Integer, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

# events other replicas may have to act on, written with the change that raised them and
# handed out once (repositories/event_outbox.py)
event_outbox = Table(
    "event_outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(100), nullable=False),  # what it is about: its events keep their order
    Column("kind", String(40), nullable=False),
    Column("payload", Text, nullable=False),  # JSON
    Column("created_at", UtcDateTime, nullable=False),
    Column("holder", String(200)),
    Column("claimed_until", UtcDateTime),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("done_at", UtcDateTime),
    Index("ix_event_outbox_pending", "done_at", "id"),
    Index("ix_event_outbox_key", "key", "id"),
)
