"""Rollback end to end: real containers behind a real HAProxy, the bot serving Slack; the
share of responses measured through HAProxy before and after `rollback` and the Roll back
button."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import pytest

from bot.slack.rollback_button import ROLLBACK_ACTION
from domain.records import Stack
from domain.states import StackStatus
from tests.dockerworld import busybox_image
from tests.e2e.slack_harness import RunningBot, start_bot
from tests.e2e.test_slack import slash
from tests.e2e.test_traffic import (
    approve_shift,
    click,
    deploy_both,
    parent_of,
    ready,
    share_of_new,
    shift_until,
    skip_to,
    stack,
    stop,
    traffic_settings,
)
from tests.fakes.slack import FakeSlack


@pytest.fixture
async def bot(
    fake: FakeSlack,
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> AsyncIterator[RunningBot]:
    for version in ("1.0.0", "1.0.1"):
        busybox_image(engine_client, f"{registries[0]}/hello:{version}", version)
    running = await start_bot(
        traffic_settings(fake, tmp_path, docker_address, registries), real=True
    )
    yield running
    await stop(running, engine_client)


def offer_in_thread(fake: FakeSlack, version: str) -> Any:
    parent = parent_of(fake, version)
    if parent is None:
        return None
    for reply in fake.thread("C1", parent.ts):
        if any(b.get("block_id", "").startswith("rollback-") for b in reply.blocks or []):
            return reply
    return None


async def test_rollback_as_text_sends_everything_back_and_leaves_the_new_stack_for_cleanup(
    bot: RunningBot, fake: FakeSlack
) -> None:
    old, new = await deploy_both(bot, fake)
    await approve_shift(bot, fake)
    shift = await shift_until(bot, new.id, lambda s: s.state == "running")
    await skip_to(bot, shift, 1.01)
    # on a loaded machine the last step may take a while to land
    done = await shift_until(bot, new.id, lambda s: s.state == "done", timeout=60)
    assert done.state == "done"
    assert await share_of_new(bot, 50) == 1.0
    rid = await slash(bot, fake, "rollback hello in prod", user="U1")
    await fake.wait_for(lambda: fake.responses.get(rid))
    said = fake.all_text(fake.responses[rid][0])
    assert f"{old.name} (1.0.0) gets all traffic" in said
    assert await share_of_new(bot, 50) == 0.0
    rolled = await stack(bot, "1.0.1")
    assert rolled is not None and rolled.status is StackStatus.GARBAGE
    removals = await bot.application.store.pending_removals()
    assert any("rolled back by" in r.reason for r in removals if r.stack.id == new.id)
    # nothing earlier runs than 1.0.0: a second rollback says so and changes nothing
    rid = await slash(bot, fake, "rollback hello in prod at local", user="U1")
    await fake.wait_for(lambda: fake.responses.get(rid))
    assert "no earlier stack of hello 1.x" in fake.all_text(fake.responses[rid][0])
    assert await share_of_new(bot, 50) == 0.0


async def test_the_roll_back_button_mid_shift_refuses_who_may_not_and_stops_the_shift(
    bot: RunningBot, fake: FakeSlack
) -> None:
    old, new = await deploy_both(bot, fake)
    await fake.wait_for(lambda: offer_in_thread(fake, "1.0.1"), timeout=20)
    offer = offer_in_thread(fake, "1.0.1")
    assert old.name in fake.all_text(offer)
    # before the shift starts, the new stack gets nothing: nothing to roll back from
    await click(bot, fake, ROLLBACK_ACTION, str(new.id), "U2", offer.ts)
    await fake.wait_for(lambda: any("gets no traffic" in e.text for e in fake.ephemerals))
    await approve_shift(bot, fake)
    await shift_until(bot, new.id, lambda s: s.current_new_weight >= 20)
    await click(bot, fake, ROLLBACK_ACTION, str(new.id), "U4", offer.ts)
    await fake.wait_for(lambda: any(e.user == "U4" for e in fake.ephemerals))
    assert "may not deploy" in next(e.text for e in fake.ephemerals if e.user == "U4")
    await click(bot, fake, ROLLBACK_ACTION, str(new.id), "U2", offer.ts)
    await fake.wait_for(
        lambda: "Rolled back by" in fake.all_text(offer_in_thread_any(fake, offer.ts))
    )
    await until_garbage(bot, "1.0.1")
    assert (await shift_until(bot, new.id, lambda s: False, timeout=0)).state == "cancelled"
    assert await share_of_new(bot, 50) == 0.0
    audit = [e for e in await bot.application.store.audit_events() if e.action == "rollback"]
    assert {(e.actor, e.allowed) for e in audit} >= {("U2", True), ("U4", False)}


async def until_garbage(bot: RunningBot, version: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = await stack(bot, version)
        if found is not None and found.status is StackStatus.GARBAGE:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"hello {version} did not become garbage")


def offer_in_thread_any(fake: FakeSlack, ts: str) -> Any:
    for parent in fake.messages("C1"):
        for reply in fake.thread("C1", parent.ts):
            if reply.ts == ts:
                return reply
    return None


async def rollbacks_approved_bot(
    fake: FakeSlack,
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> RunningBot:
    """A bot whose `prod` asks for approval before a rollback, with both versions' images."""
    for version in ("1.0.0", "1.0.1"):
        busybox_image(engine_client, f"{registries[0]}/hello:{version}", version)
    settings = traffic_settings(fake, tmp_path, docker_address, registries)
    prod = settings.approvals["prod"].model_copy(update={"rollbacks": True})
    settings = settings.model_copy(update={"approvals": {"prod": prod}})
    return await start_bot(settings, real=True)


