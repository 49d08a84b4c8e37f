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
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Protocol

from bot.slack.threads import Threads
from commands.event_outbox import (
    ApprovalAsked,
    ApprovalChanged,
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
        lanes: int = 100,
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
        self.lanes = lanes  # operations told side by side at most
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
        """Claim and tell without waiting for a whole batch: each operation's claimed events
        are a chain told on its own, and more are claimed while fewer than `lanes` chains
        run, so an operation waiting for Slack (a busy channel, an update's turn) holds up
        only itself. The claim never hands out an event of an operation whose earlier event
        is still held, so each operation stays in order."""
        running: set[asyncio.Task[int]] = set()
        pruned_at = 0.0
        try:
            while True:
                claimed = 0
                if len(running) < self.lanes:
                    try:
                        claimed = self._start_chains(
                            await self.store.claim_outbox_events(
                                self.holder, self.claim_ttl, self.batch
                            ),
                            running,
                        )
                        if time.monotonic() - pruned_at > 3600:
                            pruned_at = time.monotonic()
                            await self._forget_old()
                        if self._failing:
                            log.warning("the outbox is read again")
                        self._failing = False
                    except Exception as exc:
                        if not self._failing:
                            log.warning("cannot read the outbox (%s); trying again", exc)
                        self._failing = True
                if claimed and len(running) < self.lanes:
                    continue  # more may be waiting
                if self._stopping.is_set() and not claimed and not running:
                    return
                await self._next(running)
        finally:
            for task in running:  # stopped with events in hand: claimed again later
                task.cancel()

    def _start_chains(self, events: list[OutboxEvent], running: set[asyncio.Task[int]]) -> int:
        started = time.monotonic()
        for chain in _chains(events):
            running.add(asyncio.create_task(self._tell_chain(chain, started)))
        return len(events)

    async def _next(self, running: set[asyncio.Task[int]]) -> None:
        """Until a chain ends, something new is written, or `poll` seconds passed."""
        woken = asyncio.create_task(self.wakeups.wait(self.poll))
        done, _ = await asyncio.wait({woken, *running}, return_when=asyncio.FIRST_COMPLETED)
        if woken not in done:
            woken.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await woken
        for task in done - {woken}:
            running.discard(task)
            try:
                self.told += task.result()
            except Exception as exc:  # the Store went away: the claim runs out, told later
                log.warning("cannot finish outbox events (%s); they are handed out again", exc)

    async def _forget_old(self) -> None:
        gone = await self.store.forget_outbox_events(self.clock.now() - self.keep)
        if gone:
            log.info("forgot %s outbox event(s) older than %s", gone, self.keep)

    async def dispatch_once(self) -> int:
        """Claim and tell what is pending, waiting until it is told; returns how many events
        were told. The events of one operation are told in order; different operations side
        by side, so that one channel's pacing holds up only its own threads."""
        events = await self.store.claim_outbox_events(self.holder, self.claim_ttl, self.batch)
        started = time.monotonic()
        counts = await asyncio.gather(*(self._tell_chain(c, started) for c in _chains(events)))
        told = sum(counts)
        self.told += told
        return told

    async def _tell_chain(self, groups: list[list[OutboxEvent]], started: float) -> int:
        """One operation's claimed events, in order; after one fails, the rest wait."""
        told = 0
        stuck = False
        for group in groups:
            late = time.monotonic() - started > self.claim_ttl.total_seconds() / 2
            if stuck or late:
                for event in group:  # handed out again at once (after the stuck one)
                    await self.store.retry_outbox_event(event.id, self.holder, timedelta(0))
                continue
            try:
                async with self._holding(group):
                    await self._tell(group)
            except Exception as exc:
                stuck = True
                await self._failed(group, exc)
                continue
            for event in group:
                if await self.store.finish_outbox_event(event.id, self.holder):
                    told += 1
        return told

    @contextlib.asynccontextmanager
    async def _holding(self, group: list[OutboxEvent]) -> AsyncIterator[None]:
        """While a group is told, its claim is extended every third of `claim_ttl`: a post
        may wait for Slack's pacing (or its 429s) longer than the claim lasts, and another
        replica must not take the events and tell them a second time meanwhile."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.claim_ttl.total_seconds() / 3)
                for event in group:
                    try:
                        await self.store.retry_outbox_event(event.id, self.holder, self.claim_ttl)
                    except Exception as exc:  # the claim runs out: told again elsewhere
                        log.warning("could not extend outbox event %s (%s)", event.id, exc)

        renewing = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

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
        elif isinstance(notice, ApprovalChanged):
            await self.threads.approval_changed(notice.approval_id)
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


def _chains(events: list[OutboxEvent]) -> list[list[list[OutboxEvent]]]:
    """The events of each operation, in order, grouped as they are told."""
    chains: dict[str, list[list[OutboxEvent]]] = {}
    i = 0
    while i < len(events):
        group = _group(events, i)
        i += len(group)
        chains.setdefault(group[0].key, []).append(group)
    return list(chains.values())


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
