"""A decided approval is acted on even when the replica that recorded it died before acting:
every replica's traffic tick starts (approved) or cancels (rejected, expired) the shifts still
awaiting an approval already decided. Several replicas settling one shift at once start it
once and say so once.

Replicas share one store (SQLite) and one router, as in the route lease properties; each has
its own event hub, so a decision's event reaches only the replica that recorded it (and none
when it "died" first)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.storage import open_store
from commands.access import Principal
from commands.events import ApprovalDecided
from commands.ports import Store
from commands.replies import UserError
from commands.rollback import Rollbacks
from commands.settings import Settings
from domain.approvals import ApprovalKind, ApprovalStatus, Decision
from domain.records import Stack, TrafficShift
from domain.states import StackStatus
from domain.traffic import ShiftState
from tests.fakes.clock import FakeClock
from tests.integration.test_route_lease_properties import ROUTE, World

BOSS = Principal(user_id="U0BOSS", name="boss")
SETTINGS = Settings.model_validate(
    {
        "access": {"admins": ["U0BOSS"]},
        "approvals": {"dev": {"required": 1, "deadline": "1h"}},
        "traffic": {"step_interval": "5s", "lease_ttl": "15s"},
    }
)
APPROVED_LINE = "traffic: approved; shifting"
CANCELLED_LINE = "traffic stays with"


class Replicas(World):
    """The lease properties' world of replicas, with approvals needed in dev."""

    settings = SETTINGS

    def start(self, slot: int) -> None:
        super().start(slot)
        traffic = self.replicas[slot].traffic
        traffic.settings = self.settings
        traffic.desk.settings = self.settings


async def awaiting(tmp: Path, seed: int) -> tuple[Store, FakeClock, Replicas, Stack]:
    """Two replicas; a new stack whose shift awaits approval (asked by replica 0)."""
    clock = FakeClock()
    store = await open_store(f"sqlite:///{tmp / f'settle-{seed}.db'}", clock=clock)
    world = Replicas(store, clock, random.Random(seed))
    await world.begin(2)
    old = await world.stack(1)
    await world.replicas[0].traffic.on_ready(old)
    new = await world.stack(2)
    await world.replicas[0].traffic.on_ready(new)
    [shift] = await store.shifts()
    assert shift.state is ShiftState.AWAITING_APPROVAL
    return store, clock, world, new


async def approval_id(store: Store) -> int:
    [approval] = await store.approvals_of_stacks(
        ApprovalKind.TRAFFIC_SHIFT, [s.to_stack_id for s in await store.shifts()]
    )
    return approval.id


async def said(store: Store, stack: Stack, words: str) -> int:
    return sum(words in line.message for line in await store.logs(stack.id))


async def only_shift(store: Store) -> TrafficShift:
    [shift] = await store.shifts()
    return shift


async def decide_then_die(world: Replicas, slot: int, decision: Decision) -> None:
    """The replica records the decision (the event goes nowhere), then dies."""
    await world.replicas[slot].traffic.desk.decide(await approval_id(world.store), BOSS, decision)
    await world.kill(slot)


def test_an_approval_recorded_by_a_replica_that_died_starts_the_shift(tmp_path: Path) -> None:
    async def run() -> None:
        store, clock, world, new = await awaiting(tmp_path, 1)
        try:
            await decide_then_die(world, 0, Decision.APPROVE)
            assert (await only_shift(store)).state is ShiftState.AWAITING_APPROVAL
            clock.advance(5)
            await world.replicas[1].traffic.tick()
            shift = await only_shift(store)
            assert shift.state is ShiftState.RUNNING and shift.started_at == clock.now()
            assert await said(store, new, APPROVED_LINE) == 1
            for _ in range(3):  # later ticks move the weights and settle nothing again
                clock.advance(5)
                await world.replicas[1].traffic.tick()
            assert (await only_shift(store)).current_new_weight > 0
            assert await said(store, new, APPROVED_LINE) == 1
        finally:
            await store.close()

    asyncio.run(run())


