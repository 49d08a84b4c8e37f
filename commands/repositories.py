"""What handlers and components need from durable state: one repository per aggregate.

`commands.ports.Store` is their composite (what the wiring passes around); a component that
needs only one aggregate is typed against its repository. Every method is one transaction of
its own, unless it runs inside `Store.unit_of_work()`, where all of them share one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from domain.api_tokens import ApiToken
from domain.approvals import ApprovalKind, ApprovalStatus, Decision
from domain.expiration import StackView
from domain.github import GitHubDeployment
from domain.locks import Lock, NewLock
from domain.records import (
    Approval,
    AuditEvent,
    BlueprintRecord,
    Daemon,
    LiveUnit,
    LogLine,
    ManifestRecord,
    NewApproval,
    NewStack,
    Operation,
    PendingRemoval,
    PostedMessage,
    Release,
    Stack,
    StackPage,
    StackQuery,
    StatusChange,
    TrafficShift,
    UnitPage,
    UnitRecord,
)
from domain.states import StackStatus
from domain.traffic import ShiftPolicy, ShiftState
from domain.versions import Version


class ManifestRepository(Protocol):
    """Manifest revisions, the unit catalogue they declare, and blueprints."""

    async def register_manifest(
        self, repository: str, text: str, units: Sequence[UnitRecord], actor: str
    ) -> ManifestRecord:
        """Store a new revision (or return the latest if its text is identical) and
        replace the repository's unit catalogue with `units`."""
        ...

    async def latest_manifest(self, repository: str) -> ManifestRecord | None: ...

    async def manifest_by_id(self, manifest_id: int) -> ManifestRecord | None: ...

    async def manifests(self) -> list[ManifestRecord]:
        """The latest revision of every repository."""
        ...

    async def unit(self, name: str) -> UnitRecord | None: ...

    async def units(self) -> list[UnitRecord]: ...

    # blueprints (scheduler templates)
    async def register_blueprint(
        self, name: str, kind: str, text: str, actor: str
    ) -> BlueprintRecord:
        """Store a new revision (or return the latest if its text and kind are the same)."""
        ...

    async def blueprint(self, name: str, revision: int | None = None) -> BlueprintRecord | None:
        """One revision of a blueprint; the latest when `revision` is None."""
        ...

    async def blueprints(self) -> list[BlueprintRecord]:
        """The latest revision of every blueprint."""
        ...


class StackRepository(Protocol):
    """Releases and their stacks: status and its history, logs, dependency edges."""

    async def release(self, unit: str, version: Version) -> Release | None: ...

    async def releases(self, unit: str) -> list[Release]: ...

    async def release_revisions(self, units: Sequence[str]) -> dict[tuple[str, Version], int]:
        """The manifest id each release of these units was made from: what a stack deployed
        from that release is judged by."""
        ...

    async def create_deployment(
        self,
        release: Release | None,
        unit: str,
        version: Version,
        image: str,
        manifest_id: int,
        stacks: Sequence[NewStack],
        actor: str,
    ) -> tuple[Release, list[Stack]]:
        """Atomically create the release (when `release` is None) and its pending stacks,
        each with a first status-history row. Raises Conflict if the release already exists
        and `release` was None (a concurrent deploy of the same version won)."""
        ...

    async def set_release_digest(self, release_id: int, digest: str) -> None: ...

    # stacks
    async def stack(self, ref: str) -> Stack | None:
        """Find a stack by exact name or guid (or an unambiguous guid prefix of 6+ chars)."""
        ...

    async def stack_by_id(self, stack_id: int) -> Stack | None: ...

    async def list_stacks(self, query: StackQuery) -> StackPage: ...

    async def live_units(
        self, namespace: str, datacenter: str | None = None, newest: int = 3
    ) -> dict[str, LiveUnit]:
        """Per unit with live stacks in the namespace (and datacenter): how many, in how many
        versions, and its `newest` newest versions."""
        ...

    async def release_stacks(self, unit: str, version: Version) -> list[Stack]:
        """Every stack of one release, in every namespace and datacenter."""
        ...

    async def live_stacks(
        self, unit: str, version: Version, datacenter: str, namespace: str
    ) -> list[Stack]:
        """Stacks of this release at this target that are pending..deprecated."""
        ...

    async def change_status(
        self,
        stack_id: int,
        status: StackStatus,
        message: str,
        actor: str,
        at: datetime | None = None,
    ) -> Stack:
        """Move a stack to `status`, checking the state machine (IllegalTransition), and
        append the status-history row, in one transaction."""
        ...

    async def set_workflow_step(self, stack_id: int, step: str | None) -> None: ...

    async def set_expiry(self, stack_id: int, expires_at: datetime | None) -> None: ...

    async def status_history(self, stack_id: int) -> list[StatusChange]: ...

    async def append_log(
        self, stack_id: int, message: str, step: str | None = None, at: datetime | None = None
    ) -> None: ...

    async def logs(self, stack_id: int, limit: int = 200) -> list[LogLine]:
        """The newest `limit` lines, oldest first."""
        ...

    async def add_dependency(self, stack_id: int, depends_on_stack_id: int) -> None:
        """Record that one stack calls another; recording it again changes nothing. A stack
        depending on itself, or on a stack that does not exist, is a StoreError."""
        ...

    async def dependencies(self, stack_id: int) -> list[Stack]: ...

    async def dependents(self, stack_id: int) -> list[Stack]: ...

    async def stacks_by_ids(self, stack_ids: Sequence[int]) -> list[Stack]: ...


