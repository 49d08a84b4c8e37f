"""The events that must reach chat even if the replica that raised them dies: how they are
written to the Store's outbox (`EventOutboxRepository`) and read back.

An outbox row carries ids, not records: whoever handles it reads the current truth from the
Store. Rows are keyed by the operation they belong to (`operation:<id>`), so a deploy's
thread is started, continued and closed in the order its events were written, whichever
replica handles each; an approval belongs to its stack's latest operation (its request goes
into that thread), or to itself when there is none."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from commands.events import (
    ApprovalDecided,
    ApprovalRequested,
    ApprovalVoted,
    Event,
    JournalStore,
    OperationFinished,
    OperationStarted,
    StackProgress,
)
from commands.repositories import OutboxEvent
from domain.records import Approval
from domain.states import StackStatus

STARTED, LINE, FINISHED = "operation-started", "stack-progress", "operation-finished"
ASKED, DECIDED, VOTED = "approval-requested", "approval-decided", "approval-voted"


@dataclass(frozen=True, slots=True)
class ThreadStarted:
    operation_id: int
    channels: tuple[str, ...]  # the manifest's notification channels


@dataclass(frozen=True, slots=True)
class ThreadLine:
    operation_id: int
    stack_id: int
    message: str  # empty: only the parent is refreshed
    failed: bool
    status: StackStatus | None


@dataclass(frozen=True, slots=True)
class ThreadClosed:
    operation_id: int


@dataclass(frozen=True, slots=True)
class ApprovalAsked:
    approval_id: int


@dataclass(frozen=True, slots=True)
class ApprovalChanged:
    """A vote was counted or the request decided: its messages show it as it stands."""

    approval_id: int


Notice = ThreadStarted | ThreadLine | ThreadClosed | ApprovalAsked | ApprovalChanged


def durable(event: Event) -> bool:
    return isinstance(
        event,
        OperationStarted
        | StackProgress
        | OperationFinished
        | ApprovalRequested
        | ApprovalDecided
        | ApprovalVoted,
    )


def operation_key(operation_id: int) -> str:
    return f"operation:{operation_id}"


async def record(store: JournalStore, event: Event) -> int:
    """Write the event's rows through `store` (a unit of work, to write them with the change
    that raised the event); returns how many. Events that are not durable write none."""
    rows: list[tuple[str, str, dict[str, Any]]] = []
    if isinstance(event, OperationStarted):
        payload = {"operation": event.operation.id, "channels": list(event.notify_channels)}
        rows.append((operation_key(event.operation.id), STARTED, payload))
    elif isinstance(event, StackProgress):
        for operation in await store.operations_for_stack(event.stack_id):
            payload = {
                "operation": operation.id,
                "stack": event.stack_id,
                "message": event.message,
                "failed": event.failed,
                "status": event.status.value if event.status is not None else None,
            }
            rows.append((operation_key(operation.id), LINE, payload))
    elif isinstance(event, OperationFinished):
        rows.append(
            (operation_key(event.operation.id), FINISHED, {"operation": event.operation.id})
        )
    elif isinstance(event, ApprovalRequested | ApprovalDecided | ApprovalVoted):
        kind = {ApprovalRequested: ASKED, ApprovalDecided: DECIDED, ApprovalVoted: VOTED}[
            type(event)
        ]
        key = await _approval_key(store, event.approval)
        rows.append((key, kind, {"approval": event.approval.id}))
    for key, kind, payload in rows:
        await store.add_outbox_event(key, kind, payload)
    return len(rows)


async def _approval_key(store: JournalStore, approval: Approval) -> str:
    if approval.stack_id is not None:
        operations = await store.operations_for_stack(approval.stack_id)
        if operations:
            return operation_key(max(o.id for o in operations))
    return f"approval:{approval.id}"


def decode(event: OutboxEvent) -> Notice | None:
    """The notice a row holds; None for a row this version does not know (written by a newer
    one), which is skipped."""
    p = event.payload
    try:
        if event.kind == STARTED:
            return ThreadStarted(int(p["operation"]), tuple(str(c) for c in p["channels"]))
        if event.kind == LINE:
            status = StackStatus(p["status"]) if p.get("status") else None
            return ThreadLine(
                int(p["operation"]),
                int(p["stack"]),
                str(p["message"]),
                bool(p["failed"]),
                status,
            )
        if event.kind == FINISHED:
            return ThreadClosed(int(p["operation"]))
        if event.kind == ASKED:
            return ApprovalAsked(int(p["approval"]))
        if event.kind in (DECIDED, VOTED):
            return ApprovalChanged(int(p["approval"]))
    except (KeyError, TypeError, ValueError):
        return None
    return None


class EventJournal:
    """The hub's journal (commands.events.Journal): durable events go to `store`'s outbox,
    and each committed write calls the `wake` callbacks (this process's dispatcher)."""

    def __init__(self, store: JournalStore) -> None:
        self.store = store
        self._wakes: list[Callable[[], None]] = []

    def on_written(self, wake: Callable[[], None]) -> None:
        self._wakes.append(wake)

    def durable(self, event: Event) -> bool:
        return durable(event)

    async def write(self, event: Event, within: JournalStore | None = None) -> None:
        await record(within if within is not None else self.store, event)

    def written(self) -> None:
        for wake in self._wakes:
            wake()
