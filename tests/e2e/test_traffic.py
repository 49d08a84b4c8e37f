"""Traffic migration end to end: real containers (busybox httpd answering with their version)
behind a real HAProxy, the bot serving Slack requests, approvals by signed button clicks, and
the share of responses measured through HAProxy."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import pytest

from adapters.storage import open_store
from bot.slack.messages import APPROVE_ACTION, REJECT_ACTION, REVERSE_ACTION
from commands.ports import Route
from commands.settings import Settings
from domain.records import Stack, StackQuery, TrafficShift
from domain.states import StackStatus
from tests.dockerworld import busybox_image
from tests.e2e.local_dc import slash, use_manifest, with_local_datacenter
from tests.e2e.local_dc import stop as stop_local
from tests.e2e.slack_harness import RunningBot, settings_for, start_bot
from tests.e2e.test_slack import decide
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_requests import block_action, encode_interactive

DURATION = 120  # seconds of a shift in these tests (more than the minute a manifest needs)

MANIFEST = """\
units:
  - name: hello
    description: says which version answers
    ports:
      - default->8080/http
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
      policy: linear
      duration: {duration}s
namespaces:
  - name: dev
    units:
      - ref: hello
        plans: [default]
  - name: prod
    units:
      - ref: hello
        plans: [default]
"""


@pytest.fixture
def images(engine_client: docker.DockerClient, registries: tuple[str, str]) -> None:
    for version in ("1.0.0", "1.0.1"):
        busybox_image(engine_client, f"{registries[0]}/hello:{version}", version)


def traffic_settings(
    fake: FakeSlack, tmp: Path, docker_address: str, registries: tuple[str, str], **extra: Any
) -> Settings:
    settings = settings_for(
        fake,
        tmp,
        approvals={"prod": {"required": 1, "deadline": extra.pop("deadline", "1h")}},
        workflow={"warming_timeout": "20s", "health_interval": 0.2},
        traffic={"step_interval": 0.2, "unhealthy_threshold": 3},
    )
    # Slack's real pace for message updates (chat.update allows about 50 a minute): weights
    # move every 0.2 s, the parent shows the newest of them
    settings = settings.model_copy(
        update={"slack": settings.slack.model_copy(update={"update_interval": 1.25})}
    )
    use_manifest(tmp, "hello", MANIFEST.format(duration=DURATION))
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
        traffic_settings(fake, tmp_path, docker_address, registries), real=True
    )
    yield running
    await stop(running, engine_client)


async def stop(running: RunningBot, engine_client: docker.DockerClient) -> None:
    await stop_local(running, engine_client, ["hello"])


async def stack(bot: RunningBot, version: str) -> Stack | None:
    page = await bot.application.store.list_stacks(StackQuery(unit="hello", limit=20))
    return next((s for s in page.stacks if str(s.version) == version), None)


async def ready(bot: RunningBot, version: str, timeout: float = 60) -> Stack:
    """Ready, and attached to the route (the handover follows the status change)."""
    router = bot.application.routers["local"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await stack(bot, version)
        if found is not None and found.status is StackStatus.READY:
            lines = [line.message for line in await bot.application.store.logs(found.id)]
            routed = found.name in await router.weights(Route("prod", "hello", 1))
            if routed and any(line.startswith("traffic: ") for line in lines):
                return found
        if found is not None and found.status is StackStatus.FAILED:
            raise AssertionError(found.status_message)
        await asyncio.sleep(0.1)
    raise AssertionError(f"hello {version} not ready")


async def shift_of(bot: RunningBot, stack_id: int) -> TrafficShift:
    shifts = await bot.application.store.shifts(stack_id=stack_id)
    return [s for s in shifts if s.to_stack_id == stack_id][-1]


async def share_of_new(bot: RunningBot, requests: int = 200) -> float:
    router = bot.application.routers["local"]
    address = await router.address(Route("prod", "hello", 1))

    def sample() -> float:
        hits = 0
        for _ in range(requests):
            with urllib.request.urlopen(f"http://{address}/", timeout=5) as response:
                hits += response.read().decode().strip() == "1.0.1"
        return hits / requests

    return await asyncio.to_thread(sample)


async def deploy_both(bot: RunningBot, fake: FakeSlack) -> tuple[Stack, Stack]:
    await slash(bot, fake, "deploy hello 1.0.0 to local in prod")
    old = await ready(bot, "1.0.0")
    assert await share_of_new(bot, 50) == 0.0  # the first stack gets everything
    await slash(bot, fake, "deploy hello 1.0.1 to local in prod")
    new = await ready(bot, "1.0.1")
    return old, new


def approval_in_thread(fake: FakeSlack) -> Any:
    for parent in fake.messages("C1"):
        for reply in fake.thread("C1", parent.ts):
            if "Shift traffic for hello 1.x" in fake.all_text(reply):
                return reply
    return None


def parent_of(fake: FakeSlack, version: str) -> Any:
    for parent in fake.messages("C1"):
        if f"hello {version}" in parent.text:
            return parent
    return None


async def shift_until(
    bot: RunningBot, stack_id: int, done: Any, timeout: float = 20
) -> TrafficShift:
    """Poll the shift towards `stack_id` until `done(shift)` holds; return it either way."""
    deadline = time.monotonic() + timeout
    shift = await shift_of(bot, stack_id)
    while not done(shift) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        shift = await shift_of(bot, stack_id)
    return shift


async def skip_to(bot: RunningBot, shift: TrafficShift, fraction: float) -> None:
    """Move the bot's clock to `fraction` of the shift's (undelayed) duration, in jumps short
    enough that the bot sees a driver at work (a longer gap would count as time no process
    drove the shift, which does not move it), letting a step land after each jump."""
    latest = await shift_of(bot, shift.to_stack_id)
    assert latest.started_at is not None
    stopped = latest.delayed_seconds + latest.paused_seconds
    target = latest.started_at + timedelta(seconds=fraction * DURATION + stopped)
    while (left := (target - bot.clock.now()).total_seconds()) > 0:
        at = bot.clock.advance(min(left, 1.5))
        latest = await shift_until(
            bot,
            shift.to_stack_id,
            lambda s, at=at: s.state != "running" or (s.last_step_at or at) >= at,
        )
        if latest.state != "running":
            return


async def approve_shift(bot: RunningBot, fake: FakeSlack, user: str = "U2") -> None:
    """Press Approve on the shift's request in the deploy thread."""
    await fake.wait_for(lambda: approval_in_thread(fake), timeout=20)
    message = approval_in_thread(fake)
    approval_id = message.blocks[-1]["elements"][0]["value"]
    await decide(bot, fake, APPROVE_ACTION, int(approval_id), user, message.ts)


