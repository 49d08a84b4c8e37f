"""What the front ends show without being asked a command: read here, in the application,
with its access rules, so that a front end only renders."""

from __future__ import annotations

from dataclasses import dataclass

from commands.access import Principal, Role, authorize
from commands.approval_desk import ApprovalDesk
from commands.ports import Store
from commands.settings import Settings
from domain.approvals import ApprovalStatus
from domain.records import Approval, Operation, Stack, StackQuery
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
