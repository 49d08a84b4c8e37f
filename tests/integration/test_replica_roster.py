"""The processes alive, as `datacenters` and the Home tab list them, on SQLite, PostgreSQL and
`MemoryStore`: by their heartbeats, each with the deploys whose claim it holds unexpired."""

from __future__ import annotations

from datetime import timedelta

from commands import daemons
from commands.ports import Store
from commands.repositories import FORGOTTEN_AFTER
from tests.fakes.clock import FakeClock
from tests.integration.test_workflow_claims import TTL, stacks, store

__all__ = ["store"]  # the fixture, on the three stores

A = "web-1:4100:ab12"
B = "web-2:4200:cd34"


async def test_replicas_alive_with_the_deploys_each_holds(store: Store, clock: FakeClock) -> None:
    assert await daemons.replicas(store, clock) == []
    first, second, third = await stacks(store, 3)
    started = clock.now()
    await store.heartbeat(A, "nelson serve", started)
    await store.heartbeat(B, "nelson serve --no-slack", started + timedelta(seconds=1))
    for stack_id, holder in ((first, A), (second, A), (third, B)):
        assert await store.claim_workflow(stack_id, holder, TTL) is not None
    [claim] = [c for c in await store.workflow_claims() if c.stack_id == third]
    await store.release_workflow_claim(third, B, claim.token)  # B finished its deploy

    alive = await daemons.replicas(store, clock)
    assert [(r.host, r.pid, r.kind, r.deploys_held) for r in alive] == [
        ("web-1", "4100", "nelson serve", 2),
        ("web-2", "4200", "nelson serve --no-slack", 0),
    ]
    assert alive[0].started_at == started

    # B keeps beating; A is killed: its claims expire after the TTL, it is gone after 30 s
    clock.advance(TTL + timedelta(seconds=1))
    await store.heartbeat(B, "nelson serve --no-slack", clock.now())
    alive = await daemons.replicas(store, clock)
    assert [(r.host, r.deploys_held) for r in alive] == [("web-1", 0), ("web-2", 0)]
    clock.advance(daemons.ALIVE_WITHIN - TTL)
    assert [r.host for r in await daemons.replicas(store, clock)] == ["web-2"]


def test_the_words_for_time_and_takeover() -> None:
    now = FakeClock().now()
    assert daemons.since(now - timedelta(seconds=4), now) == "4 s ago"
    assert daemons.since(now + timedelta(seconds=2), now) == "0 s ago"  # a clock ahead
    assert daemons.since(now - timedelta(minutes=5), now) == "5 min ago"
    assert daemons.since(now - timedelta(hours=3), now) == "3 h ago"
    assert daemons.since(now - timedelta(days=3), now) == "3 days ago"
    note = daemons.takeover_note(timedelta(seconds=15))
    assert "silent for 30 s is gone" in note and "within 20 s" in note


async def test_a_process_starting_forgets_those_silent_for_a_day(
    store: Store, clock: FakeClock
) -> None:
    """A process killed never says goodbye: its row stays until a day later, when the next
    process to start removes it. One silent for less stays (it may only be stalled)."""
    await store.heartbeat(A, "nelson serve", clock.now())
    clock.advance(timedelta(hours=12))
    await store.heartbeat(B, "nelson serve", clock.now())
    clock.advance(FORGOTTEN_AFTER - timedelta(hours=12) + timedelta(seconds=1))
    await store.heartbeat(B, "nelson serve", clock.now())  # beating on forgets nobody
    assert {d.holder for d in await store.daemons(clock.now() - timedelta(days=30))} == {A, B}
    await store.heartbeat("web-3:4300:ef56", "nelson serve", clock.now())
    left = await store.daemons(clock.now() - timedelta(days=30))
    assert {d.holder for d in left} == {B, "web-3:4300:ef56"}
