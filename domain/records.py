"""What the store remembers, as plain frozen values handed between layers.

These carry no behaviour beyond small derived properties; the rules live in the domain
modules (states, policies, manifest) and in the command handlers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from domain.approvals import ApprovalKind, ApprovalStatus, Decision
from domain.states import StackStatus
from domain.traffic import Direction, ShiftPolicy, ShiftState
from domain.versions import Version


@dataclass(frozen=True, slots=True)
class BlueprintRecord:
    """One registered revision of a blueprint (a scheduler template, see domain.blueprints)."""

    id: int
    name: str
    kind: str  # the scheduler kind it renders for: nomad
    revision: int  # 1, 2, 3 ... per name
    text: str
    digest: str  # sha256 of the text: the same text again is the same revision
    registered_by: str
    registered_at: datetime


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    """One registered version of a repository's `.nelson.yml`."""

    id: int
    repository: str
    revision: int  # 1, 2, 3 ... per repository
    text: str
    digest: str  # sha256 of the text, to notice re-registration of the same content
    registered_by: str
    registered_at: datetime


@dataclass(frozen=True, slots=True)
class LiveUnit:
    """What `units` shows of one unit in a namespace: its live stacks and versions."""

    stacks: int  # live stacks, all versions together
    versions: int  # distinct versions with a live stack
    newest: tuple[Version, ...]  # the newest few of those versions, newest first


@dataclass(frozen=True, slots=True)
class UnitRecord:
    name: str
    repository: str
    kind: str  # "service" | "job"
    description: str
    manifest_revision: int


@dataclass(frozen=True, slots=True)
class Release:
    id: int
    unit: str
    version: Version
    image: str  # the reference as asked for: registry/repo:tag or registry/repo@sha256:...
    digest: str | None  # filled once the registry resolved it; immutable afterwards
    manifest_id: int
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewStack:
    release_id: int
    name: str  # unit--1-2-3--hash8
    guid: str
    unit: str
    version: Version
    datacenter: str
    namespace: str
    plan: str
    expires_at: datetime | None
    created_by: str


@dataclass(frozen=True, slots=True)
class Stack:
    id: int
    guid: str
    name: str
    release_id: int
    unit: str
    version: Version
    datacenter: str
    namespace: str
    plan: str
    status: StackStatus
    status_message: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    workflow_step: str | None = None
    announced_at: datetime | None = None  # garbage only: when its removal was announced


@dataclass(frozen=True, slots=True)
class PendingRemoval:
    """A garbage stack waiting for the reaper: why it was collected and since when."""

    stack: Stack
    reason: str
    since: datetime


@dataclass(frozen=True, slots=True)
class StatusChange:
    stack_id: int
    status: StackStatus
    message: str
    actor: str
    at: datetime


@dataclass(frozen=True, slots=True)
class LogLine:
    stack_id: int
    at: datetime
    message: str
    step: str | None = None


@dataclass(frozen=True, slots=True)
class Approval:
    id: int
    kind: ApprovalKind
    stack_id: int | None
    namespace: str
    datacenter: str
    summary: str
    requested_by: str
    status: ApprovalStatus
    required: int
    approvers: tuple[str, ...]
    created_at: datetime
    deadline: datetime | None
    decided_by: str | None = None
    decided_at: datetime | None = None
    details: tuple[str, ...] = ()
    reason: str = ""  # why it was rejected, when the rejecter said
    acted_at: datetime | None = None  # an approved rollback: when it was carried out


@dataclass(frozen=True, slots=True)
class AuditEvent:
    actor: str
    action: str
    target: str
    allowed: bool = True
    detail: str = ""
    at: datetime | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class StackQuery:
    namespace: str | None = None
    datacenter: str | None = None
    statuses: tuple[StackStatus, ...] = ()
    unit: str | None = None
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True, slots=True)
class StackPage:
    stacks: tuple[Stack, ...]
    total: int
    query: StackQuery = field(default_factory=StackQuery)


@dataclass(frozen=True, slots=True)
class NewApproval:
    kind: ApprovalKind
    stack_id: int | None
    namespace: str
    datacenter: str
    summary: str  # one line: what will happen if approved
    requested_by: str
    required: int
    deadline: datetime | None
    details: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Vote:
    user_id: str
    decision: Decision
    at: datetime


@dataclass(frozen=True, slots=True)
class Operation:
    """Long work one person asked for (a deploy to one or more datacenters), followed in one
    parent message per channel and a thread."""

    id: int
    kind: str  # deploy | commit | redeploy
    title: str  # "deploy howdy-http 1.2.3 to dc-east, dc-west"
    requested_by: str
    channel: str | None  # where it was asked (None: console)
    stack_ids: tuple[int, ...]
    created_at: datetime
    finished_at: datetime | None = None
    outcome: str | None = None  # succeeded | failed


@dataclass(frozen=True, slots=True)
class PostedMessage:
    """A chat message the bot keeps up to date: `subject` is what it shows
    ("operation:12", "approval:5")."""

    subject: str
    channel: str
    ts: str


@dataclass(frozen=True, slots=True)
class TrafficShift:
    """Traffic moving between two stacks of one unit and major version at one target.

    state: awaiting-approval -> running (<-> paused) -> done | reversed; cancelled when the
    approval is rejected or expires or the new stack stops being routable; superseded when a
    newer stack of the same route becomes ready. Weights are per mille of traffic for the new
    stack. At most one shift per route is active (awaiting-approval, running or paused)."""

    id: int
    from_stack_id: int
    to_stack_id: int
    policy: ShiftPolicy
    duration_seconds: int
    direction: Direction
    state: ShiftState
    started_at: datetime | None
    paused_since: datetime | None
    paused_seconds: int
    start_new_weight: int
    current_new_weight: int
    updated_at: datetime
    route: str | None = None  # "<datacenter>/<namespace>/<unit>/<major>"
    last_step_at: datetime | None = None  # when a driver last moved or held the weights
    delayed_seconds: float = 0.0  # time nothing drove the shift; it does not count


@dataclass(frozen=True, slots=True)
class Daemon:
    """A running process that drives shifts and cleanups, as its last heartbeat tells."""

    holder: str
    kind: str
    started_at: datetime
    seen_at: datetime


@dataclass(frozen=True, slots=True)
class UnitPage:
    """One page of `units`: the catalogue's units sorted by name, each with what it has live
    in the namespace (None: nothing), and where the page lies in the whole list."""

    units: tuple[tuple[UnitRecord, LiveUnit | None], ...]
    total: int  # units in the catalogue
    before: int  # units sorted before this page's first
