"""HaproxyRouter as a projection of the route table, on a real HAProxy and a real database:
replicas opening routes at once get distinct ports and one HAProxy serves them all; a fresh
HAProxy, or one changed behind the bot's back, is brought to the table; a shift's step fenced
by a lost lease changes neither the table nor HAProxy; routes an earlier version kept in
`routes.json` are adopted with their ports."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.router.haproxy import HaproxyRouter, stop_haproxy
from adapters.storage import open_store
from commands.ports import LeaseLost, Route, Store
from commands.repositories import WeightFence
from tests.e2e.test_replicas_traffic import free_range
from tests.fakes.clock import FakeClock
from tests.pgserver import fresh_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'nelson.db'}"
    else:
        url = fresh_database(request.getfixturevalue("postgres_admin_url"))
    opened = await open_store(url, clock=clock)
    yield opened
    await opened.close()


@pytest.fixture
async def state_dir(tmp_path: Path) -> AsyncIterator[Path]:
    yield tmp_path / "haproxy"
    await stop_haproxy(tmp_path / "haproxy")


def replica(store: Store, state_dir: Path, ports: str) -> HaproxyRouter:
    low, high = (int(p) for p in ports.split("-"))
    return HaproxyRouter(state_dir, store, datacenter="local", ports=(low, high))


async def runtime(router: HaproxyRouter, route: Route) -> dict[str, tuple[str, int]]:
    return await router._servers(f"be_{route.key}")


def listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as probe:
        return probe.connect_ex((host, int(port))) == 0


async def test_replicas_opening_routes_at_once_share_one_haproxy(
    store: Store, state_dir: Path
) -> None:
    ports = free_range()
    a, b = replica(store, state_dir, ports), replica(store, state_dir, ports)
    routes = [Route("dev", f"unit{n}", 1) for n in range(6)]
    addresses = await asyncio.gather(
        *((a if n % 2 else b).address(route) for n, route in enumerate(routes))
    )
    assert len(set(addresses)) == 6
    for route, address in zip(routes, addresses, strict=True):
        assert await a.address(route) == address == await b.address(route)
        assert listening(address)
    entries = await store.route_entries("local")
    assert sorted(f"127.0.0.1:{e.port}" for e in entries) == sorted(addresses)


async def test_a_fresh_or_changed_haproxy_is_brought_to_the_table(
    store: Store, state_dir: Path
) -> None:
    router = replica(store, state_dir, free_range())
    route = Route("dev", "svc", 1)
    address = await router.address(route)
    await router.set_weights(
        route, {"old": (["127.0.0.1:31001"], 250), "new": (["127.0.0.1:31002"], 750)}
    )
    assert await runtime(router, route) == {
        "old-0": ("127.0.0.1:31001", 62),
        "new-0": ("127.0.0.1:31002", 188),
    }
    # changed behind the bot's back: converging puts it back
    await router._command(f"set server be_{route.key}/new-0 weight 5")
    await router._command(f"del server be_{route.key}/old-0")
    await router.converge()
    assert await runtime(router, route) == {
        "old-0": ("127.0.0.1:31001", 62),
        "new-0": ("127.0.0.1:31002", 188),
    }
    # stopped, its configuration gone: another replica's router starts it from the table
    await stop_haproxy(state_dir)
    (state_dir / "haproxy.cfg").unlink()
    other = replica(store, state_dir, "20000-20001")
    await other.converge()
    assert listening(address)
    assert await runtime(other, route) == {
        "old-0": ("127.0.0.1:31001", 62),
        "new-0": ("127.0.0.1:31002", 188),
    }


async def test_a_step_under_a_lost_lease_changes_nothing(
    store: Store, state_dir: Path, clock: FakeClock
) -> None:
    router = replica(store, state_dir, free_range())
    route = Route("dev", "svc", 1)
    await router.set_weights(route, {"old": (["127.0.0.1:31001"], 1000)})
    lease = await store.take_route_lease("local/dev/svc/1", "a", timedelta(seconds=15))
    assert lease is not None
    clock.advance(16)
    assert await store.take_route_lease("local/dev/svc/1", "b", timedelta(seconds=15))
    with pytest.raises(LeaseLost):
        await router.set_weights(
            route,
            {"old": (["127.0.0.1:31001"], 0), "new": (["127.0.0.1:31002"], 1000)},
            WeightFence(lease),
        )
    assert await router.weights(route) == {"old": 1000}
    assert await runtime(router, route) == {"old-0": ("127.0.0.1:31001", 250)}


async def test_routes_kept_in_routes_json_are_adopted_with_their_ports(
    store: Store, state_dir: Path
) -> None:
    low = int(free_range().split("-")[0])
    state_dir.mkdir(parents=True)
    legacy = {
        "routes": {
            "dev_svc_1": {
                "port": low + 5,
                "servers": {
                    "svc--1-0-0--a-0": {
                        "address": "127.0.0.1:31001",
                        "weight": 250,
                        "stack": "svc--1-0-0--a",
                        "per_mille": 1000,
                    }
                },
            }
        }
    }
    (state_dir / "routes.json").write_text(json.dumps(legacy), encoding="utf-8")
    router = replica(store, state_dir, f"{low}-{low + 19}")
    route = Route("dev", "svc", 1)
    assert await router.address(route) == f"127.0.0.1:{low + 5}"
    assert await router.weights(route) == {"svc--1-0-0--a": 1000}
    assert await runtime(router, route) == {"svc--1-0-0--a-0": ("127.0.0.1:31001", 250)}
    assert not (state_dir / "routes.json").exists()
