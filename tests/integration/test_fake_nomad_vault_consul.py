"""The fake Nomad's Vault and Consul integrations, driven with python-nomad (and the bot's
Consul client for what lands in the fake Consul): the `Vault` block checked as Nomad checks
it, refused without the servers' Vault integration, and services with the consul provider
registered in Consul with their checks' state while their allocations run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import nomad
import pytest
from nomad.api import exceptions as errors

from adapters.consul.client import ConsulClient, ServiceHealth
from commands.settings import ConsulSettings
from tests.fakes.consul import FakeConsul, ServiceInstance
from tests.fakes.nomad import FakeNomad
from tests.integration.test_fake_nomad import job


def with_vault(vault: dict[str, Any] | str, provider: str = "nomad") -> dict[str, Any]:
    body = job()
    body["TaskGroups"][0]["Tasks"][0]["Vault"] = vault
    body["TaskGroups"][0]["Services"][0]["Provider"] = provider
    return body


@pytest.fixture
def vault_nomad() -> Iterator[FakeNomad]:
    with FakeNomad(vault=True) as running:
        yield running
    assert not running.schema_problems


def test_a_vault_block_is_checked_as_nomad_checks_it(vault_nomad: FakeNomad) -> None:
    api = nomad.Nomad(address=vault_nomad.address, timeout=5)
    with pytest.raises(errors.BadRequestNomadException) as typed:
        api.job.register_job("web", {"Job": with_vault({"Policies": "nelson__dev__web"})})
    assert "Failed to decode request body" in typed.value.nomad_resp.text
    cases: list[tuple[dict[str, Any], str]] = [
        ({"Policies": []}, "Policy list cannot be empty"),
        ({"Policies": ["root"]}, 'Can not specify "root" policy'),
        (
            {"Policies": ["p"], "ChangeMode": "signal"},
            'Signal must be specified when using change mode "signal"',
        ),
        ({"Policies": ["p"], "ChangeMode": "reload"}, 'Unknown change mode "reload"'),
    ]
    for block, message in cases:
        with pytest.raises(errors.BadRequestNomadException) as invalid:
            api.job.register_job("web", {"Job": with_vault(block)})
        assert "Vault validation failed" in invalid.value.nomad_resp.text
        assert message in invalid.value.nomad_resp.text
    assert not vault_nomad.jobs
    block = {"Policies": ["nelson__dev__web"], "ChangeMode": "restart", "Env": True}
    api.job.register_job("web", {"Job": with_vault(block)})
    assert api.job.get_job("web")["TaskGroups"][0]["Tasks"][0]["Vault"]["Policies"] == [
        "nelson__dev__web"
    ]


def test_vault_policies_need_the_servers_vault_integration() -> None:
    with FakeNomad() as plain:
        api = nomad.Nomad(address=plain.address, timeout=5)
        with pytest.raises(errors.BaseNomadException) as refused:
            api.job.register_job("web", {"Job": with_vault({"Policies": ["p"]})})
        assert refused.value.nomad_resp.status_code == 500
        assert refused.value.nomad_resp.text == "Vault not enabled and Vault policies requested"
        assert not plain.jobs
        api.job.register_job("web", {"Job": job()})  # without a Vault block it is accepted


async def until(check: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_consul_services_follow_the_allocations_and_their_checks() -> None:
    async with FakeConsul() as consul:
        seeded = ServiceInstance("other-1", "web", "10.0.0.9", 80)  # not Nomad's: kept
        consul.services.append(seeded)
        client = ConsulClient(ConsulSettings(address=consul.address))
        fake = FakeNomad(consul=consul)
        await asyncio.to_thread(fake.start)
        try:
            api = nomad.Nomad(address=fake.address, timeout=5)
            body = with_vault({"Policies": ["p"]}, provider="consul")
            del body["TaskGroups"][0]["Tasks"][0]["Vault"]
            await asyncio.to_thread(api.job.register_job, "web", {"Job": body})

            async def registered(status: str) -> list[ServiceHealth]:
                found = [s for s in await client.health("web") if s.id != "other-1"]
                return found if len(found) == 2 and {s.status for s in found} == {status} else []

            passing = await until(lambda: registered("passing"))
            allocs = fake.running_allocations("web")
            assert {s.port for s in passing} == {a.ports["http"] for a in allocs}
            assert all(s.id.startswith("_nomad-task-") for s in passing)
            fake.make_unhealthy("web")
            await until(lambda: registered("critical"))
            await asyncio.to_thread(api.job.deregister_job, "web", True)

            async def gone() -> bool:
                return [s.id for s in await client.health("web")] == ["other-1"]

            await until(gone)
        finally:
            await asyncio.to_thread(fake.stop)
            await client.close()
