"""Following work in Slack: one parent message per operation and channel, updated in place,
with each workflow step as a reply in its thread; approval requests with buttons, replaced by
the decision once made. Listens to the EventHub; all it remembers is in the Store, and what
it shows it reads through `commands.read_models`, so this module only renders and posts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence

from bot.slack.messages import approval_message, operation_message
from bot.slack.outbox import Outbox, PostFailed
from commands import read_models
from commands.events import (
    ApprovalDecided,
    ApprovalRequested,
    Event,
    OperationFinished,
    OperationStarted,
    StackProgress,
)
from commands.ports import Clock, Conflict, Store
from commands.settings import Settings
from domain.records import Approval, Operation, PostedMessage
from domain.states import StackStatus
from domain.steps import finished

log = logging.getLogger("nelson.slack.threads")


def is_channel_id(channel: str) -> bool:
    return channel[:1] in ("C", "G", "D") and channel.isalnum() and channel.isupper()


class Threads:
    def __init__(self, settings: Settings, store: Store, outbox: Outbox, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # per operation, the status each stack's events have reported so far: the thread says
        # "done" only after every stack's last step was told, whatever order events arrive in
        self._told: dict[int, dict[int, StackStatus]] = {}
        self._ended: dict[int, OperationFinished] = {}  # finished, summary not yet told

    async def on_event(self, event: Event) -> None:
        if isinstance(event, OperationStarted):
            await self._started(event)
        elif isinstance(event, StackProgress):
            await self._progress(event)
        elif isinstance(event, OperationFinished):
            await self._finished(event)
        elif isinstance(event, ApprovalRequested):
            await self._approval_requested(event.approval)
        elif isinstance(event, ApprovalDecided):
            await self._approval_decided(event.approval)

    # -- operations -------------------------------------------------------------------------

    def _channels(self, operation: Operation, extra: tuple[str, ...]) -> list[str]:
        channels = []
        if operation.channel and is_channel_id(operation.channel):
            channels.append(operation.channel)
        channels.extend(c.lstrip("#") for c in extra)
        if self.settings.slack.operations_channel:
            channels.append(self.settings.slack.operations_channel.lstrip("#"))
        return list(dict.fromkeys(channels))

    async def _started(self, event: OperationStarted) -> None:
        operation = event.operation
        subject = f"operation:{operation.id}"
        async with self._locks[subject]:
            thread = await read_models.operation_thread(self.store, operation)
            text, blocks = operation_message(operation, list(thread.stacks))
            for channel in self._channels(operation, event.notify_channels):
                try:
                    channel, ts = await self.outbox.post_message(channel, text, blocks)
                except PostFailed as exc:
                    log.warning("cannot follow %s in %s: %s", subject, channel, exc.error)
                    continue
                # Conflict: the same channel listed twice under different names
                with contextlib.suppress(Conflict):
                    await self.store.remember_message(subject, channel, ts)

    async def parent_posted_in(self, operation_id: int, channel: str) -> bool:
        async with self._locks[f"operation:{operation_id}"]:
            messages = await read_models.thread_messages(
                self.store, read_models.operation_subject(operation_id)
            )
        return any(m.channel == channel for m in messages)

    async def _progress(self, event: StackProgress) -> None:
        stack, operations = await read_models.operations_of_stack(self.store, event.stack_id)
        if stack is None:
            return
        mark = ":x: " if event.failed else ""
        line = f"{mark}`{stack.datacenter}/{stack.namespace}` {event.message}"
        for operation in operations:
            async with self._locks[read_models.operation_subject(operation.id)]:
                thread = await read_models.operation_thread(self.store, operation)
                if event.message:  # an empty message only refreshes the parent
                    for message in thread.messages:
                        self.outbox.thread_line(message.channel, message.ts, line)
                stacks = thread.stacks
                told = self._told.setdefault(operation.id, {s.id: s.status for s in stacks})
                told.setdefault(event.stack_id, stack.status)
                if event.status is not None:
                    told[event.stack_id] = event.status
                elif event.failed:
                    told[event.stack_id] = StackStatus.FAILED
                await self._refresh(thread)

    async def _finished(self, event: OperationFinished) -> None:
        """The application finished the operation (commands.operations). The summary goes
        into the thread after the last stack's own line, whichever event is heard first."""
        subject = f"operation:{event.operation.id}"
        async with self._locks[subject]:
            self._ended[event.operation.id] = event
            messages = await read_models.thread_messages(self.store, subject)
            await self._close(event.operation.id, messages)

    async def _close(self, operation_id: int, messages: Sequence[PostedMessage]) -> None:
        event = self._ended.get(operation_id)
        if event is None:
            return
        told = self._told.get(operation_id, {})
        if not all(finished(told.get(s.id, s.status)) for s in event.stacks):
            return  # a stack's last line is still to come
        del self._ended[operation_id]
        self._told.pop(operation_id, None)
        operation, stacks = event.operation, list(event.stacks)
        failed = [s for s in stacks if s.status is StackStatus.FAILED]
        summary = (
            f":x: {operation.title} failed: "
            + "; ".join(f"{s.name}: {s.status_message}" for s in failed)
            if failed
            else f":white_check_mark: {operation.title} is done."
        )
        for message in messages:
            self.outbox.thread_line(message.channel, message.ts, summary)
        shifts = await read_models.shifts_towards(self.store, stacks)
        text, blocks = operation_message(operation, stacks, shifts)
        for message in messages:
            self.outbox.update(message.channel, message.ts, text, blocks)

    async def _refresh(self, thread: read_models.OperationThread) -> None:
        text, blocks = operation_message(thread.operation, list(thread.stacks), thread.shifts)
        for message in thread.messages:
            self.outbox.update(message.channel, message.ts, text, blocks)
        await self._close(thread.operation.id, thread.messages)

    # -- approvals --------------------------------------------------------------------------

    async def _approval_requested(self, approval: Approval) -> None:
        subject = f"approval:{approval.id}"
        text, blocks = approval_message(approval)
        targets: list[tuple[str, str | None]] = []
        targets.extend(await read_models.approval_threads(self.store, approval))
        if not targets and self.settings.slack.operations_channel:
            targets.append((self.settings.slack.operations_channel.lstrip("#"), None))
        if not targets:
            log.warning("approval #%s has no channel to be asked in", approval.id)
        async with self._locks[subject]:
            for channel, thread_ts in dict(targets).items():
                try:
                    ts = await self.outbox.post(channel, text, blocks, thread_ts=thread_ts)
                    await self.store.remember_message(subject, channel, ts)
                except (PostFailed, Conflict) as exc:
                    log.warning("approval #%s not posted in %s: %s", approval.id, channel, exc)

    async def _approval_decided(self, approval: Approval) -> None:
        subject = f"approval:{approval.id}"
        text, blocks = approval_message(approval)
        async with self._locks[subject]:
            for message in await read_models.thread_messages(self.store, subject):
                self.outbox.update(message.channel, message.ts, text, blocks)

    async def refresh_approval(self, approval: Approval) -> None:
        """Show the current vote count (after a vote that did not decide it yet)."""
        await self._approval_decided(approval)
