"""Vault and Consul end to end on the Docker datacenter: the bot serving Slack, real
containers on a real dockerd, the fake Vault and the fake Consul on loopback. A caller
(`front`) depends on `back`; `back` 1.0.1 takes over from 1.0.0 by a linear shift, which
Lighthouse's discovery table of `front` follows; reaping takes every key, token and policy
away."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from bot.jobs import Jobs
from bot.terminal import render
from commands.access import Principal
from commands.settings import DatacenterSettings, Settings
from domain.records import Stack, StackQuery
from domain.states import StackStatus
from tests.dockerworld import busybox_image
from tests.e2e.local_dc import slash, use_manifest, with_local_datacenter
from tests.e2e.local_dc import stop as stop_local
from tests.e2e.slack_harness import RunningBot, settings_for, start_bot
from tests.fakes.clock import FakeClock
from tests.fakes.consul import Entry, FakeConsul
from tests.fakes.slack import FakeSlack
from tests.fakes.vault import FakeVault

DURATION = 120  # seconds of the shift, on the test's clock (moved forward while it runs)

MANIFEST = """\
units:
  - name: back
    description: answers with its version
    ports:
      - default->8080/http
    resources:
      - name: db
  - name: front
    description: calls back
    ports:
      - default->8080/http
    dependencies:
      - ref: back@1.0
plans:
  - name: with-db
    memory: 64
    resources:
      - ref: db
        uri: postgresql://db.example.com/back
    health_checks: &checks
      - name: alive
        port_reference: default
        protocol: http
        path: /
        timeout: 1s
        interval: 1s
    traffic_shift: &shift
      policy: linear
      duration: {duration}s
  - name: default
    memory: 64
    health_checks: *checks
    traffic_shift: *shift
namespaces:
  - name: dev
    units:
      - ref: back
        plans: [with-db]
      - ref: front
        plans: [default]
