"""A fake Slack workspace: the Web API methods the bot calls, response_url endpoints, and a
Socket Mode WebSocket, served over real HTTP on loopback.

It behaves as Slack documents: tokens checked (`not_authed`, `invalid_auth`,
`not_allowed_token_type`), errors as `{"ok": false, "error": ...}` with HTTP 200, Block Kit
limits enforced (`invalid_blocks`, `msg_too_long`), rate limits answered with HTTP 429 and
`Retry-After`. Everything the bot did is recorded for assertions."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_METHODS = {
    "auth.test",
    "chat.postMessage",
    "chat.update",
    "chat.postEphemeral",
    "views.publish",
    "users.info",
    "conversations.info",
    "usergroups.list",
}


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    token: str
    at: float


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None = None
    user: str = "UBOT"
    edits: int = 0
    replies: list[Message] = field(default_factory=list)


@dataclass
class Ephemeral:
    channel: str
    user: str
    text: str
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None = None


class SlackError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def _block_problems(blocks: Any, limit: int) -> list[str]:
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    problems = []
    if len(blocks) > limit:
        problems.append(f"[ERROR] no more than {limit} items allowed [json-pointer:/blocks]")
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        where = f"[json-pointer:/blocks/{i}"
        if kind == "section":
            text = block.get("text")
            if text is not None and len(text.get("text", "")) > 3000:
                problems.append(f"[ERROR] must be less than 3001 characters {where}/text/text]")
            fields = block.get("fields") or []
            if len(fields) > 10:
                problems.append(f"[ERROR] no more than 10 items allowed {where}/fields]")
            for j, f in enumerate(fields):
                if len(f.get("text", "")) > 2000:
                    problems.append(
                        f"[ERROR] must be less than 2001 characters {where}/fields/{j}/text]"
                    )
            if text is None and not fields:
                problems.append(f"[ERROR] must provide text or fields {where}]")
        elif kind == "header":
            text = block.get("text") or {}
            if text.get("type") != "plain_text":
                problems.append(f"[ERROR] must be plain_text {where}/text/type]")
            if len(text.get("text", "")) > 150:
                problems.append(f"[ERROR] must be less than 151 characters {where}/text/text]")
        elif kind == "actions":
            for j, element in enumerate(block.get("elements") or []):
                if len(str(element.get("value", ""))) > 2000:
                    problems.append(f"[ERROR] value too long {where}/elements/{j}/value]")
                if len(str(element.get("action_id", ""))) > 255:
                    problems.append(f"[ERROR] action_id too long {where}/elements/{j}/action_id]")
        elif kind not in ("context", "divider", "image", "rich_text", "input", "file", "video"):
            problems.append(f"[ERROR] unknown block type {where}/type]")
    return problems


class FakeSlack:
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
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.users = users or {
            "U1": {"name": "alice", "real_name": "Alice"},
            "U2": {"name": "bob", "real_name": "Bob"},
            "U3": {"name": "carol", "real_name": "Carol"},
            "U4": {"name": "dave", "real_name": "Dave"},
        }
        self.channels = channels or {"C1": "deploys", "C2": "ops", "C3": "howdy-team"}
        self.usergroups = usergroups or {"S1": {"handle": "sre", "users": ["U3"]}}
        self.rate_limits = {
            "chat.postMessage": (10, 1.0),
            "chat.update": (50, 60.0),
            "views.publish": (100, 60.0),
            **(rate_limits or {}),
        }
        self.calls: list[Call] = []
        self.ephemerals: list[Ephemeral] = []
        self.responses: dict[str, list[dict[str, Any]]] = {}
        self.ratelimited: defaultdict[str, int] = defaultdict(int)
        self.socket_acks: list[dict[str, Any]] = []
        self._messages: dict[str, list[Message]] = defaultdict(list)
        self._by_ts: dict[tuple[str, str], Message] = {}
        self._homes: dict[str, dict[str, Any]] = {}
        self._recent: defaultdict[str, deque[float]] = defaultdict(deque)
        self._forced: dict[str, tuple[int, int]] = {}
        self._ts = int(time.time())
        self._seq = 0
        self._tickets: set[str] = set()
        self._socket: web.WebSocketResponse | None = None
        self._socket_ready = asyncio.Event()
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/response/{rid}", self._response)
        app.router.add_get("/socket", self._socket_endpoint)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # -- what happened ----------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def messages(self, channel: str) -> list[Message]:
        return list(self._messages.get(channel, []))

    def thread(self, channel: str, ts: str) -> list[Message]:
        parent = self._by_ts.get((channel, ts))
        return list(parent.replies) if parent else []

    def home(self, user_id: str) -> dict[str, Any] | None:
        return self._homes.get(user_id)

    @staticmethod
    def all_text(item: Any) -> str:
        """Every piece of text in a message, a call's params or a response, joined."""
        found: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, Message):
                found.append(node.text)
                walk(node.blocks)
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(0.01)
        summary = "\n".join(f"  {c.method} {json.dumps(c.params)[:300]}" for c in self.calls)
        raise AssertionError(f"condition not met within {timeout}s; calls:\n{summary}")

    def force_ratelimit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        self._forced[method] = (times, retry_after)

    def new_response_url(self) -> str:
        rid = secrets.token_hex(6)
        self.responses[rid] = []
        return f"http://127.0.0.1:{self.port}/response/{rid}"

    # -- the Web API ------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                params.update(dict(await request.post()))
        for key in ("blocks", "view", "attachments"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        return params

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        params = await self._params(request)
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else str(params.pop("token", ""))
        if not token:
            return web.json_response({"ok": False, "error": "not_authed"})
        if token not in (self.bot_token, self.app_token):
            return web.json_response({"ok": False, "error": "invalid_auth"})
        wants_app = method == "apps.connections.open"
        if (token == self.app_token) != wants_app:
            return web.json_response({"ok": False, "error": "not_allowed_token_type"})
        retry_after = self._rate_limited(method, params)
        if retry_after is not None:
            self.ratelimited[method] += 1
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(retry_after)},
            )
        self.calls.append(Call(method, params, token, time.monotonic()))
        try:
            body = handler(params)
        except SlackError as exc:
            return web.json_response({"ok": False, "error": exc.error, **exc.extra})
        return web.json_response({"ok": True, **body})

    def _rate_limited(self, method: str, params: dict[str, Any]) -> int | None:
        forced = self._forced.get(method)
        if forced and forced[0] > 0:
            self._forced[method] = (forced[0] - 1, forced[1])
            return forced[1]
        if method not in self.rate_limits:
            return None
        limit, window = self.rate_limits[method]
        key = f"{method}:{params.get('channel', '')}" if method == "chat.postMessage" else method
        now = time.monotonic()
        recent = self._recent[key]
        while recent and now - recent[0] >= window:
            recent.popleft()
        if len(recent) >= limit:
            return max(1, int(window - (now - recent[0]) + 0.999))
        recent.append(now)
        return None

    def _next_ts(self) -> str:
        self._seq += 1
        return f"{self._ts}.{self._seq:06d}"

    def _channel(self, params: dict[str, Any]) -> str:
        channel = str(params.get("channel") or "")
        if channel.startswith("#"):
            by_name = {name: cid for cid, name in self.channels.items()}
            channel = by_name.get(channel[1:], channel)
        if channel not in self.channels and not channel.startswith("D"):
            raise SlackError("channel_not_found")
        return channel

    def _content(self, params: dict[str, Any], limit: int = 50) -> tuple[str, Any]:
        text = str(params.get("text") or "")
        blocks = params.get("blocks")
        if not text and not blocks:
            raise SlackError("no_text")
        if len(text) > 40000:
            raise SlackError("msg_too_long")
        if blocks is not None:
            problems = _block_problems(blocks, limit)
            if problems:
                raise SlackError("invalid_blocks", response_metadata={"messages": problems})
        return text, blocks

    def _m_auth_test(self, _params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://fake.slack.com/",
            "team": "Fake",
            "user": "nelson",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": "B0001",
        }

    def _m_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        text, blocks = self._content(params)
        thread_ts = params.get("thread_ts") or None
        parent = None
        if thread_ts:
            parent = self._by_ts.get((channel, thread_ts))
            if parent is None:
                raise SlackError("thread_not_found")
        message = Message(channel, self._next_ts(), text, blocks, thread_ts)
        self._by_ts[(channel, message.ts)] = message
        if parent is not None:
            parent.replies.append(message)
        else:
            self._messages[channel].append(message)
        return {
            "channel": channel,
            "ts": message.ts,
            "message": {"text": text, "blocks": blocks, "ts": message.ts},
        }

    def _m_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        message = self._by_ts.get((channel, str(params.get("ts"))))
        if message is None:
            raise SlackError("message_not_found")
        message.text, message.blocks = self._content(params)
        message.edits += 1
        return {"channel": channel, "ts": message.ts, "text": message.text}

    def _m_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        user = str(params.get("user") or "")
        if user not in self.users:
            raise SlackError("user_not_found")
        text, blocks = self._content(params)
        self.ephemerals.append(Ephemeral(channel, user, text, blocks, params.get("thread_ts")))
        return {"message_ts": self._next_ts()}

    def _m_views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        user = str(params.get("user_id") or "")
        if user not in self.users:
            raise SlackError("user_not_found")
        view = params.get("view") or {}
        if view.get("type") != "home":
            raise SlackError("invalid_arguments")
        problems = _block_problems(view.get("blocks") or [], 100)
        if problems:
            raise SlackError("invalid_blocks", response_metadata={"messages": problems})
        self._homes[user] = view
        return {"view": {"id": f"V{user}", **view}}

    def _m_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = str(params.get("user") or "")
        if user not in self.users:
            raise SlackError("user_not_found")
        info = self.users[user]
        return {
            "user": {
                "id": user,
                "name": info["name"],
                "real_name": info.get("real_name", ""),
                "profile": {"display_name": info["name"], "real_name": info.get("real_name")},
                "is_bot": False,
            }
        }

    def _m_conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        return {
            "channel": {
                "id": channel,
                "name": self.channels.get(channel, ""),
                "is_channel": not channel.startswith("D"),
                "is_im": channel.startswith("D"),
            }
        }

    def _m_usergroups_list(self, params: dict[str, Any]) -> dict[str, Any]:
        include = str(params.get("include_users", "")).lower() in ("1", "true")
        return {
            "usergroups": [
                {"id": gid, "handle": g["handle"], **({"users": g["users"]} if include else {})}
                for gid, g in self.usergroups.items()
            ]
        }

    def _m_apps_connections_open(self, _params: dict[str, Any]) -> dict[str, Any]:
        ticket = secrets.token_hex(8)
        self._tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self.port}/socket?ticket={ticket}"}

    # -- response_url -----------------------------------------------------------------------

    async def _response(self, request: web.Request) -> web.StreamResponse:
        rid = request.match_info["rid"]
        if rid not in self.responses:
            return web.Response(status=404, text="no_such_url")
        if len(self.responses[rid]) >= 5:  # Slack: up to 5 responses per response_url
            return web.Response(status=404, text="used_url")
        payload = await request.json()
        problems = _block_problems(payload.get("blocks") or [], 50)
        if problems:
            return web.Response(status=400, text="invalid_blocks")
        self.responses[rid].append(payload)
        return web.Response(text="ok")

    # -- Socket Mode ------------------------------------------------------------------------

    async def _socket_endpoint(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._socket = ws
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {"host": "fake", "approximate_connection_time": 3600},
                "connection_info": {"app_id": "A0001"},
            }
        )
        self._socket_ready.set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                data = json.loads(msg.data)
                envelope_id = data.get("envelope_id")
                if envelope_id:
                    self.socket_acks.append(data)
                    future = self._acks.pop(envelope_id, None)
                    if future is not None and not future.done():
                        future.set_result(data)
        self._socket_ready.clear()
        return ws

    async def wait_socket_connected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._socket_ready.wait(), timeout)

    async def socket_send(
        self,
        type_: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool = False,
        retry_attempt: int = 0,
        retry_reason: str = "",
    ) -> dict[str, Any]:
        await self.wait_socket_connected()
        assert self._socket is not None
        envelope_id = str(uuid.uuid4())
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = future
        await self._socket.send_json(
            {
                "envelope_id": envelope_id,
                "type": type_,
                "payload": payload,
                "accepts_response_payload": accepts_response_payload,
                "retry_attempt": retry_attempt,
                "retry_reason": retry_reason,
            }
        )
        return await asyncio.wait_for(future, 5)
