"""The one place that builds adapters and hands them to the handlers."""

from __future__ import annotations

from dataclasses import dataclass

from adapters.storage import open_store
from bot.conversation import Conversation
from bot.manifest_dirs import register_directories
from commands.context import SystemClock
from commands.ports import Store
from commands.settings import Settings
from commands.workflow import NoEngine


@dataclass
class Application:
    settings: Settings
    store: Store
    conversation: Conversation

    async def close(self) -> None:
        await self.store.close()


async def build(settings: Settings) -> Application:
    store = await open_store(settings.database_url, upgrade=True)
    await register_directories(settings, store)
    workflow = NoEngine(settings)
    conversation = Conversation(settings, store, workflow, SystemClock())
    return Application(settings=settings, store=store, conversation=conversation)
