"""Locks and freezes on the Home tab: what is in force in the namespaces the viewer may see,
with Unlock / Unfreeze where they may lift it. A click builds the typed `unlock` / `unfreeze`
and runs it through the same handler as the text; the tab is then published again."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.bootstrap import Application
from bot.slack.blocks import Block, context, escape, section
from bot.slack.directory import Directory
from bot.slack.guard import text_at
from bot.slack.home import Home
from bot.slack.messages import button, button_value
from commands import model
from commands.access import Principal, Role, authorize
from commands.gate import Gate
from commands.grammar import canonical
from domain.locks import FREEZE, LOCK, Lock

log = logging.getLogger("nelson.slack.locks")

UNLOCK_ACTION = "lock.lift"
SHOWN = 10


def lift_command(lock: Lock) -> model.Unlock | model.Unfreeze | None:
    if lock.kind == LOCK and lock.unit is not None:
        return model.Unlock(lock.unit, lock.namespace)
    if lock.kind == FREEZE and lock.namespace is not None:
        return model.Unfreeze(lock.namespace, lock.datacenter)
    return None  # a scheduled window: lifted only in the configuration


class LockButtons:
    def __init__(self, application: Application, home: Home, directory: Directory) -> None:
        self.application = application
        self.home = home
        self.directory = directory
        settings = application.settings
        self.gate = Gate(settings, application.store, application.clock, application.events)

    def _may_lift(self, who: Principal, lock: Lock) -> bool:
        access, namespaces = self.application.settings.access, self.application.settings.namespaces
        role = Role.DEPLOY if lock.kind == LOCK else Role.ADMIN
        return all(
            authorize(access, who, role, ns).allowed
            for ns in ([lock.namespace] if lock.namespace else namespaces)
        )

    async def section(self, who: Principal) -> list[Block]:
        """The Home tab's part: locks and freezes in force that the viewer may see."""
        settings = self.application.settings
        now = self.application.clock.now()
        visible = [
            lock
            for lock in await self.gate.in_force()
            if lock.namespace is None
            or authorize(settings.access, who, Role.VIEW, lock.namespace).allowed
        ]
        blocks: list[Block] = [{"type": "divider"}, section("*Locks and freezes*")]
        if not visible:
            blocks.append(context("Nothing is locked or frozen."))
        for lock in visible[:SHOWN]:
            block = section(escape(lock.describe(now)))
            command = lift_command(lock)
            if command is not None and self._may_lift(who, lock):
                label = "Unlock" if lock.kind == LOCK else "Unfreeze"
                block["accessory"] = button(UNLOCK_ACTION, label, str(lock.id))
            blocks.append(block)
        if len(visible) > SHOWN:
            blocks.append(context(f"… and {len(visible) - SHOWN} more: `locks` lists them all."))
        return blocks

    async def on_click(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        try:
            await self._clicked(body)
        except Exception:
            log.exception("an Unlock / Unfreeze click failed")

    async def _clicked(self, body: dict[str, Any]) -> None:
        user = text_at(body, "user", "id")
        lock_id = button_value(body)
        found = [lock for lock in await self.application.store.locks() if lock.id == lock_id]
        command = lift_command(found[0]) if found else None
        if command is not None:
            principal = await self.directory.principal(user)
            answer = await self.application.conversation.answer(canonical(command), principal)
            if not answer.reply.ok:
                log.info("%s could not lift lock #%s: %s", user, lock_id, answer.reply.title)
        await self.home.opened(user)  # the tab shows what is in force now


def register(
    app: AsyncApp, application: Application, home: Home, directory: Directory
) -> LockButtons:
    buttons = LockButtons(application, home, directory)
    home.sections.append(buttons.section)
    app.action(UNLOCK_ACTION)(buttons.on_click)
    return buttons
