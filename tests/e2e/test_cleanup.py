"""The lifecycle end to end on the local Docker datacenter with short graces: real containers
behind a real HAProxy, the bot serving Slack. Deploy 1.0.0, 1.0.1 and a dependant; the
cleanup collects 1.0.0 and announces it in the team's channel; Keep is pressed; later the
cleanup collects it again, the scheduler is down while it reaps (retried and reported), then
the container is removed and the removal reported."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import pytest

from adapters.scheduler import DockerEngine
from bot.slack.cleanup import KEEP_ACTION
from commands.ports import Route
from commands.settings import Settings
from domain.records import Stack, StackQuery
from domain.states import StackStatus
from tests.dockerworld import busybox_image
from tests.e2e.local_dc import slash, stop, use_manifest, with_local_datacenter
from tests.e2e.slack_harness import RunningBot, settings_for, start_bot
from tests.e2e.test_traffic import shift_until, skip_to
from tests.fakes.slack import FakeSlack, Message
from tests.fakes.slack_requests import block_action, encode_interactive

MANIFEST = """\
units:
  - name: tidy
    description: a service that gets replaced
    ports:
      - default->8080/http
  - name: tidy-client
    description: depends on tidy
    ports:
      - default->8080/http
    dependencies:
      - ref: tidy@1.0
plans:
  - name: default
    memory: 64
    health_checks:
      - name: alive
        port_reference: default
        protocol: http
        path: /
        timeout: 1s
        interval: 1s
    traffic_shift:
      policy: atomic
      duration: "2 minutes"
namespaces:
  - name: dev
    units:
      - ref: tidy
        plans: [default]
      - ref: tidy-client
        plans: [default]
notifications:
  slack:
    - channel: "#howdy-team"
