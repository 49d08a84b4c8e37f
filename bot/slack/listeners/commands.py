"""The `/nelson` slash command: acknowledged at once, then answered through the one command
grammar (bot.conversation)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp

from bot.slack.guard import text_at
from bot.slack.threads import PARENT_WAIT

if TYPE_CHECKING:
    from bot.slack.app import SlackBot


def register(app: AsyncApp, bot: SlackBot) -> None:
    async def on_command(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        await bot.safely(body, _command(bot, body))

    app.command("/nelson")(on_command)


async def _command(bot: SlackBot, body: dict[str, Any]) -> None:
    trigger = text_at(body, "trigger_id")
    if not await bot.first_time(f"command:{trigger}" if trigger else None):
        return
    user = text_at(body, "user_id")
    channel = text_at(body, "channel_id")
    principal = await bot.directory.principal(user, text_at(body, "user_name"))
    answer = await bot.application.conversation.answer(
        text_at(body, "text"), principal, channel=channel
    )
    reply = answer.reply
    if reply.operation_id is not None and await bot.threads.parent_posted_in(
        reply.operation_id, channel, wait=PARENT_WAIT
    ):
        return  # the parent message in the channel is the answer
    # Files need a message to hang from: the answer goes to the channel, with the
    # details and the pictures in its thread.
    if reply.attachments and not reply.private and await bot.post_with_files(channel, None, reply):
        return
    await bot.respond(body.get("response_url"), channel, user, reply)
