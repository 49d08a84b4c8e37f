"""The outbox's dispatcher in a Slack replica: claims pending events from the Store's outbox
(`EventOutboxRepository`) and has `Threads` tell them, so each event is told once whichever
replica raised it and whichever replicas die meanwhile.

Events come in order per operation (the claim hands out a key's events in order, never to two
replicas at once); consecutive lines of one operation go out as one thread reply. An event is
marked done only after Slack took what it says; one that fails (the database or Slack away)
is given back and tried again later, the events after it in its operation waiting for it.
A replica that dies holding events leaves them to be handed out again when its claim expires
(`claim_ttl`); `Threads` then looks at what Slack shows before posting a parent or a closing
line again. The dispatcher wakes when this process writes an event, when another replica
does (`Wakeups`: LISTEN/NOTIFY on PostgreSQL), and every `poll` seconds anyway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import Protocol

from bot.slack.threads import Threads
from commands.event_outbox import (
    ApprovalAsked,
    ApprovalClosed,
    Notice,
    ThreadClosed,
    ThreadLine,
    ThreadStarted,
    decode,
)
from commands.ports import Clock, OutboxEvent, Store

log = logging.getLogger("nelson.slack.dispatch")

MAX_ATTEMPTS = 8  # an event that failed this often is dropped, so its operation moves on


class Waker(Protocol):
    """What wakes the dispatcher (adapters.storage.wakeups.Wakeups)."""

    async def start(self) -> None: ...

    def poke(self) -> None: ...

    async def wait(self, timeout: float) -> bool: ...

    async def close(self) -> None: ...


class Dispatcher:
    def __init__(
        self,
        store: Store,
        threads: Threads,
        clock: Clock,
        wakeups: Waker,
        *,
        holder: str,
        poll: float = 2.0,
        claim_ttl: timedelta = timedelta(seconds=60),
        batch: int = 50,
        keep: timedelta = timedelta(days=1),
    ) -> None:
        self.store = store
        self.threads = threads
        self.clock = clock
        self.wakeups = wakeups
        self.holder = holder
        self.poll = poll
        self.claim_ttl = claim_ttl
        self.batch = batch
        self.keep = keep
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._failing = False
        self.told = 0  # events told by this process, for logs and tests

    def poke(self) -> None:
        self.wakeups.poke()

    async def start(self) -> None:
        await self.wakeups.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self, timeout: float = 10.0) -> None:
        """Tell what is pending now, then stop (cancelled after `timeout` seconds)."""
        self._stopping.set()
        self.wakeups.poke()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                log.warning("stopped the outbox dispatcher with events in hand")
            self._task = None
        await self.wakeups.close()

    async def _run(self) -> None:
        pruned_at = 0.0
        while True:
            try:
                told = await self.dispatch_once()
                if time.monotonic() - pruned_at > 3600:
                    pruned_at = time.monotonic()
                    gone = await self.store.forget_outbox_events(self.clock.now() - self.keep)
                    if gone:
                        log.info("forgot %s outbox event(s) older than %s", gone, self.keep)
                if self._failing:
                    log.warning("the outbox is read again")
                self._failing = False
            except Exception as exc:
                told = 0
                if not self._failing:
                    log.warning("cannot read the outbox (%s); trying again", exc)
                self._failing = True
            if self._stopping.is_set() and not told:
                return
            if not told:
                await self.wakeups.wait(self.poll)

    async def dispatch_once(self) -> int:
        """Claim and tell what is pending; returns how many events were told."""
        events = await self.store.claim_outbox_events(self.holder, self.claim_ttl, self.batch)
        started = time.monotonic()
        told = 0
        stuck: set[str] = set()  # keys whose event failed: their later events wait
        i = 0
        while i < len(events):
            group = _group(events, i)
            i += len(group)
            key = group[0].key
            late = time.monotonic() - started > self.claim_ttl.total_seconds() / 2
            if key in stuck or late:
                for event in group:  # handed out again at once (after the stuck one)
                    await self.store.retry_outbox_event(event.id, self.holder, timedelta(0))
                continue
            try:
                await self._tell(group)
            except Exception as exc:
                stuck.add(key)
                await self._failed(group, exc)
                continue
            for event in group:
                if await self.store.finish_outbox_event(event.id, self.holder):
                    told += 1
        self.told += told
        return told

    async def _tell(self, group: list[OutboxEvent]) -> None:
        first = group[0]
        again = any(e.attempts > 0 for e in group)
        notice: Notice | None = decode(first)
        if isinstance(notice, ThreadLine):
            lines = [n for e in group if isinstance(n := decode(e), ThreadLine)]
            await self.threads.lines(notice.operation_id, lines)
        elif isinstance(notice, ThreadStarted):
            await self.threads.started(notice.operation_id, notice.channels, again)
        elif isinstance(notice, ThreadClosed):
            await self.threads.closed(notice.operation_id, again)
        elif isinstance(notice, ApprovalAsked):
            await self.threads.approval_requested(notice.approval_id)
        elif isinstance(notice, ApprovalClosed):
            await self.threads.approval_decided(notice.approval_id)
        else:
            log.warning("skipped outbox event %s of unknown kind %r", first.id, first.kind)

    async def _failed(self, group: list[OutboxEvent], exc: Exception) -> None:
        first = group[0]
        if first.attempts + 1 >= MAX_ATTEMPTS:
            log.error(
                "dropped outbox event %s (%s) after %s attempts: %r",
                first.id,
                first.kind,
                first.attempts + 1,
                exc,
            )
            for event in group:
                await self.store.finish_outbox_event(event.id, self.holder)
            return
        delay = timedelta(seconds=min(2**first.attempts, 60))
        log.warning(
            "outbox event %s (%s) failed (%r); again in %s", first.id, first.kind, exc, delay
        )
        for event in group:
            with contextlib.suppress(Exception):
                await self.store.retry_outbox_event(event.id, self.holder, delay)


def _group(events: list[OutboxEvent], start: int) -> list[OutboxEvent]:
    """The event at `start`, with the lines of the same operation right after it (one thread
    reply); any other event alone."""
    first = events[start]
    group = [first]
    if not isinstance(decode(first), ThreadLine):
        return group
    for event in events[start + 1 :]:
        if event.key != first.key or not isinstance(decode(event), ThreadLine):
            break
        group.append(event)
    return group
