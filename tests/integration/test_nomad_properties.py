"""The Nomad adapter over random sequences of launches (new and repeated), deletions and lost
nodes, against the fake Nomad: each launched stack ends with its count of running
allocations, no two share a port, a repeated launch changes nothing, a deleted stack has
nothing left, and the fake's answers keep the OpenAPI document's shape."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.scheduler import NomadScheduler
from commands.settings import SchedulerSettings
from domain.runtime import Instance
from tests.fakes.nomad import FakeNomad
from tests.integration.test_deploy_nomad import spec

STACKS = ("howdy--1-0-0--aaaaaaaa", "howdy--1-0-1--bbbbbbbb", "howdy--2-0-0--cccccccc")

operations = st.lists(
    st.one_of(
        st.tuples(st.just("launch"), st.sampled_from(STACKS), st.integers(1, 3)),
        st.tuples(st.just("delete"), st.sampled_from(STACKS), st.just(0)),
        st.tuples(st.just("lose-node"), st.just(""), st.just(0)),
    ),
    min_size=1,
    max_size=8,
)


@pytest.fixture(scope="module")
def nomad() -> Iterator[FakeNomad]:
    with FakeNomad(datacenter="west", tick=0.02) as fake:
        yield fake


async def settled(scheduler: NomadScheduler, stack: str, count: int) -> list[Instance]:
    deadline = time.monotonic() + 10
    while True:
        found = await scheduler.instances(stack)
        running = [i for i in found if i.state == "running"]
        if len(running) == count and len(found) == count:
            return running
        assert time.monotonic() < deadline, (stack, count, found)
        await asyncio.sleep(0.02)


async def scenario(nomad: FakeNomad, ops: list[tuple[str, str, int]]) -> None:
    scheduler = NomadScheduler(SchedulerSettings(kind="nomad", address=nomad.address), "west")
    wanted: dict[str, int] = {}
    try:
        for op, stack, count in ops:
            if op == "launch":
                launch = dataclasses.replace(spec(stack), instances=count)
                before = {i.name for i in await scheduler.instances(stack)}
                await scheduler.launch(launch)
                if wanted.get(stack) == count:  # the same job again: nothing is replaced
                    assert {i.name for i in await scheduler.instances(stack)} == before
                wanted[stack] = count
            elif op == "delete":
                removed = await scheduler.delete(stack)
                assert removed == wanted.pop(stack, 0)
                assert await scheduler.instances(stack) == []
            else:
                await asyncio.to_thread(nomad.lose_node)
            ports: list[int] = []
            for name, n in wanted.items():
                for instance in await settled(scheduler, name, n):
                    ports.extend(port for _, port in instance.ports)
            assert len(ports) == len(set(ports)), "two allocations share a port"
        for name in STACKS:
            if name not in wanted:
                assert ("default", name) not in nomad.jobs
    finally:
        for name in list(wanted):
            await scheduler.delete(name)
        await scheduler.close()
    assert not nomad.schema_problems


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_launches_deletions_and_lost_nodes_keep_the_invariants(
    nomad: FakeNomad, ops: list[tuple[str, str, int]]
) -> None:
    asyncio.run(scenario(nomad, ops))
