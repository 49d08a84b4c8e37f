"""A small Consul HTTP client on aiohttp: the KV store (get, recurse, keys, check-and-set put,
delete), service health and the leader, for one datacenter's agent.

The ACL token travels in `X-Consul-Token` and never appears in messages; Consul's answers
become `ConsulError`s that say what happened: refused (403, with the key), unreachable, or a
server error (transient)."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from commands.settings import ConsulSettings


class ConsulError(Exception):
    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class KvEntry:
    key: str
    value: bytes
    modify_index: int


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    id: str
    address: str
    port: int
    status: str  # the worst of its checks: passing | warning | critical
    output: str


class ConsulClient:
    def __init__(self, settings: ConsulSettings) -> None:
        self.settings = settings
        self.address = settings.address.rstrip("/")
        host = self.address.split("://", 1)[-1].rsplit("@", 1)[-1]
        self.shown = f"Consul at {host}"
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {}
            if self.settings.token is not None:
                headers["X-Consul-Token"] = self.settings.token.get_secret_value()
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=self.settings.timeout)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(
        self, method: str, path: str, params: dict[str, str] | None = None, data: bytes = b""
    ) -> tuple[int, bytes]:
        query = dict(params or {})
        if self.settings.datacenter:
            query["dc"] = self.settings.datacenter
        what = f"{method} {path.split('?')[0]}"
        try:
            async with self._client().request(
                method, f"{self.address}/v1/{path}", params=query, data=data or None
            ) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise ConsulError(f"{self.shown} cannot be reached ({what})", transient=True) from exc
        except TimeoutError:
            raise ConsulError(
                f"{self.shown} did not answer within {self.settings.timeout:g}s ({what})",
                transient=True,
            ) from None
        if status == 403:
            raise ConsulError(
                f"{self.shown} refused {what}: {_text(body)} (the bot's Consul token needs "
                "key:write on lighthouse/ and nelson/)"
            )
        if status >= 500:
            raise ConsulError(f"{self.shown} failed {what}: {_text(body)}", transient=True)
        if status >= 400 and status != 404:
            raise ConsulError(f"{self.shown} rejected {what}: {_text(body)}")
        return status, body

    # -- KV ---------------------------------------------------------------------------------

    async def get(self, key: str) -> KvEntry | None:
        status, body = await self._request("GET", f"kv/{key}")
        if status == 404:
            return None
        return _entries(body)[0]

    async def get_tree(self, prefix: str) -> list[KvEntry]:
        status, body = await self._request("GET", f"kv/{prefix}", {"recurse": "true"})
        return [] if status == 404 else _entries(body)

    async def keys(self, prefix: str) -> list[str]:
        status, body = await self._request("GET", f"kv/{prefix}", {"keys": "true"})
        return [] if status == 404 else [str(k) for k in json.loads(body)]

    async def put(self, key: str, value: bytes, cas: int | None = None) -> bool:
        """Write the key; with `cas`, only if its ModifyIndex is still that (0: absent)."""
        params = {} if cas is None else {"cas": str(cas)}
        _, body = await self._request("PUT", f"kv/{key}", params, value)
        return body.strip() == b"true"

    async def delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        """Delete the key (or the prefix); with `cas`, only if its ModifyIndex is still that."""
        params = {"recurse": "true"} if recurse else {}
        if cas is not None:
            params["cas"] = str(cas)
        _, body = await self._request("DELETE", f"kv/{key}", params)
        return body.strip() == b"true"

    # -- status and health -----------------------------------------------------------------

    async def leader(self) -> str:
        _, body = await self._request("GET", "status/leader")
        return str(json.loads(body) or "")

    async def health(self, service: str) -> list[ServiceHealth]:
        status, body = await self._request("GET", f"health/service/{service}")
        if status == 404:
            return []
        found = []
        order = {"passing": 0, "warning": 1, "critical": 2}
        for row in json.loads(body):
            checks = row.get("Checks") or []
            worst = max(checks, key=lambda c: order.get(c.get("Status"), 2), default=None)
            svc = row.get("Service") or {}
            found.append(
                ServiceHealth(
                    id=str(svc.get("ID", "")),
                    address=str(svc.get("Address") or (row.get("Node") or {}).get("Address", "")),
                    port=int(svc.get("Port", 0)),
                    status=str(worst.get("Status", "critical")) if worst else "passing",
                    output=str(worst.get("Output", "")) if worst else "",
                )
            )
        return found

    async def status(self) -> str:
        """One line for `datacenters`."""
        try:
            leader = await asyncio.wait_for(self.leader(), self.settings.timeout)
        except ConsulError as exc:
            return f"unreachable: {exc}"
        return f"leader {leader}" if leader else "no cluster leader"


def _entries(body: bytes) -> list[KvEntry]:
    rows: list[dict[str, Any]] = json.loads(body)
    return [
        KvEntry(
            str(r["Key"]),
            base64.b64decode(r["Value"]) if r.get("Value") else b"",
            int(r.get("ModifyIndex", 0)),
        )
        for r in rows
    ]


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace").strip()[:200] or "no detail"
