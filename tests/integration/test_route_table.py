"""The route table's contract on SQLite, PostgreSQL and `MemoryStore`: one port per route of a
datacenter, servers replaced per stack, route leases with a token that grows on takeover, and
fenced weight writes that land only for the lease's holder while the shift runs its way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.storage import open_store
from commands.ports import LeaseLost, Store
from commands.repositories import RouteServer, WeightFence
from domain.traffic import Direction, ShiftPolicy, ShiftState
from tests.fakes.clock import FakeClock
from tests.fakes.memory_store import MemoryStore
from tests.integration.test_store import deploy, new_stack
from tests.pgserver import fresh_database

TTL = timedelta(seconds=15)
DC = "dc-east"


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


def server(stack: str, n: int, per_mille: int, address: str = "") -> RouteServer:
    return RouteServer(
        f"{stack}-{n}", stack, address or f"127.0.0.1:3{n:04d}", per_mille, per_mille
    )


async def running_shift(store: Store, clock: FakeClock) -> int:
    _, [old, new] = await deploy(store, new_stack(1), new_stack(2))
    shift, _ = await store.open_shift(
        "dc-east/dev/svc/1",
        old.id,
        new.id,
        ShiftPolicy.LINEAR,
        600,
        ShiftState.RUNNING,
        clock.now(),
    )
    return shift.id


async def test_a_port_serves_one_route_of_a_datacenter(store: Store) -> None:
    first = await store.create_route(DC, "dev_svc_1", 20000)
    assert first is not None and first.port == 20000
    assert await store.create_route(DC, "dev_other_1", 20000) is None  # the port is taken
    again = await store.create_route(DC, "dev_svc_1", 20001)
    assert again is not None and again.port == 20000  # an existing route keeps its port
    elsewhere = await store.create_route("dc-west", "dev_svc_1", 20000)
    assert elsewhere is not None and elsewhere.port == 20000
    assert [e.key for e in await store.route_entries(DC)] == ["dev_svc_1"]


async def test_replicas_opening_routes_at_once_never_share_a_port(store: Store) -> None:
    async def open_one(key: str) -> int:
        for port in range(20000, 20020):
            entry = await store.create_route(DC, key, port)
            if entry is not None:
                return entry.port
        raise AssertionError("no port")

    ports = await asyncio.gather(*(open_one(f"ns_unit{n}_1") for n in range(8)))
    assert len(set(ports)) == 8
    assert sorted(e.port for e in await store.route_entries(DC)) == sorted(ports)


async def test_servers_are_replaced_per_stack_and_others_kept(store: Store) -> None:
    await store.create_route(DC, "dev_svc_1", 20000)
    await store.write_route(DC, "dev_svc_1", [server("a", 0, 1000), server("a", 1, 1000)])
    await store.write_route(DC, "dev_svc_1", [server("b", 0, 0)])
    await store.write_route(DC, "dev_svc_1", [server("a", 0, 700), server("b", 0, 300)])
    entry = await store.route_entry(DC, "dev_svc_1")
    assert entry is not None
    assert [s.name for s in entry.servers] == ["a-0", "b-0"]  # a-1 went with a's rewrite
    assert entry.weights() == {"a": 700, "b": 300}
    await store.remove_route_stack(DC, "dev_svc_1", "a")
    entry = await store.route_entry(DC, "dev_svc_1")
    assert entry is not None and entry.weights() == {"b": 300}


async def test_a_lease_has_one_holder_and_a_takeover_gets_a_larger_token(
    store: Store, clock: FakeClock
) -> None:
    first = await store.take_route_lease("r", "a", TTL)
    assert first is not None and first.token == 1
    assert await store.take_route_lease("r", "b", TTL) is None
    renewed = await store.take_route_lease("r", "a", TTL)
    assert renewed is not None and renewed.token == 1
    clock.advance(16)
    taken = await store.take_route_lease("r", "b", TTL)
    assert taken is not None and (taken.holder, taken.token) == ("b", 2)
    await store.release_route_lease("r", "b", 2)
    after = await store.take_route_lease("r", "a", TTL)
    assert after is not None and (after.holder, after.token) == ("a", 3)
    [lease] = await store.route_leases()
    assert (lease.holder, lease.token) == ("a", 3)


async def test_a_fenced_write_lands_only_for_the_holder_of_the_unexpired_lease(
    store: Store, clock: FakeClock
) -> None:
    await store.create_route(DC, "dev_svc_1", 20000)
    old = await store.take_route_lease("r", "a", TTL)
    assert old is not None
    await store.write_route(DC, "dev_svc_1", [server("a", 0, 100)], WeightFence(old))
    clock.advance(16)
    with pytest.raises(LeaseLost):  # expired, not yet taken: still not the holder's to write
        await store.write_route(DC, "dev_svc_1", [server("a", 0, 200)], WeightFence(old))
    new = await store.take_route_lease("r", "b", TTL)
    assert new is not None
    with pytest.raises(LeaseLost):
        await store.write_route(DC, "dev_svc_1", [server("a", 0, 300)], WeightFence(old))
    await store.write_route(DC, "dev_svc_1", [server("a", 0, 400)], WeightFence(new))
    entry = await store.route_entry(DC, "dev_svc_1")
    assert entry is not None and entry.weights() == {"a": 400}


async def test_a_step_lands_only_while_its_shift_runs_its_way_and_never_backwards(
    store: Store, clock: FakeClock
) -> None:
    await store.create_route(DC, "dev_svc_1", 20000)
    shift_id = await running_shift(store, clock)
    lease = await store.take_route_lease("r", "a", TTL)
    assert lease is not None

    def step(weight: int, direction: Direction = Direction.FORWARD) -> WeightFence:
        assert lease is not None
        return WeightFence(lease, shift_id, direction.value, weight)

    await store.write_route(DC, "dev_svc_1", [server("new", 0, 300)], step(300))
    shift = await store.shift(shift_id)
    assert shift is not None and shift.current_new_weight == 300
    with pytest.raises(LeaseLost):  # backwards on a forward shift
        await store.write_route(DC, "dev_svc_1", [server("new", 0, 200)], step(200))
    with pytest.raises(LeaseLost):  # the shift does not move in reverse
        await store.write_route(
            DC, "dev_svc_1", [server("new", 0, 200)], step(200, Direction.REVERSE)
        )
    await store.update_shift(shift_id, ShiftState.RUNNING, state=ShiftState.PAUSED)
    with pytest.raises(LeaseLost):  # paused: no step lands
        await store.write_route(DC, "dev_svc_1", [server("new", 0, 400)], step(400))
    entry = await store.route_entry(DC, "dev_svc_1")
    assert entry is not None and entry.weights() == {"new": 300}
    shift = await store.shift(shift_id)
    assert shift is not None and shift.current_new_weight == 300
    await store.update_shift(
        shift_id, ShiftState.PAUSED, state=ShiftState.RUNNING, direction=Direction.REVERSE
    )
    await store.write_route(DC, "dev_svc_1", [server("new", 0, 100)], step(100, Direction.REVERSE))
    entry = await store.route_entry(DC, "dev_svc_1")
    assert entry is not None and entry.weights() == {"new": 100}


async def test_a_refused_write_changes_nothing(store: Store, clock: FakeClock) -> None:
    await store.create_route(DC, "dev_svc_1", 20000)
    await store.write_route(DC, "dev_svc_1", [server("a", 0, 1000)])
    lease = await store.take_route_lease("r", "x", TTL)
    assert lease is not None
    await store.release_route_lease("r", "x", lease.token)
    with pytest.raises(LeaseLost):
        await store.write_route(
            DC, "dev_svc_1", [server("a", 0, 0), server("b", 0, 1000)], WeightFence(lease)
        )
    entry = await store.route_entry(DC, "dev_svc_1")
    assert entry is not None and entry.weights() == {"a": 1000}
