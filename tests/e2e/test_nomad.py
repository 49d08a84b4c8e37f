"""A Nomad datacenter end to end: the bot serving Slack, python-nomad against the fake Nomad
agent whose allocations are real containers on the test dockerd, a real HAProxy in front of
them. Deploy 1.0.0 and 1.0.1, shift traffic between their allocations (measured through
HAProxy), reap 1.0.0 (its job purged); and a Nomad that is down refuses deploys up front."""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest

from commands.access import Principal
from commands.ports import Route
from commands.settings import DatacenterSettings
from domain.records import Stack, StackQuery
from domain.states import StackStatus
from tests.dockerworld import busybox_image, free_port
from tests.e2e.local_dc import slash, stop, use_manifest
from tests.e2e.slack_harness import RunningBot, settings_for, start_bot
from tests.e2e.test_cli import nelson
from tests.fakes.nomad import FakeNomad
from tests.fakes.slack import FakeSlack
from tests.haproxy_config import rendered_routes

TOKEN = "7d1c-nomad-acl-token"
DURATION = 120  # seconds of the shift, on the test's clock (moved forward while it runs)
ROUTE = Route("dev", "hello", 1)
MANIFEST = """\
units:
  - name: hello
    description: says which version answers
    ports:
      - default->8080/http
plans:
  - name: default
    memory: 64
    instances:
      desired: 2
    health_checks:
      - name: alive
        port_reference: default
        protocol: http
        path: /
        timeout: 1s
        interval: 1s
    traffic_shift:
      policy: linear
      duration: {duration}s
namespaces:
  - name: dev
    units:
      - ref: hello
        plans: [default]
"""


@pytest.fixture
def nomad(docker_address: str) -> Iterator[FakeNomad]:
    low = random.randrange(12000, 19900, 100)
    with FakeNomad(
        docker_address, acl={TOKEN: "management"}, datacenter="west", ports=(low, low + 99)
    ) as fake:
        yield fake
    assert not fake.schema_problems


@pytest.fixture
async def bot(
    fake: FakeSlack,
    tmp_path: Path,
    nomad: FakeNomad,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> AsyncIterator[RunningBot]:
    for version in ("1.0.0", "1.0.1"):
        busybox_image(engine_client, f"{registries[0]}/hello:{version}", version)
    settings = settings_for(
        fake,
        tmp_path,
        approvals={"dev": {"needed": False}},
        workflow={"warming_timeout": "30s", "health_interval": 0.2},
        # the test steps the shift itself, on its own clock (the bot's job never comes round)
        traffic={"step_interval": "1h"},
        lifecycle={
            "new_stack_grace": "1s",
            "garbage_grace": "1s",
            "notice": "1s",
            "interval": "1h",
        },
    )
    use_manifest(tmp_path, "hello", MANIFEST.format(duration=DURATION))
    base = random.randrange(21000, 29900, 100)
    west = {
        "scheduler": {"kind": "nomad", "address": nomad.address, "token": TOKEN},
        "staging_registry": registries[0],
        "runtime_registry": registries[1],
        "router": {
            "kind": "haproxy",
            "address": str(tmp_path / "haproxy"),
            "ports": f"{base}-{base + 99}",
        },
    }
    settings = settings.model_copy(
        update={"datacenters": {"west": DatacenterSettings.model_validate(west)}}
    )
    running = await start_bot(settings, real=True)
    yield running
    await stop(running, engine_client, [])


async def ready(bot: RunningBot, version: str, timeout: float = 60) -> Stack:
    deadline = time.monotonic() + timeout
    router = bot.application.routers["west"]
    while time.monotonic() < deadline:
        page = await bot.application.store.list_stacks(StackQuery(unit="hello", limit=20))
        found = next((s for s in page.stacks if str(s.version) == version), None)
        if found is not None and found.status is StackStatus.FAILED:
            raise AssertionError(found.status_message)
        ready_now = found is not None and found.status is StackStatus.READY
        if ready_now and found is not None and found.name in await router.weights(ROUTE):
            # the table holds the weights a moment before HAProxy's file does: a projection
            # that waits its turn reads the table after that write
            await router.converge()
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"hello {version} not ready")