def test_a_rejection_recorded_by_a_replica_that_died_cancels_the_shift(tmp_path: Path) -> None:
    async def run() -> None:
        store, clock, world, new = await awaiting(tmp_path, 2)
        try:
            await decide_then_die(world, 0, Decision.REJECT)
            clock.advance(5)
            await world.replicas[1].traffic.tick()
            assert (await only_shift(store)).state is ShiftState.CANCELLED
            assert await said(store, new, "traffic: rejected; " + CANCELLED_LINE) == 1
            await world.replicas[1].traffic.tick()
            assert await said(store, new, CANCELLED_LINE) == 1
        finally:
            await store.close()

    asyncio.run(run())


def test_a_pending_approval_settles_nothing(tmp_path: Path) -> None:
    async def run() -> None:
        store, clock, world, _ = await awaiting(tmp_path, 3)
        try:
            for _ in range(3):
                clock.advance(5)
                await world.tick_all()
            assert (await only_shift(store)).state is ShiftState.AWAITING_APPROVAL
        finally:
            await store.close()

    asyncio.run(run())


def test_replicas_settling_at_once_start_the_shift_once(tmp_path: Path) -> None:
    """The deciding replica's own handler and two sweeping replicas, interleaved."""

    async def run() -> None:
        store, clock, world, new = await awaiting(tmp_path, 4)
        try:
            world.start(2)
            outcome = await world.replicas[0].traffic.desk.decide(
                await approval_id(store), BOSS, Decision.APPROVE
            )
            clock.advance(5)
            await asyncio.gather(
                world.replicas[0].traffic.on_event(ApprovalDecided(outcome.approval)),
                world.tick_all(),
            )
            assert (await only_shift(store)).state is ShiftState.RUNNING
            assert await said(store, new, APPROVED_LINE) == 1
        finally:
            await store.close()

    asyncio.run(run())


OPERATIONS = st.one_of(
    st.tuples(st.sampled_from(["approve", "reject"]), st.integers(0, 2), st.booleans()),
    st.tuples(st.sampled_from(["tick", "kill", "start"]), st.integers(0, 2), st.just(False)),
    st.tuples(st.just("advance"), st.integers(1, 30), st.just(False)),
)


async def play(tmp: Path, seed: int, operations: list[tuple[str, int, bool]]) -> None:
    store, clock, world, new = await awaiting(tmp, seed)
    decided: ApprovalStatus | None = None
    try:
        for name, argument, delivered in operations:
            replica = world.replicas.get(argument)
            if name in ("approve", "reject") and replica is not None:
                decision = Decision.APPROVE if name == "approve" else Decision.REJECT
                try:
                    outcome = await replica.traffic.desk.decide(
                        await approval_id(store), BOSS, decision
                    )
                except UserError:  # already decided (or expired meanwhile)
                    pass
                else:
                    if delivered:  # the deciding replica lived to act on its event
                        await replica.traffic.on_event(ApprovalDecided(outcome.approval))
            elif name == "tick":
                clock.advance(5)
                await world.tick_all()
            elif name == "kill":
                await world.kill(argument)
            elif name == "start" and replica is None:
                world.start(argument)
            elif name == "advance":
                clock.advance(argument)
            approval = await store.approval(await approval_id(store))
            assert approval is not None
            decided = approval.status if approval.status is not ApprovalStatus.PENDING else None
            shift = await only_shift(store)
            # a shift leaves awaiting-approval only as its approval says, and says so once
            if shift.state is not ShiftState.AWAITING_APPROVAL:
                assert decided is not None, shift
                started = shift.state is not ShiftState.CANCELLED
                assert started == (decided is ApprovalStatus.APPROVED), (shift, decided)
            assert await said(store, new, APPROVED_LINE) <= 1
            assert await said(store, new, CANCELLED_LINE) <= 1
        # whatever happened, one live replica's tick carries out a decision taken
        if 0 not in world.replicas:
            world.start(0)
        clock.advance(5)
        await world.replicas[0].traffic.tick()
        shift = await only_shift(store)
        if decided is None:
            assert shift.state is ShiftState.AWAITING_APPROVAL
        elif decided is ApprovalStatus.APPROVED:
            assert shift.state is not ShiftState.AWAITING_APPROVAL
            assert shift.state is not ShiftState.CANCELLED
            assert await said(store, new, APPROVED_LINE) == 1
        else:
            assert shift.state is ShiftState.CANCELLED
            assert await said(store, new, CANCELLED_LINE) == 1
    finally:
        for slot in list(world.replicas):
            await world.kill(slot)
        await store.close()
        (tmp / f"settle-{seed}.db").unlink(missing_ok=True)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(100, 2**16),
    operations=st.lists(OPERATIONS, min_size=1, max_size=15),
)
def test_a_decision_is_carried_out_once_whoever_recorded_it_and_whoever_died(
    tmp_path: Path, seed: int, operations: list[tuple[str, int, bool]]
) -> None:
    asyncio.run(play(tmp_path, seed, operations))