async def click(
    bot: RunningBot, fake: FakeSlack, action: str, value: str, user: str, ts: str
) -> None:
    payload = block_action(
        action, value, user_id=user, message_ts=ts, response_url=fake.new_response_url()
    )
    status, _ = await bot.post(encode_interactive(payload), "application/x-www-form-urlencoded")
    assert status == 200


async def test_approved_shift_follows_the_policy_to_the_end(
    bot: RunningBot, fake: FakeSlack
) -> None:
    _, new = await deploy_both(bot, fake)
    await fake.wait_for(lambda: approval_in_thread(fake), timeout=20)
    message = approval_in_thread(fake)
    assert (
        "Shift traffic for hello 1.x in local/prod from 1.0.0 to 1.0.1, linear over 2 minutes?"
        in fake.all_text(message)
    )
    assert await share_of_new(bot, 50) == 0.0  # nothing moves before the approval
    # someone who may not approve changes nothing
    approval_id = message.blocks[-1]["elements"][0]["value"]
    await click(bot, fake, APPROVE_ACTION, approval_id, "U4", message.ts)
    await fake.wait_for(lambda: any(e.user == "U4" for e in fake.ephemerals))
    assert (await shift_of(bot, new.id)).state == "awaiting-approval"
    await decide(bot, fake, APPROVE_ACTION, int(approval_id), "U2", message.ts)
    shift = await shift_until(bot, new.id, lambda s: s.state == "running")
    assert shift.state == "running" and shift.started_at is not None
    for target in (0.25, 0.5, 0.75):
        # the shift's time passes on the bot's clock: skip ahead, then let a step land
        await skip_to(bot, shift, target)
        await shift_until(bot, new.id, lambda s, t=target: s.current_new_weight >= t * 1000 - 20)
        share = await share_of_new(bot, 100)
        elapsed = (bot.clock.now() - shift.started_at).total_seconds()
        expected_low = target - 0.15
        expected_high = min(elapsed / DURATION, 1.0) + 0.15
        assert expected_low <= share <= expected_high, (target, share, elapsed)
    await skip_to(bot, shift, 1.01)
    assert (await shift_until(bot, new.id, lambda s: s.state == "done")).state == "done"
    assert await share_of_new(bot, 50) == 1.0
    # told in the thread, audited, and in the parent as a bar without buttons
    parent = parent_of(fake, "1.0.1")
    await fake.wait_for(
        lambda: "traffic: done" in "\n".join(m.text for m in fake.thread("C1", parent.ts))
    )
    audit = [
        e
        for e in await bot.application.store.audit_events(target=new.name)
        if e.action == "traffic"
    ]
    assert len(audit) >= 4  # a step at each quarter, at least
    assert any(e.detail.endswith("1.0.1 100%") for e in audit)
    await fake.wait_for(
        lambda: (
            "traffic → `" in fake.all_text(parent_of(fake, "1.0.1"))
            and "100% to 1.0.1 · *done*" in fake.all_text(parent_of(fake, "1.0.1"))
            and not any(b.get("type") == "actions" for b in parent_of(fake, "1.0.1").blocks)
        )
    )
    assert "100% to 1.0.1 · *done*" in fake.all_text(parent_of(fake, "1.0.1"))


