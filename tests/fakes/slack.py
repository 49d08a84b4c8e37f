"""A fake Slack workspace served over real HTTP on loopback: the Web API methods the bot calls,
`response_url` endpoints, Slack's external file upload (`files.getUploadURLExternal`, the
upload URL, `files.completeUploadExternal`) and Socket Mode WebSockets (several connections
at once, each envelope going to one of them at random, as Slack does). `deliver` sends what a
user does (a slash command, a click, an event) the way Slack does: over HTTP to several
request URLs in turn (a load balancer in front of replicas), or to a random connection.

It answers as Slack does: tokens are checked (`not_authed`, `invalid_auth`,
`not_allowed_token_type`), errors come back as `{"ok": false, "error": ...}` with HTTP 200,
Block Kit limits are enforced (`invalid_blocks` for messages, `invalid_arguments` for views,
`msg_too_long`), and rate limits are answered with HTTP 429 and `Retry-After`. Everything that
reached it is recorded for assertions.

    async with FakeSlack() as fake:
        client = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)
        await client.chat_postMessage(channel="C1", text="hi")
        assert fake.messages("C1")[0].text == "hi"
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import random
import secrets
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import BodyPartReader, WSMsgType, web

APP_METHODS = {"apps.connections.open"}  # everything else served here wants the bot token
MESSAGE_BLOCKS, VIEW_BLOCKS, MAX_TEXT, RESPONSE_URL_USES = 50, 100, 40_000, 5
MAX_SOCKETS = 10  # Socket Mode connections an app may hold open at once
MAX_ALT_TXT = 1000  # files.getUploadURLExternal answers alt_txt_too_large beyond this
BLOCK_TYPES = {
    "actions", "context", "divider", "file", "header", "image", "input",
    "markdown", "rich_text", "section", "table", "video",
}  # fmt: skip


@dataclass
class Call:
    """One authenticated Web API call that was not rate limited; `error` is set if it failed."""

    method: str
    params: dict[str, Any]
    token: str
    at: float
    error: str | None = None


@dataclass
class Message:
    """A message as the channel shows it now: `text`/`blocks` reflect `chat.update` edits."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None = None
    user: str = "UBOT"
    edits: int = 0
    replies: list[Message] = field(default_factory=list)
    files: list[UploadedFile] = field(default_factory=list)
    metadata: dict[str, Any] | None = None  # message metadata: event_type, event_payload


@dataclass
class UploadedFile:
    """A file going through Slack's external upload: asked for, sent, then completed (shared
    in `channel`, in the thread `thread_ts` when given)."""

    id: str
    filename: str
    length: int
    alt_txt: str = ""
    title: str = ""
    content: bytes | None = None  # None until the bytes reached the upload URL
    completed: bool = False
    channel: str | None = None
    thread_ts: str | None = None


@dataclass
class Delivery:
    """Something a user did, delivered to the app: acknowledged or not, after how many
    attempts, and why the failed ones failed."""

    kind: str
    payload: dict[str, Any]
    acked: bool = False
    attempts: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass
class Ephemeral:
    """A message only `user` sees (`chat.postEphemeral`)."""

    channel: str
    user: str
    text: str
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None = None


class SlackError(Exception):
    """Raised by a method handler; becomes `{"ok": false, "error": ..., **extra}`."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def _length(value: Any, at: str, most: int, problems: list[str], least: int = 0) -> None:
    """Slack's wording for a string over `most` characters or a list over `most` items."""
    if isinstance(value, list) and len(value) > most:
        problems.append(f"[ERROR] no more than {most} items allowed {at}")
    elif isinstance(value, str) and len(value) > most:
        problems.append(f"[ERROR] must be less than {most + 1} characters {at}")
    elif isinstance(value, str) and len(value) < least:
        problems.append(f"[ERROR] must be more than {least - 1} characters {at}")


def _text_object(obj: Any, at: str, most: int, problems: list[str], plain: bool = False) -> None:
    """A composition text object: `{"type": "plain_text" | "mrkdwn", "text": ...}`."""
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        problems.append(f"[ERROR] must provide an object with a string text {at}]")
        return
    allowed = ("plain_text",) if plain else ("plain_text", "mrkdwn")
    if obj.get("type") not in allowed:
        problems.append(f"[ERROR] must be a valid enum value {at}/type]")
    _length(obj["text"], f"{at}/text]", most, problems, least=1)


def _element(element: Any, at: str, problems: list[str]) -> None:
    """An interactive element (button, select, ...) inside `actions` or a section accessory."""
    if not isinstance(element, dict):
        problems.append(f"[ERROR] must provide an object {at}]")
        return
    _length(element.get("action_id", ""), f"{at}/action_id]", 255, problems)
    if element.get("type") == "button":
        _text_object(element.get("text"), f"{at}/text", 75, problems, plain=True)
        _length(str(element.get("value", "")), f"{at}/value]", 2000, problems)
        _length(str(element.get("url", "")), f"{at}/url]", 3000, problems)
        if element.get("style") not in (None, "primary", "danger"):
            problems.append(f"[ERROR] must be a valid enum value {at}/style]")