def servers(tmp: Path, stack: Stack) -> set[str]:
    """The addresses HAProxy sends the stack's share of traffic to."""
    return rendered_routes(tmp / "haproxy")[ROUTE.key].addresses(stack.name)


def allocation_addresses(nomad: FakeNomad, stack: Stack) -> set[str]:
    return {f"127.0.0.1:{a.ports['default']}" for a in nomad.running_allocations(stack.name)}


async def share_of_new(bot: RunningBot, requests: int = 60) -> float:
    address = await bot.application.routers["west"].address(ROUTE)

    def sample() -> float:
        hits = 0
        for _ in range(requests):
            with urllib.request.urlopen(f"http://{address}/", timeout=5) as response:
                hits += response.read().decode().strip() == "1.0.1"
        return hits / requests

    return await asyncio.to_thread(sample)


async def test_deploy_shift_and_reap_on_nomad(
    bot: RunningBot, fake: FakeSlack, nomad: FakeNomad, tmp_path: Path
) -> None:
    app = bot.application
    assert app.lifecycle is not None
    await slash(bot, fake, "deploy hello 1.0.0 to west")
    old = await ready(bot, "1.0.0")
    assert len(nomad.running_allocations(old.name)) == 2
    assert servers(tmp_path, old) == allocation_addresses(nomad, old)
    assert await share_of_new(bot, 20) == 0.0
    runtime = (await app.conversation.answer(f"runtime {old.name}", Principal("U1", "u1"))).reply
    assert "2 of 2 running" in runtime.title and "healthy" in str(runtime.blocks)

    await slash(bot, fake, "deploy hello 1.0.1 to west")
    new = await ready(bot, "1.0.1")
    assert servers(tmp_path, new) == allocation_addresses(nomad, new)
    deadline = time.monotonic() + 30
    assert app.traffic is not None
    while [s.state for s in await app.store.shifts(stack_id=new.id)] != ["done"]:
        bot.clock.advance(5)
        await app.traffic.tick()
        if time.monotonic() > deadline:
            shifts = await app.store.shifts(stack_id=new.id)
            lines = [line.message for line in await app.store.logs(new.id)]
            raise AssertionError(f"the shift did not finish: {shifts}\n" + "\n".join(lines))
        await asyncio.sleep(0.1)
    assert (await app.routers["west"].weights(ROUTE))[new.name] == 1000
    assert await share_of_new(bot) == 1.0  # every answer from 1.0.1's allocations

    # the lifecycle collects 1.0.0, announces it, and the reaper purges its Nomad job
    bot.clock.advance(1.1)
    report = await app.lifecycle.run_once()
    assert [s.name for s in report.garbage] == [old.name]
    await app.lifecycle.announce()
    bot.clock.advance(1.1)
    nomad.fail_requests(500, count=1)  # one leaderless moment: the reaper tries again later
    report = await app.lifecycle.run_once()
    if report.failed:
        report = await app.lifecycle.run_once()
    assert [s.name for s in report.reaped] == [old.name]
    assert ("default", old.name) not in nomad.jobs
    assert nomad.running_allocations(old.name) == []
    assert len(nomad.running_allocations(new.name)) == 2
    assert old.name not in await app.routers["west"].weights(ROUTE)
    assert await share_of_new(bot, 20) == 1.0


def test_a_nomad_datacenter_that_is_down_refuses_deploys_from_the_console(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    (tmp_path / "nelson.toml").write_text(
        'namespaces = ["dev"]\n'
        "[datacenters.west]\n"
        'staging_registry = "127.0.0.1:1"\n'
        'runtime_registry = "127.0.0.1:2"\n'
        f'scheduler = {{ kind = "nomad", address = "http://127.0.0.1:{port}" }}\n',
        encoding="utf-8",
    )
    env = {"NELSON_DATACENTERS__WEST__SCHEDULER__TOKEN": TOKEN}
    listing = nelson("run", "datacenters", cwd=tmp_path, env=env)
    assert listing.returncode == 0, listing.stderr
    assert f"cannot reach Nomad at http://127.0.0.1:{port}" in listing.stdout
    assert "connection refused" in listing.stdout and TOKEN not in listing.stdout
    config = nelson("config", cwd=tmp_path, env=env)
    assert TOKEN not in config.stdout and '"kind": "nomad"' in config.stdout
