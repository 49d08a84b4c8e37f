"""Button clicks. Each builds the typed command its text twin builds (pause, resume, reverse,
keep, remove) and runs it through the same handler and error boundary (`SlackBot.run`); what a
button carries is checked here first. Approve and Reject first ask for a confirmation
(bot/slack/approval_modals.py), whose submission builds `approve` / `reject` the same way."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp

from bot.conversation import Outcome
from bot.slack.cleanup import KEEP_ACTION, REMOVE_ACTION, stack_ids
from bot.slack.guard import first_action, text_at
from bot.slack.messages import (
    PAUSE_ACTION,
    RESUME_ACTION,
    REVERSE_ACTION,
    button_value,
)
from commands.model import Keep, Pause, Remove, Resume, Reverse

if TYPE_CHECKING:
    from bot.slack.app import SlackBot

log = logging.getLogger("nelson.slack")


def register(app: AsyncApp, bot: SlackBot) -> None:
    async def on_traffic(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        await bot.safely(body, _shift_traffic(bot, body))

    async def on_cleanup(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        await bot.safely(body, _clean_up(bot, body))

    async def on_unknown_action(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        await _unknown(bot, body)

    for action in (PAUSE_ACTION, RESUME_ACTION, REVERSE_ACTION):
        app.action(action)(on_traffic)
    for action in (KEEP_ACTION, REMOVE_ACTION):
        app.action(action)(on_cleanup)
    # Last, so it only gets the clicks no listener above claims (old messages, removed
    # buttons): every click is acknowledged, in HTTP mode and in Socket Mode.
    app.action(re.compile(".*"))(on_unknown_action)


async def _shift_traffic(bot: SlackBot, body: dict[str, Any]) -> None:
    user, channel, _ = bot.clicked(body)
    action = text_at(first_action(body), "action_id")
    shift_id = button_value(body)
    if shift_id is None:
        await bot.tell(channel, user, "There is no such traffic shift.", None)
        return
    command: Pause | Resume | Reverse = (
        Pause(shift_id=shift_id)
        if action == PAUSE_ACTION
        else Resume(shift_id=shift_id)
        if action == RESUME_ACTION
        else Reverse(shift_id=shift_id)
    )
    await bot.run(body, command)


async def _clean_up(bot: SlackBot, body: dict[str, Any]) -> None:
    user, channel, _ = bot.clicked(body)
    action = first_action(body)
    ids = stack_ids(text_at(action, "value"))
    if ids is None:
        await bot.tell(channel, user, "There is no such stack.", None)
        return
    if not ids:
        await bot.tell(channel, user, "That button names no stacks.", None)
        return
    keep = text_at(action, "action_id") == KEEP_ACTION
    command = Keep(stack_ids=tuple(ids)) if keep else Remove(stack_ids=tuple(ids))
    answer = await bot.run(body, command)
    if answer.outcome is Outcome.OK and bot.cleanup is not None:
        bot.cleanup.mark(body, keep, answer.reply.title)


async def _unknown(bot: SlackBot, body: dict[str, Any]) -> None:
    user, channel, thread_ts = bot.clicked(body)
    log.info(
        "a click on a button this bot does not know (%r) from %s",
        text_at(first_action(body), "action_id")[:80],
        user,
    )
    await bot.tell(
        channel,
        user,
        "This button is no longer active. Ask me again (`help` lists what I can do).",
        thread_ts,
    )
