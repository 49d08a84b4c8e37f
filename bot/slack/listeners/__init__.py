"""The Slack listeners, one module per kind of request (as in Slack's Bolt starter template):
each `register(app, bot)` attaches its listeners to the Bolt app; `bot` (bot.slack.app.SlackBot)
holds the services they answer with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slack_bolt.async_app import AsyncApp

from bot.slack.listeners import actions, commands, events, views

if TYPE_CHECKING:
    from bot.slack.app import SlackBot


def register(app: AsyncApp, bot: SlackBot) -> None:
    commands.register(app, bot)
    events.register(app, bot)
    views.register(app, bot)
    actions.register(app, bot)  # last: it ends with the catch-all for unknown buttons