class ApprovalRepository(Protocol):
    """Approvals, their votes, and the audit trail."""

    async def approvals(
        self, status: ApprovalStatus | None = ApprovalStatus.PENDING
    ) -> list[Approval]: ...

    async def approval(self, approval_id: int) -> Approval | None: ...

    async def approvals_of_stacks(
        self, kind: ApprovalKind, stack_ids: Sequence[int]
    ) -> list[Approval]:
        """Every approval of that kind about these stacks, whatever its status, oldest first."""
        ...

    async def create_approval(self, new: NewApproval, at: datetime | None = None) -> Approval: ...

    async def vote(self, approval_id: int, user_id: str, decision: Decision, at: datetime) -> bool:
        """Record one person's vote; False when they had already voted (a double click)."""
        ...

    async def decide_approval(
        self,
        approval_id: int,
        status: ApprovalStatus,
        decided_by: str,
        at: datetime,
        reason: str = "",
    ) -> Approval | None:
        """Close a pending approval; None when it was no longer pending."""
        ...

    async def overdue_approvals(self, now: datetime) -> list[Approval]: ...

    async def approved_not_acted_on(self, kind: ApprovalKind) -> list[Approval]:
        """The approved approvals of that kind whose request was not carried out yet (a
        rollback whose deciding replica died first), oldest first."""
        ...

    async def mark_acted_on(self, approval_id: int, at: datetime) -> bool:
        """Remember that what an approval asked was carried out (or found impossible); False
        when it already was."""
        ...

    # audit
    async def audit(self, event: AuditEvent) -> None: ...

    async def audit_many(self, events: Sequence[AuditEvent]) -> None:
        """Several events in one transaction (a cleanup pass's decisions)."""
        ...

    async def audit_events(
        self, target: str | None = None, limit: int = 100
    ) -> list[AuditEvent]: ...


class OperationRepository(Protocol):
    """Operations followed in chat, the messages that show them, and deliveries
    already handled."""

    async def create_operation(
        self,
        kind: str,
        title: str,
        requested_by: str,
        channel: str | None,
        stack_ids: Sequence[int],
        at: datetime | None = None,
    ) -> Operation: ...

    async def operation(self, operation_id: int) -> Operation | None: ...

    async def operations_for_stack(self, stack_id: int) -> list[Operation]: ...

    async def recent_operations(self, requested_by: str, limit: int = 10) -> list[Operation]: ...

    async def finish_operation(self, operation_id: int, outcome: str, at: datetime) -> bool:
        """Mark it finished; False when it already was."""
        ...

    async def remember_message(self, subject: str, channel: str, ts: str) -> None: ...

    async def messages_for(self, subject: str) -> list[PostedMessage]: ...

    # deliveries: at-most-once handling of repeated requests, across replicas
    async def claim_delivery(self, key: str, at: datetime) -> bool:
        """True the first time `key` is seen, False for every repeat."""
        ...

    async def forget_deliveries(self, before: datetime) -> int: ...


