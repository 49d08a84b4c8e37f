"""The views the bot publishes: the App Home tab, rendered when it is opened (and refreshed
by bot.slack.home as things change)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp

from bot.slack.guard import text_at

if TYPE_CHECKING:
    from bot.slack.app import SlackBot


def register(app: AsyncApp, bot: SlackBot) -> None:
    async def on_home_opened(body: dict[str, Any], event: dict[str, Any]) -> None:
        if (text_at(event, "tab") or "home") != "home":
            return
        # Opening the tab asks nothing: on failure the tab keeps what it showed last.
        await bot.safely(body, bot.home.opened(text_at(event, "user")), tell=False)

    app.event("app_home_opened")(on_home_opened)
