"""The event outbox's contract on SQLite, PostgreSQL and `MemoryStore`: events handed out
once, in order within a key, handed out again when their holder's claim expires, written
only with the unit of work that wrote them; and, on PostgreSQL, replicas claiming at the same
moment never get the same event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.storage import open_store
from adapters.storage.wakeups import Wakeups
from commands.ports import Store
from tests.fakes.clock import FakeClock
from tests.fakes.memory_store import MemoryStore
from tests.pgserver import fresh_database

TTL = timedelta(seconds=30)


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


async def test_events_are_handed_out_once_oldest_first_with_their_payload(store: Store) -> None:
    first = await store.add_outbox_event("operation:1", "started", {"channels": ["C1"], "n": 1})
    second = await store.add_outbox_event("operation:2", "started", {"channels": []})
    claimed = await store.claim_outbox_events("a", TTL)
    assert [e.id for e in claimed] == [first, second]
    assert claimed[0].payload == {"channels": ["C1"], "n": 1}
    assert (claimed[0].key, claimed[0].kind, claimed[0].attempts) == ("operation:1", "started", 0)
    assert await store.claim_outbox_events("b", TTL) == []
    assert await store.finish_outbox_event(first, "a")
    assert not await store.finish_outbox_event(first, "a"), "done once"
    assert [e.id for e in await store.outbox_backlog()] == [second]


async def test_a_key_s_later_events_wait_while_an_earlier_one_is_held_elsewhere(
    store: Store,
) -> None:
    one = await store.add_outbox_event("operation:1", "line", {"n": 1})
    two = await store.add_outbox_event("operation:1", "line", {"n": 2})
    other = await store.add_outbox_event("operation:2", "line", {"n": 3})
    assert [e.id for e in await store.claim_outbox_events("a", TTL, limit=1)] == [one]
    # b may take operation 2's event, but not operation 1's second while a holds its first
    assert [e.id for e in await store.claim_outbox_events("b", TTL)] == [other]
    assert await store.finish_outbox_event(one, "a")
    assert [e.id for e in await store.claim_outbox_events("b", TTL)] == [two]


async def test_an_expired_claim_is_handed_out_again_and_fences_its_old_holder(
    store: Store, clock: FakeClock
) -> None:
    event = await store.add_outbox_event("operation:1", "finished", {})
    [held] = await store.claim_outbox_events("a", TTL)
    clock.advance(TTL - timedelta(seconds=1))
    assert await store.claim_outbox_events("b", TTL) == [], "a's claim still holds"
    clock.advance(timedelta(seconds=2))
    [again] = await store.claim_outbox_events("b", TTL)
    assert (again.id, held.attempts, again.attempts) == (event, 0, 1)
    assert not await store.finish_outbox_event(event, "a"), "a lost it to b"
    assert await store.finish_outbox_event(event, "b")
    assert await store.outbox_backlog() == []


async def test_an_event_given_back_waits_before_it_is_handed_out_again_and_keeps_its_key_waiting(
    store: Store, clock: FakeClock
) -> None:
    first = await store.add_outbox_event("operation:1", "line", {})
    second = await store.add_outbox_event("operation:1", "line", {})
    claimed = await store.claim_outbox_events("a", TTL, limit=1)
    assert [e.id for e in claimed] == [first]
    await store.retry_outbox_event(first, "a", timedelta(seconds=5))
    assert await store.claim_outbox_events("b", TTL) == [], "the second waits for the first"
    clock.advance(timedelta(seconds=6))
    assert [e.id for e in await store.claim_outbox_events("b", TTL)] == [first, second]
    assert await store.finish_outbox_event(first, "b")
    await store.retry_outbox_event(second, "b", timedelta(0))
    assert [e.id for e in await store.claim_outbox_events("c", TTL)] == [second]


async def test_an_event_is_written_with_its_unit_of_work_or_not_at_all(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.unit_of_work() as uow:
            await uow.add_outbox_event("operation:1", "started", {})
            raise RuntimeError("the change failed")
    assert await store.outbox_backlog() == []
    async with store.unit_of_work() as uow:
        await uow.add_outbox_event("operation:1", "started", {})
    assert [e.kind for e in await store.outbox_backlog()] == ["started"]


async def test_old_events_are_forgotten_done_or_not(store: Store, clock: FakeClock) -> None:
    done = await store.add_outbox_event("operation:1", "started", {})
    await store.add_outbox_event("operation:2", "started", {})
    await store.claim_outbox_events("a", TTL, limit=1)
    await store.finish_outbox_event(done, "a")
    clock.advance(timedelta(days=2))
    kept = await store.add_outbox_event("operation:3", "started", {})
    assert await store.forget_outbox_events(clock.now() - timedelta(days=1)) == 2
    assert [e.id for e in await store.outbox_backlog()] == [kept]


@pytest.mark.postgres
async def test_replicas_claiming_at_once_never_get_the_same_event(
    postgres_admin_url: str, clock: FakeClock
) -> None:
    url = fresh_database(postgres_admin_url)
    replicas = [await open_store(url, clock=clock) for _ in range(3)]
    try:
        keys = 12
        for n in range(120):
            await replicas[0].add_outbox_event(f"operation:{n % keys}", "line", {"n": n})
        done: list[tuple[str, int]] = []

        async def drain(store: Store, holder: str) -> None:
            while True:
                claimed = await store.claim_outbox_events(holder, TTL, limit=7)
                if not claimed:
                    if not await store.outbox_backlog():
                        return
                    await asyncio.sleep(0.01)
                    continue
                for event in claimed:
                    assert await store.finish_outbox_event(event.id, holder)
                    done.append((event.key, int(event.payload["n"])))

        await asyncio.wait_for(
            asyncio.gather(*(drain(s, f"r{i}") for i, s in enumerate(replicas))), 60
        )
        assert sorted(n for _, n in done) == list(range(120)), "each event done exactly once"
        for key in {k for k, _ in done}:
            told = [n for k, n in done if k == key]
            assert told == sorted(told), f"{key} out of order: {told}"
    finally:
        for store in replicas:
            await store.close()


@pytest.mark.postgres
async def test_a_write_wakes_a_listening_replica_when_it_commits(
    postgres_admin_url: str, clock: FakeClock
) -> None:
    url = fresh_database(postgres_admin_url)
    store = await open_store(url, clock=clock)
    wakeups = Wakeups(url)
    try:
        await wakeups.start()
        await wakeups.wait(1)  # listening begins with a look at what may be waiting
        assert not await wakeups.wait(0.2), "nothing written since"
        async with store.unit_of_work() as uow:
            await uow.add_outbox_event("operation:1", "started", {})
            assert not await wakeups.wait(0.3), "not before the commit"
        assert await wakeups.wait(5)
    finally:
        await wakeups.close()
        await store.close()


async def test_without_postgresql_a_wakeup_is_only_the_polling_interval(tmp_path: Path) -> None:
    wakeups = Wakeups(f"sqlite:///{tmp_path / 'nelson.db'}")
    await wakeups.start()
    assert not await wakeups.wait(0.05)
    wakeups.poke()  # this process wrote something
    assert await wakeups.wait(5)
    await wakeups.close()
