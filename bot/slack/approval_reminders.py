"""Reminders of approvals near their deadline: a reply under each message that asks for the
approval, naming who may decide (the rule's approvers: people, user groups) and when it
expires. Sent once per approval (`ApprovalDesk.remind_due` claims it in the Store)."""

from __future__ import annotations

import logging

from bot.slack.blocks import escape, section
from bot.slack.messages import when
from bot.slack.outbox import Outbox, PostFailed
from commands.events import ApprovalReminder, Event, EventHub
from commands.ports import Store

log = logging.getLogger("nelson.slack.reminders")


def addressed(entry: str) -> str:
    """How Slack shows an approver entry: a person, a user group, or the text as it is."""
    if entry[:1] in ("U", "W") and entry.isalnum() and entry.isupper():
        return f"<@{entry}>"
    if entry[:1] == "S" and entry.isalnum() and entry.isupper():
        return f"<!subteam^{entry}>"
    return escape(entry)


def reminder(event: ApprovalReminder) -> str:
    approval = event.approval
    whom = (
        ", ".join(addressed(e) for e in event.approvers if e != "*")
        or f"whoever may approve in `{escape(approval.namespace)}`"
    )
    deadline = when(approval.deadline) if approval.deadline else "soon"
    return (
        f":alarm_clock: {whom}: approval #{approval.id} ({len(approval.approvers)} of "
        f"{approval.required}) expires {deadline}; after that nothing it asks will happen."
    )


class ApprovalReminders:
    def __init__(self, store: Store, outbox: Outbox) -> None:
        self.store = store
        self.outbox = outbox

    async def on_event(self, event: Event) -> None:
        if not isinstance(event, ApprovalReminder):
            return
        text = reminder(event)
        for message in await self.store.messages_for(f"approval:{event.approval.id}"):
            try:
                await self.outbox.post(message.channel, text, [section(text)], thread_ts=message.ts)
            except PostFailed as exc:
                log.warning("no reminder in %s: %s", message.channel, exc.error)


def register(events: EventHub, store: Store, outbox: Outbox) -> ApprovalReminders:
    reminders = ApprovalReminders(store, outbox)
    events.subscribe(reminders.on_event)
    return reminders
