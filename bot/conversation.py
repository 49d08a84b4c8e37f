"""One request, start to finish: text in, a reply out, whatever the front end."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import IntEnum

from bot.outage import UNREACHABLE, describe, is_outage
from commands.access import Principal
from commands.context import Context, Services
from commands.grammar import parse_command
from commands.handlers import handle
from commands.model import Command
from commands.replies import Code, ParseError, Reply, Text, UserError
from domain.states import IllegalTransition

log = logging.getLogger("nelson.conversation")

LONG_TEXT = 4000  # characters; reading this many takes a few milliseconds


class Outcome(IntEnum):
    """Also the exit status of `nelson run`."""

    OK = 0
    USER_ERROR = 1
    INTERNAL_ERROR = 2


@dataclass(frozen=True, slots=True)
class Answer:
    reply: Reply
    outcome: Outcome


def error_reply(exc: UserError) -> Reply:
    blocks: list[Text | Code] = []
    if exc.details:
        blocks.append(Code("\n".join(exc.details)))
    if isinstance(exc, ParseError):
        if exc.suggestion:
            blocks.append(Text(exc.suggestion))
        if exc.usage:
            blocks.append(Text(f"usage: {exc.usage}"))
    if exc.hint:
        blocks.append(Text(exc.hint))
    message = exc.message[:1].upper() + exc.message[1:]
    return Reply(title=message, blocks=tuple(blocks), ok=False, private=True)


class Conversation:
    """Every request of every front end, answered with the services the program was built
    with (bot.bootstrap), through one error boundary."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def context(
        self,
        principal: Principal,
        *,
        local: bool = False,
        attachment: str | None = None,
        channel: str | None = None,
    ) -> Context:
        s = self.services
        return Context(
            principal=principal,
            settings=s.settings,
            store=s.store,
            workflow=s.workflow,
            clock=s.clock,
            local=local,
            attachment=attachment,
            channel=channel,
            events=s.events,
            traffic=s.traffic,
            lifecycle=s.lifecycle,
            secrets=s.secrets,
            consuls=s.consuls,
            manifests=s.manifests,
            desk=s.desk,
            random_bytes=s.random_bytes,
        )

    async def answer(
        self,
        text: str,
        principal: Principal,
        *,
        local: bool = False,
        attachment: str | None = None,
        channel: str | None = None,
    ) -> Answer:
        """Text from any front end: parsed by the grammar, then as `execute`."""
        ctx = self.context(principal, local=local, attachment=attachment, channel=channel)

        async def run() -> Reply:
            # A long text (a pasted manifest) is read off the event loop.
            command = (
                await asyncio.to_thread(parse_command, text)
                if len(text) > LONG_TEXT
                else parse_command(text)
            )
            return await handle(command, ctx)

        return await self._answered(run(), principal)

    async def execute(
        self, command: Command, principal: Principal, *, channel: str | None = None
    ) -> Answer:
        """A typed command built by a front end (a button): the same handler, the same
        answers and errors as its text twin."""
        ctx = self.context(principal, channel=channel)
        return await self._answered(handle(command, ctx), principal)

    async def _answered(self, work: Awaitable[Reply], principal: Principal) -> Answer:
        """The one error boundary of every request."""
        try:
            reply = await work
        except UserError as exc:
            return Answer(error_reply(exc), Outcome.USER_ERROR)
        except IllegalTransition as exc:
            return Answer(Reply(title=str(exc), ok=False, private=True), Outcome.USER_ERROR)
        except Exception as exc:
            return Answer(
                fault_reply(exc, f"answering {principal.user_id}"), Outcome.INTERNAL_ERROR
            )
        return Answer(reply, Outcome.OK if reply.ok else Outcome.USER_ERROR)


def fault_reply(exc: BaseException, doing: str) -> Reply:
    """What a person is told of a fault: an unreachable database said as such, anything else
    as a reference to quote, the details only in the log."""
    if is_outage(exc):
        log.warning("could not finish %s: %s", doing, describe(exc))
        return Reply(title=UNREACHABLE, ok=False, private=True)
    reference = secrets.token_hex(4)
    log.error("internal error %s while %s", reference, doing, exc_info=exc)
    return Reply(
        title=f"Something went wrong on my side (reference {reference}).",
        blocks=(Text("Nothing more was done. The operators can look the reference up."),),
        ok=False,
        private=True,
    )
