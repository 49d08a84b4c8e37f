"""The Bolt app: slash command, mentions, direct messages, approval buttons and the Home tab,
all answered through the one command grammar. Every request is acknowledged first; the work
runs after the ack so Slack's 3-second deadline is never at risk."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.bootstrap import Application
from bot.outage import UNREACHABLE, describe, is_outage
from bot.slack import (
    approval_modals,
    approval_reminders,
    emergency,
    lock_buttons,
    rollback_button,
)
from bot.slack.blocks import fallback, reply_blocks, section
from bot.slack.cleanup import KEEP_ACTION, REMOVE_ACTION, CleanupNotices, stack_ids
from bot.slack.directory import Directory
from bot.slack.guard import first_action, text_at
from bot.slack.home import Home
from bot.slack.messages import (
    PAUSE_ACTION,
    RESUME_ACTION,
    REVERSE_ACTION,
    button_value,
)
from bot.slack.outbox import Outbox, PostFailed
from bot.slack.threads import Threads
from commands.replies import Reply, UserError
from commands.settings import Settings
from domain.records import Approval

log = logging.getLogger("nelson.slack")

DEFAULT_API_URL = "https://slack.com/api/"


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
        self.home = Home(
            settings,
            store,
            application.desk,
            self.directory,
            self.outbox,
        )
        application.events.subscribe(self.threads.on_event)
        application.events.subscribe(self.home.on_event)
        emergency.register(application.events, settings, self.outbox)
        approval_reminders.register(application.events, store, self.outbox)
        self.cleanup: CleanupNotices | None = None
        if application.lifecycle is not None:
            self.cleanup = CleanupNotices(application.lifecycle, self.outbox, self.directory)
            application.events.subscribe(self.cleanup.on_event)
        self.app.command("/nelson")(self._on_command)
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.event("app_home_opened")(self._on_home_opened)
        # Approve / Reject open a confirmation; the decision comes with its submission.
        approval_modals.register(
            self.app, application, self.outbox, self.directory, self._after_decision
        )
        for action in (PAUSE_ACTION, RESUME_ACTION, REVERSE_ACTION):
            self.app.action(action)(self._on_traffic)
        for action in (KEEP_ACTION, REMOVE_ACTION):
            self.app.action(action)(self._on_cleanup)
        rollback_button.register(self.app, application, self.outbox, self.directory)
        lock_buttons.register(self.app, application, self.home, self.directory)
        # Last, so it only gets the clicks no listener above claims (old messages, removed
        # buttons): every click is acknowledged, in HTTP mode and in Socket Mode.
        self.app.action(re.compile(".*"))(self._on_unknown_action)

    async def close(self) -> None:
        await self.outbox.drain(timeout=10)

    # -- deduplication ----------------------------------------------------------------------

    async def _first_time(self, key: str | None) -> bool:
        """False for a delivery seen before (Events API retries, Socket Mode redeliveries)."""
        if not key:
            return True
        fresh = await self.application.store.claim_delivery(key, self.application.clock.now())
        if not fresh:
            log.info("ignored a repeated delivery: %s", key)
        return fresh

    # -- commands ---------------------------------------------------------------------------

    async def _safely(
        self, body: dict[str, Any], work: Awaitable[None], *, tell: bool = True
    ) -> None:
        """Run a listener's work after its ack. Whatever goes wrong, the person hears about
        it in one line (unless nobody asked, `tell=False`): the database being down is said
        as such; anything else is a fault, logged with a reference they can quote."""
        try:
            await work
        except Exception as exc:
            if is_outage(exc):
                log.warning("answered with 'database unreachable': %s", describe(exc))
                if tell:
                    await self._apologise(body, UNREACHABLE)
                return
            reference = secrets.token_hex(4)
            log.exception("internal error %s in a Slack listener", reference)
            if tell:
                await self._apologise(
                    body, f"Something went wrong on my side (reference {reference})."
                )

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
            await self._respond(
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
        await self._tell(channel, user, text, thread)

    async def _on_command(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        await self._safely(body, self._command(body))

    async def _command(self, body: dict[str, Any]) -> None:
        trigger = text_at(body, "trigger_id")
        if not await self._first_time(f"command:{trigger}" if trigger else None):
            return
        user = text_at(body, "user_id")
        channel = text_at(body, "channel_id")
        principal = await self.directory.principal(user, text_at(body, "user_name"))
        answer = await self.application.conversation.answer(
            text_at(body, "text"), principal, channel=channel
        )
        reply = answer.reply
        if reply.operation_id is not None and await self.threads.parent_posted_in(
            reply.operation_id, channel
        ):
            return  # the parent message in the channel is the answer
        # Files need a message to hang from: the answer goes to the channel, with the
        # details and the pictures in its thread.
        if (
            reply.attachments
            and not reply.private
            and await self._post_with_files(channel, None, reply)
        ):
            return
        await self._respond(body.get("response_url"), channel, user, reply)

    async def _post_with_files(self, channel: str, thread_ts: str | None, reply: Reply) -> bool:
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

    async def _respond(self, response_url: Any, channel: str, user: str, reply: Reply) -> None:
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
    def _event_key(body: dict[str, Any]) -> str | None:
        event_id = text_at(body, "event_id")
        return f"event:{event_id}" if event_id else None  # no id, nothing to compare

    async def _on_mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        await self._safely(body, self._mentioned(body, event))

    async def _mentioned(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if not await self._first_time(self._event_key(body)):
            return
        thread = text_at(event, "thread_ts") or text_at(event, "ts")
        await self._converse(event, thread or None)

    async def _on_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        # Direct messages only; channel messages reach the bot as mentions.
        if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id"):
            return
        await self._safely(body, self._direct_message(body, event))

    async def _direct_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if not await self._first_time(self._event_key(body)):
            return
        await self._converse(event, text_at(event, "thread_ts") or None)

    async def _converse(self, event: dict[str, Any], thread_ts: str | None) -> None:
        user = text_at(event, "user")
        channel = text_at(event, "channel")
        principal = await self.directory.principal(user)
        answer = await self.application.conversation.answer(
            text_at(event, "text"), principal, channel=channel
        )
        reply = answer.reply
        if reply.operation_id is not None and await self.threads.parent_posted_in(
            reply.operation_id, channel
        ):
            return
        if (
            reply.attachments
            and not reply.private
            and await self._post_with_files(channel, thread_ts, reply)
        ):
            return
        text, blocks = fallback(reply), reply_blocks(reply)
        try:
            if reply.private and not channel.startswith("D"):
                await self.outbox.ephemeral(channel, user, text, blocks, thread_ts=thread_ts)
            else:
                await self.outbox.post(channel, text, blocks, thread_ts=thread_ts)
        except PostFailed as exc:
            log.warning("could not answer %s in %s: %s", user, channel, exc.error)

    # -- buttons ----------------------------------------------------------------------------

    @staticmethod
    def _clicked(body: dict[str, Any]) -> tuple[str, str, str | None]:
        """Who clicked, in which channel ('' in the Home tab), in which thread."""
        user = text_at(body, "user", "id")
        channel = text_at(body, "container", "channel_id") or text_at(body, "channel", "id")
        return user, channel, text_at(body, "message", "thread_ts") or None

    async def _after_decision(self, approval: Approval, user: str, from_home: bool) -> None:
        if approval.status == "pending":  # a vote that did not decide: show the count
            await self.threads.refresh_approval(approval)
        if from_home:
            await self.home.opened(user)

    async def _on_traffic(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        await self._safely(body, self._shift_traffic(body))

    async def _shift_traffic(self, body: dict[str, Any]) -> None:
        user, channel, _ = self._clicked(body)
        action = text_at(first_action(body), "action_id")
        shift_id = button_value(body)
        traffic = self.application.traffic
        if shift_id is None:
            await self._tell(channel, user, "There is no such traffic shift.", None)
            return
        if traffic is None:
            await self._tell(channel, user, "Traffic shifting does not run in this bot.", None)
            return
        principal = await self.directory.principal(user)
        operations = {
            PAUSE_ACTION: traffic.pause,
            RESUME_ACTION: traffic.resume,
            REVERSE_ACTION: traffic.reverse,
        }
        try:
            message = await operations[action](shift_id, principal)
        except UserError as exc:
            await self._tell(channel, user, f":no_entry: {exc.message} {exc.hint}".strip(), None)
            return
        await self._tell(channel, user, message, None)

    async def _on_cleanup(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        await self._safely(body, self._clean_up(body))

    async def _clean_up(self, body: dict[str, Any]) -> None:
        user, channel, _ = self._clicked(body)
        if stack_ids(text_at(first_action(body), "value")) is None:
            await self._tell(channel, user, "There is no such stack.", None)
            return
        if self.cleanup is None:
            await self._tell(channel, user, "The cleanup does not run in this bot.", None)
            return
        await self._tell(channel, user, await self.cleanup.on_click(body), None)

    async def _on_unknown_action(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        user, channel, thread_ts = self._clicked(body)
        log.info(
            "a click on a button this bot does not know (%r) from %s",
            text_at(first_action(body), "action_id")[:80],
            user,
        )
        await self._tell(
            channel,
            user,
            "This button is no longer active. Ask me again (`help` lists what I can do).",
            thread_ts,
        )

    async def _tell(self, channel: str, user: str, text: str, thread_ts: str | None) -> None:
        if not channel:  # a click in the Home tab: the tab itself shows the result
            return
        try:
            await self.outbox.ephemeral(channel, user, text, [section(text)], thread_ts=thread_ts)
        except PostFailed as exc:
            log.warning("could not tell %s in %s: %s", user, channel, exc.error)

    # -- Home -------------------------------------------------------------------------------

    async def _on_home_opened(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if (text_at(event, "tab") or "home") != "home":
            return
        # Opening the tab asks nothing: on failure the tab keeps what it showed last.
        await self._safely(body, self.home.opened(text_at(event, "user")), tell=False)