"""

BOT_POLICY = """
path "sys/policies/acl" { capabilities = ["list"] }
path "sys/policies/acl/nelson__*" { capabilities = ["create", "read", "update", "delete"] }
path "auth/token/create-orphan" { capabilities = ["update", "sudo"] }
path "auth/token/renew-accessor" { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
"""

ADMIN = Principal("U1", "alice")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(ticking=True)


@pytest.fixture
async def vault(clock: FakeClock) -> AsyncIterator[FakeVault]:
    async with FakeVault(clock=clock) as fake:
        fake.policies["nelson-bot"] = BOT_POLICY
        fake.kv["nelson/dev/db/creds/back"] = {"username": "back", "password": "pw"}
        yield fake


@pytest.fixture
async def consul() -> AsyncIterator[FakeConsul]:
    async with FakeConsul() as fake:
        fake.acl_tokens = {"consul-bot-token": {"lighthouse/": "write", "nelson/": "write"}}
        yield fake


@pytest.fixture
async def bot(
    fake: FakeSlack,
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
    vault: FakeVault,
    consul: FakeConsul,
    clock: FakeClock,
) -> AsyncIterator[RunningBot]:
    for unit, version in (("back", "1.0.0"), ("back", "1.0.1"), ("front", "1.0.0")):
        await asyncio.to_thread(
            busybox_image, engine_client, f"{registries[0]}/{unit}:{version}", version
        )
    settings = settings_for(
        fake,
        tmp_path,
        workflow={"warming_timeout": "20s", "health_interval": 0.2},
        # the test steps the shift itself, on its own clock (the bot's job never comes round)
        traffic={"step_interval": "1h"},
        approvals={"dev": {"needed": False}},
        access={"admins": ["U1"]},
    )
    use_manifest(tmp_path, "services", MANIFEST.format(duration=DURATION))
    settings = with_local_datacenter(settings, tmp_path, docker_address, registries)
    local = settings.datacenters["local"].model_dump(mode="json")
    local["router"] = {"kind": "lighthouse", "ports": local["router"]["ports"]}
    local["consul"] = {"address": consul.address, "token": "consul-bot-token"}
    local["vault"] = {"address": vault.address, "token": vault.add_token(["nelson-bot"])}
    settings = settings.model_copy(
        update={"datacenters": {"local": DatacenterSettings.model_validate(local)}}
    )
    assert isinstance(settings, Settings)
    running = await start_bot(settings, real=True, clock=clock)
    yield running
    await stop_local(running, engine_client, ["back", "front"])


async def until(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def ready(bot: RunningBot, unit: str, version: str) -> Stack:
    async def check() -> Stack | None:
        page = await bot.application.store.list_stacks(StackQuery(unit=unit, limit=20))
        stack = next((s for s in page.stacks if str(s.version) == version), None)
        if stack is not None and stack.status is StackStatus.FAILED:
            raise AssertionError(stack.status_message)
        if stack is None or stack.status is not StackStatus.READY:
            return None
        lines = [line.message for line in await bot.application.store.logs(stack.id)]
        return stack if any(line.startswith("traffic: ") for line in lines) else None

    found: Stack = await until(check, f"{unit} {version} ready and routed")
    return found


def table(consul: FakeConsul, stack: str) -> dict[str, Any] | None:
    raw = consul.value(f"lighthouse/discovery/v1/{stack}")
    return None if raw is None else dict(json.loads(raw))


def weights(consul: FakeConsul, caller: str) -> dict[str, int]:
    found = table(consul, caller)
    if not found:
        return {}
    return {
        target["stack"]: target["weight"]
        for namespace in found["namespaces"]
        for route in namespace["routes"]
        for target in route["targets"]
    }


async def test_secrets_and_lighthouse_follow_the_stacks_lifecycle(
    bot: RunningBot,
    fake: FakeSlack,
    vault: FakeVault,
    consul: FakeConsul,
    engine_client: docker.DockerClient,
) -> None:
    app = bot.application
    await slash(bot, fake, "deploy back 1.0.0 to local in dev")
    old = await ready(bot, "back", "1.0.0")
    await slash(bot, fake, "deploy front 1.0.0 to local in dev")
    front = await ready(bot, "front", "1.0.0")

    # Vault: each stack has its policy; back's container reads its credentials with its token
    for stack in (old, front):
        assert f"nelson__dev__{stack.name}" in vault.policies
    container = engine_client.containers.get(f"{old.name}-0")
    result: Any = await asyncio.to_thread(  # the fake Vault answers on this loop
        container.exec_run,
        [
            "/bin/sh",
            "-c",
            'busybox wget -q -O - --header "X-Vault-Token: $VAULT_TOKEN" '
            '"$VAULT_ADDR/v1/nelson/dev/db/creds/back"',
        ],
    )
    assert result.exit_code == 0 and b'"username": "back"' in result.output, result.output

    # Lighthouse: front's table routes back 1.x entirely to 1.0.0, in Nelson's format
    front_table = table(consul, front.name)
    assert front_table is not None
    assert front_table["defaultNamespace"] == "dev" and front_table["domain"]
    [namespace] = front_table["namespaces"]
    [route] = namespace["routes"]
    assert (namespace["name"], route["service"], route["port"]) == ("dev", "back", "default")
    [target] = route["targets"]
    assert (target["stack"], target["weight"], target["protocol"]) == (old.name, 100, "http")
    lb = json.loads(consul.value("nelson/v1/loadbalancers/dev_back_1") or b"[]")
    assert lb[0]["service_name"] == "back" and lb[0]["major_version"] == 1

    # chat shows the keys and the services' state
    shown = render((await app.conversation.answer(f"inspect {old.name}", ADMIN)).reply, 300)
    assert f"lighthouse/discovery/v1/{old.name}" in shown
    assert "nelson/v1/routes/dev_back_1" in shown and f"nelson__dev__{old.name}" in shown
    shown = render((await app.conversation.answer("datacenters", ADMIN)).reply, 300)
    assert "local: Consul leader 127.0.0.1:8300" in shown and "local: Vault unsealed" in shown

    # back 1.0.1 takes over by a linear shift: front's table moves with the weights
    await slash(bot, fake, "deploy back 1.0.1 to local in dev")
    new = await ready(bot, "back", "1.0.1")
    seen: list[dict[str, int]] = []

    assert app.traffic is not None
    traffic = app.traffic

    async def shifted() -> bool:
        bot.clock.advance(5)  # the shift's schedule runs on the test's clock
        await traffic.tick()
        now = weights(consul, front.name)
        if not seen or seen[-1] != now:
            seen.append(now)
        return now == {new.name: 100}

    try:
        await until(shifted, "the shift to back 1.0.1")
    except AssertionError:
        lines = [line.message for line in await app.store.logs(new.id)]
        raise AssertionError(f"{seen}\n{lines}") from None
    middle = [w for w in seen if len(w) == 2]
    assert middle, seen  # both targets at once, part way through
    assert all(sum(w.values()) in (99, 100, 101) for w in middle), middle

    # reaping the old stack: its token, policy and keys go; front's table keeps the new one
    [record] = await app.store.vault_tokens(old.id)
    assert app.lifecycle is not None
    await app.store.mark_garbage({old.id: "superseded"}, app.clock.now())
    said = await app.lifecycle.remove_now([old.id], ADMIN)
    assert said.startswith("Removed"), said
    assert vault.token_by_accessor(record.accessor) is None
    assert f"nelson__dev__{old.name}" not in vault.policies
    assert table(consul, old.name) is None
    assert old.name not in (consul.value("nelson/v1/routes/dev_back_1") or b"").decode()
    assert weights(consul, front.name) == {new.name: 100}

    # the sweep removes the keys of stacks the bot does not know
    ghost = "lighthouse/discovery/v1/ghost--1-0-0--aaaa"
    consul.kv[ghost] = Entry(ghost, b"{}", 0, consul.index, consul.index)
    await Jobs(app).sweep_lighthouse()
    assert consul.value(ghost) is None
    assert table(consul, front.name) is not None


async def test_consul_down_at_reaping_is_retried(
    bot: RunningBot, fake: FakeSlack, consul: FakeConsul, vault: FakeVault
) -> None:
    app = bot.application
    await slash(bot, fake, "deploy back 1.0.0 to local in dev")
    stack = await ready(bot, "back", "1.0.0")
    # 1.0.1 takes all the traffic first: a stack that still receives some is never removed
    await slash(bot, fake, "deploy back 1.0.1 to local in dev")
    new = await ready(bot, "back", "1.0.1")
    assert app.traffic is not None
    traffic = app.traffic

    async def shifted() -> bool:
        bot.clock.advance(5)
        await traffic.tick()
        return [s.state for s in await app.store.shifts(stack_id=new.id)] == ["done"]

    await until(shifted, "the shift to back 1.0.1")
    assert app.lifecycle is not None
    await app.store.mark_garbage({stack.id: "test"}, app.clock.now())
    consul.fail_next(100, 500)
    said = await app.lifecycle.remove_now([stack.id], ADMIN)
    assert "Could not remove" in said and "No cluster leader" in said, said
    assert f"nelson__dev__{stack.name}" in vault.policies  # nothing after the router went
    consul.heal()
    said = await app.lifecycle.remove_now([stack.id], ADMIN)
    assert said.startswith("Removed"), said
    assert table(consul, stack.name) is None
    assert stack.name not in (consul.value("nelson/v1/routes/dev_back_1") or b"").decode()
    assert new.name in (consul.value("nelson/v1/routes/dev_back_1") or b"").decode()
    assert f"nelson__dev__{stack.name}" not in vault.policies
