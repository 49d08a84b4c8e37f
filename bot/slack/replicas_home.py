"""The Home tab's part on the processes alive: each replica of `nelson serve` (and a console)
with its host, pid, start, last heartbeat and the deploys it holds, so that people see at a
glance how many replicas share the work and that a dead one's deploys move on."""

from __future__ import annotations

from bot.bootstrap import Application
from bot.slack.blocks import Block, context, escape, section
from bot.slack.home import Home
from bot.slack.messages import when
from commands import daemons
from commands.access import Principal


class ReplicasSection:
    def __init__(self, application: Application) -> None:
        self.application = application

    async def section(self, _who: Principal) -> list[Block]:
        app = self.application
        alive = await daemons.replicas(app.store, app.clock)
        now = app.clock.now()
        blocks: list[Block] = [{"type": "divider"}, section(f"*Processes alive ({len(alive)})*")]
        if not alive:
            blocks.append(context("None is running: nothing drives deploys, shifts or cleanups."))
            return blocks
        lines = [
            f"`{escape(r.host)}` pid {escape(r.pid)} · {escape(r.kind)} · started "
            f"{when(r.started_at)} · heard from {daemons.since(r.seen_at, now)} · "
            f"{r.deploys_held} deploy(s) held"
            for r in alive
        ]
        blocks.append(section("\n".join(lines)))
        blocks.append(context(escape(daemons.takeover_note(app.settings.workflow.claim_ttl))))
        return blocks


def register(home: Home, application: Application) -> ReplicasSection:
    part = ReplicasSection(application)
    home.sections.append(part.section)
    return part
