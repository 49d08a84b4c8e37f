"""The workflow claims' contract on SQLite, PostgreSQL and `MemoryStore`: one holder per
stack, a fencing token that grows on every takeover, fenced writes that land only for the
holder of the unexpired claim."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.storage import open_store
from commands.ports import ClaimLost, Store
from domain.states import StackStatus
from tests.fakes.clock import FakeClock
from tests.fakes.memory_store import MemoryStore
from tests.integration.test_store import deploy, new_stack
from tests.pgserver import fresh_database

TTL = timedelta(seconds=15)
UNFINISHED = (StackStatus.PENDING, StackStatus.DEPLOYING, StackStatus.WARMING)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "memory"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore(clock)
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'nelson.db'}"
    else:
        url = fresh_database(request.getfixturevalue("postgres_admin_url"))
    opened = await open_store(url, clock=clock)
    yield opened
    await opened.close()


async def stacks(store: Store, count: int = 1, dc: str = "dc-east") -> list[int]:
    _, made = await deploy(store, *(new_stack(n, dc=dc) for n in range(1, count + 1)))
    return [s.id for s in made]


async def test_one_holder_at_a_time_and_the_holder_keeps_its_token(store: Store) -> None:
    [stack_id] = await stacks(store)
    first = await store.claim_workflow(stack_id, "a", TTL)
    assert first is not None and first.token == 1 and first.holder == "a"
    assert await store.claim_workflow(stack_id, "b", TTL) is None
    again = await store.claim_workflow(stack_id, "a", TTL)
    assert again is not None and again.token == 1
    [claim] = await store.workflow_claims()
    assert (claim.stack_id, claim.holder, claim.token) == (stack_id, "a", 1)


async def test_an_expired_claim_is_taken_over_with_a_larger_token_and_fences_the_old_holder(
    store: Store, clock: FakeClock
) -> None:
    [stack_id] = await stacks(store)
    assert await store.claim_workflow(stack_id, "a", TTL) is not None
    clock.advance(TTL)  # expired at exactly its end
    taken = await store.claim_workflow(stack_id, "b", TTL)
    assert taken is not None and taken.token == 2 and taken.holder == "b"
    with pytest.raises(ClaimLost, match=f"stack {stack_id}"):
        await store.check_workflow_claim(stack_id, "a", 1)
    assert await store.renew_workflow_claims("a", {stack_id: 1}, TTL) == set()
    await store.check_workflow_claim(stack_id, "b", 2)
    # the old holder cannot give away what it no longer holds
    await store.release_workflow_claim(stack_id, "a", 1)
    await store.check_workflow_claim(stack_id, "b", 2)


async def test_renewal_keeps_a_claim_past_its_first_expiry(store: Store, clock: FakeClock) -> None:
    [one, two] = await stacks(store, 2)
    assert await store.claim_workflow(one, "a", TTL) is not None
    assert await store.claim_workflow(two, "a", TTL) is not None
    clock.advance(10)
    assert await store.renew_workflow_claims("a", {one: 1, two: 1}, TTL) == {one, two}
    clock.advance(10)  # 20 s after the claim, 10 s after the renewal
    assert await store.claim_workflow(one, "b", TTL) is None
    await store.check_workflow_claim(one, "a", 1)
    clock.advance(5)
    with pytest.raises(ClaimLost):
        await store.check_workflow_claim(one, "a", 1)  # expired, though nobody took it yet
    assert await store.renew_workflow_claims("a", {one: 1, two: 1}, TTL) == set()
    again = await store.claim_workflow(one, "a", TTL)
    assert again is not None and again.token == 2  # claimed anew, under a new token


async def test_a_released_claim_is_free_at_once_and_its_token_still_grows(store: Store) -> None:
    [stack_id] = await stacks(store)
    assert await store.claim_workflow(stack_id, "a", TTL) is not None
    await store.release_workflow_claim(stack_id, "a", 1)
    with pytest.raises(ClaimLost):
        await store.check_workflow_claim(stack_id, "a", 1)
    taken = await store.claim_workflow(stack_id, "b", TTL)
    assert taken is not None and taken.token == 2


async def test_unclaimed_workflows_lists_unfinished_stacks_nobody_validly_holds(
    store: Store, clock: FakeClock
) -> None:
    [held, free, expiring] = await stacks(store, 3)
    assert await store.claim_workflow(held, "a", TTL * 2) is not None
    assert await store.claim_workflow(expiring, "b", TTL) is not None
    assert await store.unclaimed_workflows(UNFINISHED, ["dc-east"]) == [free]
    clock.advance(TTL)
    assert await store.unclaimed_workflows(UNFINISHED, ["dc-east"]) == [free, expiring]
    assert await store.unclaimed_workflows(UNFINISHED, ["dc-west"]) == []
    assert await store.unclaimed_workflows((StackStatus.READY,), ["dc-east"]) == []
    await store.change_status(free, StackStatus.DEPLOYING, "go", "nelson")
    await store.change_status(free, StackStatus.FAILED, "no", "nelson")
    assert await store.unclaimed_workflows(UNFINISHED, ["dc-east"]) == [expiring]


async def test_unclaimed_workflows_include_those_in_a_step_whatever_their_status(
    store: Store, clock: FakeClock
) -> None:
    """A ready stack whose handover a dead replica did not finish is found by its step."""
    [handing, done, held] = await stacks(store, 3)
    for stack_id in (handing, done, held):
        for status in (StackStatus.DEPLOYING, StackStatus.WARMING, StackStatus.READY):
            await store.change_status(stack_id, status, "", "nelson")
    await store.set_workflow_step(handing, "route")
    await store.set_workflow_step(held, "route")
    assert await store.claim_workflow(held, "a", TTL) is not None
    assert await store.unclaimed_workflows(UNFINISHED, ["dc-east"]) == []
    assert await store.unclaimed_workflows(UNFINISHED, ["dc-east"], steps=("route",)) == [handing]
    assert await store.unclaimed_workflows((), ["dc-east"], steps=("route",)) == [handing]
    assert await store.unclaimed_workflows(UNFINISHED, ["dc-west"], steps=("route",)) == []
    clock.advance(TTL)
    assert await store.unclaimed_workflows(UNFINISHED, ["dc-east"], steps=("route",)) == [
        handing,
        held,
    ]
    await store.set_workflow_step(handing, None)
    assert await store.unclaimed_workflows(UNFINISHED, ["dc-east"], steps=("route",)) == [held]


async def test_a_fenced_unit_of_work_writes_nothing_for_a_stale_holder(
    store: Store, clock: FakeClock
) -> None:
    [stack_id] = await stacks(store)
    assert await store.claim_workflow(stack_id, "a", TTL) is not None
    async with store.unit_of_work() as uow:
        await uow.check_workflow_claim(stack_id, "a", 1)
        await uow.append_log(stack_id, "landed", step="resolve")
    clock.advance(TTL)
    assert await store.claim_workflow(stack_id, "b", TTL) is not None
    with pytest.raises(ClaimLost):
        async with store.unit_of_work() as uow:
            await uow.check_workflow_claim(stack_id, "a", 1)
            await uow.change_status(stack_id, StackStatus.DEPLOYING, "stale", "nelson")
    assert [line.message for line in await store.logs(stack_id)] == ["landed"]
    stack = await store.stack_by_id(stack_id)
    assert stack is not None and stack.status is StackStatus.PENDING


async def test_racing_claims_have_one_winner(store: Store, clock: FakeClock) -> None:
    ids = await stacks(store, 4)
    for round_ in range(3):
        results = await asyncio.gather(
            *(store.claim_workflow(i, f"h{n}-{round_}", TTL) for i in ids for n in range(3))
        )
        won = [r for r in results if r is not None]
        assert sorted(r.stack_id for r in won) == ids
        assert {r.token for r in won} == {round_ + 1}
        clock.advance(TTL)
