"""`nelson console`: a prompt over the same handlers Slack uses, acting as the local user."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.bootstrap import Application
from bot.jobs import Jobs
from bot.terminal import render, save_attachments
from commands.access import Principal
from commands.events import (
    ApprovalReminder,
    CleanupAnnounced,
    CleanupDone,
    EmergencyDeploy,
    Event,
    StackProgress,
)

BANNER = (
    "Nelson console — acting as '{user}' on {db}.\n"
    "Type `help` for commands, `exit` or Ctrl-D to leave."
)
HISTORY = Path.home() / ".nelson_history"


def local_principal(app: Application, as_user: str | None = None) -> Principal:
    user = as_user or app.settings.console.user
    return Principal(user_id=user, name=user, local=True)


def progress_printer(app: Application) -> Callable[[Event], Awaitable[None]]:
    """Print workflow steps as they happen (`[howdy--1-0-0--abcd1234 dc/ns] replicated …`)
    and what the cleanup announces and removes."""

    async def show(event: Event) -> None:
        if isinstance(event, StackProgress) and event.message:
            stack = await app.store.stack_by_id(event.stack_id)
            where = f"{stack.name} {stack.datacenter}/{stack.namespace}" if stack else "?"
            print(f"[{where}] {event.message}", flush=True)
        elif isinstance(event, CleanupAnnounced):
            print(f"[cleanup] {len(event.removals)} stacks will be removed:", flush=True)
            for removal in event.removals:
                at = removal.remove_at.strftime("%Y-%m-%d %H:%M UTC")
                print(f"  {removal.stack.name}: {removal.reason}; after {at}", flush=True)
        elif isinstance(event, ApprovalReminder):
            approval = event.approval
            print(
                f"[approval #{approval.id}] expires soon: {approval.summary} "
                f"({len(approval.approvers)} of {approval.required})",
                flush=True,
            )
        elif isinstance(event, EmergencyDeploy):
            print(f"[emergency] {event.actor} deploys {event.what}: {event.reason}", flush=True)
            for line in event.overridden:
                print(f"  through: {line}", flush=True)
        elif isinstance(event, CleanupDone):
            for stack in event.reaped:
                print(f"[cleanup] removed {stack.name}", flush=True)
            for stack, why in event.failed:
                print(f"[cleanup] could not remove {stack.name} yet: {why}", flush=True)

    return show


async def run_console(app: Application, as_user: str | None = None) -> int:
    principal = local_principal(app, as_user)
    print(BANNER.format(user=principal.user_id, db=_describe_db(app.settings.database_url)))
    app.events.subscribe(progress_printer(app))
    resumed = await app.start()
    if resumed:
        print(f"Continuing {resumed} deploy(s) an earlier run left unfinished.")
    # traffic shifts move, cleanups run and approvals expire while the console is open
    jobs = Jobs(app, "nelson console")
    await jobs.start()
    try:
        return await _loop(app, principal)
    finally:
        await jobs.stop()


async def _loop(app: Application, principal: Principal) -> int:
    prompt = _make_prompt()
    while True:
        try:
            line = await prompt()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if line.strip().lower() in ("exit", "quit", "bye"):
            return 0
        if not line.strip():
            continue
        answer = await app.conversation.answer(line, principal, local=True)
        print(render(answer.reply))
        if saved := save_attachments(answer.reply):
            print(saved)


def _make_prompt() -> Callable[[], Awaitable[str]]:
    if sys.stdin.isatty():
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory

        session: PromptSession[str] = PromptSession(history=FileHistory(str(HISTORY)))

        async def ask() -> str:
            line = str(await session.prompt_async("nelson> "))
            return line

        return ask

    async def read() -> str:
        line = str(await asyncio.to_thread(sys.stdin.readline))
        if not line:
            raise EOFError
        print(f"nelson> {line.rstrip()}")
        return line

    return read


def _describe_db(url: str) -> str:
    if url.startswith("sqlite"):
        return url.split("///", 1)[-1] or "SQLite"
    # Never show credentials.
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
