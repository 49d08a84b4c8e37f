"""Everything the bot says to Slack goes through here, so a busy channel never exceeds
Slack's rate limits and nothing is lost when it does.

- Posts are serialised per channel and spaced (`post_interval`, Slack allows about one
  message per second per channel).
- Lines for a thread are queued and sent together in one reply when several are waiting.
- Updates of a message (a progress parent) and Home tab publishes are coalesced: only the
  newest content is sent, at most once per `update_interval` across the workspace
  (chat.update is Tier 3, about 50 a minute).
- An HTTP 429 is honoured: the call waits `Retry-After` seconds and is sent again. Transient
  faults (5xx, connection errors, timeouts) are retried with backoff; permanent errors
  (`channel_not_found`, `not_in_channel`, ...) are logged and reported to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("nelson.slack.outbox")

THREAD_REPLY_LINES = 40  # lines joined into one thread reply at most
THREAD_REPLY_CHARS = 3000


def channel_ref(channel: str) -> str:
    """A channel as Slack's methods take it: ids (C…, G…, D…) as they are, names as #name."""
    bare = channel.lstrip("#")
    if bare[:1] in ("C", "G", "D") and bare.isalnum() and bare.isupper():
        return bare
    return f"#{bare}"


class PostFailed(Exception):
    """Slack refused the message for good (the `error` code says why)."""

    def __init__(self, method: str, error: str) -> None:
        super().__init__(f"{method} failed: {error}")
        self.method = method
        self.error = error


# renders a message's content as it stands now: (text, blocks), or None to keep what was queued
Render = Callable[[], Awaitable[tuple[str, list[dict[str, Any]]] | None]]


@dataclass
class _Channel:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_post: float = 0.0
    lines: dict[str, list[str]] = field(default_factory=dict)  # thread ts -> queued lines
    worker: asyncio.Task[None] | None = None


