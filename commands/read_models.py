"""What the front ends show without being asked a command: read here, in the application,
with its access rules, so that a front end only renders.

The Home tab reads `home_view`; the chat threads that follow operations and approvals read
`operation_thread`, `shifts_towards` and `approval_threads`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from commands.access import Principal, Role, authorize
from commands.approval_desk import ApprovalDesk
from commands.ports import Store
from commands.settings import Settings
from domain.approvals import ApprovalStatus
from domain.records import Approval, Operation, PostedMessage, Stack, StackQuery, TrafficShift
from domain.states import StackStatus


@dataclass(frozen=True, slots=True)
class DatacenterStacks:
    datacenter: str
    stacks: tuple[Stack, ...]  # warming or ready, the ones this person may see
    total: int  # warming or ready there, seen or not


@dataclass(frozen=True, slots=True)
class HomeView:
    """One person's overview: what waits for their decision, what they deployed lately,
    and per datacenter what is warming or ready."""

    approvals: tuple[Approval, ...]
    operations: tuple[Operation, ...]
    datacenters: tuple[DatacenterStacks, ...]


async def home_view(
    settings: Settings,
    store: Store,
    desk: ApprovalDesk,
    who: Principal,
    *,
    operations: int = 10,
    stacks_per_datacenter: int = 10,
) -> HomeView:
    mine = [
        a for a in await store.approvals(ApprovalStatus.PENDING) if desk.refusal(a, who) is None
    ]
    recent = await store.recent_operations(who.user_id, limit=operations)
    per_datacenter = []
    for datacenter in sorted(settings.datacenters):
        page = await store.list_stacks(
            StackQuery(
                datacenter=datacenter,
                statuses=(StackStatus.WARMING, StackStatus.READY),
                limit=stacks_per_datacenter,
            )
        )
        visible = tuple(
            s
            for s in page.stacks
            if authorize(settings.access, who, Role.VIEW, s.namespace).allowed
        )
        per_datacenter.append(DatacenterStacks(datacenter, visible, page.total))
    return HomeView(tuple(mine), tuple(recent), tuple(per_datacenter))


# -- threads: one parent message per operation and channel, approvals asked in them --------


@dataclass(frozen=True, slots=True)
class OperationThread:
    """One operation as its chat messages show it: where they are, its stacks now, and the
    traffic shift towards each stack (the newest)."""

    operation: Operation
    messages: tuple[PostedMessage, ...]
    stacks: tuple[Stack, ...]
    shifts: dict[int, TrafficShift]


def operation_subject(operation_id: int) -> str:
    return f"operation:{operation_id}"


async def operation_thread(store: Store, operation: Operation) -> OperationThread:
    stacks = await store.stacks_by_ids(operation.stack_ids)
    return OperationThread(
        operation,
        tuple(await thread_messages(store, operation_subject(operation.id))),
        tuple(stacks),
        await shifts_towards(store, stacks),
    )


async def shifts_towards(store: Store, stacks: Sequence[Stack]) -> dict[int, TrafficShift]:
    """The newest traffic shift towards each of `stacks` that has one."""
    found: dict[int, TrafficShift] = {}
    for stack in stacks:
        for shift in await store.shifts(stack_id=stack.id):
            if shift.to_stack_id == stack.id:
                found[stack.id] = shift  # oldest first: the newest wins
    return found


async def operations_of_stack(store: Store, stack_id: int) -> tuple[Stack | None, list[Operation]]:
    """A stack and the operations that deployed it (whose threads tell its progress)."""
    stack = await store.stack_by_id(stack_id)
    if stack is None:
        return None, []
    return stack, await store.operations_for_stack(stack_id)


async def approval_threads(store: Store, approval: Approval) -> list[tuple[str, str]]:
    """(channel, ts) of the operation messages whose stack the approval is about: it is
    asked in their threads."""
    if approval.stack_id is None:
        return []
    return [
        (message.channel, message.ts)
        for operation in await store.operations_for_stack(approval.stack_id)
        for message in await thread_messages(store, operation_subject(operation.id))
    ]


async def thread_messages(store: Store, subject: str) -> list[PostedMessage]:
    """The chat messages that show `subject` ("operation:12", "approval:5")."""
    return await store.messages_for(subject)