async def test_rejected_shift_leaves_traffic_where_it_is(bot: RunningBot, fake: FakeSlack) -> None:
    _, new = await deploy_both(bot, fake)
    await fake.wait_for(lambda: approval_in_thread(fake), timeout=20)
    message = approval_in_thread(fake)
    approval_id = message.blocks[-1]["elements"][0]["value"]
    await decide(bot, fake, REJECT_ACTION, int(approval_id), "U3", message.ts, "not today")
    shift = await shift_until(bot, new.id, lambda s: s.state == "cancelled")
    assert shift.state == "cancelled"
    await asyncio.sleep(1)
    assert await share_of_new(bot, 50) == 0.0
    parent = parent_of(fake, "1.0.1")
    await fake.wait_for(
        lambda: "traffic stays with" in "\n".join(m.text for m in fake.thread("C1", parent.ts))
    )


async def test_reverse_mid_shift_by_button(bot: RunningBot, fake: FakeSlack) -> None:
    _, new = await deploy_both(bot, fake)
    await approve_shift(bot, fake)
    # early on, so that the way back (as long as the way there) takes seconds
    await shift_until(bot, new.id, lambda s: s.current_new_weight >= 20)
    parent = parent_of(fake, "1.0.1")
    await fake.wait_for(
        lambda: any(b.get("type") == "actions" for b in (parent_of(fake, "1.0.1").blocks or []))
    )
    shift = await shift_of(bot, new.id)
    await click(bot, fake, REVERSE_ACTION, str(shift.id), "U1", parent.ts)
    assert (await shift_until(bot, new.id, lambda s: s.state == "reversed")).state == "reversed"
    assert await share_of_new(bot, 50) == 0.0


async def test_unhealthy_new_stack_is_reversed_automatically(
    bot: RunningBot, fake: FakeSlack, engine_client: docker.DockerClient
) -> None:
    _, new = await deploy_both(bot, fake)
    await approve_shift(bot, fake)
    await shift_until(bot, new.id, lambda s: s.current_new_weight >= 20)
    for container in engine_client.containers.list(filters={"label": f"nelson.stack={new.name}"}):
        container.stop(timeout=1)  # the new version dies mid-shift
    shift = await shift_until(bot, new.id, lambda s: s.state == "reversed")
    assert (shift.direction, shift.state) == ("reverse", "reversed")
    parent = parent_of(fake, "1.0.1")
    await fake.wait_for(
        lambda: "health checks failed" in "\n".join(m.text for m in fake.thread("C1", parent.ts))
    )
    assert await share_of_new(bot, 50) == 0.0


async def test_an_expired_approval_moves_nothing(
    fake: FakeSlack,
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    images: None,
    engine_client: docker.DockerClient,
) -> None:
    settings = traffic_settings(fake, tmp_path, docker_address, registries, deadline="2s")
    running = await start_bot(settings, real=True)
    try:
        _, new = await deploy_both(running, fake)
        shift = await shift_until(running, new.id, lambda s: s.state == "cancelled")
        assert shift.state == "cancelled"
        assert await share_of_new(running, 50) == 0.0
        await fake.wait_for(lambda: "Expired" in fake.all_text(approval_in_thread(fake)))
    finally:
        await stop(running, engine_client)


async def test_a_restart_mid_shift_continues_from_the_weight_last_applied(
    fake: FakeSlack,
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    images: None,
    engine_client: docker.DockerClient,
) -> None:
    settings = traffic_settings(fake, tmp_path, docker_address, registries)
    first = await start_bot(settings, real=True)
    _, new = await deploy_both(first, fake)
    await approve_shift(first, fake)
    running = await shift_until(first, new.id, lambda s: s.state == "running")
    await skip_to(first, running, 0.4)
    await shift_until(first, new.id, lambda s: s.current_new_weight >= 300)
    await first.shutdown()  # HAProxy keeps routing while the bot is away
    store = await open_store(settings.database_url, clock=first.clock)
    try:  # the weight last applied, read once the first bot is gone
        [*_, last] = [s for s in await store.shifts(stack_id=new.id) if s.to_stack_id == new.id]
    finally:
        await store.close()
    before = last.current_new_weight
    assert 0.1 < await share_of_new(first, 50) < 0.7
    first.clock.advance(0.25 * DURATION)  # time passes while the bot is away
    second = await start_bot(settings, real=True, clock=first.clock)  # one clock across both
    try:
        moved = await shift_until(second, new.id, lambda s: s.current_new_weight != before)
        # continued from the weight last applied, a step at a time: the time away did not
        # count (no catch-up jump), and the thread says how long the shift was delayed
        assert before < moved.current_new_weight <= before + 100, (before, moved)
        lines = [line.message for line in await second.application.store.logs(new.id)]
        assert any("this shift was delayed by" in line for line in lines), lines
        await skip_to(second, moved, 1.01)
        done = await shift_until(second, new.id, lambda s: s.state == "done")
        assert done.state == "done"
        assert await share_of_new(second, 50) == 1.0
    finally:
        await stop(second, engine_client)
