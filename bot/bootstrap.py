"""The one place that builds adapters and hands them to the handlers."""

from __future__ import annotations

from dataclasses import dataclass

from adapters.storage import open_store
from bot.conversation import Conversation
from bot.manifest_dirs import register_directories
from commands.approval_desk import ApprovalDesk
from commands.context import SystemClock
from commands.events import EventHub
from commands.ports import Clock, Store, WorkflowPort
from commands.settings import Settings
from commands.workflow import NoEngine


@dataclass
class Application:
    settings: Settings
    store: Store
    conversation: Conversation
    events: EventHub
    desk: ApprovalDesk

    async def close(self) -> None:
        await self.store.close()


async def build(
    settings: Settings, *, workflow: WorkflowPort | None = None, clock: Clock | None = None
) -> Application:
    """Open the store and wire the handlers to the adapters the configuration names.
    `workflow` and `clock` replace the defaults (embedders and tests choose their own)."""
    store = await open_store(settings.database_url, upgrade=True)
    await register_directories(settings, store)
    clock = clock or SystemClock()
    events = EventHub()
    engine = workflow or NoEngine(settings)
    conversation = Conversation(settings, store, engine, clock, events)
    desk = ApprovalDesk(settings, store, events, clock)
    return Application(
        settings=settings, store=store, conversation=conversation, events=events, desk=desk
    )
