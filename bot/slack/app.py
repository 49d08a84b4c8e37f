"""The Slack front end: the Bolt app and what its listeners (bot/slack/listeners/) answer
with: the outbox, the directory, the threads, the Home tab, the cleanup notices, and the
helpers that tell people. Every request is acknowledged first; the work runs after the ack so
Slack's 3-second deadline is never at risk, and every command, typed or clicked, goes
through bot.conversation."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.storage.wakeups import Wakeups
from bot.bootstrap import Application
from bot.conversation import Answer, Outcome, fault_reply
from bot.slack import (
    approval_modals,
    approval_reminders,
    emergency,
    listeners,
    lock_buttons,
    replicas_home,
    rollback_button,
)
from bot.slack.blocks import fallback, reply_blocks, said, section
from bot.slack.cleanup import CleanupNotices
from bot.slack.directory import Directory
from bot.slack.dispatch import Dispatcher
from bot.slack.guard import text_at
from bot.slack.home import Home
from bot.slack.outbox import Outbox, PostFailed
from bot.slack.threads import Threads
from commands.model import Command
from commands.replies import Reply
from commands.settings import Settings
from domain.records import Approval

log = logging.getLogger("nelson.slack")

DEFAULT_API_URL = "https://slack.com/api/"
MIN_OUTBOX_CLAIM = timedelta(seconds=10)  # time enough to tell a few lines


def api_url(settings: Settings) -> str:
    url = settings.slack.api_url or DEFAULT_API_URL
    return url if url.endswith("/") else url + "/"


class SlackBot:
    def __init__(self, application: Application) -> None:
        self.application = application
        settings = self.settings = application.settings
        token = settings.slack.bot_token.get_secret_value() if settings.slack.bot_token else None
        secret = settings.slack.signing_secret
        # Bolt makes the Web API client from the token; handing it a ready client as well
        # would make it warn on every start that the token goes unused.
        self.app = AsyncApp(
            name="nelson",
            token=token,
            signing_secret=secret.get_secret_value() if secret else None,
            logger=logging.getLogger("nelson.slack.bolt"),
        )
        self.client: AsyncWebClient = self.app.client
        self.client.base_url = api_url(settings)
        self.client.timeout = 10
        self.outbox = Outbox(
            self.client,
            post_interval=settings.slack.post_interval,
            update_interval=settings.slack.update_interval,
        )
        self.directory = Directory(self.client)
        store = application.store
        self.threads = Threads(settings, store, self.outbox, application.clock)
        # Threads are told from the outbox, once across replicas, by whichever replica's
        # dispatcher claims each event (bot/slack/dispatch.py).
        self.dispatcher = Dispatcher(
            store,
            self.threads,
            application.clock,
            Wakeups(settings.database_url),
            holder=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}",
            # a dead replica's events are told by another after this (as its deploys are)
            claim_ttl=max(settings.workflow.claim_ttl, MIN_OUTBOX_CLAIM),
        )
        if application.journal is not None:
            application.journal.on_written(self.dispatcher.poke)
        self.home = Home(
            settings,
            store,
            application.desk,
            self.directory,
            self.outbox,
        )
        application.events.subscribe(self.home.on_event)
        emergency.register(application.events, settings, self.outbox)
        approval_reminders.register(application.events, store, self.outbox)
        self.cleanup: CleanupNotices | None = None
        if application.lifecycle is not None:
            self.cleanup = CleanupNotices(application.lifecycle, self.outbox, self.directory)
            application.events.subscribe(self.cleanup.on_event)
        # Approve / Reject open a confirmation; the decision comes with its submission.
        approval_modals.register(
            self.app, application, self.outbox, self.directory, self._after_decision
        )
        rollback = rollback_button.register(self.app, application, self.outbox, self.directory)
        self.threads.on_closed(rollback.offer_after)
        lock_buttons.register(self.app, application, self.home, self.directory)
        replicas_home.register(self.home, application)
        # last: bot/slack/listeners/ ends with the catch-all for clicks nothing else claims
        listeners.register(self.app, self)

    async def start(self) -> None:
        await self.dispatcher.start()

    async def close(self) -> None:
        await self.dispatcher.stop()
        await self.outbox.drain(timeout=10)

    # -- deduplication ----------------------------------------------------------------------

    async def first_time(self, key: str | None) -> bool:
        """False for a delivery seen before (Events API retries, Socket Mode redeliveries)."""
        if not key:
            return True
        fresh = await self.application.store.claim_delivery(key, self.application.clock.now())
        if not fresh:
            log.info("ignored a repeated delivery: %s", key)
        return fresh

    # -- commands ---------------------------------------------------------------------------

    async def safely(
        self, body: dict[str, Any], work: Awaitable[None], *, tell: bool = True
    ) -> None:
        """Run a listener's work after its ack. Whatever goes wrong, the person hears about
        it in one line (unless nobody asked, `tell=False`): the database being down is said
        as such; anything else is a fault, logged with a reference they can quote."""
        try:
            await work
        except Exception as exc:
            reply = fault_reply(exc, "in a Slack listener")
            if tell:
                await self._apologise(body, reply.title)

    async def _apologise(self, body: dict[str, Any], text: str) -> None:
        event = body.get("event")
        if isinstance(event, dict):  # a mention or a direct message
            user, channel = text_at(event, "user"), text_at(event, "channel")
            thread = text_at(event, "thread_ts") or text_at(event, "ts") or None
        else:  # a slash command or a click
            user = text_at(body, "user_id") or text_at(body, "user", "id")
            channel = (
                text_at(body, "channel_id")
                or text_at(body, "container", "channel_id")
                or text_at(body, "channel", "id")
            )
            thread = text_at(body, "message", "thread_ts") or None
        if "user_id" in body:  # slash commands answer through their response_url
            await self.respond(
                body.get("response_url"), channel, user, Reply(title=text, ok=False, private=True)
            )
            return
        if channel.startswith("D"):  # answered in the conversation, as a direct message is
            thread = text_at(event, "thread_ts") or None
            try:
                await self.outbox.post(channel, text, [section(text)], thread_ts=thread)
            except PostFailed as exc:
                log.warning("could not tell %s in %s: %s", user, channel, exc.error)
            return
        await self.tell(channel, user, text, thread)

    async def post_with_files(self, channel: str, thread_ts: str | None, reply: Reply) -> bool:
        """Post the reply (its title as the message, the rest in the thread, when a thread is
        to be started) and share its files in the thread; False when it could not be posted."""
        text, blocks = fallback(reply), reply_blocks(reply)
        try:
            if thread_ts is None:
                head = Reply(title=reply.title)
                thread_ts = await self.outbox.post(channel, fallback(head), reply_blocks(head))
            await self.outbox.post(channel, text, blocks, thread_ts=thread_ts)
        except PostFailed as exc:
            log.info("could not post in %s (%s); answering privately", channel, exc.error)
            return False
        for attachment in reply.attachments:
            try:
                await self.outbox.upload(
                    channel,
                    thread_ts,
                    attachment.filename,
                    attachment.content,
                    attachment.title,
                    attachment.alt_text,
                )
            except PostFailed as exc:
                log.warning("could not share %s in %s: %s", attachment.filename, channel, exc)
                await self.outbox.post(
                    channel,
                    f"I could not attach the picture: {exc.error}.",
                    thread_ts=thread_ts,
                )
        return True

    async def respond(self, response_url: Any, channel: str, user: str, reply: Reply) -> None:
        text, blocks = fallback(reply), reply_blocks(reply)
        if response_url:
            webhook = AsyncWebhookClient(str(response_url), timeout=10)
            try:
                result = await webhook.send(
                    text=text,
                    blocks=blocks,
                    response_type="ephemeral" if reply.private else "in_channel",
                )
                if result.status_code == 200:
                    return
                log.warning("response_url answered %s: %s", result.status_code, result.body)
            except Exception as exc:
                log.warning("response_url failed: %r", exc)
        try:
            await self.outbox.ephemeral(channel, user, text, blocks)
        except PostFailed as exc:
            log.warning("could not answer %s in %s: %s", user, channel, exc.error)

    @staticmethod
    def event_key(body: dict[str, Any]) -> str | None:
        event_id = text_at(body, "event_id")
        return f"event:{event_id}" if event_id else None  # no id, nothing to compare

    # -- buttons ----------------------------------------------------------------------------

    async def _after_decision(self, approval: Approval, user: str, from_home: bool) -> None:
        # the request's messages show a vote or a decision through the outbox (in order with
        # the request and the decision, whichever replica tells them), not from here
        if from_home:
            await self.home.opened(user)

    @staticmethod
    def clicked(body: dict[str, Any]) -> tuple[str, str, str | None]:
        """Who clicked, in which channel ('' in the Home tab), in which thread."""
        user = text_at(body, "user", "id")
        channel = text_at(body, "container", "channel_id") or text_at(body, "channel", "id")
        return user, channel, text_at(body, "message", "thread_ts") or None

    async def run(self, body: dict[str, Any], command: Command) -> Answer:
        """A click runs the typed command its text twin runs, through the same handler and
        error boundary (bot.conversation); the answer is told to the one who clicked."""
        user, channel, thread_ts = self.clicked(body)
        principal = await self.directory.principal(user)
        answer = await self.application.conversation.execute(
            command, principal, channel=channel or None
        )
        refused = answer.outcome is Outcome.USER_ERROR
        await self.tell(channel, user, said(answer.reply, refused=refused), thread_ts)
        return answer

    async def tell(self, channel: str, user: str, text: str, thread_ts: str | None) -> None:
        if not channel:  # a click in the Home tab: the tab itself shows the result
            return
        try:
            await self.outbox.ephemeral(channel, user, text, [section(text)], thread_ts=thread_ts)
        except PostFailed as exc:
            log.warning("could not tell %s in %s: %s", user, channel, exc.error)

    # -- Home -------------------------------------------------------------------------------
