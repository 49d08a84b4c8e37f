"""deprecate, keep, remove, `stacks status garbage` and `graph` through the conversation, on the
in-memory store; the cleanup's Slack messages within Block Kit's limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot.conversation import Conversation, Outcome
from bot.slack.cleanup import digest_message, keep_label, stack_ids, summary_message
from bot.terminal import render, save_attachments
from commands.context import Services
from commands.events import EventHub, Removal
from commands.graph_picture import dot_source, render_png
from commands.lifecycle import Lifecycle
from commands.settings import Settings
from domain.records import Stack
from domain.states import StackStatus
from domain.versions import Version
from tests.fakes.clock import T0, FakeClock
from tests.fakes.memory_store import MemoryStore
from tests.fakes.slack import block_problems
from tests.unit.test_handlers import (
    ACCOUNTS,
    ADMIN,
    DEV,
    GUEST,
    HOWDY,
    SETTINGS,
    Harness,
    RecordingWorkflow,
    register,
)


class Scheduler:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def delete(self, stack: str) -> int:
        self.deleted.append(stack)
        return 1

    async def instances(self, stack: str) -> list[object]:
        return []


class ExpiriesFail(MemoryStore):
    """Setting an expiry fails: the write after a kept stack's way back from garbage."""

    async def set_expiry(self, stack_id: int, expires_at: datetime | None) -> None:
        raise OSError("the disk is full")


@pytest.fixture
async def h(clock: FakeClock) -> AsyncIterator[Harness]:
    harness = with_lifecycle(MemoryStore(clock), clock)
    yield harness
    await harness.store.close()


def with_lifecycle(store: MemoryStore, clock: FakeClock) -> Harness:
    harness = Harness(store, RecordingWorkflow(), clock)
    scheduler = Scheduler()
    lifecycle = Lifecycle(
        SETTINGS,
        store,
        EventHub(),
        clock,
        {"dc-east": scheduler, "dc-west": scheduler},  # type: ignore[dict-item]
        {},
    )
    harness.conversation = Conversation(
        Services(SETTINGS, store, harness.workflow, clock, lifecycle=lifecycle)
    )
    harness.scheduler = scheduler  # type: ignore[attr-defined]
    return harness


async def ready(h: Harness, text: str) -> list[int]:
    answer = await h.ok(text)
    for stack_id in answer.reply.stack_ids:
        for status in (StackStatus.DEPLOYING, StackStatus.WARMING, StackStatus.READY):
            await h.store.change_status(stack_id, status, "test", "nelson")
    return list(answer.reply.stack_ids)


async def test_deprecate_stops_new_dependants_and_keeps_the_old(h: Harness) -> None:
    await register(h, "acme/accounts", ACCOUNTS)
    await register(h, "acme/howdy", HOWDY)
    [accounts] = await ready(h, "deploy accounts 1.2.0 to dc-east")
    [howdy] = await ready(h, "deploy howdy-http 0.1.0 to dc-east")
    assert "may not deploy" in await h.fails("deprecate accounts 1.2.0", GUEST)
    assert (await h.store.stack_by_id(accounts)).status is StackStatus.READY  # type: ignore[union-attr]

    out = render((await h.ok("deprecate accounts 1.2.0", DEV)).reply, width=200)
    assert "Deprecated accounts 1.2.0: 1 stacks" in out
    assert "howdy-http--0-1-0" in out  # its dependant, which keeps working
    stack = await h.store.stack_by_id(accounts)
    assert stack is not None and stack.status is StackStatus.DEPRECATED
    history = await h.store.status_history(accounts)
    assert history[-1].actor == "UDEV" and "deprecated by dev" in history[-1].message
    assert (await h.store.stack_by_id(howdy)).status is StackStatus.READY  # type: ignore[union-attr]

    refused = await h.fails("deploy howdy-http 0.2.0 to dc-east")
    assert "accounts@1.2 in dc-east/dev is deprecated" in refused
    assert "already deprecated" in render((await h.ok("deprecate accounts 1.2.0")).reply)
    assert "never been released" in await h.fails("deprecate accounts 9.9.9")
    assert "no unit" in await h.fails("deprecate nothing 1.0.0")


async def test_a_keep_that_fails_leaves_the_stack_garbage(clock: FakeClock) -> None:
    h = with_lifecycle(ExpiriesFail(clock), clock)
    await register(h, "acme/accounts", ACCOUNTS)
    [old] = await ready(h, "deploy accounts 1.0.0 to dc-east")
    await h.store.mark_garbage({old: "nobody depends on it"}, T0 - timedelta(hours=1))
    before = await h.store.stack_by_id(old)
    assert before is not None

    answer = await h.say(f"keep {before.name}", DEV)

    assert answer.outcome is Outcome.INTERNAL_ERROR
    assert await h.store.stack_by_id(old) == before  # still garbage, with its old expiry
    audit = await h.store.audit_events(target=before.name)
    assert [e.action for e in audit] == ["garbage"]  # no "keep" for what did not happen


