"""The outbox's dispatcher and `Threads` against the fake Slack, on `MemoryStore`, with two
"replicas" (two dispatchers, each with its own outbox to Slack): a replica that dies after
Slack took a deploy's parent but before remembering it leaves the row to the other, which
finds the parent by its metadata instead of posting a second one; a deploy's rows are told in
order, and never by two replicas at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.dispatch import Dispatcher
from bot.slack.outbox import Outbox
from bot.slack.threads import Threads
from commands.event_outbox import EventJournal, ThreadLine, decode
from commands.events import EventHub, OperationFinished, OperationStarted, StackProgress
from commands.settings import Settings
from domain.records import Operation
from domain.states import StackStatus
from tests.fakes.clock import FakeClock
from tests.fakes.memory_store import MemoryStore
from tests.fakes.slack import FakeSlack
from tests.integration.test_store import deploy, new_stack

TTL = timedelta(seconds=60)


class Killed(BaseException):
    """The replica died here (nothing of it runs on: not an Exception its code catches)."""


class DiesBeforeRemembering(MemoryStore):
    """A view of the shared store whose process dies as it is about to remember a message
    (one whose subject starts with `dies_at`)."""

    dies_at = ""

    def __init__(self, shared: MemoryStore) -> None:
        self.__dict__ = shared.__dict__

    async def remember_message(self, subject: str, channel: str, ts: str) -> None:
        if subject.startswith(self.dies_at):
            raise Killed
        await super().remember_message(subject, channel, ts)


class Noop:
    async def start(self) -> None: ...

    def poke(self) -> None: ...

    async def wait(self, timeout: float) -> bool:
        return False

    async def close(self) -> None: ...


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as workspace:
        yield workspace


def replica(name: str, store: MemoryStore, fake: FakeSlack, clock: FakeClock) -> Dispatcher:
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)
    outbox = Outbox(client, post_interval=0, update_interval=0)
    threads = Threads(Settings.model_validate({}), store, outbox, clock)
    return Dispatcher(store, threads, clock, Noop(), holder=name, claim_ttl=TTL)


async def started(store: MemoryStore, events: EventHub) -> Operation:
    _, [stack] = await deploy(store, new_stack(1))
    operation = await store.create_operation(
        "deploy", "deploy svc 1.0.0 to dc-east/dev", "U1", "C1", [stack.id]
    )
    await events.publish(OperationStarted(operation))
    return operation


async def finish(
    store: MemoryStore, events: EventHub, clock: FakeClock, operation: Operation
) -> None:
    [stack_id] = operation.stack_ids
    for status in (StackStatus.DEPLOYING, StackStatus.WARMING, StackStatus.READY):
        await store.change_status(stack_id, status, "", "nelson")
        await events.publish(StackProgress(stack_id, status.value, clock.now(), status=status))
    await store.finish_operation(operation.id, "succeeded", clock.now())
    done = await store.operation(operation.id)
    assert done is not None
    await events.publish(OperationFinished(done, tuple(await store.stacks_by_ids([stack_id]))))


def replies(fake: FakeSlack) -> list[str]:
    [parent] = fake.messages("C1")
    return [m.text for m in parent.replies]


async def test_a_parent_posted_by_a_replica_that_died_is_found_not_posted_again(
    fake: FakeSlack, clock: FakeClock
) -> None:
    store = MemoryStore(clock)
    events = EventHub(EventJournal(store))
    operation = await started(store, events)
    dying = replica("a", DiesBeforeRemembering(store), fake, clock)
    with pytest.raises(Killed):
        await dying.dispatch_once()
    assert len(fake.messages("C1")) == 1, "Slack took the parent"
    assert await store.messages_for(f"operation:{operation.id}") == []
    survivor = replica("b", store, fake, clock)
    assert await survivor.dispatch_once() == 0, "a's claim still holds"
    clock.advance(TTL + timedelta(seconds=1))
    assert await survivor.dispatch_once() == 1
    [parent] = fake.messages("C1")  # found by its metadata, not posted again
    [remembered] = await store.messages_for(f"operation:{operation.id}")
    assert (remembered.channel, remembered.ts) == ("C1", parent.ts)
    history = fake.calls_to("conversations.history")
    assert history and history[-1].params["channel"] == "C1"

    await finish(store, events, clock, operation)
    assert await survivor.dispatch_once() == 4  # three lines (one reply), and the end
    assert replies(fake) == [
        "`dc-east/dev` deploying\n`dc-east/dev` warming\n`dc-east/dev` ready",
        ":white_check_mark: deploy svc 1.0.0 to dc-east/dev is done.",
    ]
    assert ": done" in fake.messages("C1")[0].text
    assert await store.outbox_backlog() == []


async def test_a_thread_is_closed_once_even_when_its_row_is_handed_out_again(
    fake: FakeSlack, clock: FakeClock
) -> None:
    store = MemoryStore(clock)
    events = EventHub(EventJournal(store))
    operation = await started(store, events)
    first = replica("a", store, fake, clock)
    assert await first.dispatch_once() == 1
    await finish(store, events, clock, operation)
    rows = await store.claim_outbox_events("a", TTL)
    # a tells everything, then dies before marking the rows done
    lines = [r for r in rows if r.kind == "stack-progress"]
    told = [n for r in lines if isinstance(n := decode(r), ThreadLine)]
    await first.threads.lines(operation.id, told)
    await first.threads.closed(operation.id, again=False)
    clock.advance(TTL + timedelta(seconds=1))
    second = replica("b", store, fake, clock)
    assert await second.dispatch_once() == len(rows)
    closing = [t for t in replies(fake) if "is done." in t]
    assert len(closing) == 1, replies(fake)


async def test_lines_wait_for_their_thread_s_parent(fake: FakeSlack, clock: FakeClock) -> None:
    store = MemoryStore(clock)
    events = EventHub(EventJournal(store))
    operation = await started(store, events)
    await store.claim_outbox_events("a", TTL)  # a holds the parent's row and is slow
    await finish(store, events, clock, operation)
    other = replica("b", store, fake, clock)
    assert await other.dispatch_once() == 0, "the lines wait for the parent"
    assert fake.messages("C1") == []
    pending: Any = await store.outbox_backlog()
    assert [e.kind for e in pending][:2] == ["operation-started", "stack-progress"]


async def test_a_final_parent_slack_refused_is_shown_when_its_row_is_told_again(
    fake: FakeSlack, clock: FakeClock
) -> None:
    """Slack refuses the finished deploy's parent update (rate limited past the retries): the
    row is given back, not done, and telling it again shows the end, with one closing line."""
    store = MemoryStore(clock)
    events = EventHub(EventJournal(store))
    operation = await started(store, events)
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)
    outbox = Outbox(client, post_interval=0, update_interval=0, max_attempts=2)
    threads = Threads(Settings.model_validate({}), store, outbox, clock)
    dispatcher = Dispatcher(store, threads, clock, Noop(), holder="a", claim_ttl=TTL)
    assert await dispatcher.dispatch_once() == 1
    await finish(store, events, clock, operation)
    fake.force_ratelimit("chat.update", times=1000, retry_after=0)
    await dispatcher.dispatch_once()
    await outbox.drain()
    assert ": done" not in fake.messages("C1")[0].text
    assert [e.kind for e in await store.outbox_backlog()] == ["operation-finished"]

    fake.force_ratelimit("chat.update", times=0)  # Slack takes updates again
    clock.advance(timedelta(seconds=2))  # the row's backoff
    assert await dispatcher.dispatch_once() == 1
    assert ": done" in fake.messages("C1")[0].text
    assert [t for t in replies(fake) if "is done." in t] == [
        ":white_check_mark: deploy svc 1.0.0 to dc-east/dev is done."
    ]
    assert await store.outbox_backlog() == []


async def test_an_event_told_longer_than_its_claim_is_not_told_again_by_another(
    fake: FakeSlack,
) -> None:
    """Slack makes the parent's post wait (429, Retry-After longer than the claim lasts):
    the replica telling it keeps extending its claim, so another replica looking meanwhile
    takes nothing, and the thread has one parent."""
    clock = FakeClock(ticking=True)  # claims expire as real time passes
    store = MemoryStore(clock)
    events = EventHub(EventJournal(store))
    await started(store, events)
    short = timedelta(seconds=0.6)
    first = replica("a", store, fake, clock)
    first.claim_ttl = short
    other = replica("b", store, fake, clock)
    other.claim_ttl = short
    fake.force_ratelimit("chat.postMessage", times=1, retry_after=2)
    telling = asyncio.create_task(first.dispatch_once())
    while not fake.ratelimited["chat.postMessage"]:  # a holds it, and Slack said wait
        await asyncio.sleep(0.01)
    looked = 0
    while not telling.done():
        looked += 1
        assert await other.dispatch_once() == 0, "taken while its teller was still at it"
        await asyncio.sleep(0.1)
    assert await telling == 1 and looked > 10
    assert len(fake.messages("C1")) == 1


async def test_a_progress_update_held_up_by_slack_never_hides_the_end_another_replica_showed(
    fake: FakeSlack, clock: FakeClock
) -> None:
    """Replica a refreshes the parent after a progress line; Slack makes that update wait
    (429). Meanwhile the deploy ends and replica b shows the end. When a's update finally
    goes, it is rendered from the Store at that moment: the parent still shows the end."""
    store = MemoryStore(clock)
    events = EventHub(EventJournal(store))
    operation = await started(store, events)
    a, b = replica("a", store, fake, clock), replica("b", store, fake, clock)
    assert await a.dispatch_once() == 1  # the parent
    [stack_id] = operation.stack_ids
    await events.publish(StackProgress(stack_id, "queued", clock.now()))
    fake.force_ratelimit("chat.update", times=1, retry_after=1)
    assert await a.dispatch_once() == 1  # its parent update now waits for Slack
    await finish(store, events, clock, operation)
    assert await b.dispatch_once() >= 1
    assert ": done" in fake.messages("C1")[0].text
    await a.threads.outbox.drain()
    assert fake.ratelimited["chat.update"] == 1
    assert ": done" in fake.messages("C1")[0].text, "a's late update showed an older state"


class DiesBeforeRememberingTheEnd(DiesBeforeRemembering):
    dies_at = "closed:"  # Slack took the closing line


async def test_a_closing_line_posted_by_a_replica_that_died_is_found_not_posted_again(
    fake: FakeSlack, clock: FakeClock
) -> None:
    store = MemoryStore(clock)
    events = EventHub(EventJournal(store))
    operation = await started(store, events)
    dying = replica("a", DiesBeforeRememberingTheEnd(store), fake, clock)
    assert await dying.dispatch_once() == 1
    await finish(store, events, clock, operation)
    with pytest.raises(Killed):
        await dying.dispatch_once()
    assert [t for t in replies(fake) if "is done." in t], "Slack took the closing line"
    clock.advance(TTL + timedelta(seconds=1))
    survivor = replica("b", store, fake, clock)
    await survivor.dispatch_once()
    closing = [t for t in replies(fake) if "is done." in t]
    assert closing == [":white_check_mark: deploy svc 1.0.0 to dc-east/dev is done."]
    assert fake.calls_to("conversations.replies"), "looked in the thread first"
    [remembered] = await store.messages_for(f"closed:operation:{operation.id}")
    assert remembered.ts == fake.messages("C1")[0].replies[-1].ts
    assert ": done" in fake.messages("C1")[0].text
    assert await store.outbox_backlog() == []
