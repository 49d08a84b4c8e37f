"""Workflow claims over random sequences of claim / renew / release / fenced write / time
passing by 2-3 holders on a FakeClock, on SQLite and `MemoryStore`, against a model:

- at any moment at most one holder can write for a stack (holds its unexpired claim);
- a stack's token never goes down, and grows whenever the claim changes hands;
- a fenced write lands exactly when the model says its writer holds the claim: a stale
  holder's write never lands (nothing of it is in the stack's log)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.storage import open_store
from commands.ports import ClaimLost, Store
from tests.fakes.clock import FakeClock
from tests.fakes.memory_store import MemoryStore
from tests.integration.test_store import deploy, new_stack

TTL = timedelta(seconds=15)
HOLDERS = ("a", "b", "c")

HOLDER = st.sampled_from(HOLDERS)
STACK = st.integers(0, 1)
OPERATIONS = st.one_of(  # writes and claims weigh more: they are where the rules bite
    st.tuples(st.just("claim"), HOLDER, STACK),
    st.tuples(st.just("renew"), HOLDER, STACK),
    st.tuples(st.just("release"), HOLDER, STACK),
    st.tuples(st.just("write"), HOLDER, STACK),
    st.tuples(st.just("write"), HOLDER, STACK),
    st.tuples(st.just("claim"), HOLDER, STACK),
    st.tuples(st.just("advance"), st.sampled_from([1, 5, 10, 14, 15, 16, 40]), STACK),
)


@dataclass
class Row:
    holder: str
    token: int
    expires_at: datetime


class Model:
    """What the claims must do, in a few lines."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.rows: dict[int, Row] = {}

    def valid(self, stack: int, holder: str, token: int) -> bool:
        row = self.rows.get(stack)
        return (
            row is not None
            and (row.holder, row.token) == (holder, token)
            and (row.expires_at > self.clock.now())
        )

    def claim(self, stack: int, holder: str) -> int | None:
        now = self.clock.now()
        row = self.rows.get(stack)
        if row is not None and row.expires_at > now:
            if row.holder != holder:
                return None
            row.expires_at = now + TTL
            return row.token
        token = row.token + 1 if row is not None else 1
        self.rows[stack] = Row(holder, token, now + TTL)
        return token

    def renew(self, stack: int, holder: str, token: int) -> bool:
        if not self.valid(stack, holder, token):
            return False  # an expired claim is lost, taken over or not
        self.rows[stack].expires_at = self.clock.now() + TTL
        return True

    def release(self, stack: int, holder: str, token: int) -> None:
        row = self.rows.get(stack)
        if row is not None and (row.holder, row.token) == (holder, token):
            row.expires_at = self.clock.now()


async def play(store: Store, clock: FakeClock, operations: list[tuple[str, Any, int]]) -> None:
    _, made = await deploy(store, new_stack(1), new_stack(2))
    ids = [s.id for s in made]
    model = Model(clock)
    beliefs: dict[tuple[str, int], int] = {}  # what each holder thinks its token is
    tokens = [0, 0]
    owners: list[str | None] = [None, None]
    for n, (name, argument, stack) in enumerate(operations):
        stack_id = ids[stack]
        if name == "advance":
            clock.advance(argument)
        elif name == "claim":
            claim = await store.claim_workflow(stack_id, argument, TTL)
            expected = model.claim(stack, argument)
            assert (claim.token if claim else None) == expected
            if claim is not None:
                beliefs[(argument, stack)] = claim.token
        elif (argument, stack) not in beliefs:
            continue  # a holder only renews, releases and writes what it once claimed
        elif name == "renew":
            token = beliefs[(argument, stack)]
            renewed = await store.renew_workflow_claims(argument, {stack_id: token}, TTL)
            assert (stack_id in renewed) == model.renew(stack, argument, token)
        elif name == "release":
            token = beliefs[(argument, stack)]
            await store.release_workflow_claim(stack_id, argument, token)
            model.release(stack, argument, token)
        else:
            token = beliefs[(argument, stack)]
            should_land = model.valid(stack, argument, token)
            marker = f"write {n} by {argument} with token {token}"
            with contextlib.suppress(ClaimLost):
                async with store.unit_of_work() as uow:
                    await uow.check_workflow_claim(stack_id, argument, token)
                    await uow.append_log(stack_id, marker)
            landed = any(line.message == marker for line in await store.logs(stack_id))
            assert landed == should_land, (marker, model.rows.get(stack))
        # invariants, after every operation
        for index, sid in enumerate(ids):
            able = []
            for holder in HOLDERS:
                if (holder, index) not in beliefs:
                    continue
                with contextlib.suppress(ClaimLost):
                    await store.check_workflow_claim(sid, holder, beliefs[(holder, index)])
                    able.append(holder)
            assert len(able) <= 1, able
            assert able == [
                h
                for h in HOLDERS
                if (h, index) in beliefs and model.valid(index, h, beliefs[(h, index)])
            ], (able, model.rows.get(index))
        for claim in await store.workflow_claims():
            index = ids.index(claim.stack_id)
            assert claim.token >= tokens[index]
            if owners[index] is not None and claim.holder != owners[index]:
                assert claim.token > tokens[index]
            tokens[index], owners[index] = claim.token, claim.holder


async def play_on(kind: str, path: Path, operations: list[tuple[str, Any, int]]) -> None:
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
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=st.lists(OPERATIONS, min_size=1, max_size=30))
def test_claim_invariants_hold_over_any_sequence(
    tmp_path: Path, kind: str, operations: list[tuple[str, Any, int]]
) -> None:
    asyncio.run(play_on(kind, tmp_path / "claims.db", operations))


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_a_holder_that_slept_through_its_ttl_cannot_write(tmp_path: Path, kind: str) -> None:
    """The story the property guards: a renews late, b took over meanwhile."""
    operations: list[tuple[str, Any, int]] = [
        ("claim", "a", 0),
        ("write", "a", 0),
        ("advance", 15, 0),
        ("write", "a", 0),  # expired, not yet taken over: refused all the same
        ("claim", "b", 0),
        ("renew", "a", 0),
        ("write", "a", 0),
        ("write", "b", 0),
    ]
    asyncio.run(play_on(kind, tmp_path / "claims.db", operations))