async def test_keep_and_remove_by_text(h: Harness) -> None:
    await register(h, "acme/accounts", ACCOUNTS)
    [old] = await ready(h, "deploy accounts 1.0.0 to dc-east")
    stack = await h.store.stack_by_id(old)
    assert stack is not None
    assert "not garbage" in await h.fails(f"remove {stack.name}")
    await h.store.mark_garbage({old: "nobody depends on it"}, T0 - timedelta(hours=1))

    listed = render((await h.ok("stacks status garbage")).reply, width=250)
    assert stack.name in listed and "nobody depends on it" in listed
    assert "after the next cleanup announcement" in listed
    inspected = render((await h.ok(f"inspect {stack.name}")).reply, width=250)
    assert "removal" in inspected and f"keep {stack.name}" in inspected

    assert "may not keep" in await h.fails(f"keep {stack.name}", GUEST)
    kept = render((await h.ok(f"keep {stack.name}", DEV)).reply)
    assert "Kept until" in kept
    again = await h.store.stack_by_id(old)
    assert again is not None and again.status is StackStatus.READY
    assert again.expires_at == T0 + SETTINGS.lifecycle.keep_for

    await h.store.mark_garbage({old: "expired"}, T0)
    assert "may not remove" in await h.fails(f"remove {stack.name}", DEV)
    removed = render((await h.ok(f"remove {stack.name}", ADMIN)).reply)
    assert f"Removed {stack.name}" in removed
    assert h.scheduler.deleted == [stack.name]  # type: ignore[attr-defined]
    gone = await h.store.stack_by_id(old)
    assert gone is not None and gone.status is StackStatus.TERMINATED


async def test_keep_without_a_cleanup_says_so(tmp_path: Path, clock: FakeClock) -> None:
    store = MemoryStore(clock)
    try:
        h = Harness(store, RecordingWorkflow(), clock)
        await register(h, "acme/accounts", ACCOUNTS)
        [stack_id] = await ready(h, "deploy accounts 1.0.0 to dc-east")
        stack = await store.stack_by_id(stack_id)
        assert stack is not None
        assert "cleanup does not run" in await h.fails(f"keep {stack.name}")
    finally:
        await store.close()


async def test_graph_draws_the_deployed_dependencies(h: Harness, tmp_path: Path) -> None:
    await register(h, "acme/accounts", ACCOUNTS)
    await register(h, "acme/howdy", HOWDY)
    assert "nothing to draw" in render((await h.ok("graph accounts")).reply)
    [accounts] = await ready(h, "deploy accounts 1.2.0 to dc-east")
    [old] = await ready(h, "deploy accounts 1.1.0 to dc-east")
    await h.store.mark_garbage({old: "expired"}, T0)
    [howdy] = await ready(h, "deploy howdy-http 0.1.0 to dc-east")
    reply = (await h.ok("graph accounts")).reply
    out = render(reply, width=250)
    assert "howdy-http (needs 1.2)" in out  # declared in the manifests
    assert "howdy-http--0-1-0" in out  # deployed, stack to stack
    [picture] = reply.attachments
    assert picture.content.startswith(b"\x89PNG") and len(picture.content) > 1000
    assert "depends on" in picture.alt_text and "garbage" in picture.alt_text
    saved = save_attachments(reply, tmp_path / "pictures")
    assert (tmp_path / "pictures" / "accounts-dependencies.png").read_bytes() == picture.content
    assert "saved to" in saved
    stacks = await h.store.stacks_by_ids([accounts, old, howdy])
    source = dot_source("accounts", [], [], T0)
    assert source.startswith("digraph")
    assert all(s.status for s in stacks)


async def test_rendering_failures_are_reported() -> None:
    from commands.graph_picture import RenderError

    with pytest.raises(RenderError, match="not installed"):
        await render_png("digraph { a -> b }", program="no-such-graphviz")
    with pytest.raises(RenderError, match="graphviz failed"):
        await render_png("this is not dot {")