class LifecycleRepository(Protocol):
    """What the cleanup pass judges and changes, and the leases of periodic jobs."""

    def lifecycle_batches(
        self, size: int = 2000, collected: AbstractSet[int] = frozenset()
    ) -> AsyncIterator[tuple[list[tuple[str, StackView]], dict[int, int]]]:
        """Ready and deprecated stacks (name and view) in batches of whole groups (unit,
        namespace, datacenter), each with the live dependants of its depended-on stacks;
        stacks in `collected` count as live."""
        ...

    @property
    def cleanup_writers(self) -> int:
        """How many transactions writing a cleanup pass's decisions may run at once."""
        ...

    async def garbage_due(self, since_before: datetime, announced_before: datetime) -> list[Stack]:
        """Garbage collected before `since_before`, announced before `announced_before`."""
        ...

    async def extend_expiries(self, expiries: Mapping[int, datetime]) -> None: ...

    async def mark_garbage(
        self, reasons: Mapping[int, str], at: datetime, actor: str = "nelson"
    ) -> list[int]:
        """Ready or deprecated stacks -> garbage with their reasons (status history and an
        audit event each, by `actor`); returns the ids that changed."""
        ...

    async def pending_removals(self) -> list[PendingRemoval]:
        """Every garbage stack with the reason it was collected."""
        ...

    async def mark_announced(self, stack_ids: Sequence[int], at: datetime) -> int:
        """Record the first announcement of these garbage stacks' removal; how many changed."""
        ...

    async def acquire_lease(self, name: str, holder: str, until: datetime, now: datetime) -> bool:
        """Take or renew a lease; False while another holder has it (several replicas)."""
        ...

    async def release_lease(self, name: str, holder: str) -> None: ...


class TrafficRepository(Protocol):
    """Traffic shifts and the heartbeats of the daemons that drive them."""

    async def create_shift(
        self,
        from_stack_id: int,
        to_stack_id: int,
        policy: ShiftPolicy,
        duration_seconds: int,
        state: ShiftState,
        at: datetime,
        route: str | None = None,
    ) -> TrafficShift: ...

    async def open_shift(
        self,
        route: str | None,
        from_stack_id: int,
        to_stack_id: int,
        policy: ShiftPolicy,
        duration_seconds: int,
        state: ShiftState,
        at: datetime,
        start_new_weight: int = 0,
    ) -> tuple[TrafficShift, list[TrafficShift]]:
        """A new shift on `route`; every shift active there becomes `superseded` (returned)
        in the same transaction, so a route never has two active shifts."""
        ...

    # daemons: processes that drive shifts and cleanups say they are alive
    async def heartbeat(self, holder: str, kind: str, at: datetime) -> None:
        """Say that `holder` is alive at `at`. A holder's first heartbeat (a process starting)
        also forgets the processes silent for `FORGOTTEN_AFTER` (killed, never stopped)."""
        ...

    async def daemons(self, seen_since: datetime) -> list[Daemon]: ...

    async def forget_daemon(self, holder: str) -> None: ...

    async def shift(self, shift_id: int) -> TrafficShift | None: ...

    async def shifts(
        self, states: Sequence[ShiftState] = (), stack_id: int | None = None
    ) -> list[TrafficShift]: ...

    async def update_shift(
        self, shift_id: int, expected_state: ShiftState | None = None, **values: Any
    ) -> TrafficShift | None:
        """Change a shift; with `expected_state`, only if it is still in that state."""
        ...


class VaultTokenRepository(Protocol):
    """The accessors (never the tokens) of Docker-engine stacks' Vault tokens."""

    async def record_vault_token(
        self, stack_id: int, policy: str, accessor: str, at: datetime
    ) -> str | None:
        """Remember the stack's token; returns the accessor it replaces, if any."""
        ...

    async def vault_tokens(self, stack_id: int | None = None) -> list[VaultTokenRecord]: ...

    async def forget_vault_token(self, stack_id: int, accessor: str) -> None:
        """Forget the stack's token if it is still this one."""
        ...


class LockRepository(Protocol):
    """Locks and freezes made from chat (scheduled windows come from the configuration)."""

    async def add_lock(self, new: NewLock) -> Lock: ...

    async def locks(self) -> list[Lock]:
        """Every stored lock and freeze, expired ones included (the clock judges them)."""
        ...

    async def remove_locks(self, lock_ids: Sequence[int]) -> list[Lock]:
        """Remove these; returns those that were there (another replica may have removed
        some meanwhile)."""
        ...


