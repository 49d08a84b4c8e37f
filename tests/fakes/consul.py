"""A fake Consul agent served over real HTTP on loopback, after Consul's HTTP API documentation,
for what the bot uses:

- KV store, `/v1/kv/<key>`: GET (one key, `?recurse` for a prefix, `?keys` with `?separator`,
  `?raw`; 404 with an empty body when nothing matches), PUT (the body is the value; `?cas=N`
  writes only if the key's ModifyIndex is N, 0 meaning "only if absent", and answers
  `true`/`false`; `?flags`), DELETE (`?recurse`, `?cas`); entries as Consul returns them
  (`Key`, base64 `Value`, `Flags`, `LockIndex`, `CreateIndex`, `ModifyIndex`);
- blocking queries: `?index=N&wait=5s` hold the answer until the KV index passes N or the
  wait ends; every answer carries `X-Consul-Index`, `X-Consul-KnownLeader` and
  `X-Consul-LastContact`;
- `/v1/health/service/<name>` (`?passing`): node, service and checks of each registered
  instance; `/v1/status/leader`;
- `?dc=` for an unknown datacenter answers 500 `No path to datacenter`;
- ACLs when `acl_tokens` is set: the token comes in `X-Consul-Token`, `Authorization: Bearer`
  or `?token=`; an unknown token gets 403 `ACL not found`, a known one without the rule gets
  403 `Permission denied` (`key_prefix` rules: read, write, deny; the longest prefix wins);
- injected faults (`fail_next`: 500 or 503 with Consul's text body) and `stop()` (refused).
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

LEADER = "127.0.0.1:8300"
MAX_WAIT = 600.0  # Consul caps ?wait at 10 minutes


@dataclass
class Entry:
    key: str
    value: bytes
    flags: int
    create_index: int
    modify_index: int

    def as_json(self) -> dict[str, Any]:
        return {
            "LockIndex": 0,
            "Key": self.key,
            "Flags": self.flags,
            "Value": base64.b64encode(self.value).decode() if self.value else None,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


@dataclass
class ServiceInstance:
    id: str
    name: str
    address: str
    port: int
    status: str = "passing"  # passing | warning | critical
    output: str = ""
    node: str = "node-1"
    tags: list[str] = field(default_factory=list)


@dataclass
class Request:
    method: str
    path: str
    status: int


@dataclass
class FakeConsul:
    datacenter: str = "dc1"
    kv: dict[str, Entry] = field(default_factory=dict)
    services: list[ServiceInstance] = field(default_factory=list)
    # token -> {key prefix: read | write | deny}; None: ACLs disabled
    acl_tokens: dict[str, dict[str, str]] | None = None
    requests: list[Request] = field(default_factory=list)
    leader: str = LEADER

    def __post_init__(self) -> None:
        self.index = 1
        self._changed = asyncio.Condition()
        self._failures: list[tuple[int, int, str]] = []  # [count, status, prefix]
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/v1/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Stop serving: connections are refused until `start()` again (same port)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeConsul:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def fail_next(self, count: int = 1, status: int = 500, prefix: str = "") -> None:
        self._failures.append((count, status, prefix))

    def heal(self) -> None:
        self._failures.clear()

    def value(self, key: str) -> bytes | None:
        entry = self.kv.get(key)
        return None if entry is None else entry.value

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.kv if k.startswith(prefix))

    # -- dispatch ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        response = await self._answer(request, path)
        self.requests.append(Request(request.method, path, response.status))
        return response

    async def _answer(self, request: web.Request, path: str) -> web.StreamResponse:
        for i, (count, status, prefix) in enumerate(self._failures):
            if count > 0 and path.startswith(prefix):
                self._failures[i] = (count - 1, status, prefix)
                text = "rpc error making call: No cluster leader" if status >= 500 else "error"
                return web.Response(status=status, text=text)
        dc = request.query.get("dc")
        if dc is not None and dc != self.datacenter:
            return web.Response(status=500, text="No path to datacenter")
        if path == "status/leader" and request.method == "GET":
            return self._json(self.leader)
        if path.startswith("kv/"):
            key = path[len("kv/") :]
            denied = self._acl(request, key, "read" if request.method == "GET" else "write")
            if denied is not None:
                return denied
            if request.method == "GET":
                return await self._kv_get(request, key)
            if request.method == "PUT":
                return await self._kv_put(request, key)
            if request.method == "DELETE":
                return await self._kv_delete(request, key)
            return web.Response(status=405, text="method not allowed")
        if path.startswith("health/service/") and request.method == "GET":
            return self._health(request, path[len("health/service/") :])
        return web.Response(status=404, text="not found")

    def _token(self, request: web.Request) -> str:
        value = request.headers.get("X-Consul-Token", "")
        bearer = request.headers.get("Authorization", "")
        if not value and bearer.startswith("Bearer "):
            value = bearer[len("Bearer ") :]
        return value or request.query.get("token", "")

    def _acl(self, request: web.Request, key: str, access: str) -> web.Response | None:
        if self.acl_tokens is None:
            return None
        token = self._token(request)
        rules = self.acl_tokens.get(token, {} if not token else None)  # "": anonymous
        if rules is None:
            return web.Response(status=403, text="ACL not found")
        matching = [p for p in rules if key.startswith(p)]
        granted = rules[max(matching, key=len)] if matching else "deny"
        if granted == "write" or (granted == "read" and access == "read"):
            return None
        return web.Response(
            status=403,
            text=f"Permission denied: token lacks permission 'key:{access}' on \"{key}\"",
        )

    def _headers(self) -> dict[str, str]:
        return {
            "X-Consul-Index": str(self.index),
            "X-Consul-KnownLeader": "true" if self.leader else "false",
            "X-Consul-LastContact": "0",
        }

    def _json(self, body: Any, status: int = 200) -> web.Response:
        return web.json_response(body, status=status, headers=self._headers())

    # -- KV ---------------------------------------------------------------------------------

    async def _kv_get(self, request: web.Request, key: str) -> web.Response:
        query = request.query
        if "index" in query:
            try:
                wanted = int(query["index"])
                wait = _seconds(query.get("wait", "300s"))
            except ValueError:
                return web.Response(status=400, text="Invalid wait or index")
            deadline = time.monotonic() + min(wait, MAX_WAIT)
            async with self._changed:
                while self.index <= wanted:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        await asyncio.wait_for(self._changed.wait(), remaining)
                    except TimeoutError:
                        break
        if "recurse" in query or "keys" in query:
            found = [self.kv[k] for k in sorted(self.kv) if k.startswith(key)]
        else:
            found = [self.kv[key]] if key in self.kv else []
        if not found:
            return web.Response(status=404, headers=self._headers())
        if "keys" in query:
            separator = query.get("separator", "")
            keys: list[str] = []
            for entry in found:
                rest = entry.key[len(key) :]
                if separator and separator in rest:
                    rest = rest[: rest.index(separator) + len(separator)]
                name = key + rest
                if name not in keys:
                    keys.append(name)
            return self._json(keys)
        if "raw" in query:
            return web.Response(body=found[0].value, headers=self._headers())
        return self._json([e.as_json() for e in found])

    async def _kv_put(self, request: web.Request, key: str) -> web.Response:
        if not key:
            return web.Response(status=400, text="Missing key name")
        body = await request.read()
        if len(body) > 512 * 1024:
            return web.Response(status=413, text="Value exceeds 524288 byte limit")
        try:
            flags = int(request.query.get("flags", "0"))
            cas = int(request.query["cas"]) if "cas" in request.query else None
        except ValueError:
            return web.Response(status=400, text="Invalid cas or flags")
        current = self.kv.get(key)
        if cas is not None and (current.modify_index if current else 0) != cas:
            return self._json(False)
        await self._bump()
        self.kv[key] = Entry(
            key, body, flags, current.create_index if current else self.index, self.index
        )
        return self._json(True)

    async def _kv_delete(self, request: web.Request, key: str) -> web.Response:
        try:
            cas = int(request.query["cas"]) if "cas" in request.query else None
        except ValueError:
            return web.Response(status=400, text="Invalid cas")
        if "recurse" in request.query:
            doomed = [k for k in self.kv if k.startswith(key)]
        else:
            doomed = [key] if key in self.kv else []
        if cas is not None:
            current = self.kv.get(key)
            if current is None or current.modify_index != cas:
                return self._json(False)
        if doomed:
            await self._bump()
            for name in doomed:
                del self.kv[name]
        return self._json(True)

    async def _bump(self) -> None:
        async with self._changed:
            self.index += 1
            self._changed.notify_all()

    # -- health -----------------------------------------------------------------------------

    def _health(self, request: web.Request, name: str) -> web.Response:
        passing = "passing" in request.query
        rows = []
        for instance in self.services:
            if instance.name != name or (passing and instance.status != "passing"):
                continue
            rows.append(
                {
                    "Node": {
                        "Node": instance.node,
                        "Address": instance.address,
                        "Datacenter": self.datacenter,
                    },
                    "Service": {
                        "ID": instance.id,
                        "Service": instance.name,
                        "Tags": instance.tags,
                        "Address": instance.address,
                        "Port": instance.port,
                    },
                    "Checks": [
                        {
                            "Node": instance.node,
                            "CheckID": "serfHealth",
                            "Name": "Serf Health Status",
                            "Status": "passing",
                            "Output": "Agent alive and reachable",
                            "ServiceID": "",
                            "ServiceName": "",
                        },
                        {
                            "Node": instance.node,
                            "CheckID": f"service:{instance.id}",
                            "Name": f"Service '{instance.name}' check",
                            "Status": instance.status,
                            "Output": instance.output,
                            "ServiceID": instance.id,
                            "ServiceName": instance.name,
                        },
                    ],
                }
            )
        return self._json(rows)


def _seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)
