"""Approval rules: who may decide, how many approvals, four-eyes, deadlines, double clicks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from commands.access import Principal
from commands.approval_desk import APPROVE, REJECT, STUCK_AFTER, ApprovalDesk
from commands.events import ApprovalDecided, ApprovalRequested, Event, EventHub
from commands.ports import Store
from commands.replies import AccessDenied, UserError
from commands.settings import AccessRule, AccessSettings, ApprovalSettings, Settings
from domain.approvals import ApprovalKind
from domain.records import AuditEvent
from tests.fakes.clock import T0, FakeClock
from tests.fakes.memory_store import MemoryStore

ALICE = Principal("U1", "alice")
BOB = Principal("U2", "bob")
CAROL = Principal("U3", "carol", frozenset({"S1", "@sre"}))
DAVE = Principal("U4", "dave")


SETTINGS = Settings(
    access=AccessSettings(
        rules=(
            AccessRule(namespace="*", view=("*",), approve=("U1", "U2", "@sre")),
            AccessRule(namespace="dev", deploy=("*",)),
        )
    ),
    approvals={
        "prod": ApprovalSettings(required=2, deadline=timedelta(hours=1)),
        "qa": ApprovalSettings(approvers=("@sre",), allow_self_approval=True),
        "dev": ApprovalSettings(needed=False),
    },
)


@pytest.fixture
async def store(clock: FakeClock) -> AsyncIterator[Store]:
    store = MemoryStore(clock)  # keeps the SQL store's contract (tests/integration/test_store.py)
    yield store
    await store.close()


@pytest.fixture
def heard() -> list[Event]:
    return []


@pytest.fixture
def desk(store: Store, heard: list[Event], clock: FakeClock) -> ApprovalDesk:
    events = EventHub()

    async def listen(event: Event) -> None:
        heard.append(event)

    events.subscribe(listen)
    return ApprovalDesk(SETTINGS, store, events, clock)


async def ask(desk: ApprovalDesk, namespace: str = "prod", by: str = "U1") -> int:
    approval = await desk.request(
        ApprovalKind.TRAFFIC_SHIFT,
        namespace=namespace,
        datacenter="dc-east",
        summary="shift howdy 1.x from 1.0.0 to 1.0.1",
        requested_by=by,
        details=("linear over 10 minutes",),
    )
    assert approval is not None
    return approval.id


async def test_namespaces_without_approval_get_no_request(desk: ApprovalDesk) -> None:
    assert (
        await desk.request(
            ApprovalKind.TRAFFIC_SHIFT,
            namespace="dev/sandbox",  # inherits dev's rule
            datacenter="dc-east",
            summary="x",
            requested_by="U1",
        )
        is None
    )


async def test_two_approvals_needed_and_a_double_click_counts_once(
    desk: ApprovalDesk, heard: list[Event], store: Store
) -> None:
    approval_id = await ask(desk)
    assert isinstance(heard[0], ApprovalRequested)
    assert heard[0].approval.deadline == T0 + timedelta(hours=1)
    first = await desk.decide(approval_id, BOB, APPROVE)
    assert first.counted and first.approval.status == "pending"
    assert "1 of 2" in first.message
    again = await desk.decide(approval_id, BOB, APPROVE)
    assert not again.counted and "already voted" in again.message
    final = await desk.decide(approval_id, CAROL, APPROVE)
    assert final.approval.status == "approved" and final.approval.approvers == ("U2", "U3")
    assert isinstance(heard[-1], ApprovalDecided)
    with pytest.raises(UserError, match="already approved by U3"):
        await desk.decide(approval_id, BOB, REJECT)
    audit = await store.audit_events(target=f"approval:{approval_id}")
    assert [(e.actor, e.action, e.allowed) for e in reversed(audit)] == [
        ("nelson", "request-approval", True),
        ("U2", "approve", True),
        ("U2", "approve", True),
        ("U3", "approve", True),
        ("U3", "approved", True),
        ("U2", "reject", True),
    ]


async def test_votes_recorded_by_a_process_that_died_before_deciding_decide_at_the_next_click(
    desk: ApprovalDesk, heard: list[Event], store: Store
) -> None:
    """The vote is stored, the request not closed (the replica died in between): the next
    click of the same person finds their vote and closes the request as the votes say."""
    approved = await ask(desk)
    assert await store.vote(approved, "U2", APPROVE, T0)
    assert await store.vote(approved, "U3", APPROVE, T0)  # enough: 2 of 2, still pending
    outcome = await desk.decide(approved, CAROL, APPROVE)
    assert outcome.counted and outcome.approval.status == "approved"
    assert outcome.approval.decided_by == "U3"
    assert isinstance(heard[-1], ApprovalDecided)

    rejected = await ask(desk)
    assert await store.vote(rejected, "U3", REJECT, T0)
    outcome = await desk.decide(rejected, CAROL, APPROVE)  # her stored vote says no
    assert outcome.counted and outcome.approval.status == "rejected"

    pending = await ask(desk)
    assert await store.vote(pending, "U2", APPROVE, T0)  # 1 of 2: nothing to close
    outcome = await desk.decide(pending, BOB, APPROVE)
    assert not outcome.counted and "already voted" in outcome.message
    assert outcome.approval.status == "pending"


async def test_the_sweep_closes_requests_their_stored_votes_approve(
    desk: ApprovalDesk, heard: list[Event], store: Store, clock: FakeClock
) -> None:
    """Nobody clicks again after the replica died: every replica's sweep closes it."""
    approved, pending = await ask(desk), await ask(desk)
    for user in ("U2", "U3"):
        assert await store.vote(approved, user, APPROVE, T0)
    assert await store.vote(pending, "U2", APPROVE, T0)
    assert await desk.close_counted() == []  # it may be being decided right now
    clock.advance(STUCK_AFTER - timedelta(seconds=1))
    assert await desk.close_counted() == []
    clock.advance(timedelta(seconds=1))
    [closed] = await desk.close_counted()  # still so after a while: nobody is at it
    assert (closed.id, closed.status, closed.decided_by) == (approved, "approved", "U3")
    assert isinstance(heard[-1], ApprovalDecided) and heard[-1].approval.id == approved
    assert await desk.close_counted() == []
    still = await store.approval(pending)
    assert still is not None and still.status == "pending"