class UnitListingRepository(Protocol):
    """`units`, a page at a time: the catalogue joined with the `live_versions` summary."""

    async def unit_page(
        self,
        namespace: str,
        datacenter: str | None,
        *,
        limit: int,
        after: str | None = None,
        offset: int = 0,
        newest: int = 3,
    ) -> UnitPage:
        """Up to `limit` units sorted by name: those after the unit named `after` (a name
        that need not exist), else from the `offset`-th; each with its live stacks in the
        namespace (and datacenter) and its `newest` newest versions (at most 8)."""
        ...


class CiRepository(Protocol):
    """What CI systems hold here: API tokens (their SHA-256 digests, never the tokens) and the
    GitHub deployments the bot reports on (their outcome told once, also after a restart)."""

    async def create_api_token(self, token: ApiToken) -> None:
        """Conflict if the name is taken."""
        ...

    async def api_tokens(self) -> list[ApiToken]: ...

    async def api_token_by_digest(self, digest: str) -> ApiToken | None: ...

    async def revoke_api_token(self, name: str) -> bool:
        """False if there was no such token."""
        ...

    async def record_github_deployment(self, deployment: GitHubDeployment) -> None: ...

    async def unreported_github_deployments(self) -> list[GitHubDeployment]: ...

    async def github_deployment_reported(
        self, repository: str, deployment_id: int, state: str
    ) -> None: ...


class WorkflowClaimRepository(Protocol):
    """Per-stack claims on the deploy workflow, so that with several replicas on one database
    each unfinished stack is driven by one of them, and the work of a replica that died is
    taken over once its claim expires.

    A claim has a fencing token that grows on every takeover. A replica's writes for a stack
    go through `check_workflow_claim` in the same unit of work: they land only while it still
    holds the claim with its token, unexpired; otherwise `ClaimLost` (commands.ports) is raised
    and nothing of that unit is written. Expiry is judged by the store's clock."""

    async def claim_workflow(
        self, stack_id: int, holder: str, ttl: timedelta
    ) -> WorkflowClaim | None:
        """Take the stack's claim for `ttl` if nobody holds it or its claim expired (a new,
        larger token), or keep holding it (same token); None while another holder has it."""
        ...

    async def renew_workflow_claims(
        self, holder: str, tokens: Mapping[int, int], ttl: timedelta
    ) -> set[int]:
        """Extend the unexpired claims `holder` holds with these tokens (stack id -> token)
        by `ttl` from now; returns the stack ids renewed. The others are lost: expired (a
        holder that renews too late claims again, with a new token) or taken over."""
        ...

    async def check_workflow_claim(self, stack_id: int, holder: str, token: int) -> None:
        """Raise ClaimLost unless `holder` holds the stack's unexpired claim with `token`; in a
        unit of work it also keeps a takeover from landing until that unit ends."""
        ...

    async def release_workflow_claim(self, stack_id: int, holder: str, token: int) -> None:
        """Give the claim up (the run ended or stopped): another replica may take it at once."""
        ...

    async def unclaimed_workflows(
        self,
        statuses: Sequence[StackStatus],
        datacenters: Sequence[str],
        limit: int = 1000,
        *,
        steps: Sequence[str] = (),
    ) -> list[int]:
        """Ids of stacks in these statuses (or, whatever their status, in one of these workflow
        steps) and datacenters whose claim is missing or expired, in id order."""
        ...

    async def workflow_claims(self, unexpired_at: datetime | None = None) -> list[WorkflowClaim]:
        """Every claim by stack id; only those still unexpired at `unexpired_at` if given."""
        ...


# how long the row of a process that was killed (and so never said goodbye) is kept
FORGOTTEN_AFTER = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class WorkflowClaim:
    stack_id: int
    holder: str
    token: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class VaultTokenRecord:
    stack_id: int
    stack: str
    datacenter: str
    status: StackStatus
    policy: str
    accessor: str
    issued_at: datetime


# -- routes (issue: several replicas on one database) ----------------------------------------