ROLLBACK_SETTINGS = Settings.model_validate(
    {
        "access": {"admins": ["U0BOSS"]},
        "approvals": {"dev": {"required": 1, "deadline": "1h", "rollbacks": True}},
        "traffic": {"step_interval": "5s", "lease_ttl": "15s"},
    }
)
ROLLED_BACK_LINE = "Rolled back svc in local/dev"
ASKER = Principal(user_id="U0DEV", name="dev")


class RollbackReplicas(Replicas):
    """Replicas in a namespace where shifts and rollbacks need approval."""

    settings = ROLLBACK_SETTINGS


async def rollback_asked(tmp: Path, seed: int) -> tuple[Store, FakeClock, World, Stack, Stack, int]:
    """Three replicas; 1.0.2 took all traffic from 1.0.1 (approved); a rollback of it is
    asked for. Returns the store, clock, world, old and new stacks, and the approval's id."""
    clock = FakeClock()
    store = await open_store(f"sqlite:///{tmp / f'rollback-{seed}.db'}", clock=clock)
    world = RollbackReplicas(store, clock, random.Random(seed))
    await world.begin(3)
    traffic = world.replicas[0].traffic
    old = await world.stack(1)
    await traffic.on_ready(old)
    new = await world.stack(2)
    await traffic.on_ready(new)
    outcome = await traffic.desk.decide(await approval_id(store), BOSS, Decision.APPROVE)
    await traffic.on_event(ApprovalDecided(outcome.approval))
    for _ in range(30):  # the shift runs to its end (its driver then gives the lease up)
        clock.advance(5)
        await traffic.tick()
        if (await only_shift(store)).state is ShiftState.DONE:
            break
    assert (await only_shift(store)).state is ShiftState.DONE
    rollbacks = Rollbacks(traffic)
    asked = await rollbacks.request(await rollbacks.plan("svc", "dev", "local"), ASKER)
    assert asked is not None
    [approval] = await store.approvals_of_stacks(ApprovalKind.ROLLBACK, [new.id])
    return store, clock, world, old, new, approval.id


async def rolled_back(store: Store, old: Stack, new: Stack) -> bool:
    entry = await store.route_entry("local", ROUTE.key)
    assert entry is not None
    current = await store.stack_by_id(new.id)
    assert current is not None
    weights = entry.weights()
    if current.status is StackStatus.GARBAGE:
        assert weights.get(old.name) == 1000 and not weights.get(new.name), weights
        return True
    assert weights.get(new.name) == 1000, weights
    return False


async def test_a_rollback_approved_by_a_replica_that_died_is_carried_out_once(
    tmp_path: Path,
) -> None:
    store, clock, world, old, new, asked = await rollback_asked(tmp_path, 5)
    try:
        await world.replicas[0].traffic.desk.decide(asked, BOSS, Decision.APPROVE)
        await world.kill(0)  # before acting on its decision
        assert not await rolled_back(store, old, new)
        clock.advance(5)
        for slot in (1, 2):  # whoever sweeps first does it; the other finds it acted on
            await Rollbacks(world.replicas[slot].traffic).carry_out_approved()
        assert await rolled_back(store, old, new)
        assert await said(store, new, ROLLED_BACK_LINE) == 1
        approval = await store.approval(asked)
        assert approval is not None and approval.acted_at == clock.now()
        assert await store.approved_not_acted_on(ApprovalKind.ROLLBACK) == []
    finally:
        await store.close()