"""
TEAM = "C3"  # the fake workspace's #howdy-team
OPS = "C2"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    # Three deploys followed in three channels make many progress updates; at Slack's own
    # pace (Tier 3, 50 a minute) the test would wait a minute for the Keep mark to show.
    async with FakeSlack(rate_limits={"chat.update": (500, 60.0)}) as workspace:
        yield workspace


@pytest.fixture
def images(engine_client: docker.DockerClient, registries: tuple[str, str]) -> None:
    for reference in ("tidy:1.0.0", "tidy:1.0.1", "tidy-client:1.0.0"):
        busybox_image(engine_client, f"{registries[0]}/{reference}", reference)


def cleanup_settings(
    fake: FakeSlack, tmp: Path, docker_address: str, registries: tuple[str, str]
) -> Settings:
    settings = settings_for(
        fake,
        tmp,
        approvals={"dev": {"needed": False}},
        workflow={"warming_timeout": "20s", "health_interval": 0.2},
        traffic={"step_interval": 0.2},
        lifecycle={
            "new_stack_grace": "1s",
            "garbage_grace": "1s",
            "notice": "1s",
            "keep_for": "4s",
            "interval": "1h",  # the test runs the passes itself, in order
        },
        slack={"operations_channel": OPS},
    )
    use_manifest(tmp, "tidy", MANIFEST)
    return with_local_datacenter(settings, tmp, docker_address, registries)


@pytest.fixture
async def bot(
    fake: FakeSlack,
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    images: None,
    engine_client: docker.DockerClient,
) -> AsyncIterator[RunningBot]:
    running = await start_bot(
        cleanup_settings(fake, tmp_path, docker_address, registries), real=True
    )
    yield running
    await stop(running, engine_client, ["tidy", "tidy-client"])


async def ready(bot: RunningBot, unit: str, version: str, timeout: float = 60) -> Stack:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = await bot.application.store.list_stacks(StackQuery(unit=unit, limit=20))
        found = next((s for s in page.stacks if str(s.version) == version), None)
        if found is not None and found.status is StackStatus.FAILED:
            raise AssertionError(found.status_message)
        if found is not None and found.status is StackStatus.READY:
            lines = [line.message for line in await bot.application.store.logs(found.id)]
            if any(line.startswith("traffic: ") for line in lines):
                return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{unit} {version} not ready")


async def status_of(bot: RunningBot, stack: Stack) -> StackStatus:
    found = await bot.application.store.stack_by_id(stack.id)
    assert found is not None
    return found.status


def containers(engine_client: docker.DockerClient, stack: Stack) -> list[Any]:
    return list(
        engine_client.containers.list(all=True, filters={"label": f"nelson.stack={stack.name}"})
    )


def by_ts(fake: FakeSlack, channel: str, ts: str) -> Message:
    return next(m for m in fake.messages(channel) if m.ts == ts)


def posted(fake: FakeSlack, channel: str, words: str) -> list[Message]:
    return [m for m in fake.messages(channel) if words in fake.all_text(m)]


async def press(
    bot: RunningBot, fake: FakeSlack, message: Message, actions: dict[str, Any], user: str
) -> None:
    """Click the first button of `actions` (a block of `message` in the team's channel)."""
    button = actions["elements"][0]
    payload = block_action(
        button["action_id"],
        button["value"],
        user_id=user,
        message_ts=message.ts,
        response_url=fake.new_response_url(),
        channel_id=TEAM,
        block_id=actions["block_id"],
        message={"ts": message.ts, "text": message.text, "blocks": message.blocks},
    )
    status, _ = await bot.post(encode_interactive(payload), "application/x-www-form-urlencoded")
    assert status == 200


async def until_serving_moves(bot: RunningBot, away_from: Stack, timeout: float = 20) -> None:
    router = bot.application.routers["local"]
    deadline = time.monotonic() + timeout
    while away_from.name in await router.serving():
        assert time.monotonic() < deadline, "traffic never left the old stack"
        await asyncio.sleep(0.1)


async def test_announce_keep_then_reap_with_an_outage(
    bot: RunningBot, fake: FakeSlack, engine_client: docker.DockerClient
) -> None:
    lifecycle = bot.application.lifecycle
    assert lifecycle is not None
    await slash(bot, fake, "deploy tidy 1.0.0 to local")
    old = await ready(bot, "tidy", "1.0.0")
    await slash(bot, fake, "deploy tidy 1.0.1 to local")
    new = await ready(bot, "tidy", "1.0.1")
    await slash(bot, fake, "deploy tidy-client 1.0.0 to local")
    client = await ready(bot, "tidy-client", "1.0.0")
    assert [s.name for s in await bot.application.store.dependencies(client.id)] == [new.name]
    running = await shift_until(bot, new.id, lambda s: s.state == "running")
    await skip_to(bot, running, 1.01)  # the atomic shift's two minutes, with a driver at work
    await until_serving_moves(bot, old)
    bot.clock.advance(1.1)  # the new-stack grace

    # the pass collects 1.0.0 only: 1.0.1 serves and the client depends on it
    report = await lifecycle.run_once()
    assert [s.name for s in report.garbage] == [old.name]
    assert await status_of(bot, new) is StackStatus.READY
    assert await status_of(bot, client) is StackStatus.READY

    # the announcement: the team's channel and the operations channel, grouped by unit
    assert await lifecycle.announce() is not None
    await fake.wait_for(lambda: posted(fake, TEAM, "will be removed"))
    digest = posted(fake, TEAM, "will be removed")[0]
    text = fake.all_text(digest)
    assert old.name in text and "tidy" in text
    assert new.name not in text
    await fake.wait_for(lambda: posted(fake, OPS, "will be removed"))

    # Keep 24h more, pressed by a deployer of the namespace: it returns to ready
    keep = next(b for b in digest.blocks or [] if b["type"] == "actions")
    assert keep["elements"][0]["action_id"] == KEEP_ACTION
    assert keep["elements"][0]["text"]["text"] == "Keep 4s more"  # lifecycle.keep_for
    await press(bot, fake, digest, keep, "U3")  # may view, may not deploy
    await fake.wait_for(
        lambda: any("may not keep" in e.text for e in fake.ephemerals if e.channel == TEAM)
    )
    assert await status_of(bot, old) is StackStatus.GARBAGE
    await press(bot, fake, digest, keep, "U1")
    await fake.wait_for(lambda: "Kept by" in fake.all_text(by_ts(fake, TEAM, digest.ts)))
    # the digest no longer counts or lists what was kept
    kept_digest = fake.all_text(by_ts(fake, TEAM, digest.ts))
    assert "nothing left to remove here" in kept_digest and "1 stack will" not in kept_digest
    assert f"~{old.name}~" in kept_digest
    assert await status_of(bot, old) is StackStatus.READY
    audit = await bot.application.store.audit_events(target=old.name)
    assert audit[0].action == "keep" and audit[0].actor == "U1"
    assert len(containers(engine_client, old)) == 1
    assert (await lifecycle.run_once()).garbage == []  # kept: nothing happens for keep_for

    # keep_for passes: collected again, announced again; the scheduler is down while reaping
    bot.clock.advance(4.1)
    assert [s.name for s in (await lifecycle.run_once()).garbage] == [old.name]
    await lifecycle.announce()
    bot.clock.advance(1.1)  # the garbage grace and the notice
    real = lifecycle.schedulers["local"]
    lifecycle.schedulers["local"] = DockerEngine("unix:///nonexistent/docker.sock", "local")
    try:
        report = await lifecycle.run_once()
    finally:
        await lifecycle.schedulers["local"].close()
        lifecycle.schedulers["local"] = real
    assert [s.name for s, _ in report.failed] == [old.name] and report.reaped == []
    assert await status_of(bot, old) is StackStatus.GARBAGE
    assert len(containers(engine_client, old)) == 1
    await fake.wait_for(lambda: posted(fake, TEAM, "could not remove"))
    failed = await bot.application.store.audit_events(target=old.name)
    assert failed[0].action == "reap-failed" and not failed[0].allowed

    # back: the container goes, the route forgets it, and the channel is told
    report = await lifecycle.run_once()
    assert [s.name for s in report.reaped] == [old.name]
    assert await status_of(bot, old) is StackStatus.TERMINATED
    assert containers(engine_client, old) == []
    assert len(containers(engine_client, new)) == 1
    route = Route("dev", "tidy", 1)
    assert old.name not in await bot.application.routers["local"].weights(route)
    await fake.wait_for(lambda: posted(fake, TEAM, "Cleanup removed 1 stack"))
    summary = posted(fake, TEAM, "Cleanup removed 1 stack")[0]
    assert old.name in fake.all_text(summary)
    assert posted(fake, OPS, "Cleanup removed 1 stack")
    # the deploy thread of 1.0.0 gets the line too (told from the outbox, so a moment later)
    await fake.wait_for(
        lambda: any(
            "reaped" in fake.all_text(reply)
            for parent in fake.messages("C1")
            for reply in fake.thread("C1", parent.ts)
        )
    )
