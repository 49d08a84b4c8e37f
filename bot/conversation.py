"""One request, start to finish: text in, a reply out, whatever the front end."""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from enum import IntEnum

from bot.outage import UNREACHABLE, describe, is_outage
from commands.access import Principal
from commands.context import Context
from commands.events import EventHub
from commands.grammar import parse_command
from commands.handlers import handle
from commands.lifecycle import Lifecycle
from commands.ports import Clock, ConsulStatus, Store, WorkflowPort
from commands.replies import Code, ParseError, Reply, Text, UserError
from commands.settings import Settings
from commands.shifting import TrafficControl
from commands.stack_secrets import StackSecrets
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
    def __init__(
        self,
        settings: Settings,
        store: Store,
        workflow: WorkflowPort,
        clock: Clock,
        events: EventHub | None = None,
        traffic: TrafficControl | None = None,
        lifecycle: Lifecycle | None = None,
    ):
        self.settings = settings
        self.store = store
        self.workflow = workflow
        self.clock = clock
        self.events = events or EventHub()
        self.traffic = traffic
        self.lifecycle = lifecycle
        self.secrets: StackSecrets | None = None  # set by the wiring where there is Vault
        self.consuls: dict[str, ConsulStatus] = {}  # likewise, per datacenter with Consul

    def context(
        self,
        principal: Principal,
        *,
        local: bool = False,
        attachment: str | None = None,
        channel: str | None = None,
    ) -> Context:
        """What handlers get for one request (front ends without text use it directly)."""
        return Context(
            principal=principal,
            settings=self.settings,
            store=self.store,
            workflow=self.workflow,
            clock=self.clock,
            local=local,
            attachment=attachment,
            channel=channel,
            events=self.events,
            traffic=self.traffic,
            lifecycle=self.lifecycle,
            secrets=self.secrets,
            consuls=self.consuls,
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
        ctx = self.context(principal, local=local, attachment=attachment, channel=channel)
        try:
            # A long text (a pasted manifest) is read off the event loop.
            command = (
                await asyncio.to_thread(parse_command, text)
                if len(text) > LONG_TEXT
                else parse_command(text)
            )
            reply = await handle(command, ctx)
        except UserError as exc:
            return Answer(error_reply(exc), Outcome.USER_ERROR)
        except IllegalTransition as exc:
            return Answer(Reply(title=str(exc), ok=False, private=True), Outcome.USER_ERROR)
        except Exception as exc:
            if is_outage(exc):
                log.warning("could not answer %s: %s", principal.user_id, describe(exc))
                return Answer(
                    Reply(title=UNREACHABLE, ok=False, private=True), Outcome.INTERNAL_ERROR
                )
            reference = secrets.token_hex(4)
            # Details stay in the log; the person gets a reference to quote.
            log.exception("internal error %s while answering %s", reference, principal.user_id)
            return Answer(
                Reply(
                    title=f"Something went wrong on my side (reference {reference}).",
                    blocks=(
                        Text("Nothing more was done. The operators can look the reference up."),
                    ),
                    ok=False,
                    private=True,
                ),
                Outcome.INTERNAL_ERROR,
            )
        return Answer(reply, Outcome.OK if reply.ok else Outcome.USER_ERROR)
