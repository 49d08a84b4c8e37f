"""The interfaces command handlers need from the outside world.

Handlers depend only on these Protocols; `bot.bootstrap` picks the adapters. Later datacenter
kinds (Nomad, Kubernetes), secrets (Vault) and routers (HAProxy, Consul) are new classes that
satisfy the same small interfaces.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from domain.expiration import StackView
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
    UnitRecord,
)
from domain.runtime import Health, Instance, LaunchSpec, Rendering, RuntimeReport
from domain.states import StackStatus
from domain.versions import Version


class StoreError(Exception):
    """The database could not do what was asked; the message is safe to show to users."""


class Conflict(StoreError):
    """A uniqueness rule was hit (same release twice, same manifest revision)."""


class Store(Protocol):
    """Durable state. Every method is one transaction unless it says otherwise."""

    # manifests and units
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

    # releases
    async def release(self, unit: str, version: Version) -> Release | None: ...

    async def releases(self, unit: str) -> list[Release]: ...

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

    async def add_dependency(self, stack_id: int, depends_on_stack_id: int) -> None: ...

    async def dependencies(self, stack_id: int) -> list[Stack]: ...

    async def dependents(self, stack_id: int) -> list[Stack]: ...

    # approvals
    async def approvals(self, status: str | None = "pending") -> list[Approval]: ...

    async def approval(self, approval_id: int) -> Approval | None: ...

    async def create_approval(self, new: NewApproval, at: datetime | None = None) -> Approval: ...

    async def vote(self, approval_id: int, user_id: str, decision: str, at: datetime) -> bool:
        """Record one person's vote; False when they had already voted (a double click)."""
        ...

    async def decide_approval(
        self, approval_id: int, status: str, decided_by: str, at: datetime, reason: str = ""
    ) -> Approval | None:
        """Close a pending approval; None when it was no longer pending."""
        ...

    async def overdue_approvals(self, now: datetime) -> list[Approval]: ...

    # operations (long work followed in chat) and the messages that show them
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

    async def stacks_by_ids(self, stack_ids: Sequence[int]) -> list[Stack]: ...

    async def remember_message(self, subject: str, channel: str, ts: str) -> None: ...

    async def messages_for(self, subject: str) -> list[PostedMessage]: ...

    # lifecycle
    def lifecycle_batches(
        self, size: int = 2000, collected: AbstractSet[int] = frozenset()
    ) -> AsyncIterator[tuple[list[tuple[str, StackView]], dict[int, int]]]:
        """Ready and deprecated stacks (name and view) in batches of whole groups (unit,
        namespace, datacenter), each with the live dependants of its depended-on stacks;
        stacks in `collected` count as live."""
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

    # traffic shifts
    async def create_shift(
        self,
        from_stack_id: int,
        to_stack_id: int,
        policy: str,
        duration_seconds: int,
        state: str,
        at: datetime,
        route: str | None = None,
    ) -> TrafficShift: ...

    async def open_shift(
        self,
        route: str | None,
        from_stack_id: int,
        to_stack_id: int,
        policy: str,
        duration_seconds: int,
        state: str,
        at: datetime,
        start_new_weight: int = 0,
    ) -> tuple[TrafficShift, list[TrafficShift]]:
        """A new shift on `route`; every shift active there becomes `superseded` (returned)
        in the same transaction, so a route never has two active shifts."""
        ...

    # daemons: processes that drive shifts and cleanups say they are alive
    async def heartbeat(self, holder: str, kind: str, at: datetime) -> None: ...

    async def daemons(self, seen_since: datetime) -> list[Daemon]: ...

    async def forget_daemon(self, holder: str) -> None: ...

    async def shift(self, shift_id: int) -> TrafficShift | None: ...

    async def shifts(
        self, states: Sequence[str] = (), stack_id: int | None = None
    ) -> list[TrafficShift]: ...

    async def update_shift(
        self, shift_id: int, expected_state: str | None = None, **values: Any
    ) -> TrafficShift | None:
        """Change a shift; with `expected_state`, only if it is still in that state."""
        ...

    # deliveries: at-most-once handling of repeated requests, across replicas
    async def claim_delivery(self, key: str, at: datetime) -> bool:
        """True the first time `key` is seen, False for every repeat."""
        ...

    async def forget_deliveries(self, before: datetime) -> int: ...

    # Vault tokens of Docker-engine stacks (the accessor only)
    async def record_vault_token(
        self, stack_id: int, policy: str, accessor: str, at: datetime
    ) -> str | None:
        """Remember the stack's token; returns the accessor it replaces, if any."""
        ...

    async def vault_tokens(self, stack_id: int | None = None) -> list[VaultTokenRecord]: ...

    async def forget_vault_token(self, stack_id: int, accessor: str) -> None:
        """Forget the stack's token if it is still this one."""
        ...

    # locks and freezes
    async def add_lock(self, new: NewLock) -> Lock: ...

    async def locks(self) -> list[Lock]:
        """Every stored lock and freeze, expired ones included (the clock judges them)."""
        ...

    async def remove_locks(self, lock_ids: Sequence[int]) -> list[Lock]:
        """Remove these; returns the ones that were still there."""
        ...

    # audit
    async def audit(self, event: AuditEvent) -> None: ...

    async def audit_many(self, events: Sequence[AuditEvent]) -> None:
        """Several events in one transaction (a cleanup pass's decisions)."""
        ...

    async def audit_events(
        self, target: str | None = None, limit: int = 100
    ) -> list[AuditEvent]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class VaultTokenRecord:
    stack_id: int
    stack: str
    datacenter: str
    status: StackStatus
    policy: str
    accessor: str
    issued_at: datetime


