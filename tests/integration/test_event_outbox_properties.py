"""The event outbox over random sequences of writes, claims, finishes, give-backs and time
passing by three holders on a FakeClock, on SQLite and `MemoryStore`:

- an event is done at most once, and only by the holder it was last handed to;
- a claim hands out an event only with every earlier unfinished event of its key, and never
  one another holder holds unexpired;
- at any moment, the unexpired claims on one key's unfinished events are one holder's;
- done events of a key were finished in the order they were written, when their holders
  finish what they hold in order (as the dispatcher does)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.storage import open_store
from commands.ports import Store
from tests.fakes.clock import FakeClock
from tests.fakes.memory_store import MemoryStore

TTL = timedelta(seconds=30)
HOLDERS = ("a", "b", "c")
HOLDER = st.sampled_from(HOLDERS)
OPERATIONS = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 2)),
    st.tuples(st.just("write"), st.integers(0, 2)),
    st.tuples(st.just("claim"), HOLDER, st.integers(1, 4)),
    st.tuples(st.just("claim"), HOLDER, st.integers(1, 4)),
    st.tuples(st.just("finish"), HOLDER),
    st.tuples(st.just("finish"), HOLDER),
    st.tuples(st.just("give_back"), HOLDER, st.sampled_from([0, 5, 40])),
    st.tuples(st.just("advance"), st.sampled_from([1, 10, 29, 31, 60])),
)


class Model:
    def __init__(self) -> None:
        self.keys: dict[int, str] = {}  # event id -> key
        self.done: dict[int, str] = {}  # event id -> who finished it
        self.held: dict[int, tuple[str, datetime]] = {}  # event id -> last holder, until
        self.finished_order: dict[str, list[int]] = {}


async def play(store: Store, clock: FakeClock, operations: list[tuple[Any, ...]]) -> None:
    model = Model()
    hands: dict[str, list[int]] = {h: [] for h in HOLDERS}  # what each holder thinks it holds
    for operation in operations:
        name = operation[0]
        now = clock.now()
        if name == "write":
            key = f"operation:{operation[1]}"
            event_id = await store.add_outbox_event(key, "line", {"n": len(model.keys)})
            model.keys[event_id] = key
        elif name == "advance":
            clock.advance(timedelta(seconds=operation[1]))
        elif name == "claim":
            holder, limit = operation[1], operation[2]
            claimed = [e.id for e in await store.claim_outbox_events(holder, TTL, limit)]
            assert claimed == sorted(claimed)
            for event_id in claimed:
                assert event_id not in model.done, "handed out after it was done"
                other = model.held.get(event_id)
                assert other is None or other[1] <= now, "handed out while held"
                earlier = [
                    e
                    for e, k in model.keys.items()
                    if k == model.keys[event_id] and e < event_id and e not in model.done
                ]
                assert set(earlier) <= set(claimed), (event_id, earlier, claimed)
            for event_id in claimed:
                model.held[event_id] = (holder, now + TTL)
            hands[holder] = sorted(set(hands[holder]) | set(claimed))
        elif name == "finish" and hands[operation[1]]:
            holder = operation[1]
            event_id = hands[holder].pop(0)  # in order, as the dispatcher does
            ok = await store.finish_outbox_event(event_id, holder)
            expected = event_id not in model.done and model.held[event_id][0] == holder
            assert ok == expected, (event_id, holder, model.held.get(event_id))
            if ok:
                model.done[event_id] = holder
                model.finished_order.setdefault(model.keys[event_id], []).append(event_id)
        elif name == "give_back" and hands[operation[1]]:
            holder, after = operation[1], operation[2]
            event_id = hands[holder].pop(0)
            await store.retry_outbox_event(event_id, holder, timedelta(seconds=after))
            if event_id not in model.done and model.held[event_id][0] == holder:
                model.held[event_id] = (holder, now + timedelta(seconds=after))
        # invariants
        now = clock.now()
        for key in set(model.keys.values()):
            holders = {
                h
                for e, (h, until) in model.held.items()
                if model.keys[e] == key and e not in model.done and until > now
            }
            assert len(holders) <= 1, (key, holders)
        for key, order in model.finished_order.items():
            assert order == sorted(order), (key, order)
        backlog = {e.id for e in await store.outbox_backlog()}
        assert backlog == set(model.keys) - set(model.done)


async def play_on(kind: str, path: Path, operations: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    if kind == "memory":
        await play(MemoryStore(clock), clock, operations)
        return
    path.unlink(missing_ok=True)
    store = await open_store(f"sqlite:///{path}", clock=clock)
    try:
        await play(store, clock, operations)
    finally:
        await store.close()
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=st.lists(OPERATIONS, min_size=1, max_size=30))
def test_outbox_invariants_hold_over_any_sequence(
    tmp_path: Path, kind: str, operations: list[tuple[Any, ...]]
) -> None:
    asyncio.run(play_on(kind, tmp_path / "outbox.db", operations))
