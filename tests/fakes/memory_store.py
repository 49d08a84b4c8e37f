"""`MemoryStore`: every repository of `commands.ports.Store` in memory, for fast handler tests.

It keeps the contracts the SQL adapter keeps (tests/integration/test_store.py runs the same
tests on SQLite, PostgreSQL and this): the same uniqueness rules and Conflicts, the state
machine on status changes, the same orders, and a unit of work whose writes all vanish when it
raises. It lives under tests/ so that no product code can reach it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from commands.ports import ClaimLost, Clock, Conflict, LeaseLost, StoreError
from commands.repositories import (
    FORGOTTEN_AFTER,
    OutboxEvent,
    RouteEntry,
    RouteLease,
    RouteServer,
    VaultTokenRecord,
    WeightFence,
    WorkflowClaim,
)
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
from domain.states import LIVE_STATUSES, StackStatus, check_transition
from domain.traffic import OPEN_SHIFT_STATES, Direction, ShiftPolicy, ShiftState
from domain.versions import Version

R = TypeVar("R")
GUID_PREFIX_MIN = 6
JUDGED = (StackStatus.READY, StackStatus.DEPRECATED)


def _utc(moment: datetime) -> datetime:
    """As the database gives times back: UTC; naive times are refused as it refuses them."""
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are not stored; give a timezone")
    return moment.astimezone(UTC)


def _norm(record: R) -> R:
    """`record` with every datetime in UTC."""
    moved = {
        f.name: _utc(v)
        for f in fields(record)  # type: ignore[arg-type]
        if isinstance(v := getattr(record, f.name), datetime)
    }
    return replace(record, **moved) if moved else record  # type: ignore[type-var]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class _Vote:
    approval_id: int
    user_id: str
    decision: Decision
    at: datetime


@dataclass
class _OutboxRow:
    event: OutboxEvent
    holder: str | None = None
    claimed_until: datetime | None = None
    done_at: datetime | None = None


@dataclass
class _Tables:
    """The rows, one list or dict per table; a unit of work copies and restores all of it."""

    ids: dict[str, int] = field(default_factory=dict)
    manifests: list[ManifestRecord] = field(default_factory=list)
    units: dict[str, UnitRecord] = field(default_factory=dict)
    blueprints: list[BlueprintRecord] = field(default_factory=list)
    releases: dict[int, Release] = field(default_factory=dict)
    stacks: dict[int, Stack] = field(default_factory=dict)
    history: list[StatusChange] = field(default_factory=list)
    logs: list[LogLine] = field(default_factory=list)
    edges: set[tuple[int, int]] = field(default_factory=set)  # (stack, depends on)
    approvals: dict[int, Approval] = field(default_factory=dict)
    votes: list[_Vote] = field(default_factory=list)
    operations: dict[int, Operation] = field(default_factory=dict)
    messages: list[PostedMessage] = field(default_factory=list)
    deliveries: dict[str, datetime] = field(default_factory=dict)
    leases: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    shifts: dict[int, TrafficShift] = field(default_factory=dict)
    daemons: dict[str, Daemon] = field(default_factory=dict)
    vault: dict[int, tuple[str, str, datetime]] = field(default_factory=dict)
    audit: list[AuditEvent] = field(default_factory=list)
    api_tokens: dict[str, ApiToken] = field(default_factory=dict)
    github: dict[tuple[str, int], GitHubDeployment] = field(default_factory=dict)
    locks: dict[int, Lock] = field(default_factory=dict)
    claims: dict[int, WorkflowClaim] = field(default_factory=dict)
    routes: dict[tuple[str, str], RouteEntry] = field(default_factory=dict)  # (dc, key)
    route_leases: dict[str, RouteLease] = field(default_factory=dict)
    outbox: dict[int, _OutboxRow] = field(default_factory=dict)

    def next_id(self, table: str) -> int:
        self.ids[table] = self.ids.get(table, 0) + 1
        return self.ids[table]


class MemoryStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._t = _Tables()
        self._in_unit = False

    def _now(self) -> datetime:
        return self._clock.now()

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[MemoryStore]:
        if self._in_unit:
            yield self
            return
        # restoring the state it began with also undoes what other tasks wrote meanwhile:
        # unlike a database, so tests that roll back run one command at a time
        saved = copy.deepcopy(self._t)
        self._in_unit = True
        try:
            yield self
        except BaseException:
            self._t = saved  # nothing of it was written
            raise
        finally:
            self._in_unit = False

    async def close(self) -> None:
        return None

    # -- manifests, units, blueprints ---------------------------------------------------------

    async def register_manifest(
        self, repository: str, text: str, units: Sequence[UnitRecord], actor: str
    ) -> ManifestRecord:
        revisions = [m for m in self._t.manifests if m.repository == repository]
        latest = revisions[-1] if revisions else None
        if latest is not None and latest.digest == _digest(text):
            return latest
        taken = [
            f"{u.name} (declared by {owner.repository})"
            for u in units
            if (owner := self._t.units.get(u.name)) and owner.repository != repository
        ]
        if taken:
            raise Conflict(
                f"unit names already belong to another repository: {', '.join(taken)}; "
                "a unit is declared by one repository only"
            )
        revision = (latest.revision if latest else 0) + 1
        record = ManifestRecord(
            self._t.next_id("manifests"),
            repository,
            revision,
            text,
            _digest(text),
            actor,
            self._now(),
        )
        self._t.manifests.append(record)
        for name in [n for n, u in self._t.units.items() if u.repository == repository]:
            del self._t.units[name]
        for u in units:
            self._t.units[u.name] = UnitRecord(u.name, repository, u.kind, u.description, revision)
        return record

    async def latest_manifest(self, repository: str) -> ManifestRecord | None:
        revisions = [m for m in self._t.manifests if m.repository == repository]
        return revisions[-1] if revisions else None

    async def manifest_by_id(self, manifest_id: int) -> ManifestRecord | None:
        return next((m for m in self._t.manifests if m.id == manifest_id), None)

    async def manifests(self) -> list[ManifestRecord]:
        newest = {m.repository: m for m in self._t.manifests}
        return [newest[r] for r in sorted(newest)]

    async def unit(self, name: str) -> UnitRecord | None:
        return self._t.units.get(name)

    async def units(self) -> list[UnitRecord]:
        return [self._t.units[n] for n in sorted(self._t.units)]

    async def register_blueprint(
        self, name: str, kind: str, text: str, actor: str
    ) -> BlueprintRecord:
        latest = await self.blueprint(name)
        if latest is not None and latest.digest == _digest(text) and latest.kind == kind:
            return latest
        revision = (latest.revision if latest else 0) + 1
        record = BlueprintRecord(
            self._t.next_id("blueprints"),
            name,
            kind,
            revision,
            text,
            _digest(text),
            actor,
            self._now(),
        )
        self._t.blueprints.append(record)
        return record

    async def blueprint(self, name: str, revision: int | None = None) -> BlueprintRecord | None:
        found = [
            b
            for b in self._t.blueprints
            if b.name == name and (revision is None or b.revision == revision)
        ]
        return found[-1] if found else None

    async def blueprints(self) -> list[BlueprintRecord]:
        newest = {b.name: b for b in self._t.blueprints}
        return [newest[n] for n in sorted(newest)]

    # -- releases and stacks ------------------------------------------------------------------

    async def release(self, unit: str, version: Version) -> Release | None:
        return next(
            (r for r in self._t.releases.values() if r.unit == unit and r.version == version),
            None,
        )

    async def releases(self, unit: str) -> list[Release]:
        found = [r for r in self._t.releases.values() if r.unit == unit]
        return sorted(found, key=lambda r: r.version, reverse=True)

    async def release_revisions(self, units: Sequence[str]) -> dict[tuple[str, Version], int]:
        wanted = set(units)
        return {
            (r.unit, r.version): r.manifest_id
            for r in self._t.releases.values()
            if r.unit in wanted
        }

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
        clash = f"{unit} {version} was released at the same moment by someone else"
        if release is None and await self.release(unit, version) is not None:
            raise Conflict(clash)
        names = {s.name for s in self._t.stacks.values()} | {
            s.guid for s in self._t.stacks.values()
        }
        new_names = [s.name for s in stacks] + [s.guid for s in stacks]
        if names & set(new_names) or len(set(new_names)) != len(new_names):
            raise Conflict(clash)  # what the database's uniqueness rules say
        now = self._now()
        if release is None:
            release = Release(
                self._t.next_id("releases"), unit, version, image, None, manifest_id, actor, now
            )
            self._t.releases[release.id] = release = _norm(release)
        created = []
        for new in stacks:
            stack = Stack(
                id=self._t.next_id("stacks"),
                guid=new.guid,
                name=new.name,
                release_id=release.id,
                unit=new.unit,
                version=new.version,
                datacenter=new.datacenter,
                namespace=new.namespace,
                plan=new.plan,
                status=StackStatus.PENDING,
                status_message="waiting for a workflow slot",
                created_by=new.created_by,
                created_at=now,
                updated_at=now,
                expires_at=new.expires_at,
            )
            self._t.stacks[stack.id] = _norm(stack)
            self._t.history.append(
                _norm(
                    StatusChange(
                        stack.id,
                        StackStatus.PENDING,
                        f"deploy of {unit} {version} requested",
                        actor,
                        now,
                    )
                )
            )
            created.append(self._t.stacks[stack.id])
        return release, created

    async def set_release_digest(self, release_id: int, digest: str) -> None:
        release = self._t.releases.get(release_id)
        if release is None:
            return
        if release.digest and release.digest != digest:
            raise Conflict(
                f"release {release_id} is pinned to {release.digest}; it cannot change to {digest}"
            )
        self._t.releases[release_id] = _norm(replace(release, digest=digest))

    async def stack(self, ref: str) -> Stack | None:
        ref = ref.strip()
        if not ref:
            return None
        for stack in self._t.stacks.values():
            if ref in (stack.name, stack.guid):
                return stack
        if len(ref) >= GUID_PREFIX_MIN and ref.isalnum():
            found = [s for s in self._t.stacks.values() if s.guid.startswith(ref)]
            return found[0] if len(found) == 1 else None
        return None

    async def stack_by_id(self, stack_id: int) -> Stack | None:
        return self._t.stacks.get(stack_id)

    async def stacks_by_ids(self, stack_ids: Sequence[int]) -> list[Stack]:
        return [self._t.stacks[i] for i in sorted(set(stack_ids)) if i in self._t.stacks]

    async def list_stacks(self, query: StackQuery) -> StackPage:
        found = [
            s
            for s in sorted(self._t.stacks.values(), key=lambda s: s.id, reverse=True)
            if (query.namespace is None or s.namespace == query.namespace)
            and (query.datacenter is None or s.datacenter == query.datacenter)
            and (query.unit is None or s.unit == query.unit)
            and (not query.statuses or s.status in query.statuses)
        ]
        page = found[query.offset : query.offset + query.limit]
        return StackPage(stacks=tuple(page), total=len(found), query=query)

    async def live_units(
        self, namespace: str, datacenter: str | None = None, newest: int = 3
    ) -> dict[str, LiveUnit]:
        per_unit: dict[str, dict[Version, int]] = {}
        for s in self._t.stacks.values():
            if s.namespace != namespace or s.status not in LIVE_STATUSES:
                continue
            if datacenter is not None and s.datacenter != datacenter:
                continue
            versions = per_unit.setdefault(s.unit, {})
            versions[s.version] = versions.get(s.version, 0) + 1
        return {
            unit: LiveUnit(
                sum(versions.values()),
                len(versions),
                tuple(sorted(versions, reverse=True)[:newest]),
            )
            for unit, versions in sorted(per_unit.items())
        }

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
        names = sorted(self._t.units)
        before = offset if after is None else sum(1 for n in names if n <= after)
        page = names[before : before + limit]
        live = await self.live_units(namespace, datacenter, min(newest, 8))
        return UnitPage(
            units=tuple((self._t.units[n], live.get(n)) for n in page),
            total=len(names),
            before=min(before, len(names)),
        )

    async def release_stacks(self, unit: str, version: Version) -> list[Stack]:
        return [s for s in self._by_id() if s.unit == unit and s.version == version]

    async def live_stacks(
        self, unit: str, version: Version, datacenter: str, namespace: str
    ) -> list[Stack]:
        return [
            s
            for s in self._by_id()
            if (s.unit, s.version, s.datacenter, s.namespace)
            == (unit, version, datacenter, namespace)
            and s.status in LIVE_STATUSES
        ]

    def _by_id(self) -> list[Stack]:
        return [self._t.stacks[i] for i in sorted(self._t.stacks)]

    async def change_status(
        self,
        stack_id: int,
        status: StackStatus,
        message: str,
        actor: str,
        at: datetime | None = None,
    ) -> Stack:
        at = at or self._now()
        current = self._t.stacks.get(stack_id)
        if current is None:
            raise StoreError(f"there is no stack with id {stack_id}")
        check_transition(current.status, status)
        changed = replace(
            current, status=status, status_message=message, updated_at=at, announced_at=None
        )
        self._t.stacks[stack_id] = _norm(changed)
        self._t.history.append(_norm(StatusChange(stack_id, status, message, actor, at)))
        return self._t.stacks[stack_id]

    def _update(self, stack_id: int, **values: Any) -> None:
        if stack_id in self._t.stacks:
            self._t.stacks[stack_id] = _norm(replace(self._t.stacks[stack_id], **values))

    async def set_workflow_step(self, stack_id: int, step: str | None) -> None:
        self._update(stack_id, workflow_step=step, updated_at=self._now())

    async def set_expiry(self, stack_id: int, expires_at: datetime | None) -> None:
        self._update(stack_id, expires_at=expires_at)

    async def status_history(self, stack_id: int) -> list[StatusChange]:
        return [c for c in self._t.history if c.stack_id == stack_id]

    async def append_log(
        self, stack_id: int, message: str, step: str | None = None, at: datetime | None = None
    ) -> None:
        self._exists(stack_id)
        self._t.logs.append(_norm(LogLine(stack_id, at or self._now(), message, step)))

    async def logs(self, stack_id: int, limit: int = 200) -> list[LogLine]:
        lines = [line for line in self._t.logs if line.stack_id == stack_id]
        return lines[-limit:] if limit > 0 else []

    def _exists(self, *stack_ids: int) -> None:
        missing = [i for i in stack_ids if i not in self._t.stacks]
        if missing:
            raise StoreError(f"there is no stack with id {missing[0]}")

    async def add_dependency(self, stack_id: int, depends_on_stack_id: int) -> None:
        if stack_id == depends_on_stack_id:
            raise StoreError("a stack cannot depend on itself")
        if stack_id not in self._t.stacks or depends_on_stack_id not in self._t.stacks:
            raise StoreError(
                f"cannot record that stack {stack_id} depends on stack {depends_on_stack_id}: "
                "one of them does not exist"
            )
        self._t.edges.add((stack_id, depends_on_stack_id))

    async def dependencies(self, stack_id: int) -> list[Stack]:
        return [
            self._t.stacks[b] for a, b in sorted(self._t.edges, key=lambda e: e[1]) if a == stack_id
        ]

    async def dependents(self, stack_id: int) -> list[Stack]:
        return [self._t.stacks[a] for a, b in sorted(self._t.edges) if b == stack_id]

    # -- approvals and audit ------------------------------------------------------------------

    def _approval(self, approval: Approval) -> Approval:
        approvers = tuple(
            v.user_id
            for v in self._t.votes
            if v.approval_id == approval.id and v.decision is Decision.APPROVE
        )
        return replace(approval, approvers=approvers)

    async def approvals(
        self, status: ApprovalStatus | None = ApprovalStatus.PENDING
    ) -> list[Approval]:
        return [
            self._approval(a)
            for _, a in sorted(self._t.approvals.items())
            if status is None or a.status == status
        ]

    async def approval(self, approval_id: int) -> Approval | None:
        found = self._t.approvals.get(approval_id)
        return self._approval(found) if found else None

    async def approvals_of_stacks(
        self, kind: ApprovalKind, stack_ids: Sequence[int]
    ) -> list[Approval]:
        wanted = set(stack_ids)
        return [
            self._approval(a)
            for _, a in sorted(self._t.approvals.items())
            if a.kind == kind and a.stack_id in wanted
        ]

    async def create_approval(self, new: NewApproval, at: datetime | None = None) -> Approval:
        if new.stack_id is not None:
            self._exists(new.stack_id)
        approval = Approval(
            id=self._t.next_id("approvals"),
            kind=ApprovalKind(new.kind),
            stack_id=new.stack_id,
            namespace=new.namespace,
            datacenter=new.datacenter,
            summary=new.summary,
            requested_by=new.requested_by,
            status=ApprovalStatus.PENDING,
            required=new.required,
            approvers=(),
            created_at=at or self._now(),
            deadline=new.deadline,
            details=tuple("\n".join(new.details).splitlines()),
        )
        self._t.approvals[approval.id] = _norm(approval)
        return self._t.approvals[approval.id]

    async def vote(self, approval_id: int, user_id: str, decision: Decision, at: datetime) -> bool:
        if any(v.approval_id == approval_id and v.user_id == user_id for v in self._t.votes):
            return False
        if approval_id not in self._t.approvals:
            return False  # the database refuses a vote on nothing the same way
        self._t.votes.append(_Vote(approval_id, user_id, Decision(decision), _utc(at)))
        return True

    async def decide_approval(
        self,
        approval_id: int,
        status: ApprovalStatus,
        decided_by: str,
        at: datetime,
        reason: str = "",
    ) -> Approval | None:
        current = self._t.approvals.get(approval_id)
        if current is None or current.status is not ApprovalStatus.PENDING:
            return None
        decided = replace(
            current,
            status=ApprovalStatus(status),
            decided_by=decided_by,
            decided_at=at,
            reason=reason,
        )
        self._t.approvals[approval_id] = _norm(decided)
        return self._approval(self._t.approvals[approval_id])

    async def approved_not_acted_on(self, kind: ApprovalKind) -> list[Approval]:
        return [
            self._approval(a)
            for _, a in sorted(self._t.approvals.items())
            if a.kind == kind and a.status is ApprovalStatus.APPROVED and a.acted_at is None
        ]

    async def mark_acted_on(self, approval_id: int, at: datetime) -> bool:
        current = self._t.approvals.get(approval_id)
        if current is None or current.acted_at is not None:
            return False
        self._t.approvals[approval_id] = _norm(replace(current, acted_at=at))
        return True

    async def overdue_approvals(self, now: datetime) -> list[Approval]:
        return [
            a
            for a in await self.approvals(ApprovalStatus.PENDING)
            if a.deadline is not None and a.deadline <= now
        ]

    async def audit(self, event: AuditEvent) -> None:
        await self.audit_many([event])

    async def audit_many(self, events: Sequence[AuditEvent]) -> None:
        for e in events:
            self._t.audit.append(
                _norm(replace(e, at=e.at or self._now(), id=self._t.next_id("audit_events")))
            )

    async def audit_events(self, target: str | None = None, limit: int = 100) -> list[AuditEvent]:
        found = [e for e in reversed(self._t.audit) if target is None or e.target == target]
        return found[:limit]

    # -- operations, messages, deliveries -----------------------------------------------------

    async def create_operation(
        self,
        kind: str,
        title: str,
        requested_by: str,
        channel: str | None,
        stack_ids: Sequence[int],
        at: datetime | None = None,
    ) -> Operation:
        self._exists(*stack_ids)
        operation = Operation(
            id=self._t.next_id("operations"),
            kind=kind,
            title=title,
            requested_by=requested_by,
            channel=channel,
            stack_ids=tuple(stack_ids),
            created_at=at or self._now(),
        )
        self._t.operations[operation.id] = _norm(
            replace(operation, stack_ids=tuple(sorted(stack_ids)))
        )
        return operation

    async def operation(self, operation_id: int) -> Operation | None:
        return self._t.operations.get(operation_id)

    async def operations_for_stack(self, stack_id: int) -> list[Operation]:
        return [o for _, o in sorted(self._t.operations.items()) if stack_id in o.stack_ids]

    async def recent_operations(self, requested_by: str, limit: int = 10) -> list[Operation]:
        found = [
            o
            for _, o in sorted(self._t.operations.items(), reverse=True)
            if o.requested_by == requested_by
        ]
        return found[:limit]

    async def finish_operation(self, operation_id: int, outcome: str, at: datetime) -> bool:
        current = self._t.operations.get(operation_id)
        if current is None or current.finished_at is not None:
            return False
        self._t.operations[operation_id] = _norm(replace(current, finished_at=at, outcome=outcome))
        return True

    async def remember_message(self, subject: str, channel: str, ts: str) -> None:
        if any(m.subject == subject and m.channel == channel for m in self._t.messages):
            raise Conflict(f"{subject} already has a message in {channel}")
        self._t.messages.append(PostedMessage(subject, channel, ts))

    async def messages_for(self, subject: str) -> list[PostedMessage]:
        return [m for m in self._t.messages if m.subject == subject]

    async def claim_delivery(self, key: str, at: datetime) -> bool:
        key = key[:200]
        if key in self._t.deliveries:
            return False
        self._t.deliveries[key] = _utc(at)
        return True

    async def forget_deliveries(self, before: datetime) -> int:
        gone = [k for k, seen in self._t.deliveries.items() if seen < before]
        for key in gone:
            del self._t.deliveries[key]
        return len(gone)

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def cleanup_writers(self) -> int:
        return 1  # every write holds the event loop until it is done

    async def lifecycle_batches(
        self, size: int = 2000, collected: AbstractSet[int] = frozenset()
    ) -> AsyncIterator[tuple[list[tuple[str, StackView]], dict[int, int]]]:
        judged = sorted(
            (s for s in self._t.stacks.values() if s.status in JUDGED),
            key=lambda s: (s.unit, s.namespace, s.datacenter, s.id),
        )
        groups: dict[tuple[str, str, str], list[Stack]] = {}
        for s in judged:  # in order, so each group's stacks are in id order
            groups.setdefault((s.unit, s.namespace, s.datacenter), []).append(s)
        batch: list[Stack] = []
        for group in groups.values():
            if batch and len(batch) + len(group) > size:
                yield self._judged(batch, collected)
                batch = []
            batch.extend(group)
        if batch:
            yield self._judged(batch, collected)

    def _judged(
        self, batch: list[Stack], collected: AbstractSet[int]
    ) -> tuple[list[tuple[str, StackView]], dict[int, int]]:
        views = [
            (
                s.name,
                StackView(
                    id=s.id,
                    unit=s.unit,
                    version=s.version,
                    namespace=s.namespace,
                    datacenter=s.datacenter,
                    status=s.status,
                    created_at=s.created_at,
                    expires_at=s.expires_at,
                    plan=s.plan,
                ),
            )
            for s in batch
        ]
        ids = {s.id for s in batch}
        counts: dict[int, int] = {}
        for by, depended in self._t.edges:
            if depended not in ids:
                continue
            status = self._t.stacks[by].status
            if status in LIVE_STATUSES or (status is StackStatus.GARBAGE and by in collected):
                counts[depended] = counts.get(depended, 0) + 1
        return views, counts

    async def garbage_due(self, since_before: datetime, announced_before: datetime) -> list[Stack]:
        return [
            s
            for s in self._by_id()
            if s.status is StackStatus.GARBAGE
            and s.updated_at <= since_before
            and s.announced_at is not None
            and s.announced_at <= announced_before
        ]

    async def extend_expiries(self, expiries: Mapping[int, datetime]) -> None:
        for stack_id, until in expiries.items():
            self._update(stack_id, expires_at=until)

    async def mark_garbage(
        self, reasons: Mapping[int, str], at: datetime, actor: str = "nelson"
    ) -> list[int]:
        changed = []
        for stack_id, reason in reasons.items():
            stack = self._t.stacks.get(stack_id)
            if stack is None or stack.status not in JUDGED:
                continue
            self._t.stacks[stack_id] = _norm(
                replace(
                    stack,
                    status=StackStatus.GARBAGE,
                    status_message="expired; `inspect` shows why",
                    updated_at=at,
                    announced_at=None,
                )
            )
            self._t.history.append(
                _norm(StatusChange(stack_id, StackStatus.GARBAGE, reason, actor, at))
            )
            self._t.audit.append(
                _norm(
                    AuditEvent(
                        actor,
                        "garbage",
                        stack.name,
                        True,
                        reason,
                        at,
                        self._t.next_id("audit_events"),
                    )
                )
            )
            changed.append(stack_id)
        return changed

    async def pending_removals(self) -> list[PendingRemoval]:
        garbage = sorted(
            (s for s in self._t.stacks.values() if s.status is StackStatus.GARBAGE),
            key=lambda s: (s.unit, s.id),
        )
        return [
            PendingRemoval(s, (await self.status_history(s.id))[-1].message, s.updated_at)
            for s in garbage
        ]

    async def mark_announced(self, stack_ids: Sequence[int], at: datetime) -> int:
        count = 0
        for stack_id in set(stack_ids):
            stack = self._t.stacks.get(stack_id)
            if stack and stack.status is StackStatus.GARBAGE and stack.announced_at is None:
                self._t.stacks[stack_id] = _norm(replace(stack, announced_at=at))
                count += 1
        return count

    async def acquire_lease(self, name: str, holder: str, until: datetime, now: datetime) -> bool:
        current = self._t.leases.get(name)
        if current is not None and current[0] != holder and not current[1] < now:
            return False
        self._t.leases[name] = (holder, _utc(until))
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        current = self._t.leases.get(name)
        if current is not None and current[0] == holder:
            del self._t.leases[name]

    # -- traffic shifts and daemons -----------------------------------------------------------

    async def create_shift(
        self,
        from_stack_id: int,
        to_stack_id: int,
        policy: ShiftPolicy,
        duration_seconds: int,
        state: ShiftState,
        at: datetime,
        route: str | None = None,
    ) -> TrafficShift:
        shift, _ = await self.open_shift(
            route, from_stack_id, to_stack_id, policy, duration_seconds, state, at
        )
        return shift

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
        self._exists(from_stack_id, to_stack_id)
        superseded = []
        if route is not None:
            for shift_id, shift in sorted(self._t.shifts.items()):
                if shift.route == route and shift.state in OPEN_SHIFT_STATES:
                    gone = replace(shift, state=ShiftState.SUPERSEDED, updated_at=at)
                    self._t.shifts[shift_id] = _norm(gone)
                    superseded.append(self._t.shifts[shift_id])
        running = at if state is ShiftState.RUNNING else None
        shift = TrafficShift(
            id=self._t.next_id("traffic_shifts"),
            from_stack_id=from_stack_id,
            to_stack_id=to_stack_id,
            policy=policy,
            duration_seconds=duration_seconds,
            direction=Direction.FORWARD,
            state=state,
            started_at=running,
            paused_since=None,
            paused_seconds=0,
            start_new_weight=start_new_weight,
            current_new_weight=start_new_weight,
            updated_at=at,
            route=route,
            last_step_at=running,
            delayed_seconds=0.0,
        )
        self._t.shifts[shift.id] = _norm(shift)
        return self._t.shifts[shift.id], superseded

    async def shift(self, shift_id: int) -> TrafficShift | None:
        return self._t.shifts.get(shift_id)

    async def shifts(
        self, states: Sequence[ShiftState] = (), stack_id: int | None = None
    ) -> list[TrafficShift]:
        return [
            s
            for _, s in sorted(self._t.shifts.items())
            if (not states or s.state in states)
            and (stack_id is None or stack_id in (s.to_stack_id, s.from_stack_id))
        ]

    async def update_shift(
        self, shift_id: int, expected_state: ShiftState | None = None, **values: Any
    ) -> TrafficShift | None:
        current = self._t.shifts.get(shift_id)
        if current is None or (expected_state is not None and current.state != expected_state):
            return None
        values.setdefault("updated_at", self._now())
        # what the database would read back: a word outside the vocabulary fails here too
        for name, vocabulary in (
            ("state", ShiftState),
            ("direction", Direction),
            ("policy", ShiftPolicy),
        ):
            if name in values:
                values[name] = vocabulary(values[name])
        changed = replace(current, **values)
        self._t.shifts[shift_id] = _norm(changed)
        return self._t.shifts[shift_id]

    async def heartbeat(self, holder: str, kind: str, at: datetime) -> None:
        current = self._t.daemons.get(holder)
        if current is None:
            for silent in [d for d in self._t.daemons.values() if d.seen_at < at - FORGOTTEN_AFTER]:
                del self._t.daemons[silent.holder]
        self._t.daemons[holder] = _norm(
            replace(current, seen_at=at) if current else Daemon(holder, kind, at, at)
        )

    async def daemons(self, seen_since: datetime) -> list[Daemon]:
        alive = [d for d in self._t.daemons.values() if d.seen_at >= seen_since]
        return sorted(alive, key=lambda d: d.started_at)

    async def forget_daemon(self, holder: str) -> None:
        self._t.daemons.pop(holder, None)

    # -- Vault tokens -------------------------------------------------------------------------

    async def record_vault_token(
        self, stack_id: int, policy: str, accessor: str, at: datetime
    ) -> str | None:
        self._exists(stack_id)
        before = self._t.vault.get(stack_id)
        self._t.vault[stack_id] = (policy, accessor, _utc(at))
        return None if before is None or before[1] == accessor else before[1]

    async def vault_tokens(self, stack_id: int | None = None) -> list[VaultTokenRecord]:
        return [
            VaultTokenRecord(
                i, stack.name, stack.datacenter, stack.status, policy, accessor, issued_at
            )
            for i, (policy, accessor, issued_at) in sorted(self._t.vault.items())
            if (stack_id is None or i == stack_id) and (stack := self._t.stacks.get(i))
        ]

    async def forget_vault_token(self, stack_id: int, accessor: str) -> None:
        current = self._t.vault.get(stack_id)
        if current is not None and current[1] == accessor:
            del self._t.vault[stack_id]

    # CI: API tokens and GitHub deployments
    async def create_api_token(self, token: ApiToken) -> None:
        taken = token.name in self._t.api_tokens or any(
            t.digest == token.digest for t in self._t.api_tokens.values()
        )
        if taken:
            raise Conflict(f"there is already a token named '{token.name}'")
        self._t.api_tokens[token.name] = token

    async def api_tokens(self) -> list[ApiToken]:
        return [self._t.api_tokens[name] for name in sorted(self._t.api_tokens)]

    async def api_token_by_digest(self, digest: str) -> ApiToken | None:
        return next((t for t in self._t.api_tokens.values() if t.digest == digest), None)

    async def revoke_api_token(self, name: str) -> bool:
        return self._t.api_tokens.pop(name, None) is not None

    async def record_github_deployment(self, deployment: GitHubDeployment) -> None:
        key = (deployment.repository, deployment.deployment_id)
        if key in self._t.github:
            raise Conflict(
                f"GitHub deployment {deployment.deployment_id} of {deployment.repository} "
                "is already recorded"
            )
        self._t.github[key] = deployment

    async def unreported_github_deployments(self) -> list[GitHubDeployment]:
        found = [d for d in self._t.github.values() if d.reported is None]
        return sorted(found, key=lambda d: (d.created_at, d.repository, d.deployment_id))

    async def github_deployment_reported(
        self, repository: str, deployment_id: int, state: str
    ) -> None:
        key = (repository, deployment_id)
        if key in self._t.github:
            self._t.github[key] = replace(self._t.github[key], reported=state)

    # locks and freezes
    async def add_lock(self, new: NewLock) -> Lock:
        lock_id = self._t.next_id("locks")
        lock = Lock(
            id=lock_id,
            kind=ApprovalKind(new.kind),
            unit=new.unit,
            namespace=new.namespace,
            datacenter=new.datacenter,
            reason=new.reason,
            created_by=new.created_by,
            created_at=new.created_at,
            until=new.until,
        )
        self._t.locks[lock_id] = lock
        return lock

    async def locks(self) -> list[Lock]:
        return [self._t.locks[i] for i in sorted(self._t.locks)]

    async def remove_locks(self, lock_ids: Sequence[int]) -> list[Lock]:
        return [self._t.locks.pop(i) for i in dict.fromkeys(lock_ids) if i in self._t.locks]

    # workflow claims: each method runs without awaiting, so it is atomic among tasks
    async def claim_workflow(
        self, stack_id: int, holder: str, ttl: timedelta
    ) -> WorkflowClaim | None:
        if stack_id not in self._t.stacks:
            return None
        now = self._now()
        current = self._t.claims.get(stack_id)
        if current is not None and current.expires_at > now and current.holder != holder:
            return None
        if current is not None and current.expires_at > now:
            token = current.token  # still ours: kept
        else:
            token = current.token + 1 if current is not None else 1
        claim = WorkflowClaim(stack_id, holder, token, _utc(now + ttl))
        self._t.claims[stack_id] = claim
        return claim

    async def renew_workflow_claims(
        self, holder: str, tokens: Mapping[int, int], ttl: timedelta
    ) -> set[int]:
        now = self._now()
        until = _utc(now + ttl)
        renewed = set()
        for stack_id, token in tokens.items():
            current = self._t.claims.get(stack_id)
            if (
                current is not None
                and (current.holder, current.token) == (holder, token)
                and current.expires_at > now
            ):
                self._t.claims[stack_id] = replace(current, expires_at=until)
                renewed.add(stack_id)
        return renewed

    async def check_workflow_claim(self, stack_id: int, holder: str, token: int) -> None:
        current = self._t.claims.get(stack_id)
        if (
            current is None
            or (current.holder, current.token) != (holder, token)
            or not current.expires_at > self._now()
        ):
            raise ClaimLost(
                f"the claim on stack {stack_id} (token {token}) is no longer held by {holder}"
            )

    async def release_workflow_claim(self, stack_id: int, holder: str, token: int) -> None:
        current = self._t.claims.get(stack_id)
        if current is not None and (current.holder, current.token) == (holder, token):
            self._t.claims[stack_id] = replace(current, expires_at=_utc(self._now()))

    async def unclaimed_workflows(
        self,
        statuses: Sequence[StackStatus],
        datacenters: Sequence[str],
        limit: int = 1000,
        *,
        steps: Sequence[str] = (),
    ) -> list[int]:
        now = self._now()
        found = [
            s.id
            for s in self._by_id()
            if (s.status in statuses or s.workflow_step in steps)
            and s.datacenter in datacenters
            and ((c := self._t.claims.get(s.id)) is None or not c.expires_at > now)
        ]
        return found[:limit]

    async def workflow_claims(self, unexpired_at: datetime | None = None) -> list[WorkflowClaim]:
        claims = [self._t.claims[i] for i in sorted(self._t.claims)]
        return [c for c in claims if unexpired_at is None or c.expires_at > unexpired_at]

    # routes: each method runs without awaiting, so it is atomic among tasks
    async def route_entry(self, datacenter: str, key: str) -> RouteEntry | None:
        return self._t.routes.get((datacenter, key))

    async def route_entries(self, datacenter: str) -> list[RouteEntry]:
        return [e for (dc, _), e in sorted(self._t.routes.items()) if dc == datacenter]

    async def create_route(self, datacenter: str, key: str, port: int) -> RouteEntry | None:
        existing = self._t.routes.get((datacenter, key))
        if existing is not None:
            return existing
        if any(dc == datacenter and e.port == port for (dc, _), e in self._t.routes.items()):
            return None
        entry = RouteEntry(datacenter, key, port, ())
        self._t.routes[(datacenter, key)] = entry
        return entry

    async def write_route(
        self,
        datacenter: str,
        key: str,
        servers: Sequence[RouteServer],
        fence: WeightFence | None = None,
    ) -> None:
        moved: TrafficShift | None = None
        if fence is not None:
            moved = self._fenced(fence)
        if servers:
            entry = self._t.routes.get((datacenter, key))
            if entry is None:
                raise LeaseLost(f"there is no route {key} in {datacenter}")
            stacks = {s.stack for s in servers}
            kept = [s for s in entry.servers if s.stack not in stacks]
            self._t.routes[(datacenter, key)] = replace(
                entry, servers=tuple(sorted([*kept, *servers], key=lambda s: s.name))
            )
        if moved is not None:
            self._t.shifts[moved.id] = moved

    def _fenced(self, fence: WeightFence) -> TrafficShift | None:
        lease = fence.lease
        current = self._t.route_leases.get(lease.route)
        if (
            current is None
            or (current.holder, current.token) != (lease.holder, lease.token)
            or not current.expires_at > self._now()
        ):
            raise LeaseLost(
                f"the lease on route {lease.route} (token {lease.token}) is no longer held "
                f"by {lease.holder}"
            )
        if fence.shift_id is None or fence.new_weight is None:
            return None
        direction = Direction(fence.direction or Direction.FORWARD)
        shift = self._t.shifts.get(fence.shift_id)
        if (
            shift is None
            or shift.state is not ShiftState.RUNNING
            or shift.direction is not direction
            or (
                shift.current_new_weight > fence.new_weight
                if direction is Direction.FORWARD
                else shift.current_new_weight < fence.new_weight
            )
        ):
            raise LeaseLost(
                f"shift #{fence.shift_id} is no longer running {direction} below "
                f"{fence.new_weight / 10:g}%"
            )
        return _norm(replace(shift, current_new_weight=fence.new_weight, updated_at=self._now()))

    async def remove_route_stack(self, datacenter: str, key: str, stack: str) -> None:
        entry = self._t.routes.get((datacenter, key))
        if entry is not None:
            kept = tuple(s for s in entry.servers if s.stack != stack)
            self._t.routes[(datacenter, key)] = replace(entry, servers=kept)

    async def take_route_lease(self, route: str, holder: str, ttl: timedelta) -> RouteLease | None:
        now = self._now()
        current = self._t.route_leases.get(route)
        if current is not None and current.expires_at > now and current.holder != holder:
            return None
        if current is not None and current.expires_at > now:
            token = current.token
        else:
            token = current.token + 1 if current is not None else 1
        lease = RouteLease(route, holder, token, _utc(now + ttl))
        self._t.route_leases[route] = lease
        return lease

    async def release_route_lease(self, route: str, holder: str, token: int) -> None:
        current = self._t.route_leases.get(route)
        if current is not None and (current.holder, current.token) == (holder, token):
            self._t.route_leases[route] = replace(current, expires_at=_utc(self._now()))

    async def route_leases(self) -> list[RouteLease]:
        return [self._t.route_leases[r] for r in sorted(self._t.route_leases)]

    # -- event outbox ----------------------------------------------------------------------------

    async def add_outbox_event(self, key: str, kind: str, payload: Mapping[str, Any]) -> int:
        event_id = self._t.next_id("outbox")
        stored = json.loads(json.dumps(dict(payload)))  # what a database would give back
        event = OutboxEvent(event_id, key[:100], kind, stored, _utc(self._now()))
        self._t.outbox[event_id] = _OutboxRow(event)
        return event_id

    async def claim_outbox_events(
        self, holder: str, ttl: timedelta, limit: int = 50
    ) -> list[OutboxEvent]:
        now = self._now()
        pending = [r for _, r in sorted(self._t.outbox.items()) if r.done_at is None]
        free = [r for r in pending if r.claimed_until is None or r.claimed_until <= now]
        chosen = {r.event.id for r in free[:limit]}
        blocked = {  # another holder still holds an event of the key
            r.event.key
            for r in pending
            if r.claimed_until is not None and r.claimed_until > now and r.holder != holder
        }
        kept: list[_OutboxRow] = []
        for row in pending:
            if row.event.key in blocked:
                continue
            if row.event.id in chosen:
                kept.append(row)
            else:
                blocked.add(row.event.key)
        claimed = []
        for row in kept:
            claimed.append(row.event)
            row.holder, row.claimed_until = holder, _utc(now + ttl)
            row.event = replace(row.event, attempts=row.event.attempts + 1)
        return claimed

    async def finish_outbox_event(self, event_id: int, holder: str) -> bool:
        row = self._t.outbox.get(event_id)
        if row is None or row.holder != holder or row.done_at is not None:
            return False
        row.done_at = _utc(self._now())
        return True

    async def retry_outbox_event(self, event_id: int, holder: str, after: timedelta) -> None:
        row = self._t.outbox.get(event_id)
        if row is None or row.holder != holder or row.done_at is not None:
            return
        row.claimed_until = _utc(self._now() + after)

    async def outbox_backlog(self) -> list[OutboxEvent]:
        return [r.event for _, r in sorted(self._t.outbox.items()) if r.done_at is None]

    async def forget_outbox_events(self, before: datetime) -> int:
        gone = [i for i, r in self._t.outbox.items() if r.event.created_at < before]
        for event_id in gone:
            del self._t.outbox[event_id]
        return len(gone)
