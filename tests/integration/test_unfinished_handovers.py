"""A ready stack's traffic handover heard again: the replica handing it over died part-way
(after the stack became ready, before the workflow's handover step was cleared), and the
takeover hands it over again on another replica. Only what is not done yet is done: an
approval nobody was asked for is asked once, weights already moved never move back, and a
stack already given all traffic is not announced twice.

Replicas share one store (SQLite) and one router, as in the route lease properties."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from adapters.storage import open_store
from commands.ports import Store
from domain.approvals import ApprovalKind
from domain.records import Stack
from domain.traffic import ShiftState
from tests.fakes.clock import FakeClock
from tests.integration.test_approval_settling import Replicas
from tests.integration.test_route_lease_properties import ROUTE, World


class Killed(Exception):
    """The replica died here."""


async def said(store: Store, stack: Stack, words: str) -> int:
    return sum(words in line.message for line in await store.logs(stack.id))


async def world_of(tmp: Path, kind: type[World]) -> tuple[Store, FakeClock, World]:
    clock = FakeClock()
    store = await open_store(f"sqlite:///{tmp / 'handover.db'}", clock=clock)
    world = kind(store, clock, random.Random(7))
    await world.begin(2)
    return store, clock, world


async def test_an_approval_the_dead_replica_never_asked_for_is_asked_once(
    tmp_path: Path,
) -> None:
    store, _, world = await world_of(tmp_path, Replicas)
    try:
        first, second = world.replicas[0].traffic, world.replicas[1].traffic
        await first.on_ready(await world.stack(1))
        new = await world.stack(2)

        async def dies(*_: object) -> None:
            raise Killed

        first._ask = dies  # type: ignore[method-assign,assignment]
        with pytest.raises(Killed):
            await first.on_ready(new)  # the shift is opened, the approval never asked
        await world.kill(0)
        [shift] = [s for s in await store.shifts() if s.to_stack_id == new.id]
        assert shift.state is ShiftState.AWAITING_APPROVAL
        assert await store.approvals_of_stacks(ApprovalKind.TRAFFIC_SHIFT, [new.id]) == []

        await second.on_ready(new)  # the takeover hands it over again
        await second.on_ready(new)  # and once more: nothing more to do
        [approval] = await store.approvals_of_stacks(ApprovalKind.TRAFFIC_SHIFT, [new.id])
        assert approval.stack_id == new.id and "1.0.1 to 1.0.2" in approval.summary
        assert [s.id for s in await store.shifts()] == [shift.id]  # no second shift
    finally:
        await store.close()


async def test_handing_over_again_never_moves_weights_back(tmp_path: Path) -> None:
    store, clock, world = await world_of(tmp_path, World)
    try:
        first, second = world.replicas[0].traffic, world.replicas[1].traffic
        old = await world.stack(1)
        await first.on_ready(old)
        await second.on_ready(old)  # the first of its route, handed over twice
        assert await said(store, old, "it gets all traffic") == 1
        assert (await store.route_entry("local", ROUTE.key)).weights() == {old.name: 1000}  # type: ignore[union-attr]

        new = await world.stack(2)
        await first.on_ready(new)  # no approval needed here: the shift runs
        for _ in range(6):
            clock.advance(5)
            await first.tick()
        entry = await store.route_entry("local", ROUTE.key)
        assert entry is not None
        moved = entry.weights()[new.name]
        assert 0 < moved < 1000
        await world.kill(0)

        await second.on_ready(new)
        entry = await store.route_entry("local", ROUTE.key)
        assert entry is not None and entry.weights()[new.name] == moved
        [shift] = [s for s in await store.shifts() if s.to_stack_id == new.id]
        assert shift.state is ShiftState.RUNNING and shift.current_new_weight == moved
        assert len(await store.shifts()) == 1
    finally:
        await store.close()


def test_leftover_handovers_run_in_one_event_loop(tmp_path: Path) -> None:
    """Both scenarios once more on one loop, interleaved with a tick by the survivor."""

    async def run() -> None:
        store, clock, world = await world_of(tmp_path, World)
        try:
            old, new = await world.stack(1), await world.stack(2)
            await world.replicas[0].traffic.on_ready(old)
            await world.replicas[0].traffic.on_ready(new)
            clock.advance(5)
            await asyncio.gather(
                world.replicas[1].traffic.on_ready(new), world.replicas[1].traffic.tick()
            )
            assert len(await store.shifts()) == 1
        finally:
            await store.close()

    asyncio.run(run())