async def rollback_asked(running: RunningBot, fake: FakeSlack) -> tuple[Stack, Stack, str]:
    """Both versions deployed, the shift to the new one under way, a rollback asked for:
    the old and new stacks and the answer to the request."""
    old, new = await deploy_both(running, fake)
    await approve_shift(running, fake)
    await shift_until(running, new.id, lambda s: s.current_new_weight >= 20)
    rid = await slash(running, fake, "rollback hello in prod", user="U1")
    await fake.wait_for(lambda: fake.responses.get(rid))
    return old, new, fake.all_text(fake.responses[rid][0])


async def test_a_namespace_may_want_rollbacks_approved(
    fake: FakeSlack,
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> None:
    running = await rollbacks_approved_bot(
        fake, tmp_path, docker_address, registries, engine_client
    )
    try:
        old, new, asked = await rollback_asked(running, fake)
        assert "Asked for approval #" in asked and old.name in asked
        approval_id = int(asked.split("#", 1)[1].split(" ", 1)[0])
        # nothing moved back yet: the shift still runs
        assert (await shift_until(running, new.id, lambda s: False, timeout=0.5)).state == "running"
        rid = await slash(running, fake, f"approve {approval_id}", user="U3")
        await fake.wait_for(lambda: fake.responses.get(rid))
        # the stack rolled back from becomes garbage last, once traffic went back
        await until_garbage(running, "1.0.1")
        assert (await shift_until(running, new.id, lambda s: False, timeout=0)).state == (
            "cancelled"
        )
        assert await share_of_new(running, 50) == 0.0
    finally:
        await stop(running, engine_client)


async def test_a_request_whose_stack_moved_back_is_voided_and_loses_its_buttons(
    fake: FakeSlack,
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> None:
    running = await rollbacks_approved_bot(
        fake, tmp_path, docker_address, registries, engine_client
    )
    try:
        _, new, asked = await rollback_asked(running, fake)
        approval_id = int(asked.split("#", 1)[1].split(" ", 1)[0])
        await fake.wait_for(lambda: approval_posted(fake, approval_id) is not None)
        # the shift is reversed meanwhile: the rollback request no longer means anything
        rid = await slash(running, fake, f"reverse {new.name}", user="U2")
        await fake.wait_for(lambda: fake.responses.get(rid))
        await fake.wait_for(
            lambda: "No longer needed" in fake.all_text(approval_posted(fake, approval_id))
        )
        message = approval_posted(fake, approval_id)
        assert not any(b.get("type") == "actions" for b in message.blocks)
        assert "traffic is moving back from" in fake.all_text(message)
        voided = await running.application.store.approval(approval_id)
        assert voided is not None and voided.status == "void"
        rid = await slash(running, fake, f"approve {approval_id}", user="U3")
        await fake.wait_for(lambda: fake.responses.get(rid))
        assert "already void" in fake.all_text(fake.responses[rid][0])
    finally:
        await stop(running, engine_client)


def approval_posted(fake: FakeSlack, approval_id: int) -> Any:
    for parent in fake.messages("C1"):
        for reply in fake.thread("C1", parent.ts):
            if f"Approval #{approval_id}" in fake.all_text(reply):
                return reply
    return None


async def test_an_emergency_deploy_through_a_freeze_also_gets_its_traffic(
    fake: FakeSlack,
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> None:
    for version in ("1.0.0", "1.0.1"):
        busybox_image(engine_client, f"{registries[0]}/hello:{version}", version)
    settings = traffic_settings(fake, tmp_path, docker_address, registries)
    access = settings.access.model_copy(update={"admins": ("U9",)})
    settings = settings.model_copy(update={"access": access})
    fake.users["U9"] = {"name": "erin", "real_name": "Erin"}
    running = await start_bot(settings, real=True)
    try:
        await slash(running, fake, "deploy hello 1.0.0 to local in prod")
        await ready(running, "1.0.0")
        rid = await slash(running, fake, "freeze prod until 2999-01-01 because audit", user="U9")
        await fake.wait_for(lambda: fake.responses.get(rid))
        rid = await slash(running, fake, "deploy hello 1.0.1 to local in prod", user="U2")
        await fake.wait_for(lambda: fake.responses.get(rid))
        assert "prod is frozen by U9" in fake.all_text(fake.responses[rid][0])
        await slash(
            running, fake, "deploy hello 1.0.1 to local in prod emergency because outage", "U9"
        )
        new = await ready(running, "1.0.1")
        # its shift may start although prod is frozen: it is part of the emergency
        await approve_shift(running, fake)
        shift = await shift_until(running, new.id, lambda s: s.state == "running")
        assert shift.state == "running"
    finally:
        await stop(running, engine_client)