def test_cleanup_messages_stay_within_slack_limits(h: Harness) -> None:
    from domain.records import Stack
    from domain.versions import Version

    def stack(i: int, unit: str) -> Stack:
        return Stack(
            id=i,
            guid=f"{i:032x}",
            name=f"{unit}--1-0-{i}--abcdefgh",
            release_id=1,
            unit=unit,
            version=Version(1, 0, i),
            datacenter="dc-east",
            namespace="dev",
            plan="default",
            status=StackStatus.GARBAGE,
            status_message="",
            created_by="U1",
            created_at=T0,
            updated_at=T0,
            expires_at=None,
        )

    removals = tuple(
        Removal(stack(i, f"unit-{i % 40:02d}"), "nobody depends on it <b>&", T0)
        for i in range(1, 900)
    )
    text, blocks = digest_message(removals)
    assert block_problems(blocks) == []
    assert "…and 17 more units (374 stacks)" in str(blocks[-1])
    assert "…and 10 more of unit-00" in str(blocks[2])
    assert "&lt;b&gt;&amp;" in str(blocks[2])
    values = [e["value"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert all(len(v) <= 2000 and stack_ids(v) for v in values)
    assert text.startswith("Cleanup: 899 stacks will be removed")
    text, blocks = summary_message(
        "dev (UDEV)",
        tuple(r.stack for r in removals),
        ((removals[0].stack, "scheduler down"),),
    )
    assert block_problems(blocks) == []
    assert "Remove now by dev (UDEV)" in text
    assert stack_ids("1,2,x") == [] and stack_ids("") == []


def test_the_keep_button_says_what_it_gives() -> None:
    assert keep_label(timedelta(hours=24)) == "Keep 24h more"
    assert keep_label(timedelta(days=3)) == "Keep 3d more"
    assert keep_label(timedelta(minutes=90)) == "Keep 90m more"
    assert keep_label(timedelta(seconds=4)) == "Keep 4s more"
    removal = Removal(_garbage_stack(), "not the latest version", T0)
    _, blocks = digest_message((removal,), timedelta(hours=6))
    [actions] = [b for b in blocks if b["type"] == "actions"]
    assert actions["elements"][0]["text"]["text"] == "Keep 6h more"
    assert "*Keep 6h more*" in str(blocks[1])


async def test_the_bot_schedules_the_pass_and_the_daily_announcement(tmp_path: Path) -> None:
    from bot.bootstrap import build
    from bot.jobs import Jobs

    settings = Settings.model_validate(
        {
            "database_url": f"sqlite:///{tmp_path / 'nelson.db'}",
            "lifecycle": {"interval": "2m", "announce_at": "07:45"},
        }
    )
    app = await build(settings)
    try:
        jobs = Jobs(app)
        pass_job = jobs.scheduler.get_job("clean-up")
        assert pass_job is not None and pass_job.trigger.interval == timedelta(minutes=2)
        announce = jobs.scheduler.get_job("announce-cleanup")
        assert announce is not None
        fields = {f.name: str(f) for f in announce.trigger.fields}
        assert (fields["hour"], fields["minute"]) == ("7", "45")
    finally:
        await app.close()


@pytest.mark.parametrize("value", ["7", "24:00", "12:60", "noon", "12:5"])
def test_announce_at_must_be_a_time_of_day(value: str) -> None:
    with pytest.raises(ValueError, match="time of day"):
        Settings.model_validate({"lifecycle": {"announce_at": value}})


def _garbage_stack() -> Stack:
    return Stack(
        id=7,
        guid=f"{7:032x}",
        name="svc--1-0-7--abcdefgh",
        release_id=1,
        unit="svc",
        version=Version(1, 0, 7),
        datacenter="dc-east",
        namespace="dev",
        plan="default",
        status=StackStatus.GARBAGE,
        status_message="",
        created_by="U1",
        created_at=T0,
        updated_at=T0,
        expires_at=None,
    )


async def test_a_daemon_started_after_announce_at_posts_the_missed_digest_once(
    tmp_path: Path,
) -> None:
    """T0 is 12:00 UTC: past `announce_at` 07:45, so the day's digest goes out at start; a
    second daemon that day stays quiet; the heartbeat says who drives shifts."""
    from bot.bootstrap import build
    from bot.jobs import Jobs
    from commands import daemons

    settings = Settings.model_validate(
        {
            "database_url": f"sqlite:///{tmp_path / 'nelson.db'}",
            "lifecycle": {"announce_at": "07:45"},
        }
    )
    clock = FakeClock(T0)
    app = await build(settings, clock=clock)
    try:
        assert await daemons.running(app.store, clock) == []
        jobs = Jobs(app, "nelson serve --no-slack")
        await jobs.start()
        try:
            assert jobs.scheduler.get_job("announce-missed") is not None
            [daemon] = await daemons.running(app.store, clock)
            assert daemon.kind == "nelson serve --no-slack"
            assert app.lifecycle is not None
            await jobs.announce_cleanup()  # what the start-up job runs
            # claimed for today: neither this process nor another one posts it again
            assert await app.lifecycle.announce_daily() is None
            other = Lifecycle(settings, app.store, EventHub(), clock, {}, {})
            assert await other.announce_daily() is None
            clock.advance(timedelta(days=1))  # the next day's digest is due again
            assert await other.announce_daily() is not None
            # before announce_at nothing is posted
            clock.set(T0.replace(hour=7))
            assert (
                await Lifecycle(settings, app.store, EventHub(), clock, {}, {}).announce_daily()
                is None
            )
        finally:
            await jobs.stop()
        assert await daemons.running(app.store, clock) == []  # the heartbeat row is gone
        clock.set(T0)
        assert app.traffic is not None
        assert "no `nelson serve` or `nelson console` is running" in await app.traffic.drivers()
    finally:
        await app.close()