async def test_the_requester_cannot_approve_their_own_request(
    desk: ApprovalDesk, store: Store
) -> None:
    approval_id = await ask(desk, by="U2")
    with pytest.raises(AccessDenied, match="allow_self_approval"):
        await desk.decide(approval_id, BOB, APPROVE)
    approval = await store.approval(approval_id)
    assert approval is not None and approval.approvers == () and approval.status == "pending"


async def test_people_without_the_approve_role_are_refused_and_audited(
    desk: ApprovalDesk, store: Store
) -> None:
    approval_id = await ask(desk)
    with pytest.raises(AccessDenied, match="may not approve #"):
        await desk.decide(approval_id, DAVE, APPROVE)
    with pytest.raises(AccessDenied):
        await desk.decide(approval_id, DAVE, REJECT)
    events = await store.audit_events(target=f"approval:{approval_id}")
    assert [(e.actor, e.allowed) for e in events[:2]] == [("U4", False), ("U4", False)]
    approval = await store.approval(approval_id)
    assert approval is not None and approval.status == "pending"


async def test_the_rule_can_name_the_approvers(desk: ApprovalDesk) -> None:
    approval_id = await ask(desk, namespace="qa", by="U3")
    with pytest.raises(AccessDenied, match=r"approvals.qa.approvers lists only @sre"):
        await desk.decide(approval_id, BOB, APPROVE)
    # carol is in @sre and the rule allows approving one's own request
    outcome = await desk.decide(approval_id, CAROL, APPROVE)
    assert outcome.approval.status == "approved"


async def test_one_rejection_decides(desk: ApprovalDesk) -> None:
    approval_id = await ask(desk)
    outcome = await desk.decide(approval_id, BOB, REJECT)
    assert outcome.approval.status == "rejected" and outcome.approval.decided_by == "U2"
    with pytest.raises(UserError, match="already rejected by U2"):
        await desk.decide(approval_id, CAROL, APPROVE)


async def test_deadlines(desk: ApprovalDesk, clock: FakeClock, heard: list[Event]) -> None:
    late = await ask(desk)
    swept = await ask(desk)
    clock.set(T0 + timedelta(hours=1, seconds=1))
    with pytest.raises(UserError, match="already expired"):
        await desk.decide(late, BOB, APPROVE)
    expired = await desk.expire_overdue()
    assert [a.id for a in expired] == [swept]
    assert await desk.expire_overdue() == []
    decided = [e.approval.id for e in heard if isinstance(e, ApprovalDecided)]
    assert decided == [late, swept]


async def test_unknown_approval(desk: ApprovalDesk) -> None:
    with pytest.raises(UserError, match="there is no approval #99"):
        await desk.decide(99, BOB, APPROVE)


class DecisionsUnaudited(MemoryStore):
    """Auditing a decision fails (the write after it); other audit events go through."""

    async def audit(self, event: AuditEvent) -> None:
        if event.action in ("approved", "rejected", "expired"):
            raise OSError("the disk is full")
        await super().audit(event)


async def test_a_decision_that_cannot_be_audited_is_not_taken(
    heard: list[Event], clock: FakeClock
) -> None:
    store = DecisionsUnaudited(clock)
    desk = ApprovalDesk(SETTINGS, store, EventHub(), clock)
    desk.events.subscribe(lambda event: _heard(heard, event))
    approval_id = await ask(desk)
    with pytest.raises(OSError, match="disk is full"):
        await desk.decide(approval_id, BOB, REJECT)
    approval = await store.approval(approval_id)
    assert approval is not None and approval.status == "pending"
    assert not any(isinstance(e, ApprovalDecided) for e in heard)


async def _heard(heard: list[Event], event: Event) -> None:
    heard.append(event)
