"""Mentions and direct messages: the text goes through the one command grammar; a repeated
delivery (Events API retries, Socket Mode redeliveries) is answered once."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp

from bot.slack.blocks import fallback, reply_blocks
from bot.slack.guard import text_at
from bot.slack.outbox import PostFailed
from bot.slack.threads import PARENT_WAIT

if TYPE_CHECKING:
    from bot.slack.app import SlackBot

log = logging.getLogger("nelson.slack")


def register(app: AsyncApp, bot: SlackBot) -> None:
    async def on_mention(body: dict[str, Any], event: dict[str, Any]) -> None:
        await bot.safely(body, _mentioned(bot, body, event))

    async def on_message(body: dict[str, Any], event: dict[str, Any]) -> None:
        # Direct messages only; channel messages reach the bot as mentions.
        if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id"):
            return
        await bot.safely(body, _direct_message(bot, body, event))

    app.event("app_mention")(on_mention)
    app.event("message")(on_message)


async def _mentioned(bot: SlackBot, body: dict[str, Any], event: dict[str, Any]) -> None:
    if not await bot.first_time(bot.event_key(body)):
        return
    thread = text_at(event, "thread_ts") or text_at(event, "ts")
    await _converse(bot, event, thread or None)


async def _direct_message(bot: SlackBot, body: dict[str, Any], event: dict[str, Any]) -> None:
    if not await bot.first_time(bot.event_key(body)):
        return
    await _converse(bot, event, text_at(event, "thread_ts") or None)


async def _converse(bot: SlackBot, event: dict[str, Any], thread_ts: str | None) -> None:
    user = text_at(event, "user")
    channel = text_at(event, "channel")
    principal = await bot.directory.principal(user)
    answer = await bot.application.conversation.answer(
        text_at(event, "text"), principal, channel=channel
    )
    reply = answer.reply
    if reply.operation_id is not None and await bot.threads.parent_posted_in(
        reply.operation_id, channel, wait=PARENT_WAIT
    ):
        return
    if (
        reply.attachments
        and not reply.private
        and await bot.post_with_files(channel, thread_ts, reply)
    ):
        return
    text, blocks = fallback(reply), reply_blocks(reply)
    try:
        if reply.private and not channel.startswith("D"):
            await bot.outbox.ephemeral(channel, user, text, blocks, thread_ts=thread_ts)
        else:
            await bot.outbox.post(channel, text, blocks, thread_ts=thread_ts)
    except PostFailed as exc:
        log.warning("could not answer %s in %s: %s", user, channel, exc.error)
