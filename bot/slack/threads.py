"""Following work in Slack: one parent message per operation and channel, updated in place,
with each workflow step as a reply in its thread and one closing line; approval requests with
buttons, replaced by the decision once made.

It acts on the outbox's notices (commands/event_outbox.py), handed to it by the dispatcher
(bot/slack/dispatch.py) once across replicas and in order per operation, so after a replica
dies another continues the same thread. It keeps nothing in memory: the thread's messages are
in the Store (`posted_messages`), and what it shows it reads through `commands.read_models`.

A notice handed out again (`again`: an earlier holder died while acting on it) may have been
partly done. Each parent and each closing line is remembered in the Store as soon as Slack
answers with its ts, and not posted again once remembered; for the moment between Slack's
answer and that write, a parent posted in a channel known by id is also looked up in the
channel's history by its metadata (`nelson_thread` and the operation's id)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bot.slack.messages import approval_message, operation_message
from bot.slack.outbox import Outbox, PostFailed, channel_ref
from commands import read_models
from commands.event_outbox import ThreadLine
from commands.ports import Clock, Conflict, Store
from commands.settings import Settings
from domain.records import Operation
from domain.states import StackStatus

log = logging.getLogger("nelson.slack.threads")

PARENT = "nelson_thread"  # the metadata event type of a thread's parent message
CLOSING = "nelson_thread_closed"  # and of its closing line
POLL = 0.5  # seconds between looks for a parent another replica posts
PARENT_WAIT = 5.0  # how long a command that started an operation waits for its parent

Closing = Callable[[Operation], Awaitable[None]]


def is_channel_id(channel: str) -> bool:
    return channel[:1] in ("C", "G", "D") and channel.isalnum() and channel.isupper()


def _metadata(event_type: str, operation_id: int) -> dict[str, Any]:
    return {"event_type": event_type, "event_payload": {"operation": operation_id}}


class Threads:
    def __init__(self, settings: Settings, store: Store, outbox: Outbox, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self._closing: list[Closing] = []
        # wakes a command waiting for its parent when this process posted it (no state:
        # the parent itself is in the Store)
        self._parents: dict[int, asyncio.Event] = {}

    def on_closed(self, listener: Closing) -> None:
        """Called once per operation, after its closing line (the Roll back offer)."""
        self._closing.append(listener)

    # -- operations -------------------------------------------------------------------------

    def _channels(self, operation: Operation, extra: Sequence[str]) -> list[str]:
        channels = []
        if operation.channel and is_channel_id(operation.channel):
            channels.append(operation.channel)
        channels.extend(c.lstrip("#") for c in extra)
        if self.settings.slack.operations_channel:
            channels.append(self.settings.slack.operations_channel.lstrip("#"))
        return list(dict.fromkeys(channels))

    async def started(self, operation_id: int, channels: Sequence[str], again: bool) -> None:
        operation = await self.store.operation(operation_id)
        if operation is None:
            return
        thread = await read_models.operation_thread(self.store, operation)
        posted = {m.channel for m in thread.messages}
        text, blocks = operation_message(operation, list(thread.stacks), thread.shifts)
        for channel in self._channels(operation, channels):
            if channel in posted:
                continue  # an earlier holder posted it and remembered it
            ts = await self._posted_before(channel, PARENT, operation_id) if again else None
            if ts is None:
                try:
                    channel, ts = await self.outbox.post_message(
                        channel, text, blocks, metadata=_metadata(PARENT, operation_id)
                    )
                except PostFailed as exc:
                    log.warning("cannot follow operation %s in %s: %s", operation_id, channel, exc)
                    continue
            # Conflict: the same channel listed twice under different names
            with contextlib.suppress(Conflict):
                await self.store.remember_message(
                    read_models.operation_subject(operation_id), channel, ts
                )
            waiting = self._parents.get(operation_id)
            if waiting is not None:
                waiting.set()

    async def _posted_before(self, channel: str, kind: str, operation_id: int) -> str | None:
        """The ts of the bot's message of this kind for this operation, if the channel shows
        one already (an earlier holder posted it, then died before remembering it)."""
        if not is_channel_id(channel_ref(channel)):
            return None  # known by name only: nothing to look it up by
        return await self.outbox.find_by_metadata(
            channel_ref(channel), _metadata(kind, operation_id)
        )

    async def parent_posted_in(self, operation_id: int, channel: str, wait: float = 0.0) -> bool:
        """Whether the operation's parent message is in the channel, waiting up to `wait`
        seconds for whichever replica posts it: woken at once when this process posts it,
        and looking in the Store every POLL seconds for another replica's post."""
        subject = read_models.operation_subject(operation_id)
        deadline = time.monotonic() + wait
        posted = self._parents.setdefault(operation_id, asyncio.Event())
        try:
            while True:
                messages = await read_models.thread_messages(self.store, subject)
                if any(m.channel == channel for m in messages):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                posted.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(posted.wait(), min(left, POLL))
        finally:
            if self._parents.get(operation_id) is posted:
                del self._parents[operation_id]

    async def lines(self, operation_id: int, lines: Sequence[ThreadLine]) -> None:
        """Steps of the operation's stacks, told in one reply per thread; then the parent
        shows the stacks as they are now."""
        operation = await self.store.operation(operation_id)
        if operation is None:
            return
        thread = await read_models.operation_thread(self.store, operation)
        stacks = {s.id: s for s in thread.stacks}
        told = []
        for line in lines:
            if not line.message:  # an empty message only refreshes the parent
                continue
            stack = stacks.get(line.stack_id) or await self.store.stack_by_id(line.stack_id)
            if stack is None:
                continue
            mark = ":x: " if line.failed else ""
            told.append(f"{mark}`{stack.datacenter}/{stack.namespace}` {line.message}")
        for message in thread.messages:
            if told:
                await self._reply(message.channel, message.ts, "\n".join(told))
        text, blocks = operation_message(operation, list(thread.stacks), thread.shifts)

        async def now() -> tuple[str, list[dict[str, Any]]] | None:
            """The parent as the Store says at the moment it is sent: an update waiting for
            Slack never shows an older state than a closing update another replica sent."""
            current = await self.store.operation(operation_id)
            if current is None:
                return None
            fresh = await read_models.operation_thread(self.store, current)
            return operation_message(current, list(fresh.stacks), fresh.shifts)

        for message in thread.messages:
            self.outbox.update(message.channel, message.ts, text, blocks, render=now)

    async def closed(self, operation_id: int, again: bool) -> None:
        """The operation finished: one closing line in each thread, and the parent's final
        state (sent before this returns, ahead of progress updates, so a replica dying after
        it loses nothing)."""
        operation = await self.store.operation(operation_id)
        if operation is None:
            return
        thread = await read_models.operation_thread(self.store, operation)
        stacks = list(thread.stacks)
        failed = [s for s in stacks if s.status is StackStatus.FAILED]
        summary = (
            f":x: {operation.title} failed: "
            + "; ".join(f"{s.name}: {s.status_message}" for s in failed)
            if failed
            else f":white_check_mark: {operation.title} is done."
        )
        subject = f"closed:{read_models.operation_subject(operation_id)}"
        closed = {m.channel for m in await read_models.thread_messages(self.store, subject)}
        for message in thread.messages:
            if message.channel in closed:
                continue  # an earlier holder closed this thread already
            # told again: an earlier holder may have posted it and died before remembering
            ts = (
                await self.outbox.find_by_metadata(
                    message.channel, _metadata(CLOSING, operation_id), thread_ts=message.ts
                )
                if again
                else None
            )
            try:
                ts = ts or await self.outbox.post(
                    message.channel,
                    summary,
                    thread_ts=message.ts,
                    metadata=_metadata(CLOSING, operation_id),
                )
            except PostFailed as exc:
                log.warning("no closing line for operation %s: %s", operation_id, exc)
                continue
            with contextlib.suppress(Conflict):
                await self.store.remember_message(subject, message.channel, ts)
        text, blocks = operation_message(operation, stacks, thread.shifts)
        for message in thread.messages:
            # until sent, ahead of progress updates: the event is done only then, so a
            # replica dying before it leaves the final state to be shown by another
            await self.outbox.update_now(message.channel, message.ts, text, blocks, first=True)
        for listener in self._closing:
            try:
                await listener(operation)
            except PostFailed as exc:
                log.warning("after closing operation %s: %s", operation_id, exc)

    async def _reply(self, channel: str, thread_ts: str, text: str) -> None:
        try:
            await self.outbox.post(channel, text, thread_ts=thread_ts)
        except PostFailed as exc:
            log.warning("thread reply in %s dropped: %s", channel, exc.error)

    # -- approvals --------------------------------------------------------------------------

    async def approval_requested(self, approval_id: int) -> None:
        approval = await self.store.approval(approval_id)
        if approval is None:
            return
        subject = f"approval:{approval.id}"
        already = {m.channel for m in await read_models.thread_messages(self.store, subject)}
        text, blocks = approval_message(approval)
        targets: list[tuple[str, str | None]] = []
        targets.extend(await read_models.approval_threads(self.store, approval))
        if not targets and self.settings.slack.operations_channel:
            targets.append((self.settings.slack.operations_channel.lstrip("#"), None))
        if not targets:
            log.warning("approval #%s has no channel to be asked in", approval.id)
        for channel, thread_ts in dict(targets).items():
            if channel in already:
                continue
            try:
                channel, ts = await self.outbox.post_message(
                    channel, text, blocks, thread_ts=thread_ts
                )
                await self.store.remember_message(subject, channel, ts)
            except (PostFailed, Conflict) as exc:
                log.warning("approval #%s not posted in %s: %s", approval.id, channel, exc)

    async def approval_changed(self, approval_id: int) -> None:
        """A vote counted or a decision: every message of the request shows it as it stands,
        read now (a row told late shows nothing older than the Store), and sent before this
        returns, ahead of progress updates: the row is done only then, so a replica dying
        first leaves it to another, and the request's next row waits for it."""
        approval = await self.store.approval(approval_id)
        if approval is None:
            return
        text, blocks = approval_message(approval)
        for message in await read_models.thread_messages(self.store, f"approval:{approval.id}"):
            await self.outbox.update_now(message.channel, message.ts, text, blocks, first=True)