class Outbox:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        post_interval: float = 1.0,
        update_interval: float = 1.2,
        max_attempts: int = 8,
    ) -> None:
        self.client = client
        self.post_interval = post_interval
        self.update_interval = update_interval
        self.max_attempts = max_attempts
        self._channels: dict[str, _Channel] = {}
        # (method, key) -> latest arguments; dict order is the send order
        self._pending: dict[tuple[str, str], dict[str, Any]] = {}
        self._waiting: dict[tuple[str, str], list[asyncio.Future[None]]] = {}
        # (method, key) -> how to render the content afresh at each try (see `update`)
        self._renders: dict[tuple[str, str], Render] = {}
        self._updater: asyncio.Task[None] | None = None
        self._last_update = 0.0
        self._busy = 0
        self.ratelimited = 0  # 429s met, for logs and tests

    # -- posts ------------------------------------------------------------------------------

    async def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Post now (after any earlier post to the channel) and return the message ts."""
        return (await self.post_message(channel, text, blocks, thread_ts, metadata))[1]

    async def post_message(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[str, str]:
        """Post like `post`; returns the channel's id (a post by name resolves it; updates
        need the id) and the message ts. `metadata` (Slack's message metadata: `event_type`
        and `event_payload`) lets `find_by_metadata` find the message again."""
        args: dict[str, Any] = {"channel": channel_ref(channel), "text": text}
        if blocks is not None:
            args["blocks"] = blocks
        if thread_ts:
            args["thread_ts"] = thread_ts
        if metadata is not None:
            args["metadata"] = metadata
        response = await self._posting(channel, "chat.postMessage", args)
        return str(response.get("channel") or channel), str(response["ts"])

    async def ephemeral(
        self,
        channel: str,
        user: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> None:
        args: dict[str, Any] = {"channel": channel, "user": user, "text": text}
        if blocks is not None:
            args["blocks"] = blocks
        if thread_ts:
            args["thread_ts"] = thread_ts
        await self.call("chat.postEphemeral", args)

    async def find_by_metadata(
        self, channel: str, metadata: dict[str, Any], thread_ts: str | None = None
    ) -> str | None:
        """The ts of a recent message in the channel (a channel id) carrying this metadata,
        or with `thread_ts` of a reply in that thread; None when there is none, or when
        Slack does not let it be read (the caller then posts)."""
        method, args = "conversations.history", {"channel": channel, "limit": 200}
        if thread_ts is not None:
            method, args = "conversations.replies", {"channel": channel, "ts": thread_ts}
        try:
            response = await self.call(method, {**args, "include_all_metadata": True})
        except PostFailed as exc:
            log.warning("cannot look for an earlier message in %s: %s", channel, exc.error)
            return None
        for message in response.get("messages") or []:
            found = message.get("metadata") or {}
            if (found.get("event_type"), found.get("event_payload")) == (
                metadata["event_type"],
                metadata["event_payload"],
            ):
                return str(message["ts"])
        return None

    def thread_line(self, channel: str, thread_ts: str, line: str) -> None:
        """Queue a line for a thread; queued lines go out together, in order."""
        state = self._channel(channel)
        state.lines.setdefault(thread_ts, []).append(line)
        if state.worker is None or state.worker.done():
            state.worker = asyncio.create_task(self._send_lines(channel, state))

    async def _send_lines(self, channel: str, state: _Channel) -> None:
        while state.lines:
            thread_ts = next(iter(state.lines))
            queued = state.lines[thread_ts]
            batch: list[str] = []
            size = 0
            while queued and len(batch) < THREAD_REPLY_LINES:
                if batch and size + len(queued[0]) + 1 > THREAD_REPLY_CHARS:
                    break
                line = queued.pop(0)[:THREAD_REPLY_CHARS]
                batch.append(line)
                size += len(line) + 1
            if not queued:
                del state.lines[thread_ts]
            text = "\n".join(batch)
            try:
                await self._posting(
                    channel,
                    "chat.postMessage",
                    {"channel": channel, "text": text, "thread_ts": thread_ts},
                )
            except PostFailed as exc:
                log.warning("thread reply in %s dropped: %s", channel, exc.error)
            except Exception:
                log.exception("thread reply in %s dropped", channel)

    async def _posting(self, channel: str, method: str, args: dict[str, Any]) -> Any:
        state = self._channel(channel)
        async with state.lock:
            wait = state.last_post + self.post_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                return await self.call(method, args)
            finally:
                state.last_post = time.monotonic()

    def _channel(self, channel: str) -> _Channel:
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
        return state

    # -- coalesced updates ------------------------------------------------------------------

    def update(
        self,
        channel: str,
        ts: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        *,
        first: bool = False,
        render: Render | None = None,
    ) -> None:
        """Replace a message's content soon; a newer update replaces a queued older one.
        `first` puts it ahead of the queued updates. With `render`, the content is rendered
        again just before each try (a wait for Slack's pacing or its 429s may outlast the
        state it shows, and another replica may have shown a newer one meanwhile); `text`
        and `blocks` stand when it returns None."""
        args: dict[str, Any] = {"channel": channel, "ts": ts, "text": text}
        if blocks is not None:
            args["blocks"] = blocks
        key = f"{channel}/{ts}"
        if render is None:
            self._renders.pop(("chat.update", key), None)
        else:
            self._renders[("chat.update", key)] = render
        self._queue("chat.update", key, args, first=first)

    async def update_now(
        self,
        channel: str,
        ts: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        *,
        first: bool = False,
    ) -> None:
        """Like `update`, paced the same way, but return once this content (or newer) was
        sent; raise PostFailed when Slack refused it (its outbox event is then tried again).
        `first` puts it ahead of the queued updates (a decided
        approval loses its buttons, and a finished deploy's parent shows the end, before
        progress parents are refreshed: Tier 3 allows fewer updates than deploys finish
        under load)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(("chat.update", f"{channel}/{ts}"), []).append(done)
        self.update(channel, ts, text, blocks, first=first)
        await done

    def publish_home(self, user: str, view: Mapping[str, Any]) -> None:
        self._queue("views.publish", user, {"user_id": user, "view": dict(view)})

    def _queue(self, method: str, key: str, args: dict[str, Any], *, first: bool = False) -> None:
        self._pending.pop((method, key), None)  # re-queue at the end with the newest content
        if first:
            self._pending = {(method, key): args, **self._pending}
        else:
            self._pending[(method, key)] = args
        if self._updater is None or self._updater.done():
            self._updater = asyncio.create_task(self._send_updates())

    async def _send_updates(self) -> None:
        while self._pending:
            wait = self._last_update + self.update_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            (method, key), args = next(iter(self._pending.items()))
            del self._pending[(method, key)]
            waiting = self._waiting.pop((method, key), [])  # later callers wait for the next
            render = self._renders.pop((method, key), None)
            self._busy += 1
            failure: Exception | None = None
            try:
                await self._rendered(method, args, render)
            except PostFailed as exc:
                failure = exc
                log.warning("%s of %s dropped: %s", method, key, exc.error)
            except Exception as exc:
                failure = exc
                log.exception("%s of %s dropped", method, key)
            finally:
                self._busy -= 1
                self._last_update = time.monotonic()
                for done in waiting:  # a caller waiting for it learns it failed (and retries)
                    if done.done():
                        continue
                    if failure is None:
                        done.set_result(None)
                    else:
                        done.set_exception(failure)

    # -- the one place that calls Slack -----------------------------------------------------

    async def call(self, method: str, args: dict[str, Any]) -> Any:
        return await self._retrying(method, lambda: self.client.api_call(method, json=args))

    async def _rendered(self, method: str, args: dict[str, Any], render: Render | None) -> Any:
        """Call with content rendered afresh before each try, when there is a `render`."""

        async def once() -> Any:
            if render is not None:
                fresh = await render()
                if fresh is not None:
                    args["text"], args["blocks"] = fresh
            return await self.client.api_call(method, json=args)

        return await self._retrying(method, once)

    async def upload(
        self,
        channel: str,
        thread_ts: str | None,
        filename: str,
        content: bytes,
        title: str,
        alt_text: str,
        comment: str = "",
    ) -> None:
        """Share a file in a channel (in a thread when `thread_ts` is given), with Slack's
        external upload flow (get an upload URL, send the bytes, complete)."""
        args: dict[str, Any] = {
            "channel": channel,
            "file": content,
            "filename": filename,
            "title": title,
            "alt_txt": alt_text[:1000],
        }
        if thread_ts:
            args["thread_ts"] = thread_ts
        if comment:
            args["initial_comment"] = comment
        state = self._channel(channel)
        async with state.lock:
            try:
                await self._retrying("files.upload", lambda: self.client.files_upload_v2(**args))
            finally:
                state.last_post = time.monotonic()

    async def _retrying(self, method: str, send: Callable[[], Awaitable[Any]]) -> Any:
        delay = 0.5
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await send()
            except SlackApiError as exc:
                status = exc.response.status_code
                if status == 429:
                    self.ratelimited += 1
                    retry_after = _retry_after(exc.response.headers)
                    log.info("%s rate limited; retrying in %.1fs", method, retry_after)
                    await asyncio.sleep(retry_after)
                    continue
                if status >= 500 and attempt < self.max_attempts:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30)
                    continue
                raise PostFailed(method, str(exc.response.get("error") or status)) from None
            except SlackRequestError as exc:  # the SDK refused a step itself (an upload's)
                raise PostFailed(method, str(exc)) from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt == self.max_attempts:
                    raise PostFailed(method, f"Slack unreachable: {exc!r}") from None
                log.info("%s failed (%r); retrying in %.1fs", method, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
        raise PostFailed(method, "gave up after repeated rate limiting")

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until everything queued has been sent (or `timeout` passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = (
                self._pending
                or self._busy
                or any(c.lines or c.lock.locked() for c in self._channels.values())
            )
            if not busy:
                return
            await asyncio.sleep(0.01)


def _retry_after(headers: Mapping[str, Any]) -> float:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return max(float(raw), 0.0)
            except ValueError:
                break
    return 1.0