class RegistryError(Exception):
    """A registry could not do what was asked; the message names the registry and the image."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient  # worth retrying (5xx, 429, connection faults)


class ImageNotFound(RegistryError):
    pass


class Registry(Protocol):
    """Container registries: resolve a reference to a digest, copy an image between them."""

    async def resolve(self, image: str) -> str:
        """The digest (sha256:…) of `image` (registry/repo:tag or @digest)."""
        ...

    async def replicate(self, image: str, digest: str, to_registry: str) -> str:
        """Copy the image with this digest to `to_registry` (same repository name); returns
        the reference to pull it there (registry/repo@digest). Idempotent."""
        ...

    async def close(self) -> None: ...


class SchedulerError(Exception):
    """The datacenter's scheduler could not do what was asked; the message says what."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class Scheduler(Protocol):
    """One datacenter's scheduler (the Docker engine; later Nomad, Kubernetes)."""

    async def check(self) -> str | None:
        """None when it can take work now, else what to start or configure."""
        ...

    async def launch(self, spec: LaunchSpec) -> list[Instance]:
        """Run `spec.instances` instances of the stack. Idempotent: instances that already
        exist are kept, missing ones are created."""
        ...

    async def instances(self, stack: str) -> list[Instance]: ...

    async def health(self, spec: LaunchSpec) -> Health:
        """Probe the manifest's health checks on every instance."""
        ...

    async def delete(self, stack: str) -> int:
        """Remove every instance of the stack; returns how many there were."""
        ...

    async def render(self, spec: LaunchSpec) -> Rendering:
        """What `launch(spec)` would submit, checked by the scheduler where it can be, without
        running anything (SchedulerError when the spec cannot even be made)."""
        ...

    async def close(self) -> None: ...


class RouterError(Exception):
    """The router could not change routes; the message says what."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where callers reach a unit's major version in one namespace of a datacenter."""

    namespace: str
    unit: str
    major: int

    @property
    def key(self) -> str:
        return f"{self.namespace.replace('/', '_')}_{self.unit}_{self.major}"


class Router(Protocol):
    """Routes traffic for (namespace, unit, major) to stacks by weight (HAProxy first;
    Consul and others later)."""

    async def check(self) -> str | None: ...

    async def address(self, route: Route) -> str:
        """host:port callers use for the route (created on first use)."""
        ...

    async def set_weights(self, route: Route, backends: dict[str, tuple[list[str], int]]) -> None:
        """Make the route send `weight` per mille of its traffic to each stack, whose
        instances listen at the given host:port addresses. Stacks not named keep their
        servers at their current weight; weight 0 keeps a stack attached but idle."""
        ...

    async def weights(self, route: Route) -> dict[str, int]:
        """Per stack, the per mille of traffic it gets now."""
        ...

    async def remove(self, route: Route, stack: str) -> None: ...

    async def serving(self) -> set[str]:
        """Names of the stacks that get any traffic now, on every route."""
        ...

    async def close(self) -> None: ...


class SecretsError(Exception):
    """Vault could not do what was asked; the message names the Vault and the reason."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient  # worth retrying (5xx, connection faults)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token for one stack's containers. `token` goes to them and nowhere else (never to
    the database, logs or chat); the accessor is what the bot keeps to renew and revoke it."""

    token: str = field(repr=False)
    accessor: str
    address: str  # VAULT_ADDR for the containers


@dataclass(frozen=True, slots=True)
class SecretsStatus:
    reachable: bool
    sealed: bool | None
    detail: str  # "unsealed, Vault 1.15.2" or why it cannot be reached


class Secrets(Protocol):
    """One datacenter's Vault: a policy per stack and, where the scheduler has no Vault
    integration of its own (the Docker engine), a periodic token limited to that policy.
    Every method is idempotent; deleting what is already gone is not an error."""

    async def status(self) -> SecretsStatus: ...

    async def write_policy(self, name: str, read_paths: Sequence[str]) -> None: ...

    async def policy(self, name: str) -> str | None:
        """The policy's text, None when there is none."""
        ...

    async def delete_policy(self, name: str) -> None: ...

    async def policies(self) -> list[str]:
        """The names of every ACL policy."""
        ...

    async def issue_token(self, policy: str, period_seconds: int, stack: str) -> IssuedToken: ...

    async def renew(self, accessor: str) -> bool:
        """Extend the token's period; False when the token is gone (expired, revoked)."""
        ...

    async def revoke(self, accessor: str) -> None: ...

    async def close(self) -> None: ...


class ConsulStatus(Protocol):
    """A datacenter's Consul, as `datacenters` reports it."""

    async def status(self) -> str:
        """One line: its leader, or why it cannot be reached."""
        ...


@runtime_checkable
class PublishedRoutes(Protocol):
    """A router that publishes routing tables under keys (Lighthouse), for `inspect`."""

    async def keys_for(self, stack: str) -> list[str]: ...


class WorkflowPort(Protocol):
    """Takes pending stacks and drives them to ready (or failed) on their datacenter."""

    async def available_for(self, datacenter: str) -> str | None:
        """None when deploys can run in this datacenter now, else a sentence saying why not."""
        ...

    async def submit(self, stack_ids: Sequence[int]) -> None: ...

    async def runtime(self, stack: Stack) -> RuntimeReport:
        """What the datacenter runs for the stack now (SchedulerError if it cannot say)."""
        ...

    async def render(
        self,
        unit: str,
        version: Version,
        datacenter: str,
        namespace: str,
        plan: str,
        manifest_id: int,
        image: str,
    ) -> Rendering:
        """What a deploy of this release would submit to the datacenter, without deploying
        (SchedulerError when it cannot be made: a blueprint that does not render, say)."""
        ...


class Clock(Protocol):
    def now(self) -> datetime: ...
