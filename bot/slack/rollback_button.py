"""The Roll back button: offered in a deploy's thread once the deploy is done, for each new
stack that has an earlier stack of the same major version still running; a click builds the
typed `rollback <unit> in <ns> at <dc> from <stack>` and runs it through the same handler as
the text, so access, audit and messages are the text's. The offer is posted once per
operation, whichever replica hears the deploy end (a delivery claim in the Store)."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.bootstrap import Application
from bot.slack.blocks import context, escape, section
from bot.slack.directory import Directory
from bot.slack.guard import text_at
from bot.slack.messages import button, button_value, who
from bot.slack.outbox import Outbox, PostFailed
from commands import model
from commands.grammar import canonical
from commands.rollback import Rollbacks
from domain.records import Operation, Stack
from domain.states import StackStatus

log = logging.getLogger("nelson.slack.rollback")

ROLLBACK_ACTION = "rollback.stack"


def offer(stack: Stack, previous: Stack) -> tuple[str, list[dict[str, Any]]]:
    where = f"{stack.datacenter}/{stack.namespace}"
    text = f"Roll back {stack.unit} in {where} to {previous.name} ({previous.version})"
    return text, [
        section(
            f"If *{escape(stack.name)}* ({stack.version}) misbehaves in `{where}`, its traffic "
            f"can go back at once to *{escape(previous.name)}* ({previous.version})."
        ),
        {
            "type": "actions",
            "block_id": f"rollback-{stack.id}",
            "elements": [button(ROLLBACK_ACTION, "Roll back", str(stack.id), "danger")],
        },
    ]


class RollbackButtons:
    def __init__(self, application: Application, outbox: Outbox, directory: Directory) -> None:
        self.application = application
        self.store = application.store
        self.outbox = outbox
        self.directory = directory

    # -- offering ----------------------------------------------------------------------------

    async def offer_after(self, operation: Operation) -> None:
        """After a deploy's thread is closed (once, bot/slack/threads.py): offer a Roll back
        in its thread for each of its stacks that replaced an earlier one."""
        traffic = self.application.traffic
        if traffic is None or operation.outcome != "succeeded":
            return
        if not await self.store.claim_delivery(
            f"rollback-offer:{operation.id}", self.application.clock.now()
        ):
            return
        messages = await self.store.messages_for(f"operation:{operation.id}")
        for stack in await self.store.stacks_by_ids(operation.stack_ids):
            previous = await Rollbacks(traffic).previous_or_none(stack)
            if stack.status is not StackStatus.READY or previous is None:
                continue
            text, blocks = offer(stack, previous)
            for message in messages:
                try:
                    ts = await self.outbox.post(message.channel, text, blocks, thread_ts=message.ts)
                    await self.store.remember_message(f"rollback:{stack.id}", message.channel, ts)
                except PostFailed as exc:
                    log.warning("no Roll back offer in %s: %s", message.channel, exc.error)

    # -- clicks ------------------------------------------------------------------------------

    async def on_click(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        try:
            await self._clicked(body)
        except Exception:
            log.exception("a Roll back click failed")

    async def _clicked(self, body: dict[str, Any]) -> None:
        user = text_at(body, "user", "id")
        channel = text_at(body, "container", "channel_id") or text_at(body, "channel", "id")
        thread = text_at(body, "message", "thread_ts") or None
        stack_id = button_value(body)
        stack = await self.store.stack_by_id(stack_id) if stack_id is not None else None
        if stack is None:
            await self._tell(channel, user, "There is no such stack.", thread)
            return
        command = model.Rollback(stack.unit, stack.namespace, stack.datacenter, stack=stack.name)
        principal = await self.directory.principal(user)
        answer = await self.application.conversation.answer(
            canonical(command), principal, channel=channel
        )
        reply = answer.reply
        said = " ".join([reply.title, *(getattr(b, "text", "") for b in reply.blocks)]).strip()
        await self._tell(channel, user, said if reply.ok else f":no_entry: {said}", thread)
        if reply.ok:
            note = f":leftwards_arrow_with_hook: Rolled back by {who(user)}: {escape(reply.title)}"
            for message in await self.store.messages_for(f"rollback:{stack.id}"):
                self.outbox.update(message.channel, message.ts, reply.title, [context(note)])

    async def _tell(self, channel: str, user: str, text: str, thread: str | None) -> None:
        if not channel:
            return
        try:
            await self.outbox.ephemeral(
                channel, user, text, [section(escape(text))], thread_ts=thread
            )
        except PostFailed as exc:
            log.warning("could not tell %s in %s: %s", user, channel, exc.error)


def register(
    app: AsyncApp, application: Application, outbox: Outbox, directory: Directory
) -> RollbackButtons:
    buttons = RollbackButtons(application, outbox, directory)
    app.action(ROLLBACK_ACTION)(buttons.on_click)
    return buttons
