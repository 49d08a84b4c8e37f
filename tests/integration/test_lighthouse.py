"""The Lighthouse router against the fake Consul: two bot replicas changing one route at
once lose nothing (check-and-set), and Consul's faults become clear router errors."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.consul import ConsulClient
from adapters.router.lighthouse import LighthouseRouter
from commands.ports import LeaseLost, Route, RouterError, WeightFence
from commands.settings import ConsulSettings
from tests.fakes.clock import FakeClock
from tests.fakes.consul import FakeConsul
from tests.fakes.memory_store import MemoryStore

ROUTE = Route("dev", "back", 1)


class NoStacks:
    """The part of the Store the router reads, knowing no stack (no callers to publish)."""

    async def stack(self, ref: str) -> None:
        return None

    async def dependents(self, stack_id: int) -> list[Any]:
        return []

    async def dependencies(self, stack_id: int) -> list[Any]:
        return []


def router(consul: FakeConsul, token: str | None = None) -> LighthouseRouter:
    client = ConsulClient(ConsulSettings(address=consul.address, token=token, timeout=5))  # type: ignore[arg-type]
    return LighthouseRouter(client, NoStacks(), datacenter="local", ports=(21000, 21009))  # type: ignore[arg-type]


# per replica, a sequence of (stack index, weight or None for remove) on its own stacks
operations = st.lists(
    st.tuples(st.integers(0, 2), st.one_of(st.none(), st.integers(0, 1000))), max_size=8
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=operations, second=operations)
def test_two_replicas_changing_one_route_lose_nothing(
    first: list[tuple[int, int | None]], second: list[tuple[int, int | None]]
) -> None:
    async def scenario() -> None:
        async with FakeConsul() as consul:
            a, b = router(consul), router(consul)

            async def run(replica: LighthouseRouter, prefix: str, ops: Any) -> dict[str, int]:
                expected: dict[str, int] = {}
                for index, weight in ops:
                    name = f"{prefix}{index}"
                    if weight is None:
                        await replica.remove(ROUTE, name)
                        expected.pop(name, None)
                    else:
                        await replica.set_weights(ROUTE, {name: ([f"127.0.0.1:3{index}"], weight)})
                        expected[name] = weight
                    await asyncio.sleep(0)
                return expected

            try:
                one, two = await asyncio.gather(run(a, "a", first), run(b, "b", second))
                expected = one | two
                assert await a.weights(ROUTE) == expected
                assert await b.serving() == {n for n, w in expected.items() if w > 0}
                # a route with stacks has its record and load balancer key; without, neither
                routed = consul.value("nelson/v1/routes/dev_back_1") is not None
                balanced = consul.value("nelson/v1/loadbalancers/dev_back_1") is not None
                assert routed == balanced == bool(expected)
            finally:
                await a.close()
                await b.close()

    asyncio.run(scenario())


async def test_routes_get_their_own_frontend_port_and_load_balancer_key() -> None:
    async with FakeConsul() as consul:
        lighthouse = router(consul)
        assert await lighthouse.address(ROUTE) == "127.0.0.1:21000"
        assert await lighthouse.address(Route("dev", "other", 2)) == "127.0.0.1:21001"
        assert await lighthouse.address(ROUTE) == "127.0.0.1:21000"
        assert consul.value("nelson/v1/loadbalancers/dev_other_2") == (
            b'[{"port_label": "default", "frontend_port": 21001, "service_name": "other", '
            b'"major_version": 2}]'
        )
        await lighthouse.set_weights(ROUTE, {"back--1-0-0--a": (["127.0.0.1:30001"], 1000)})
        assert await lighthouse.check() is None
        await lighthouse.remove(ROUTE, "back--1-0-0--a")
        assert consul.value("nelson/v1/routes/dev_back_1") is None
        assert consul.value("nelson/v1/loadbalancers/dev_back_1") is None
        await lighthouse.close()


async def test_consul_faults_are_router_errors_that_say_what() -> None:
    async with FakeConsul() as consul:
        consul.acl_tokens = {"good": {"lighthouse/": "write", "nelson/": "write"}}
        refused = router(consul, token="wrong-token")
        with pytest.raises(RouterError, match="ACL not found") as info:
            await refused.address(ROUTE)
        assert "wrong-token" not in str(info.value)
        assert "needs key:write on lighthouse/ and nelson/" in str(info.value)
        lighthouse = router(consul, token="good")
        consul.fail_next(1, 500)
        with pytest.raises(RouterError, match="No cluster leader"):
            await lighthouse.weights(ROUTE)
        await consul.stop()
        with pytest.raises(RouterError, match="cannot be reached"):
            await lighthouse.serving()
        assert "cannot be reached" in (await lighthouse.check() or "")
        await lighthouse.close()
        await refused.close()


async def test_a_step_under_a_lost_lease_leaves_consul_as_it_was() -> None:
    clock = FakeClock()
    table = MemoryStore(clock)
    async with FakeConsul() as consul:
        client = ConsulClient(ConsulSettings(address=consul.address, timeout=5))  # type: ignore[arg-type]
        lighthouse = LighthouseRouter(
            client,
            NoStacks(),  # type: ignore[arg-type]
            datacenter="local",
            ports=(21000, 21009),
            fences=table,
        )
        await lighthouse.set_weights(ROUTE, {"back--1-0-0--a": (["127.0.0.1:30001"], 1000)})
        lease = await table.take_route_lease("local/dev/back/1", "a", timedelta(seconds=15))
        assert lease is not None
        new = {"back--1-0-0--a": (["127.0.0.1:30001"], 0), "b": (["127.0.0.1:30002"], 1000)}
        await lighthouse.set_weights(
            ROUTE, {"back--1-0-0--a": (["127.0.0.1:30001"], 900)}, WeightFence(lease)
        )
        clock.advance(16)
        assert await table.take_route_lease("local/dev/back/1", "b", timedelta(seconds=15))
        with pytest.raises(LeaseLost):
            await lighthouse.set_weights(ROUTE, new, WeightFence(lease))
        assert await lighthouse.weights(ROUTE) == {"back--1-0-0--a": 900}
        await lighthouse.close()