def block_problems(blocks: Any, limit: int = MESSAGE_BLOCKS, pointer: str = "/blocks") -> list[str]:
    """What Slack's Block Kit validation would reject, in Slack's message format:
    `[ERROR] <problem> [json-pointer:/blocks/<i>/...]`. Empty when the blocks are valid."""
    if not isinstance(blocks, list):
        return [f"[ERROR] must provide an array [json-pointer:{pointer}]"]
    problems: list[str] = []
    _length(blocks, f"[json-pointer:{pointer}]", limit, problems)
    for i, block in enumerate(blocks):
        at = f"[json-pointer:{pointer}/{i}"
        if not isinstance(block, dict):
            problems.append(f"[ERROR] must provide an object {at}]")
            continue
        kind = block.get("type")
        if kind not in BLOCK_TYPES:
            problems.append(f"[ERROR] unsupported type: {kind} {at}/type]")
            continue
        _length(str(block.get("block_id", "")), f"{at}/block_id]", 255, problems)
        if kind == "section":
            fields = block.get("fields")
            if block.get("text") is None and not fields:
                problems.append(f"[ERROR] must provide either text or fields {at}]")
            if block.get("text") is not None:
                _text_object(block["text"], f"{at}/text", 3000, problems)
            if fields is not None:
                _length(fields, f"{at}/fields]", 10, problems)
                for j, item in enumerate(fields if isinstance(fields, list) else []):
                    _text_object(item, f"{at}/fields/{j}", 2000, problems)
            if block.get("accessory") is not None:
                _element(block["accessory"], f"{at}/accessory", problems)
        elif kind == "header":
            _text_object(block.get("text"), f"{at}/text", 150, problems, plain=True)
        elif kind in ("actions", "context"):
            elements = block.get("elements")
            most = 25 if kind == "actions" else 10
            if not isinstance(elements, list) or not elements:
                problems.append(f"[ERROR] must provide a non-empty array {at}/elements]")
                continue
            _length(elements, f"{at}/elements]", most, problems)
            for j, element in enumerate(elements):
                where = f"{at}/elements/{j}"
                if kind == "actions":
                    _element(element, where, problems)
                elif isinstance(element, dict) and element.get("type") != "image":
                    _text_object(element, where, 3000, problems)
    return problems


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def _message_metadata(raw: Any) -> dict[str, Any] | None:
    """chat.postMessage's `metadata`: an object (JSON-encoded in form posts) with a string
    `event_type` and an object `event_payload`."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise SlackError("invalid_metadata_format") from None
    if not isinstance(raw, dict):
        raise SlackError("invalid_metadata_format")
    if not isinstance(raw.get("event_type"), str) or not isinstance(raw.get("event_payload"), dict):
        raise SlackError("invalid_metadata_schema")
    return {"event_type": raw["event_type"], "event_payload": raw["event_payload"]}


class FakeSlack:
    """The workspace. `start()`/`stop()` or `async with`; `base_url` is for the Web API client."""

    def __init__(
        self,
        bot_token: str = "xoxb-test",
        app_token: str = "xapp-test",
        team_id: str = "T0001",
        bot_user_id: str = "UBOT",
        users: dict[str, dict[str, str]] | None = None,
        channels: dict[str, str] | None = None,
        usergroups: dict[str, dict[str, Any]] | None = None,
        rate_limits: dict[str, tuple[int, float]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.bot_token, self.app_token = bot_token, app_token
        self.team_id, self.bot_user_id = team_id, bot_user_id
        self.app_id, self.bot_id = "A0001", "B0001"
        self.users = users if users is not None else {
            "U1": {"name": "alice", "real_name": "Alice"},
            "U2": {"name": "bob", "real_name": "Bob"},
            "U3": {"name": "carol", "real_name": "Carol"},
            "U4": {"name": "dave", "real_name": "Dave"},
        }  # fmt: skip
        self.channels = channels if channels is not None else {
            "C1": "deploys", "C2": "ops", "C3": "howdy-team",
        }  # fmt: skip
        self.usergroups = (
            usergroups if usergroups is not None else {"S1": {"handle": "sre", "users": ["U3"]}}
        )
        self.rate_limits: dict[str, tuple[int, float]] = {
            "chat.postMessage": (10, 1.0),  # per channel, like Slack's one message a second
            "chat.update": (50, 60.0),  # Tier 3
            "views.publish": (100, 60.0),  # Tier 4
            "views.open": (100, 60.0),  # Tier 4
            **(rate_limits or {}),
        }
        self.response_url_ttl = 30 * 60.0  # Slack honours a response_url for 30 minutes
        self.calls: list[Call] = []
        self.ephemerals: list[Ephemeral] = []
        self.responses: dict[str, list[dict[str, Any]]] = {}
        self.ratelimited: defaultdict[str, int] = defaultdict(int)
        self.socket_acks: list[dict[str, Any]] = []
        self.files: dict[str, UploadedFile] = {}
        self._messages: defaultdict[str, list[Message]] = defaultdict(list)
        self._by_ts: dict[tuple[str, str], Message] = {}
        self._homes: dict[str, dict[str, Any]] = {}
        self.views: list[dict[str, Any]] = []  # modals opened (views.open), oldest first
        self._triggers: dict[str, tuple[str, float]] = {}  # issued: user, when
        self._exchanged: set[str] = set()
        self.trigger_ttl = 3.0  # Slack honours a trigger_id for three seconds
        self._recent: defaultdict[str, deque[float]] = defaultdict(deque)
        self._forced: dict[str, tuple[int, int]] = {}
        self._response_meta: dict[str, tuple[float, str | None, str | None]] = {}
        self._epoch, self._seq = int(time.time()), 0
        self._tickets: set[str] = set()
        self.rng = rng or random.Random()  # which connection an envelope goes to
        self._sockets: list[web.WebSocketResponse] = []  # open Socket Mode connections
        self._socket_ready = asyncio.Event()
        self.request_urls: list[str] = []  # HTTP mode: where requests go, in turn
        self.signing_secret = ""
        self._turn = 0
        self.deliveries: list[Delivery] = []
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve on 127.0.0.1 on a free port."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{rid}", self._response)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/socket", self._socket_endpoint)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        for socket in list(self._sockets):
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """For `AsyncWebClient(base_url=...)`; ends with `/` as slack_sdk requires."""
        return f"http://127.0.0.1:{self.port}/api/"

    # -- what happened --------------------------------------------------------------------

    def uploaded_files(self, channel: str | None = None) -> list[UploadedFile]:
        """Files completed (shared), in `channel` when given, oldest first."""
        return [
            f
            for f in self.files.values()
            if f.completed and (channel is None or f.channel == channel)
        ]

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def messages(self, channel: str) -> list[Message]:
        """Top-level messages of a channel, oldest first."""
        return list(self._messages.get(channel, []))

    def thread(self, channel: str, ts: str) -> list[Message]:
        """Replies in the thread under the message `ts`, oldest first."""
        parent = self._by_ts.get((channel, ts))
        return list(parent.replies) if parent else []

    def home(self, user_id: str) -> dict[str, Any] | None:
        """The Home tab view last published for this user."""
        return self._homes.get(user_id)

    def issue_trigger(self, user_id: str) -> str:
        """A trigger_id as Slack puts in an interaction payload of `user_id`: it opens one
        modal for that user, within `trigger_ttl` seconds."""
        trigger = f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**13)}.{secrets.token_hex(16)}"
        self._triggers[trigger] = (user_id, time.monotonic())
        return trigger

    def modal(self, user_id: str) -> dict[str, Any] | None:
        """The newest modal opened for `user_id`."""
        return next((v for v in reversed(self.views) if v.get("user_id") == user_id), None)

    @staticmethod
    def all_text(item: Any) -> str:
        """Every piece of text in a Message, Ephemeral, Call, params, response or blocks, one
        per line: the `text` field first, then every `"text": "..."` found in the blocks."""
        found: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, Message | Ephemeral):
                found.append(node.text)
                walk(node.blocks)
            elif isinstance(node, Call):
                walk(node.params)
            elif isinstance(node, dict):
                for key, value in node.items():
                    if key == "text" and isinstance(value, str):
                        found.append(value)
                    else:
                        walk(value)
            elif isinstance(node, list):
                for child in node:
                    walk(child)

        walk(item)
        return "\n".join(found)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Poll `predicate` every 10 ms until it returns something truthy, and return that."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.01)
        summary = "\n".join(
            f"  {c.method}{f' -> {c.error}' if c.error else ''} {json.dumps(c.params)[:300]}"
            for c in self.calls
        )
        raise AssertionError(f"condition not met within {timeout}s; calls:\n{summary or '  none'}")

    def force_ratelimit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """The next `times` calls of `method` answer 429 with `Retry-After: retry_after`."""
        self._forced[method] = (times, retry_after)

    def new_response_url(self, channel: str | None = None, message_ts: str | None = None) -> str:
        """A fresh `response_url`; its id (the last path segment) keys `responses`. Bound to a
        message (as for a button click), `replace_original`/`delete_original` act on it."""
        rid = secrets.token_hex(6)
        self.responses[rid] = []
        self._response_meta[rid] = (time.monotonic(), channel, message_ts)
        return f"http://127.0.0.1:{self.port}/response/{rid}"

    # -- the Web API ----------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type != "application/json":
                params.update({k: v for k, v in (await request.post()).items()})
                return params
            try:
                body = await request.json()
            except ValueError:
                raise SlackError("invalid_json") from None
            if not isinstance(body, dict):
                raise SlackError("json_not_object")
            params.update(body)
        return params

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            body = {"ok": False, "error": "unknown_method", "req_method": method}
            return web.json_response(body, status=404)
        try:
            params = await self._params(request)
        except SlackError as exc:
            return web.json_response({"ok": False, "error": exc.error})
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.startswith("Bearer ") else str(params.get("token", ""))
        params.pop("token", None)
        if not token:
            return web.json_response({"ok": False, "error": "not_authed"})
        if token not in (self.bot_token, self.app_token):
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if (token == self.app_token) != (method in APP_METHODS):
            return web.json_response({"ok": False, "error": "not_allowed_token_type"})
        retry_after = self._rate_limited(method, params)
        if retry_after is not None:
            self.ratelimited[method] += 1
            body = {"ok": False, "error": "ratelimited"}
            return web.json_response(body, status=429, headers={"Retry-After": str(retry_after)})
        call = Call(method, params, token, time.monotonic())
        self.calls.append(call)
        try:
            for key, error in (("blocks", "invalid_blocks_format"), ("view", "invalid_arguments")):
                if isinstance(params.get(key), str):  # form posts carry these JSON-encoded
                    try:
                        params[key] = json.loads(params[key])
                    except ValueError:
                        raise SlackError(error) from None
            body = handler(params)
        except SlackError as exc:
            call.error = exc.error
            return web.json_response({"ok": False, "error": exc.error, **exc.extra})
        return web.json_response({"ok": True, **body})

    def _rate_limited(self, method: str, params: dict[str, Any]) -> int | None:
        """Seconds to wait if this call is over its limit; else None and the call counts."""
        times, retry_after = self._forced.get(method, (0, 0))
        if times > 0:
            self._forced[method] = (times - 1, retry_after)
            return retry_after
        if method not in self.rate_limits:
            return None
        limit, window = self.rate_limits[method]
        key = f"{method}:{params.get('channel', '')}" if method == "chat.postMessage" else method
        now, recent = time.monotonic(), self._recent[key]
        while recent and now - recent[0] >= window:
            recent.popleft()
        if len(recent) >= limit:
            return max(1, math.ceil(window - (now - recent[0])))
        recent.append(now)
        return None

    def _next_ts(self) -> str:
        self._seq += 1
        return f"{self._epoch + self._seq // 1_000_000}.{self._seq % 1_000_000:06d}"

    def _channel(self, params: dict[str, Any]) -> str:
        channel = str(params.get("channel") or "")
        if channel.startswith("#"):
            by_name = {name: cid for cid, name in self.channels.items()}
            channel = by_name.get(channel[1:], channel)
        if channel not in self.channels and not (channel.startswith("D") and len(channel) > 1):
            raise SlackError("channel_not_found")
        return channel

    def _content(self, params: dict[str, Any]) -> tuple[str, list[dict[str, Any]] | None]:
        text, blocks = params.get("text"), params.get("blocks")
        text = "" if text is None else str(text)
        if not text and not blocks:
            raise SlackError("no_text")
        if len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        if blocks is not None:
            problems = block_problems(blocks)
            if problems:
                raise SlackError("invalid_blocks", response_metadata={"messages": problems})
        return text, blocks

    def _message_json(self, message: Message) -> dict[str, Any]:
        body: dict[str, Any] = {"type": "message", "user": message.user, "bot_id": self.bot_id}
        body.update({"app_id": self.app_id, "text": message.text, "ts": message.ts})
        if message.blocks is not None:
            body["blocks"] = message.blocks
        if message.thread_ts:
            body["thread_ts"] = message.thread_ts
        return body

    def _m_auth_test(self, _params: dict[str, Any]) -> dict[str, Any]:
        workspace = {"url": "https://fake-workspace.slack.com/", "team": "Fake Workspace"}
        bot = {"user": "nelson", "user_id": self.bot_user_id, "bot_id": self.bot_id}
        return {**workspace, **bot, "team_id": self.team_id, "is_enterprise_install": False}

    def _m_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        text, blocks = self._content(params)
        thread_ts, parent = params.get("thread_ts") or None, None
        if thread_ts:
            parent = self._by_ts.get((channel, str(thread_ts)))
            if parent is None:
                raise SlackError("thread_not_found")
            if parent.thread_ts:  # a reply's ts: the reply goes to the same thread
                parent = self._by_ts[(channel, parent.thread_ts)]
        metadata = _message_metadata(params.get("metadata"))
        ts = self._next_ts()
        message = Message(
            channel, ts, text, blocks, parent.ts if parent else None, self.bot_user_id
        )
        message.metadata = metadata
        self._by_ts[(channel, ts)] = message
        (parent.replies if parent else self._messages[channel]).append(message)
        return {"channel": channel, "ts": ts, "message": self._message_json(message)}

    def _m_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        message = self._by_ts.get((channel, str(params.get("ts"))))
        if message is None:
            raise SlackError("message_not_found")
        message.text, message.blocks = self._content(params)
        message.edits += 1
        body = {"channel": channel, "ts": message.ts, "text": message.text}
        return {**body, "message": self._message_json(message)}

    def _m_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        user = str(params.get("user") or "")
        if user not in self.users:
            raise SlackError("user_not_found")
        text, blocks = self._content(params)
        thread_ts = params.get("thread_ts") or None
        self.ephemerals.append(Ephemeral(channel, user, text, blocks, thread_ts))
        return {"message_ts": self._next_ts()}

    def _m_views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        user, view = str(params.get("user_id") or ""), params.get("view")
        problems = [] if user in self.users else ["invalid `user_id`"]
        if not isinstance(view, dict):
            view = {}
            problems.append("[ERROR] missing required field: view [json-pointer:/]")
        elif view.get("type") != "home":
            problems.append("[ERROR] must be a valid enum value [json-pointer:/view/type]")
        problems += block_problems(view.get("blocks"), VIEW_BLOCKS, "/view/blocks")
        if problems:  # views report Block Kit problems as invalid_arguments, not invalid_blocks
            raise SlackError("invalid_arguments", response_metadata={"messages": problems})
        self._homes[user] = view
        view_id = f"V{user}"
        published = {"id": view_id, "team_id": self.team_id, "app_id": self.app_id, **view}
        published.update(root_view_id=view_id, bot_id=self.bot_id, hash=f"{time.time():.6f}")
        return {"view": published}

    def _m_views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        trigger = str(params.get("trigger_id") or params.get("interactivity_pointer") or "")
        view = params.get("view")
        if not trigger:
            raise SlackError("invalid_arguments", response_metadata={"messages": [
                "[ERROR] missing required field: trigger_id [json-pointer:/]"
            ]})  # fmt: skip
        if trigger in self._exchanged:
            raise SlackError("exchanged_trigger_id")
        if trigger not in self._triggers:
            raise SlackError("invalid_trigger_id")
        user, issued = self._triggers[trigger]
        if time.monotonic() - issued > self.trigger_ttl:
            raise SlackError("expired_trigger_id")
        problems: list[str] = []
        if not isinstance(view, dict):
            view = {}
            problems.append("[ERROR] missing required field: view [json-pointer:/]")
        elif view.get("type") != "modal":
            problems.append("[ERROR] must be a valid enum value [json-pointer:/view/type]")
        title = view.get("title")
        if not (isinstance(title, dict) and title.get("type") == "plain_text"):
            problems.append("[ERROR] missing required field: title [json-pointer:/view/title]")
        elif not 0 < len(str(title.get("text") or "")) <= 24:
            problems.append("[ERROR] must be less than 25 characters [json-pointer:/view/title]")
        blocks = view.get("blocks")
        problems += block_problems(blocks, VIEW_BLOCKS, "/view/blocks")
        has_input = isinstance(blocks, list) and any(
            isinstance(b, dict) and b.get("type") == "input" for b in blocks
        )
        if has_input and not isinstance(view.get("submit"), dict):
            problems.append(
                "[ERROR] submit is required when an input block is present "
                "[json-pointer:/view/submit]"
            )
        if len(str(view.get("private_metadata") or "")) > 3000:
            problems.append(
                "[ERROR] must be less than 3001 characters [json-pointer:/view/private_metadata]"
            )
        if len(str(view.get("callback_id") or "")) > 255:
            problems.append(
                "[ERROR] must be less than 256 characters [json-pointer:/view/callback_id]"
            )
        if problems:
            raise SlackError("invalid_arguments", response_metadata={"messages": problems})
        self._exchanged.add(trigger)
        self._seq += 1
        view_id = f"V{self._seq:08d}"
        opened = {
            "id": view_id,
            "team_id": self.team_id,
            "app_id": self.app_id,
            "bot_id": self.bot_id,
            "private_metadata": "",
            "callback_id": "",
            "external_id": "",
            "state": {"values": {}},
            "hash": f"{time.time():.6f}",
            "clear_on_close": False,
            "notify_on_close": False,
            "root_view_id": view_id,
            "previous_view_id": None,
            **view,
        }
        self.views.append({**opened, "user_id": user})
        return {"view": opened}

    def _m_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = str(params.get("user") or "")
        if user == self.bot_user_id:
            info, is_bot = {"name": "nelson", "real_name": "Nelson"}, True
        elif user in self.users:
            info, is_bot = self.users[user], False
        else:
            raise SlackError("user_not_found")
        real_name = info.get("real_name", "")
        profile = {"display_name": info["name"], "real_name": real_name}
        body = {"id": user, "team_id": self.team_id, "name": info["name"], "real_name": real_name}
        return {"user": {**body, "deleted": False, "profile": profile, "is_bot": is_bot}}

    def _m_conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        """A channel's top-level messages, newest first (`limit`, default 100, at most 999);
        their metadata only with `include_all_metadata`. Channel ids only, as Slack wants."""
        channel = str(params.get("channel") or "")
        if channel not in self.channels and not channel.startswith("D"):
            raise SlackError("channel_not_found")
        try:
            limit = int(params.get("limit") or 100)
        except ValueError:
            raise SlackError("invalid_limit") from None
        with_metadata = _flag(params.get("include_all_metadata"))
        messages = []
        for message in reversed(self._messages.get(channel, [])):
            body = self._message_json(message)
            if message.metadata is not None and with_metadata:
                body["metadata"] = message.metadata
            if message.replies:
                body.update(reply_count=len(message.replies), latest_reply=message.replies[-1].ts)
            messages.append(body)
        shown = messages[: max(1, min(limit, 999))]
        return {"messages": shown, "has_more": len(messages) > len(shown), "pin_count": 0}

    def _m_conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        """A thread: its parent, then its replies, oldest first (`limit`, default 1000); their
        metadata only with `include_all_metadata`. `ts` is the parent's (a reply's ts gives
        only that reply, as Slack does); channel ids only."""
        channel = str(params.get("channel") or "")
        if channel not in self.channels and not channel.startswith("D"):
            raise SlackError("channel_not_found")
        ts = str(params.get("ts") or "")
        if not ts:
            raise SlackError("invalid_arguments")
        found = self._by_ts.get((channel, ts))
        if found is None:
            raise SlackError("thread_not_found")
        try:
            limit = int(params.get("limit") or 1000)
        except ValueError:
            raise SlackError("invalid_limit") from None
        with_metadata = _flag(params.get("include_all_metadata"))
        messages = []
        for message in [found, *found.replies]:
            body = self._message_json(message)
            if message.metadata is not None and with_metadata:
                body["metadata"] = message.metadata
            messages.append(body)
        shown = messages[: max(1, min(limit, 1000))]
        return {"messages": shown, "has_more": len(messages) > len(shown)}

    def _m_conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        is_im = channel not in self.channels
        body: dict[str, Any] = {"id": channel, "is_channel": not is_im, "is_im": is_im}
        if not is_im:
            body["name"] = self.channels[channel]
        return {"channel": body}

    def _m_usergroups_list(self, params: dict[str, Any]) -> dict[str, Any]:
        include = _flag(params.get("include_users"))
        groups = []
        for gid, group in self.usergroups.items():
            entry = {"id": gid, "team_id": self.team_id, "handle": group["handle"]}
            entry.update(name=group.get("name", group["handle"]), user_count=len(group["users"]))
            if include:
                entry["users"] = list(group["users"])
            groups.append(entry)
        return {"usergroups": groups}

    def _m_files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        filename, raw = str(params.get("filename") or ""), str(params.get("length", "")).strip()
        problems = [] if filename else ["[ERROR] missing required field: filename"]
        if not raw:
            problems.append("[ERROR] missing required field: length")
        elif not (raw.isascii() and raw.isdigit()):
            problems.append("[ERROR] must be a positive integer [json-pointer:/length]")
        if problems:
            raise SlackError("invalid_arguments", response_metadata={"messages": problems})
        if int(raw) == 0:  # Slack's documented answer to `length=0`
            raise SlackError("missing_argument")
        alt_txt = str(params.get("alt_txt") or "")
        if len(alt_txt) > MAX_ALT_TXT:
            raise SlackError("alt_txt_too_large")
        file_id = "F" + secrets.token_hex(5).upper()
        self.files[file_id] = UploadedFile(file_id, filename, int(raw), alt_txt=alt_txt)
        return {"upload_url": f"http://127.0.0.1:{self.port}/upload/{file_id}", "file_id": file_id}

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        upload = self.files.get(request.match_info["file_id"])
        if upload is None or upload.completed:
            return web.Response(status=404, text="Not Found")
        if request.content_type.startswith("multipart/"):  # the file part, else the last one
            data, found = b"", False
            async for part in await request.multipart():
                if isinstance(part, BodyPartReader) and not found:
                    data, found = await part.read(), part.filename is not None
        else:
            data = await request.read()
        upload.content = data
        return web.Response(text=f"OK - {len(data)}")

    def _m_files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        raw = params.get("files")
        try:
            items = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            raise SlackError("invalid_arguments") from None
        if not isinstance(items, list) or not items:
            raise SlackError("invalid_arguments")
        uploads: list[tuple[UploadedFile, str]] = []
        for item in items:
            if not isinstance(item, dict):
                raise SlackError("invalid_arguments")
            upload = self.files.get(str(item.get("id", "")))
            # "Could not find the file from the upload ticket": unknown, already completed, or
            # the bytes never reached the upload URL
            if upload is None or upload.completed or upload.content is None:
                raise SlackError("file_not_found")
            if len(upload.content) != upload.length:  # not in Slack's list; the fake's own name
                raise SlackError("file_upload_size_mismatch")
            uploads.append((upload, str(item.get("title") or upload.filename)))
        channel = params.get("channel_id") or params.get("channels")
        thread_ts = str(params.get("thread_ts") or "") or None
        resolved, parent = None, None
        if channel:
            resolved = self._channel({"channel": str(channel).split(",")[0]})
            if thread_ts:
                parent = self._by_ts.get((resolved, thread_ts))
                if parent is None:
                    raise SlackError("thread_not_found")
                if parent.thread_ts:  # a reply's ts: shared in the same thread, as for messages
                    parent = self._by_ts[(resolved, parent.thread_ts)]
        files = [upload for upload, _title in uploads]
        for upload, title in uploads:  # nothing changes until every check passed
            upload.title, upload.completed = title, True
            if resolved is not None:
                upload.channel, upload.thread_ts = resolved, parent.ts if parent else None
        if resolved is not None:
            ts = self._next_ts()
            comment = str(params.get("initial_comment") or "")
            message = Message(
                resolved,
                ts,
                comment,
                None,
                parent.ts if parent else None,
                self.bot_user_id,
                files=files,
            )
            self._by_ts[(resolved, ts)] = message
            (parent.replies if parent else self._messages[resolved]).append(message)
        return {
            "files": [
                {
                    "id": u.id,
                    "name": u.filename,
                    "title": u.title,
                    "size": u.length,
                    "mimetype": "image/png" if u.filename.endswith(".png") else "text/plain",
                }
                for u in files
            ]
        }

    def _m_apps_connections_open(self, _params: dict[str, Any]) -> dict[str, Any]:
        ticket = secrets.token_hex(8)
        self._tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self.port}/socket?ticket={ticket}"}

    # -- response_url ---------------------------------------------------------------------

    async def _response(self, request: web.Request) -> web.StreamResponse:
        """Up to 5 posts within 30 minutes; later ones get 404 `used_url` / `expired_url`."""
        rid = request.match_info["rid"]

        def fail(status: int, error: str) -> web.Response:
            return web.json_response({"ok": False, "error": error}, status=status)

        if rid not in self.responses:
            return fail(404, "no_service")
        issued, channel, ts = self._response_meta[rid]
        if time.monotonic() - issued > self.response_url_ttl:
            return fail(404, "expired_url")
        if len(self.responses[rid]) >= RESPONSE_URL_USES:
            return fail(404, "used_url")
        try:
            if request.content_type == "application/json":
                payload = await request.json()
            else:
                payload = json.loads(str((await request.post()).get("payload", "")))
        except ValueError:
            return fail(400, "invalid_payload")
        if not isinstance(payload, dict):
            return fail(400, "invalid_payload")
        text, blocks = str(payload.get("text") or ""), payload.get("blocks")
        if not text and not blocks and not _flag(payload.get("delete_original")):
            return fail(400, "no_text")
        if len(text) > MAX_TEXT:
            return fail(400, "msg_too_long")
        if blocks is not None and block_problems(blocks):
            return fail(400, "invalid_blocks")
        self.responses[rid].append(payload)
        original = self._by_ts.get((channel, ts)) if channel and ts else None
        if original is not None and _flag(payload.get("delete_original")):
            siblings = (
                self._by_ts[(original.channel, original.thread_ts)].replies
                if original.thread_ts
                else self._messages[original.channel]
            )
            siblings.remove(original)
            del self._by_ts[(original.channel, original.ts)]
        elif original is not None and _flag(payload.get("replace_original")):
            original.text, original.blocks = text, blocks
            original.edits += 1
        return web.json_response({"ok": True})

    # -- Socket Mode ----------------------------------------------------------------------

    async def _socket_endpoint(self, request: web.Request) -> web.StreamResponse:
        """One Socket Mode connection; an app may hold several (Slack allows up to 10) and
        each envelope goes to one of them, chosen at random."""
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid or used ticket")
        self._tickets.discard(ticket)  # a ticket opens one connection
        if len(self._sockets) >= MAX_SOCKETS:
            return web.Response(status=429, text="too many connections")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        debug = {"host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060}
        hello = {"type": "hello", "num_connections": len(self._sockets), "debug_info": debug}
        await ws.send_json({**hello, "connection_info": {"app_id": self.app_id}})
        self._socket_ready.set()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if isinstance(data, dict) and data.get("envelope_id"):
                    self.socket_acks.append(data)
                    future = self._acks.pop(str(data["envelope_id"]), None)
                    if future is not None and not future.done():
                        future.set_result(data)
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
            if not self._sockets:
                self._socket_ready.clear()
        return ws

    @property
    def socket_connections(self) -> int:
        return len([s for s in self._sockets if not s.closed])

    async def wait_socket_connected(self, timeout: float = 10.0, count: int = 1) -> None:
        """Wait until `count` Socket Mode clients are connected and have been sent `hello`."""
        async with asyncio.timeout(timeout):
            await self._socket_ready.wait()
            while self.socket_connections < count:
                await asyncio.sleep(0.05)

    async def socket_send(
        self,
        type_: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool = False,
        retry_attempt: int = 0,
        retry_reason: str = "",
    ) -> dict[str, Any]:
        """Send an envelope (`slash_commands`, `interactive`, `events_api`) to one connected
        client, chosen at random, and return its ack (`{"envelope_id": ..., "payload"?: ...}`),
        waiting 5 s."""
        ack = await self._envelope(
            type_, payload, accepts_response_payload, retry_attempt, retry_reason
        )
        if ack is None:
            raise AssertionError(f"no ack for {type_} envelope within 5s")
        return ack

    async def _envelope(
        self,
        type_: str,
        payload: dict[str, Any],
        accepts_response_payload: bool,
        retry_attempt: int,
        retry_reason: str,
        ack_within: float = 5.0,
    ) -> dict[str, Any] | None:
        await self.wait_socket_connected()
        socket = self.rng.choice([s for s in self._sockets if not s.closed] or self._sockets)
        envelope_id = str(uuid.uuid4())
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = future
        envelope: dict[str, Any] = {"envelope_id": envelope_id, "type": type_, "payload": payload}
        envelope.update(accepts_response_payload=accepts_response_payload)
        try:
            await socket.send_json(
                {**envelope, "retry_attempt": retry_attempt, "retry_reason": retry_reason}
            )
            return await asyncio.wait_for(future, ack_within)
        except (TimeoutError, ConnectionError, RuntimeError):
            return None  # no ack: the connection timed out or went away
        finally:
            self._acks.pop(envelope_id, None)

    async def socket_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the clients to reconnect, as Slack does before recycling a connection."""
        for socket in list(self._sockets):
            await socket.send_json(
                {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}}
            )

    # -- delivering what users do ----------------------------------------------------------

    def deliver_over_http(self, request_urls: list[str], signing_secret: str) -> None:
        """HTTP mode: requests go to these URLs in turn (round-robin, as a load balancer in
        front of several replicas spreads them), signed with the app's signing secret."""
        self.request_urls = list(request_urls)
        self.signing_secret = signing_secret

    async def deliver(self, kind: str, payload: dict[str, Any]) -> Delivery:
        """Deliver what a user did, as Slack does: `kind` is `slash_commands` (form fields),
        `interactive` (a payload) or `events_api` (an envelope). Over HTTP to the next
        request URL, or in Socket Mode to a random connection. Slack waits 3 s for the
        acknowledgement. A slash command or a click that is not acknowledged is not sent
        again (the user sees that it failed); an Events API delivery is retried up to three
        times (`X-Slack-Retry-Num`, `retry_attempt`), each going to the next URL or another
        random connection."""
        tries = 4 if kind == "events_api" else 1
        delivery = Delivery(kind, payload)
        self.deliveries.append(delivery)
        reason = ""
        for attempt in range(tries):
            delivery.attempts = attempt + 1
            if self.request_urls:
                status, reason = await self._post(kind, payload, attempt, reason)
                if status == 200:
                    delivery.acked = True
                    return delivery
            else:
                ack = await self._envelope(kind, payload, False, attempt, reason, ack_within=3.0)
                if ack is not None:
                    delivery.acked = True
                    return delivery
                reason = "timeout"
            delivery.failures.append(reason)
        return delivery

    async def _post(
        self, kind: str, payload: dict[str, Any], attempt: int, reason: str
    ) -> tuple[int, str]:
        url = self.request_urls[self._turn % len(self.request_urls)]
        self._turn += 1
        if kind == "slash_commands":
            body = urlencode(payload).encode()
            content_type = "application/x-www-form-urlencoded"
        elif kind == "interactive":
            body = urlencode({"payload": json.dumps(payload)}).encode()
            content_type = "application/x-www-form-urlencoded"
        else:
            body, content_type = json.dumps(payload).encode(), "application/json"
        stamp = str(int(time.time()))
        signed = hmac.new(
            self.signing_secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256
        ).hexdigest()
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": f"v0={signed}",
        }
        if attempt:
            headers.update({"X-Slack-Retry-Num": str(attempt), "X-Slack-Retry-Reason": reason})
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session,
                session.post(url, data=body, headers=headers) as response,
            ):
                await response.read()
                return response.status, "http_error"
        except TimeoutError:
            return 0, "http_timeout"
        except aiohttp.ClientError:
            return 0, "connection_failed"
