"""The App Home tab: the viewer's pending approvals (with buttons when they may decide), their
recent deployments, and per datacenter the stacks that are warming or ready. Published when
the tab is opened and again, coalesced, whenever something changes for recent viewers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot.slack.blocks import MAX_HOME_BLOCKS, Block, context, escape, section
from bot.slack.directory import Directory
from bot.slack.messages import approval_message, when
from bot.slack.outbox import Outbox
from commands.access import Principal
from commands.approval_desk import ApprovalDesk
from commands.events import Event
from commands.ports import Store
from commands.read_models import home_view
from commands.settings import Settings

log = logging.getLogger("nelson.slack.home")

VIEWER_MEMORY = 24 * 3600.0  # refresh the tab of people who opened it within a day
STACKS_PER_DATACENTER = 10


class Home:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        desk: ApprovalDesk,
        directory: Directory,
        outbox: Outbox,
    ) -> None:
        self.settings = settings
        self.store = store
        self.desk = desk
        self.directory = directory
        self.outbox = outbox
        self._viewers: dict[str, float] = {}
        # more parts of the tab, after the approvals (locks and freezes)
        self.sections: list[Callable[[Principal], Awaitable[list[Block]]]] = []
        self._refresh: asyncio.Task[None] | None = None

    async def opened(self, user_id: str) -> None:
        self._viewers[user_id] = time.monotonic()
        principal = await self.directory.principal(user_id)
        self.outbox.publish_home(user_id, await self.view(principal))

    async def on_event(self, _event: Event) -> None:
        # events come in bursts (a traffic shift moves every few seconds): one refresh after
        # the burst, not one render per event per viewer
        if self._viewers and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(self._refresh_viewers())

    async def _refresh_viewers(self) -> None:
        await asyncio.sleep(self.outbox.update_interval)
        try:
            await self._publish_all()
        except Exception:
            log.exception("refreshing the Home tabs failed")

    async def _publish_all(self) -> None:
        now = time.monotonic()
        for user_id, seen in list(self._viewers.items()):
            if now - seen > VIEWER_MEMORY:
                del self._viewers[user_id]
                continue
            principal = await self.directory.principal(user_id)
            self.outbox.publish_home(user_id, await self.view(principal))

    async def view(self, who: Principal) -> dict[str, Any]:
        home = await home_view(
            self.settings, self.store, self.desk, who, stacks_per_datacenter=STACKS_PER_DATACENTER
        )
        blocks: list[Block] = [
            {"type": "header", "text": {"type": "plain_text", "text": "Nelson"}},
            section("*Waiting for your decision*"),
        ]
        mine = home.approvals
        if not mine:
            blocks.append(context("Nothing is waiting for you."))
        for approval in mine[:10]:
            blocks.extend(approval_message(approval)[1])
        if len(mine) > 10:
            blocks.append(context(f"… and {len(mine) - 10} more: `approvals` lists them all."))
        for part in self.sections:
            blocks.extend(await part(who))
        blocks.append({"type": "divider"})
        blocks.append(section("*Your recent deployments*"))
        if not home.operations:
            blocks.append(context("You have not deployed anything yet."))
        for operation in home.operations:
            state = operation.outcome or "running"
            blocks.append(
                section(f"*{escape(operation.title)}* · {state} · {when(operation.created_at)}")
            )
        blocks.append({"type": "divider"})
        for found in home.datacenters:
            visible = found.stacks
            lines = [
                f"`{escape(s.name)}` {escape(s.namespace)} *{s.status.value}*" for s in visible
            ]
            shown = len(visible)
            more = f" (showing {shown} of {found.total})" if found.total > shown else ""
            blocks.append(section(f"*{escape(found.datacenter)}*{more}"))
            blocks.append(
                section("\n".join(lines)) if lines else context("Nothing warming or ready.")
            )
        return {"type": "home", "blocks": blocks[:MAX_HOME_BLOCKS]}
