"""What happens while work runs, told to whoever listens (Slack threads, the Home tab, the
console). Producers (handlers, the deploy workflow, the approval desk) publish; front ends
subscribe. Delivery to listeners is in-process and best effort: a listener that fails is
logged and the others still hear the event; the durable truth is always in the Store.

The events chat must show even if this process dies (a deploy's thread, an approval's
message) are also written to the Store's outbox by the hub's `Journal`
(commands/event_outbox.py), handed out once across replicas by a dispatcher: producers write
them with the change that raised them (`record(event, uow)` inside the unit of work, then
`publish(event, recorded=True)`), or `publish` writes them in a transaction of their own."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from commands.repositories import EventOutboxRepository, OperationRepository
from domain.records import Approval, Operation, Stack
from domain.states import StackStatus

log = logging.getLogger("nelson.events")


@dataclass(frozen=True, slots=True)
class OperationStarted:
    operation: Operation
    notify_channels: tuple[str, ...] = ()  # the manifest's notification channels


@dataclass(frozen=True, slots=True)
class StackProgress:
    """One step of a stack's workflow, as a line for its thread."""

    stack_id: int
    message: str
    at: datetime
    failed: bool = False
    status: StackStatus | None = None  # the status this step brought the stack to, if any


@dataclass(frozen=True, slots=True)
class StackReady:
    """A stack passed its health checks; heard before its thread says so (traffic control
    routes to it here)."""

    stack: Stack


@dataclass(frozen=True, slots=True)
class OperationFinished:
    """Every stack of an operation is finished (ready, failed, …); told once, after the last
    stack's own progress."""

    operation: Operation  # with its outcome and finish time
    stacks: tuple[Stack, ...]


@dataclass(frozen=True, slots=True)
class ApprovalRequested:
    approval: Approval


@dataclass(frozen=True, slots=True)
class ApprovalDecided:
    approval: Approval


@dataclass(frozen=True, slots=True)
class ApprovalVoted:
    """A vote counted that did not decide: the request shows the count."""

    approval: Approval


@dataclass(frozen=True, slots=True)
class ApprovalReminder:
    """A pending request near its deadline; `approvers`: the rule's list (empty: whoever
    the access rules let approve)."""

    approval: Approval
    approvers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Removal:
    """A garbage stack in a cleanup announcement: why, and when it may be removed."""

    stack: Stack
    reason: str
    remove_at: datetime


@dataclass(frozen=True, slots=True)
class CleanupAnnounced:
    """The daily digest: per channel, what will be removed (each removal in every channel
    of its unit, and the operations channel); `removals` is everything, for channel-less
    front ends."""

    at: datetime
    digests: tuple[tuple[str, tuple[Removal, ...]], ...]
    removals: tuple[Removal, ...]


@dataclass(frozen=True, slots=True)
class CleanupDone:
    """What a cleanup removed (or could not remove yet), per channel, and who asked for it
    (`nelson` for the periodic pass, a person for "Remove now")."""

    by: str
    summaries: tuple[tuple[str, tuple[Stack, ...], tuple[tuple[Stack, str], ...]], ...]
    reaped: tuple[Stack, ...]
    failed: tuple[tuple[Stack, str], ...]


@dataclass(frozen=True, slots=True)
class EmergencyDeploy:
    """A deploy through locks and freezes, told to the operations channel and the unit's
    channels (`overridden`: what it went through, one line each)."""

    actor: str
    what: str
    reason: str
    overridden: tuple[str, ...]
    channels: tuple[str, ...]  # the manifest's notification channels
    asked_in: str | None
    at: datetime


Event = (
    OperationStarted
    | StackProgress
    | StackReady
    | OperationFinished
    | ApprovalRequested
    | ApprovalDecided
    | ApprovalVoted
    | CleanupAnnounced
    | CleanupDone
    | EmergencyDeploy
    | ApprovalReminder
)
Listener = Callable[[Event], Awaitable[None]]


class JournalStore(EventOutboxRepository, OperationRepository, Protocol):
    """What writing an event to the outbox needs of a Store or a unit of work."""


class Journal(Protocol):
    """Where the hub writes durable events (commands.event_outbox.EventJournal)."""

    def durable(self, event: Event) -> bool: ...

    async def write(self, event: Event, within: JournalStore | None = None) -> None: ...

    def written(self) -> None:
        """Something was written and committed: wake the dispatchers."""
        ...


class EventHub:
    def __init__(self, journal: Journal | None = None) -> None:
        self._listeners: list[Listener] = []
        self._journal = journal

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def record(self, event: Event, within: JournalStore) -> None:
        """Write a durable event to the outbox inside the caller's unit of work, so it lands
        with the change that raised it or not at all; `publish(event, recorded=True)` after
        the unit commits."""
        if self._journal is not None and self._journal.durable(event):
            await self._journal.write(event, within)

    async def publish(self, event: Event, *, recorded: bool = False) -> None:
        journal = self._journal
        if journal is not None and journal.durable(event):
            if not recorded:
                try:
                    await journal.write(event)
                except Exception:
                    log.exception("%s was not written to the outbox", type(event).__name__)
            journal.written()
        for listener in list(self._listeners):
            try:
                await listener(event)
            except Exception:
                log.exception("a listener failed on %s", type(event).__name__)
