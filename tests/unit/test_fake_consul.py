"""The fake Consul driven by an independent client, py-consul, as Consul's docs say it behaves."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import consul
import pytest
import requests

from tests.fakes.consul import FakeConsul, ServiceInstance

T = TypeVar("T")


async def call(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


@pytest.fixture
async def fake() -> AsyncIterator[FakeConsul]:
    async with FakeConsul() as running:
        yield running


def client(fake: FakeConsul, token: str | None = None) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=fake.port, token=token)


async def test_kv_put_get_recurse_keys_and_delete(fake: FakeConsul) -> None:
    c = client(fake)
    assert await call(lambda: c.kv.put("lighthouse/discovery/v1/a", '{"x":1}')) is True
    assert await call(lambda: c.kv.put("lighthouse/discovery/v1/b", "two", flags=7)) is True
    index, item = await call(lambda: c.kv.get("lighthouse/discovery/v1/a"))
    assert item is not None and item["Value"] == b'{"x":1}' and item["Flags"] == 0
    assert item["CreateIndex"] == item["ModifyIndex"] and int(index) == fake.index
    _, items = await call(lambda: c.kv.get("lighthouse/", recurse=True))
    assert [i["Key"] for i in items] == ["lighthouse/discovery/v1/a", "lighthouse/discovery/v1/b"]
    _, keys = await call(lambda: c.kv.get("lighthouse/", keys=True, separator="/"))
    assert keys == ["lighthouse/discovery/"]
    _, missing = await call(lambda: c.kv.get("nope"))
    assert missing is None
    assert await call(lambda: c.kv.delete("lighthouse/", recurse=True)) is True
    _, gone = await call(lambda: c.kv.get("lighthouse/", recurse=True))
    assert gone is None


async def test_check_and_set(fake: FakeConsul) -> None:
    c = client(fake)
    assert await call(lambda: c.kv.put("k", "first", cas=0)) is True
    assert await call(lambda: c.kv.put("k", "again", cas=0)) is False  # exists already
    _, item = await call(lambda: c.kv.get("k"))
    stale = item["ModifyIndex"]
    assert await call(lambda: c.kv.put("k", "second", cas=stale)) is True
    assert await call(lambda: c.kv.put("k", "third", cas=stale)) is False
    assert fake.value("k") == b"second"
    assert await call(lambda: c.kv.delete("k", cas=stale)) is False
    _, item = await call(lambda: c.kv.get("k"))
    assert await call(lambda: c.kv.delete("k", cas=item["ModifyIndex"])) is True


async def test_blocking_query_waits_for_a_change(fake: FakeConsul) -> None:
    c = client(fake)
    await call(lambda: c.kv.put("watched/a", "1"))
    index, _ = await call(lambda: c.kv.get("watched/", recurse=True))
    answered = threading.Event()
    result: dict[str, Any] = {}

    def block() -> None:
        result["answer"] = c.kv.get("watched/", recurse=True, index=index, wait="20s")
        answered.set()

    waiting = asyncio.create_task(asyncio.to_thread(block))
    await asyncio.sleep(0.3)
    assert not answered.is_set()  # held until something changes
    await call(lambda: c.kv.put("watched/b", "2"))
    await asyncio.wait_for(waiting, 10)
    new_index, items = result["answer"]
    assert int(new_index) > int(index) and len(items) == 2
    # with nothing changing, the wait ends and the same index comes back
    same, _ = await call(lambda: c.kv.get("watched/", recurse=True, index=new_index, wait="1s"))
    assert same == new_index


async def test_acl_tokens(fake: FakeConsul) -> None:
    fake.acl_tokens = {"nelson": {"lighthouse/": "write", "nelson/": "write", "secret/": "deny"}}
    allowed = client(fake, token="nelson")
    assert await call(lambda: allowed.kv.put("lighthouse/x", "1")) is True
    with pytest.raises(consul.ACLPermissionDenied, match="Permission denied"):
        await call(lambda: allowed.kv.put("other/x", "1"))
    with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
        await call(lambda: client(fake, token="wrong").kv.get("lighthouse/x"))
    with pytest.raises(consul.ACLPermissionDenied):
        await call(lambda: client(fake).kv.get("lighthouse/x"))  # anonymous


async def test_health_service(fake: FakeConsul) -> None:
    fake.services += [
        ServiceInstance("web-0", "web--1-0-0--abc", "10.0.0.1", 31000),
        ServiceInstance("web-1", "web--1-0-0--abc", "10.0.0.2", 31001, "critical", "timeout"),
    ]
    c = client(fake)
    _, rows = await call(lambda: c.health.service("web--1-0-0--abc"))
    assert [r["Service"]["Port"] for r in rows] == [31000, 31001]
    assert rows[1]["Checks"][1]["Status"] == "critical"
    _, passing = await call(lambda: c.health.service("web--1-0-0--abc", passing=True))
    assert [r["Service"]["ID"] for r in passing] == ["web-0"]
    _, none = await call(lambda: c.health.service("other"))
    assert none == []
    assert await call(c.status.leader) == "127.0.0.1:8300"


async def test_faults(fake: FakeConsul) -> None:
    c = client(fake)
    fake.fail_next(1, 500, prefix="kv/")
    with pytest.raises(consul.ConsulException, match="No cluster leader"):
        await call(lambda: c.kv.get("a"))
    assert (await call(lambda: c.kv.get("a")))[1] is None
    with pytest.raises(consul.ConsulException, match="No path to datacenter"):
        await call(lambda: c.kv.get("a", dc="elsewhere"))
    await fake.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        await call(lambda: c.kv.get("a"))
