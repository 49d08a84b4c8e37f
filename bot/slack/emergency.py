"""Emergency deploys, announced: a message in the operations channel and in each of the
unit's channels (and where it was asked) saying who deployed what through which locks and
freezes, and why."""

from __future__ import annotations

import logging

from bot.slack.blocks import context, escape, section
from bot.slack.messages import who
from bot.slack.outbox import Outbox, PostFailed
from bot.slack.threads import is_channel_id
from commands.events import EmergencyDeploy, Event, EventHub
from commands.settings import Settings

log = logging.getLogger("nelson.slack.emergency")


def announcement(event: EmergencyDeploy) -> tuple[str, list[dict[str, object]]]:
    head = (
        f":rotating_light: *Emergency deploy* of *{escape(event.what)}* by "
        f"{who(event.actor)}: {escape(event.reason)}"
    )
    through = (
        "Went through: " + "; ".join(escape(line) for line in event.overridden)
        if event.overridden
        else "Nothing was locked or frozen there."
    )
    text = f"Emergency deploy of {event.what} by {event.actor}: {event.reason}"
    return text, [section(head), context(through)]


class EmergencyNotices:
    def __init__(self, settings: Settings, outbox: Outbox) -> None:
        self.settings = settings
        self.outbox = outbox

    def channels(self, event: EmergencyDeploy) -> list[str]:
        found = []
        if event.asked_in and is_channel_id(event.asked_in):
            found.append(event.asked_in)
        found.extend(c.lstrip("#") for c in event.channels)
        if self.settings.slack.operations_channel:
            found.append(self.settings.slack.operations_channel.lstrip("#"))
        return list(dict.fromkeys(found))

    async def on_event(self, event: Event) -> None:
        if not isinstance(event, EmergencyDeploy):
            return
        text, blocks = announcement(event)
        for channel in self.channels(event):
            try:
                await self.outbox.post(channel, text, blocks)
            except PostFailed as exc:
                log.warning("could not announce an emergency deploy in %s: %s", channel, exc.error)


def register(events: EventHub, settings: Settings, outbox: Outbox) -> EmergencyNotices:
    notices = EmergencyNotices(settings, outbox)
    events.subscribe(notices.on_event)
    return notices
