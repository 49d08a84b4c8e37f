"""What happens while work runs, told to whoever listens (Slack threads, the Home tab, the
console). Producers (handlers, the workflow engine, the approval desk) publish; front ends
subscribe. Delivery is in-process and best effort: a listener that fails is logged and the
others still hear the event; the durable truth is always in the Store."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from domain.records import Approval, Operation
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
class ApprovalRequested:
    approval: Approval


@dataclass(frozen=True, slots=True)
class ApprovalDecided:
    approval: Approval


Event = OperationStarted | StackProgress | ApprovalRequested | ApprovalDecided
Listener = Callable[[Event], Awaitable[None]]


class EventHub:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def publish(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                await listener(event)
            except Exception:
                log.exception("a listener failed on %s", type(event).__name__)