@dataclass(frozen=True, slots=True)
class RouteServer:
    """One server of a route's backend: an instance of a stack, with the router's weight for
    it and the stack's share of the route (per mille)."""

    name: str
    stack: str
    address: str
    weight: int
    per_mille: int


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """A route as the database holds it: routers are projections of these rows."""

    datacenter: str
    key: str
    port: int
    servers: tuple[RouteServer, ...]

    def weights(self) -> dict[str, int]:
        """Per stack, the per mille of the route's traffic it gets."""
        return {s.stack: s.per_mille for s in self.servers}


@dataclass(frozen=True, slots=True)
class RouteLease:
    """The right to drive one route's traffic shift; `token` grows on every takeover."""

    route: str
    holder: str
    token: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class WeightFence:
    """What a weight write must still hold when it lands, checked in its own transaction: the
    route's lease (holder and token, unexpired) and, for a shift's step, the shift still
    running in `direction` with its new stack's weight not past `new_weight` (forward: not
    above; reverse: not below), so weights never move backwards except by a reverse."""

    lease: RouteLease
    shift_id: int | None = None
    direction: str | None = None  # domain.traffic.Direction's value
    new_weight: int | None = None


class RouteRepository(Protocol):
    """The route table: routes with their ports and servers, and the leases on them."""

    async def route_entry(self, datacenter: str, key: str) -> RouteEntry | None: ...

    async def route_entries(self, datacenter: str) -> list[RouteEntry]:
        """Every route of the datacenter, by key."""
        ...

    async def create_route(self, datacenter: str, key: str, port: int) -> RouteEntry | None:
        """The route `key`, made with `port` when it did not exist; None when another route
        of the datacenter holds that port (pick another)."""
        ...

    async def write_route(
        self,
        datacenter: str,
        key: str,
        servers: Sequence[RouteServer],
        fence: WeightFence | None = None,
    ) -> None:
        """Replace the servers of the stacks named in `servers` (others keep theirs), and with
        `fence`, record the shift's new weight; all in one transaction that first checks the
        fence (`commands.ports.LeaseLost` when it no longer holds: nothing written)."""
        ...

    async def remove_route_stack(self, datacenter: str, key: str, stack: str) -> None: ...

    async def take_route_lease(self, route: str, holder: str, ttl: timedelta) -> RouteLease | None:
        """Take the route's lease, or renew it when `holder` has it; None while another
        holder's lease runs. A takeover gets a larger token."""
        ...

    async def release_route_lease(self, route: str, holder: str, token: int) -> None: ...

    async def route_leases(self) -> list[RouteLease]: ...


class EventOutboxRepository(Protocol):
    """The durable outbox of events other replicas may have to act on (a deploy's Slack
    thread, an approval's message): written in the transaction of the change that raised
    them, and handed out once across replicas.

    Each event has a `key` (what it is about, e.g. `operation:12`): events of one key are
    handed out in the order they were written, and never two of them to different holders at
    once. A claim lasts `ttl`; an event claimed and neither finished nor given back is handed
    out again when its claim expires (its holder died)."""

    async def add_outbox_event(self, key: str, kind: str, payload: Mapping[str, Any]) -> int:
        """Write an event (in the caller's unit of work, if any); returns its id."""
        ...

    async def claim_outbox_events(
        self, holder: str, ttl: timedelta, limit: int = 50
    ) -> list[OutboxEvent]:
        """Claim up to `limit` pending events for `holder`, oldest first: each is unfinished,
        unclaimed (or its claim expired), and every earlier unfinished event of its key is
        claimed in the same call."""
        ...

    async def finish_outbox_event(self, event_id: int, holder: str) -> bool:
        """Mark the event done; False (and nothing written) unless `holder` still holds it."""
        ...

    async def retry_outbox_event(self, event_id: int, holder: str, after: timedelta) -> None:
        """Give a held event back, to be handed out again `after` from now (0: at once). The
        later events of its key wait for it. With `after` the claim's TTL, the holder keeps it
        that much longer (it is still telling it)."""
        ...

    async def outbox_backlog(self) -> list[OutboxEvent]:
        """Every unfinished event, oldest first."""
        ...

    async def forget_outbox_events(self, before: datetime) -> int:
        """Delete events written before `before`, done or not; returns how many."""
        ...


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: int
    key: str
    kind: str
    payload: Mapping[str, Any]
    created_at: datetime
    attempts: int = 0  # how many times it was handed out before: an earlier holder may have
    # done part of it (posted, then died before finishing it)
