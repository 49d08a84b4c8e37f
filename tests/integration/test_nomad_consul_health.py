"""Health of a Nomad stack where the datacenter has Consul: the scheduler adapter against the
fake Nomad (simulated tasks) whose consul services land in the fake Consul. Nomad's verdict
holds only while Consul has every instance passing; a critical check or a Consul that cannot
be reached makes the stack unhealthy, with what Consul said."""

from __future__ import annotations

import asyncio
import time

from adapters.consul.client import ConsulClient
from adapters.scheduler.nomad import NomadScheduler
from commands.settings import ConsulSettings, SchedulerSettings
from domain.runtime import Health, HealthProbe, LaunchSpec, PortSpec
from tests.fakes.consul import FakeConsul
from tests.fakes.nomad import FakeNomad

SPEC = LaunchSpec(
    stack="web--1-0-0--aaaaaaaa",
    unit="web",
    version="1.0.0",
    namespace="dev",
    datacenter="dc1",
    plan="default",
    image="127.0.0.1:1/web@sha256:" + "1" * 64,
    instances=2,
    cpu=0.1,
    memory_mb=32,
    ports=(PortSpec("default", 8080, "http"),),
    health=(HealthProbe("alive", "default", "http", "/", 1, 1),),
)


async def health_until(scheduler: NomadScheduler, wanted: str, timeout: float = 15) -> Health:
    deadline = time.monotonic() + timeout
    health = Health(False, "never asked")
    while time.monotonic() < deadline:
        health = await scheduler.health(SPEC)
        if wanted in health.detail:
            return health
        await asyncio.sleep(0.1)
    raise AssertionError(f"{wanted!r} never seen; last: {health}")


async def test_nomad_health_is_confirmed_by_consul() -> None:
    async with FakeConsul() as consul:
        client = ConsulClient(ConsulSettings(address=consul.address, timeout=2))
        fake = FakeNomad(consul=consul)
        await asyncio.to_thread(fake.start)
        scheduler = NomadScheduler(
            SchedulerSettings(kind="nomad", address=fake.address), "dc1", consul=client
        )
        try:
            await scheduler.launch(SPEC)
            job = fake.jobs[("default", SPEC.stack)]
            [service] = job["TaskGroups"][0]["Services"]
            assert (service["Name"], service["Provider"]) == (SPEC.stack, "consul")
            healthy = await health_until(scheduler, "2 passing")
            assert healthy.healthy
            assert healthy.detail.endswith(f"Consul at 127.0.0.1:{consul.port}: 2 passing")

            fake.make_unhealthy(SPEC.stack)  # Nomad's deployment stays healthy; Consul knows
            critical = await health_until(scheduler, "critical")
            assert not critical.healthy
            assert "2 of 2 instance(s) critical" in critical.detail
            assert "health check failed" in critical.detail

            await consul.stop()
            gone = await scheduler.health(SPEC)
            assert not gone.healthy and "cannot say" in gone.detail, gone
        finally:
            await asyncio.to_thread(fake.stop)
            await client.close()