async def test_a_rollback_found_impossible_is_said_once_and_not_tried_again(
    tmp_path: Path,
) -> None:
    store, _, world, old, new, asked = await rollback_asked(tmp_path, 6)
    try:
        world.scheduler.deleted.add(old.name)  # the earlier stack stopped running meanwhile
        await world.replicas[0].traffic.desk.decide(asked, BOSS, Decision.APPROVE)
        await world.kill(0)
        for _ in range(3):
            await Rollbacks(world.replicas[1].traffic).carry_out_approved()
        assert not await rolled_back(store, old, new)
        assert await said(store, new, f"approved rollback #{asked} not done") == 1
    finally:
        await store.close()


async def test_only_the_replica_driving_the_route_carries_a_rollback_out(tmp_path: Path) -> None:
    store, clock, world, old, new, asked = await rollback_asked(tmp_path, 7)
    try:
        driver = world.replicas[0].traffic  # it drives a shift there: it holds the lease
        assert await driver.lease("local/dev/svc/1") is not None
        outcome = await world.replicas[1].traffic.desk.decide(asked, BOSS, Decision.APPROVE)
        await Rollbacks(world.replicas[1].traffic).on_event(ApprovalDecided(outcome.approval))
        assert not await rolled_back(store, old, new)  # left to the lease holder's tick
        await Rollbacks(driver).carry_out_approved()
        assert await rolled_back(store, old, new)
        await world.kill(0)
        clock.advance(20)  # its lease expires; nothing is done again by the others
        for slot in (1, 2):
            await Rollbacks(world.replicas[slot].traffic).carry_out_approved()
        assert await said(store, new, ROLLED_BACK_LINE) == 1
    finally:
        await store.close()


async def test_replicas_carrying_one_rollback_out_at_once_do_it_once(tmp_path: Path) -> None:
    store, clock, world, old, new, asked = await rollback_asked(tmp_path, 8)
    try:
        clock.advance(20)  # the shift's driver's lease has expired: anyone may take it
        outcome = await world.replicas[0].traffic.desk.decide(asked, BOSS, Decision.APPROVE)
        await asyncio.gather(
            Rollbacks(world.replicas[0].traffic).on_event(ApprovalDecided(outcome.approval)),
            *(Rollbacks(r.traffic).carry_out_approved() for r in world.replicas.values()),
        )
        assert await rolled_back(store, old, new)
        assert await said(store, new, ROLLED_BACK_LINE) == 1
    finally:
        await store.close()


class Killed(Exception):
    """The replica died here."""


class DiesMarkingGarbage:
    """A replica's store that dies when the rollback marks the stack garbage: the weights
    have moved, nothing else is written."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def mark_garbage(self, *_: object, **__: object) -> None:
        raise Killed


async def test_a_rollback_whose_replica_died_half_way_is_finished_by_the_next(
    tmp_path: Path,
) -> None:
    store, clock, world, old, new, asked = await rollback_asked(tmp_path, 9)
    try:
        outcome = await world.replicas[0].traffic.desk.decide(asked, BOSS, Decision.APPROVE)
        dying = Rollbacks(world.replicas[0].traffic)
        dying.store = DiesMarkingGarbage(store)  # type: ignore[assignment]
        with pytest.raises(Killed):
            await dying.carry_out(outcome.approval)
        await world.kill(0)
        entry = await store.route_entry("local", ROUTE.key)
        assert entry is not None and entry.weights().get(old.name) == 1000  # moved already
        current = await store.stack_by_id(new.id)
        assert current is not None and current.status is StackStatus.READY
        clock.advance(20)  # the dead replica's lease on the route expires
        await Rollbacks(world.replicas[1].traffic).carry_out_approved()
        assert await rolled_back(store, old, new)
        assert await said(store, new, ROLLED_BACK_LINE) == 1
        assert await said(store, new, "not done") == 0
    finally:
        await store.close()
