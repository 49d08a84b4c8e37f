"""Operations end here, in the application, whatever front end asked for them: the console's
deploys are finished as Slack's are."""

from __future__ import annotations

from dataclasses import replace

from commands.events import Event, EventHub, OperationFinished, StackProgress
from commands.ports import Clock, Store
from domain.states import StackStatus
from domain.steps import finished


async def settle(store: Store, events: EventHub, clock: Clock, stack_id: int) -> None:
    """Finish each open operation of this stack whose stacks are all finished, and tell it
    once (of several processes, the one whose write lands tells)."""
    async with store.unit_of_work() as uow:
        done = await finish_operations(uow, events, clock, stack_id)
    for event in done:
        await events.publish(event, recorded=True)


async def finish_operations(
    uow: Store, events: EventHub, clock: Clock, stack_id: int
) -> list[OperationFinished]:
    """Inside the caller's unit of work: finish the operations `settle` would, writing each
    `OperationFinished` to the outbox with it; the caller publishes them once committed."""
    done = []
    for operation in await uow.operations_for_stack(stack_id):
        if operation.finished_at is not None:
            continue
        stacks = await uow.stacks_by_ids(operation.stack_ids)
        if not stacks or not all(finished(s.status) for s in stacks):
            continue
        outcome = "failed" if any(s.status is StackStatus.FAILED for s in stacks) else "succeeded"
        at = clock.now()
        if await uow.finish_operation(operation.id, outcome, at):
            event = OperationFinished(
                replace(operation, finished_at=at, outcome=outcome), tuple(stacks)
            )
            await events.record(event, uow)
            done.append(event)
    return done


class OperationTracker:
    """Listens to every workflow's progress (the product's deploy workflow or an embedder's) and
    finishes the operations whose last stack just finished."""

    def __init__(self, store: Store, events: EventHub, clock: Clock) -> None:
        self.store = store
        self.events = events
        self.clock = clock

    async def on_event(self, event: Event) -> None:
        if isinstance(event, StackProgress) and (
            event.failed or (event.status is not None and finished(event.status))
        ):
            await settle(self.store, self.events, self.clock, event.stack_id)
