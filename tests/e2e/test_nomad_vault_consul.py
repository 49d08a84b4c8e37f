"""Vault and Consul end to end on a Nomad datacenter: the bot serving Slack, python-nomad
against the fake Nomad (its allocations real containers on the test dockerd, its consul
services registered in the fake Consul), the fake Vault, and Lighthouse in the fake Consul's
KV. The bot writes each stack's policy (no token: Nomad derives one from the job's `Vault`
block), `runtime` shows Consul's health, Lighthouse follows a shift, and reaping takes the
job, the policy and the keys away; a Vault that refuses leaves nothing behind."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from bot.terminal import render
from commands.access import Principal
from commands.settings import DatacenterSettings
from domain.records import StackQuery
from domain.states import StackStatus
from tests.dockerworld import busybox_image
from tests.e2e.local_dc import slash, stop, use_manifest
from tests.e2e.slack_harness import RunningBot, settings_for, start_bot
from tests.e2e.test_vault_consul import (  # the same two units
    BOT_POLICY,
    DURATION,
    MANIFEST,
    ready,
    table,
    until,
    weights,
)
from tests.fakes.clock import FakeClock
from tests.fakes.consul import FakeConsul
from tests.fakes.nomad import FakeNomad
from tests.fakes.slack import FakeSlack
from tests.fakes.vault import FakeVault

TOKEN = "7d1c-nomad-acl-token"
ADMIN = Principal("U1", "alice")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(ticking=True)


@pytest.fixture
async def vault(clock: FakeClock) -> AsyncIterator[FakeVault]:
    async with FakeVault(clock=clock) as fake:
        fake.policies["nelson-bot"] = BOT_POLICY
        yield fake


@pytest.fixture
async def consul() -> AsyncIterator[FakeConsul]:
    async with FakeConsul() as fake:
        fake.acl_tokens = {"consul-bot-token": {"lighthouse/": "write", "nelson/": "write"}}
        yield fake


@pytest.fixture
def nomad(docker_address: str, consul: FakeConsul) -> Iterator[FakeNomad]:
    low = random.randrange(12000, 19900, 100)
    with FakeNomad(
        docker_address,
        acl={TOKEN: "management"},
        datacenter="west",
        ports=(low, low + 99),
        vault=True,
        consul=consul,
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
        workflow={"warming_timeout": "30s", "health_interval": 0.2},
        # the test steps the shift itself, on its own clock (the bot's job never comes round)
        traffic={"step_interval": "1h"},
        approvals={"dev": {"needed": False}},
        access={"admins": ["U1"]},
    )
    use_manifest(tmp_path, "services", MANIFEST.format(duration=DURATION))
    base = random.randrange(21000, 29900, 100)
    west = {
        "scheduler": {"kind": "nomad", "address": nomad.address, "token": TOKEN},
        "staging_registry": registries[0],
        "runtime_registry": registries[1],
        "router": {"kind": "lighthouse", "ports": f"{base}-{base + 99}"},
        "consul": {"address": consul.address, "token": "consul-bot-token"},
        "vault": {"address": vault.address, "token": vault.add_token(["nelson-bot"])},
    }
    settings = settings.model_copy(
        update={"datacenters": {"west": DatacenterSettings.model_validate(west)}}
    )
    running = await start_bot(settings, real=True, clock=clock)
    yield running
    await stop(running, engine_client, [])


def task_of(nomad: FakeNomad, stack: str) -> dict[str, Any]:
    [group] = nomad.jobs[("default", stack)]["TaskGroups"]
    [task] = group["Tasks"]
    return dict(task)


async def test_policies_health_and_lighthouse_follow_nomad_stacks(
    bot: RunningBot, fake: FakeSlack, nomad: FakeNomad, vault: FakeVault, consul: FakeConsul
) -> None:
    app = bot.application
    await slash(bot, fake, "deploy back 1.0.0 to west in dev")
    old = await ready(bot, "back", "1.0.0")
    await slash(bot, fake, "deploy front 1.0.0 to west in dev")
    front = await ready(bot, "front", "1.0.0")

    # Vault: each stack's policy exists and is in its job's Vault block; the bot issues no
    # token (Nomad derives the task's own from the block)
    for stack in (old, front):
        policy = f"nelson__dev__{stack.name}"
        assert policy in vault.policies
        task = task_of(nomad, stack.name)
        assert task["Vault"]["Policies"] == [policy]
        assert task["Env"]["NELSON_VAULT_POLICYNAME"] == policy
        assert "VAULT_TOKEN" not in task["Env"]
        assert await app.store.vault_tokens(stack.id) == []
    assert 'path "nelson/dev/db/creds/back"' in vault.policies[f"nelson__dev__{old.name}"]
    assert not [t for t in vault.live_tokens() if any(p.startswith("nelson__") for p in t.policies)]

    shown = render((await app.conversation.answer(f"inspect {old.name}", ADMIN)).reply, 300)
    assert f"nelson__dev__{old.name}: read on nelson/dev/db/creds/back" in shown, shown
    assert "derived by Nomad from the job's vault block" in shown

    # Consul: the job's services are registered there, and `runtime` shows their health
    [registered] = [s for s in consul.services if s.name == old.name]
    assert registered.id.startswith("_nomad-task-") and registered.status == "passing"
    shown = render((await app.conversation.answer(f"runtime {old.name}", ADMIN)).reply, 300)
    assert f"Consul at 127.0.0.1:{consul.port}: 1 passing" in shown, shown
    assert "healthy" in shown
    # Lighthouse: front's table routes back 1.x to 1.0.0
    assert weights(consul, front.name) == {old.name: 100}

    # back 1.0.1 takes over by a linear shift: front's table moves with the weights
    await slash(bot, fake, "deploy back 1.0.1 to west in dev")
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
        shifts = await app.store.shifts(stack_id=new.id)
        raise AssertionError(f"{seen}\n{shifts}\n{lines}") from None
    middle = [w for w in seen if len(w) == 2]
    assert middle, seen  # both targets at once, part way through

    # reaping the old stack: its job, policy, keys and Consul services go
    assert app.lifecycle is not None
    await app.store.mark_garbage({old.id: "superseded"}, app.clock.now())
    said = await app.lifecycle.remove_now([old.id], ADMIN)
    assert said.startswith("Removed"), said
    assert ("default", old.name) not in nomad.jobs
    assert f"nelson__dev__{old.name}" not in vault.policies
    assert table(consul, old.name) is None
    assert weights(consul, front.name) == {new.name: 100}
    assert f"nelson__dev__{new.name}" in vault.policies

    async def deregistered() -> bool:
        return not [s for s in consul.services if s.name == old.name]

    await until(deregistered, "the old stack's services leaving Consul")


async def test_a_vault_that_refuses_leaves_nothing_behind(
    bot: RunningBot, fake: FakeSlack, nomad: FakeNomad, vault: FakeVault, consul: FakeConsul
) -> None:
    app = bot.application
    vault.fail_next(100, 403, prefix="sys/policies/acl/")

    async def failed() -> Any:
        page = await app.store.list_stacks(StackQuery(unit="back", limit=5))
        return next((s for s in page.stacks if s.status is StackStatus.FAILED), None)

    await slash(bot, fake, "deploy back 1.0.0 to west in dev")
    stack = await until(failed, "the deploy to fail at the secrets step")
    assert "403" in stack.status_message or "denied" in stack.status_message.lower()
    assert not nomad.jobs  # never launched
    assert not [p for p in vault.policies if p.startswith("nelson__")]
    assert table(consul, stack.name) is None
    assert not [k for k in consul.kv if stack.name in k]
    lines = [line.message for line in await app.store.logs(stack.id)]
    assert any("Vault" in line for line in lines), lines

    # once Vault lets the bot write policies again, a deploy goes through
    vault.heal()
    await slash(bot, fake, "deploy back 1.0.1 to west in dev")
    again = await ready(bot, "back", "1.0.1")
    assert f"nelson__dev__{again.name}" in vault.policies
