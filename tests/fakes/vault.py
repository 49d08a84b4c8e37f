"""A fake Vault served over real HTTP on loopback, after Vault's HTTP API documentation, for
the endpoints the bot and its stacks use:

- `GET /v1/sys/health` (200 active, 501 not initialized, 503 sealed; `*code` parameters) and
  `GET /v1/sys/seal-status`, both unauthenticated and answered while sealed;
- ACL policies: `LIST|GET?list=true /v1/sys/policies/acl`, `GET|POST|PUT|DELETE
  /v1/sys/policies/acl/:name` (names lowercased, `root` immutable, `default` undeletable,
  policy text parsed as HCL `path "…" { capabilities = [...] }` blocks);
- tokens: `POST auth/token/create` and `create-orphan` (policies, meta, no_default_policy,
  renewable, ttl, period, display_name; a non-root caller may only give policies it holds
  and set `period` with `sudo` on the path), `renew`, `renew-self`, `renew-accessor`,
  `revoke-accessor`, `revoke-self`, `GET lookup-self`; periodic tokens expire one period
  after their last renewal, by the clock given;
- `POST auth/approle/login` and `POST auth/kubernetes/login` against configured roles;
- any other path is a KV version 1 store (GET, PUT/POST, DELETE, LIST), so a stack's token
  can be tried on the credentials its policy grants and on those it does not.

Every request needs `X-Vault-Token` (or `Authorization: Bearer`) and is judged against the
token's policies as Vault does: the most specific path rule wins, `deny` beats everything,
`+` matches one path segment and a trailing `*` any suffix. Errors come back as Vault sends
them: `{"errors": [...]}` with 400 (bad request, invalid accessor), 403 (permission denied),
404 (nothing there), 503 (`Vault is sealed`), and injected 5xx (`fail_next`). `stop()` makes
the port refuse connections (Vault down).

    async with FakeVault() as vault:
        client = hvac.Client(url=vault.address, token=vault.root_token)
        client.sys.create_or_update_acl_policy("p", 'path "x/*" { capabilities = ["read"] }')
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web, web_protocol, web_server
from aiohttp.http_parser import HttpRequestParserPy
from aiohttp.web_request import BaseRequest

VERSION = "1.15.6"
DEFAULT_TTL = timedelta(hours=768)
KV_LEASE = 2764800  # what Vault reports for KV v1 reads (32 days)

_PATH_RULE = re.compile(r'path\s+"([^"]*)"\s*\{([^}]*)\}', re.S)
_CAPABILITIES = re.compile(r"capabilities\s*=\s*\[([^\]]*)\]", re.S)
_LEGACY = re.compile(r'policy\s*=\s*"(\w+)"')
_KNOWN = {"create", "read", "update", "patch", "delete", "list", "sudo", "deny"}
_LEGACY_MAP = {
    "deny": {"deny"},
    "read": {"read", "list"},
    "write": {"create", "read", "update", "delete", "list"},
    "sudo": {"create", "read", "update", "delete", "list", "sudo"},
}
# what Vault's built-in `default` policy lets any token do with itself
DEFAULT_POLICY = """
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/revoke-self" { capabilities = ["update"] }
"""


class PolicyError(ValueError):
    pass


def parse_policy(text: str) -> list[tuple[str, frozenset[str]]]:
    """HCL path rules -> [(path pattern, capabilities)]; PolicyError when it is not one."""
    stripped = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    rules: list[tuple[str, frozenset[str]]] = []
    for match in _PATH_RULE.finditer(stripped):
        body = match.group(2)
        caps: set[str] = set()
        listed = _CAPABILITIES.search(body)
        if listed:
            caps |= {c.strip().strip('"') for c in listed.group(1).split(",") if c.strip()}
        legacy = _LEGACY.search(body)
        if legacy:
            if legacy.group(1) not in _LEGACY_MAP:
                raise PolicyError(f"invalid policy value {legacy.group(1)!r}")
            caps |= _LEGACY_MAP[legacy.group(1)]
        unknown = caps - _KNOWN
        if unknown:
            raise PolicyError(f"invalid capabilities {sorted(unknown)}")
        rules.append((match.group(1), frozenset(caps)))
    leftover = _PATH_RULE.sub("", stripped).strip()
    if leftover or (not rules and stripped.strip()):
        raise PolicyError("failed to parse policy: unexpected text outside path blocks")
    return rules


def _matches(pattern: str, path: str) -> bool:
    glob = pattern.endswith("*")
    body = pattern[:-1] if glob else pattern
    parts, segments = body.split("/"), path.split("/")
    if not glob and len(parts) != len(segments):
        return False
    if glob and len(segments) < len(parts):
        return False
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "+":
            continue
        if glob and last:
            return segments[i].startswith(part)
        if segments[i] != part:
            return False
    return True


def _specificity(pattern: str) -> tuple[int, int, int]:
    # Vault prefers: no glob over glob, fewer `+`, longer patterns
    return (0 if pattern.endswith("*") else 1, -pattern.count("+"), len(pattern))


@dataclass
class Token:
    id: str
    accessor: str
    policies: list[str]
    display_name: str
    meta: dict[str, str]
    renewable: bool
    period: timedelta | None
    ttl: timedelta | None  # None: never expires (root)
    issued: datetime
    expires: datetime | None
    orphan: bool
    parent: str | None = None
    path: str = "auth/token/create"


@dataclass
class AppRole:
    role_id: str
    secret_id: str
    policies: list[str]
    ttl: timedelta = timedelta(minutes=20)


@dataclass
class KubernetesRole:
    jwt: str
    policies: list[str]
    ttl: timedelta = timedelta(minutes=20)


@dataclass
class Request:
    method: str
    path: str
    status: int
    accessor: str | None  # whose token (never the token itself)


@dataclass
class _Failure:
    count: int
    status: int
    prefix: str
    method: str


class _Now:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class FakeVault:
    clock: Any = field(default_factory=_Now)  # anything with now() -> aware datetime
    sealed: bool = False
    initialized: bool = True
    policies: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    kv: dict[str, dict[str, Any]] = field(default_factory=dict)
    approles: dict[str, AppRole] = field(default_factory=dict)
    kubernetes: dict[str, KubernetesRole] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root_token = "hvs." + secrets.token_urlsafe(18)
        now = self.clock.now()
        self.tokens[self.root_token] = Token(
            self.root_token, _accessor(), ["root"], "root", {}, False, None, None, now, None, True
        )
        self.policies.setdefault("default", DEFAULT_POLICY)
        self._failures: list[_Failure] = []
        self._runner: web.ServerRunner | None = None
        self.port = 0

    # -- running ----------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        self._runner = web.ServerRunner(_Server(self._handle), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port or self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Stop serving: connections to the port are refused until `start()` again."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeVault:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- test controls ----------------------------------------------------------------------

    def fail_next(
        self, count: int = 1, status: int = 500, prefix: str = "", method: str = ""
    ) -> None:
        """The next `count` authenticated requests under `prefix` (with `method`, if given)
        answer `status`."""
        self._failures.append(_Failure(count, status, prefix, method))

    def heal(self) -> None:
        """Forget the failures still to come."""
        self._failures.clear()

    def add_token(self, policies: list[str], *, display_name: str = "test") -> str:
        """A token with these policies and `default`, as `vault token create` makes one."""
        named = ["default", *(p for p in policies if p != "default")]
        return self._mint(named, display_name, {}, True, None, DEFAULT_TTL, True, None).id

    def live_tokens(self) -> list[Token]:
        now = self.clock.now()
        return [t for t in self.tokens.values() if t.expires is None or t.expires > now]

    def token_by_accessor(self, accessor: str) -> Token | None:
        return next((t for t in self.live_tokens() if t.accessor == accessor), None)

    # -- dispatch ---------------------------------------------------------------------------

    async def _handle(self, request: BaseRequest) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return _error(404, "")
        path = request.path[len("/v1/") :].strip("/")
        method = request.method
        if method == "GET" and request.query.get("list") == "true":
            method = "LIST"
        try:
            body = await self._body(request)
        except ValueError:
            return self._record(method, path, None, _error(400, "failed to parse JSON input"))
        if path == "sys/health":
            try:
                health = self._health(request)
            except _Answer as answer:
                health = answer.response
            return self._record(method, path, None, health)
        if path == "sys/seal-status":
            return self._record(method, path, None, _json(self._seal_status()))
        if self.sealed:
            return self._record(method, path, None, _error(503, "Vault is sealed"))
        if path == "auth/approle/login" and method in ("POST", "PUT"):
            return self._record(method, path, None, self._approle_login(body))
        if path == "auth/kubernetes/login" and method in ("POST", "PUT"):
            return self._record(method, path, None, self._kubernetes_login(body))
        token = self._caller(request)
        accessor = token.accessor if token else None
        for failure in self._failures:
            if (
                failure.count > 0
                and path.startswith(failure.prefix)
                and failure.method in ("", method)
            ):
                failure.count -= 1
                return self._record(
                    method, path, accessor, _error(failure.status, "internal error")
                )
        if token is None:
            return self._record(method, path, None, _error(403, "permission denied"))
        try:
            response = self._route(method, path, body, token)
        except _Answer as answer:
            response = answer.response
        return self._record(method, path, accessor, response)

    def _record(
        self, method: str, path: str, accessor: str | None, response: web.StreamResponse
    ) -> web.StreamResponse:
        self.requests.append(Request(method, path, response.status, accessor))
        return response

    async def _body(self, request: BaseRequest) -> dict[str, Any]:
        raw = await request.read()
        if not raw.strip():
            return {}
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError("not an object")
        return value

    def _caller(self, request: BaseRequest) -> Token | None:
        value = request.headers.get("X-Vault-Token", "")
        if not value and request.headers.get("Authorization", "").startswith("Bearer "):
            value = request.headers["Authorization"][len("Bearer ") :]
        token = self.tokens.get(value)
        if token is None:
            return None
        if token.expires is not None and token.expires <= self.clock.now():
            self._revoke(token)
            return None
        return token

    def _route(self, method: str, path: str, body: dict[str, Any], token: Token) -> web.Response:
        if path == "sys/policies/acl" or path == "sys/policy":
            self._allow(token, path, "list" if method == "LIST" else "read")
            if method not in ("LIST", "GET"):
                raise _Answer(_error(405, "unsupported operation"))
            keys = sorted(self.policies) + (["root"] if "root" not in self.policies else [])
            return _ok({"keys": sorted(keys)}, top_level=True)
        if path.startswith("sys/policies/acl/"):
            return self._policy(method, path, path[len("sys/policies/acl/") :], body, token)
        if path.startswith("sys/"):
            self._allow(token, path, _capability(method, True))
            raise _Answer(_error(404, f"no handler for route '{path}'"))
        if path in ("auth/token/create", "auth/token/create-orphan"):
            if method not in ("POST", "PUT"):
                raise _Answer(_error(405, "unsupported operation"))
            return self._create_token(path, body, token)
        if path.startswith("auth/token/"):
            return self._token_op(method, path, body, token)
        if path.startswith("auth/"):
            self._allow(token, path, _capability(method, True))
            raise _Answer(_error(404, f"no handler for route '{path}'"))
        return self._kv(method, path, body, token)

    # -- sys --------------------------------------------------------------------------------

    def _health(self, request: BaseRequest) -> web.Response:
        def code(name: str, default: int) -> int:
            try:
                return int(request.query.get(name, default))
            except ValueError:
                raise _Answer(_error(400, f"bad {name}")) from None

        if not self.initialized:
            status = code("uninitcode", 501)
        elif self.sealed:
            status = code("sealedcode", 503)
        else:
            status = code("activecode", 200)
        body = {
            "initialized": self.initialized,
            "sealed": self.sealed,
            "standby": False,
            "performance_standby": False,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(self.clock.now().timestamp()),
            "version": VERSION,
        }
        if not self.sealed:
            body |= {"cluster_name": "vault-cluster-fake", "cluster_id": "fake-cluster"}
        return _json(body, status=status)

    def _seal_status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "shamir",
            "initialized": self.initialized,
            "sealed": self.sealed,
            "t": 1,
            "n": 1,
            "progress": 0,
            "nonce": "",
            "version": VERSION,
            "migration": False,
            "recovery_seal": False,
            "storage_type": "inmem",
        }
        if not self.sealed:
            body |= {"cluster_name": "vault-cluster-fake", "cluster_id": "fake-cluster"}
        return body

    def _policy(
        self, method: str, path: str, name: str, body: dict[str, Any], token: Token
    ) -> web.Response:
        name = name.lower()
        if method == "GET":
            self._allow(token, path, "read")
            if name == "root":
                return _ok({"name": "root", "rules": ""}, top_level=True)
            if name not in self.policies:
                raise _Answer(_error(404, ""))
            return _ok({"name": name, "policy": self.policies[name]}, top_level=True)
        if method in ("POST", "PUT"):
            self._allow(token, path, "update" if name in self.policies else "create", "update")
            if name == "root":
                raise _Answer(_error(400, 'cannot update "root" policy'))
            text = body.get("policy")
            if not isinstance(text, str) or not text.strip():
                raise _Answer(_error(400, "'policy' parameter not supplied or empty"))
            try:
                parse_policy(text)
            except PolicyError as exc:
                raise _Answer(_error(400, f"failed to parse policy: {exc}")) from None
            self.policies[name] = text
            return web.Response(status=204)
        if method == "DELETE":
            self._allow(token, path, "delete")
            if name in ("root", "default"):
                raise _Answer(_error(400, f'cannot delete "{name}" policy'))
            self.policies.pop(name, None)
            return web.Response(status=204)
        raise _Answer(_error(405, "unsupported operation"))

    # -- tokens -----------------------------------------------------------------------------

    def _create_token(self, path: str, body: dict[str, Any], caller: Token) -> web.Response:
        self._allow(caller, path, "update")
        root = "root" in caller.policies
        sudo = root or self._can(caller, path, "sudo")
        policies = body.get("policies")
        if policies is None:
            policies = [p for p in caller.policies if p != "root"] if not root else ["root"]
        if isinstance(policies, str):
            policies = [p.strip() for p in policies.split(",") if p.strip()]
        if not isinstance(policies, list) or not all(isinstance(p, str) for p in policies):
            raise _Answer(_error(400, "policies must be a list of names"))
        policies = sorted({p.lower() for p in policies})
        if (
            not body.get("no_default_policy")
            and "default" not in policies
            and "root" not in policies
        ):
            policies = ["default", *policies]
        if not sudo and not set(policies) - {"default"} <= set(caller.policies):
            raise _Answer(_error(400, "child policies must be subset of parent"))
        period = _duration(body.get("period"))
        if period is not None and not sudo:
            raise _Answer(_error(400, "root or sudo privileges required to create periodic token"))
        ttl = _duration(body.get("ttl"))
        no_parent = path.endswith("create-orphan") or bool(body.get("no_parent"))
        if body.get("no_parent") and not sudo:
            raise _Answer(_error(400, "root or sudo privileges required to create orphan token"))
        meta = body.get("meta") or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise _Answer(_error(400, "meta must be a map of strings"))
        token = self._mint(
            policies,
            str(body.get("display_name") or "token"),
            meta,
            bool(body.get("renewable", True)),
            period,
            period or ttl or DEFAULT_TTL,
            no_parent,
            None if no_parent else caller.id,
            path,
        )
        return _auth(token, self.clock.now())

    def _token_op(
        self, method: str, path: str, body: dict[str, Any], caller: Token
    ) -> web.Response:
        op = path[len("auth/token/") :]
        now = self.clock.now()
        if op == "lookup-self" and method == "GET":
            self._allow(caller, path, "read")
            return _ok(_lookup(caller, now))
        if method not in ("POST", "PUT"):
            raise _Answer(_error(405, "unsupported operation"))
        self._allow(caller, path, "update")
        if op == "renew-self":
            return self._renew(caller, body, now, show_token=True)
        if op == "renew":
            target = self.tokens.get(str(body.get("token", "")))
            if target is None:
                raise _Answer(_error(400, "token not found"))
            return self._renew(target, body, now, show_token=True)
        if op == "renew-accessor":
            target = self._by_accessor(body)
            return self._renew(target, body, now, show_token=False)
        if op == "revoke-accessor":
            self._revoke(self._by_accessor(body))
            return web.Response(status=204)
        if op == "revoke-self":
            self._revoke(caller)
            return web.Response(status=204)
        raise _Answer(_error(404, f"no handler for route '{path}'"))

    def _by_accessor(self, body: dict[str, Any]) -> Token:
        accessor = body.get("accessor")
        if not isinstance(accessor, str) or not accessor:
            raise _Answer(_error(400, "missing accessor"))
        token = self.token_by_accessor(accessor)
        if token is None:
            raise _Answer(_error(400, "invalid accessor"))
        return token

    def _renew(
        self, token: Token, body: dict[str, Any], now: datetime, *, show_token: bool
    ) -> web.Response:
        if token.expires is not None and token.expires <= now:
            self._revoke(token)
            raise _Answer(_error(400, "token not found"))
        if token.ttl is None:
            raise _Answer(_error(400, "lease is not renewable"))
        if not token.renewable:
            raise _Answer(_error(400, "lease is not renewable"))
        # periodic tokens get their period whatever increment was asked for
        increment = token.period or _duration(body.get("increment")) or token.ttl
        token.ttl = increment
        token.expires = now + increment
        return _auth(token, now, show_token=show_token)

    def _revoke(self, token: Token) -> None:
        self.tokens.pop(token.id, None)
        for child in [t for t in self.tokens.values() if t.parent == token.id]:
            self._revoke(child)

    def _mint(
        self,
        policies: list[str],
        display_name: str,
        meta: dict[str, str],
        renewable: bool,
        period: timedelta | None,
        ttl: timedelta,
        orphan: bool,
        parent: str | None,
        path: str = "auth/token/create",
    ) -> Token:
        now = self.clock.now()
        token = Token(
            id="hvs." + secrets.token_urlsafe(18),
            accessor=_accessor(),
            policies=policies,
            display_name="token-" + display_name
            if not display_name.startswith("token")
            else display_name,
            meta=dict(meta),
            renewable=renewable,
            period=period,
            ttl=ttl,
            issued=now,
            expires=now + ttl,
            orphan=orphan,
            parent=parent,
            path=path,
        )
        self.tokens[token.id] = token
        return token

    def _approle_login(self, body: dict[str, Any]) -> web.Response:
        role = next((r for r in self.approles.values() if r.role_id == body.get("role_id")), None)
        if role is None or not secrets.compare_digest(
            role.secret_id, str(body.get("secret_id", ""))
        ):
            return _error(400, "invalid role or secret ID")
        token = self._mint(
            ["default", *role.policies], "approle", {}, True, None, role.ttl, True, None,
            "auth/approle/login",
        )  # fmt: skip
        return _auth(token, self.clock.now())

    def _kubernetes_login(self, body: dict[str, Any]) -> web.Response:
        role = self.kubernetes.get(str(body.get("role", "")))
        if role is None:
            return _error(400, f'invalid role name "{body.get("role", "")}"')
        if not secrets.compare_digest(role.jwt, str(body.get("jwt", ""))):
            return _error(403, "permission denied")
        token = self._mint(
            ["default", *role.policies], "kubernetes", {}, True, None, role.ttl, True, None,
            "auth/kubernetes/login",
        )  # fmt: skip
        return _auth(token, self.clock.now())

    # -- KV version 1 -----------------------------------------------------------------------

    def _kv(self, method: str, path: str, body: dict[str, Any], token: Token) -> web.Response:
        if method == "LIST":
            self._allow(token, path, "list")
            prefix = path + "/"
            keys = sorted(
                {
                    k[len(prefix) :].split("/")[0] + ("/" if "/" in k[len(prefix) :] else "")
                    for k in self.kv
                    if k.startswith(prefix)
                }
            )
            if not keys:
                raise _Answer(_error(404, ""))
            return _ok({"keys": keys})
        if method == "GET":
            self._allow(token, path, "read")
            if path not in self.kv:
                raise _Answer(_error(404, ""))
            response = _ok(dict(self.kv[path]))
            return response
        if method in ("POST", "PUT"):
            self._allow(token, path, "update" if path in self.kv else "create")
            self.kv[path] = dict(body)
            return web.Response(status=204)
        if method == "DELETE":
            self._allow(token, path, "delete")
            self.kv.pop(path, None)
            return web.Response(status=204)
        raise _Answer(_error(405, "unsupported operation"))

    # -- ACL --------------------------------------------------------------------------------

    def _can(self, token: Token, path: str, capability: str) -> bool:
        if "root" in token.policies:
            return True
        # the most specific matching pattern decides; the same pattern in several of the
        # token's policies merges its capabilities, and a deny among them wins
        best: tuple[int, int, int] | None = None
        caps: set[str] = set()
        for name in token.policies:
            text = self.policies.get(name)
            if text is None:
                continue
            for pattern, granted in parse_policy(text):
                if not _matches(pattern, path):
                    continue
                rank = _specificity(pattern)
                if best is None or rank > best:
                    best, caps = rank, set(granted)
                elif rank == best:
                    caps |= granted
        return "deny" not in caps and capability in caps

    def _allow(self, token: Token, path: str, *capabilities: str) -> None:
        if not any(self._can(token, path, c) for c in capabilities):
            raise _Answer(_error(403, "permission denied"))


class _ListingHandler(web_protocol.RequestHandler):
    """aiohttp's C parser knows only the standard methods; Vault's clients send LIST, which
    its pure-Python parser accepts like any other token."""

    def __init__(self, manager: web_server.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._parser = HttpRequestParserPy(
            self,
            kwargs["loop"],
            kwargs.get("read_bufsize", 2**16),
            max_line_size=kwargs.get("max_line_size", 8190),
            max_field_size=kwargs.get("max_field_size", 8190),
            payload_exception=web_protocol.RequestPayloadError,
            auto_decompress=kwargs.get("auto_decompress", True),
            max_msg_queue_size=getattr(web_protocol, "MAX_MSG_QUEUE_SIZE", 0),
        )


class _Server(web_server.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _ListingHandler(self, loop=self._loop, **self._kwargs)


class _Answer(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _capability(method: str, exists: bool) -> str:
    return {
        "GET": "read",
        "LIST": "list",
        "DELETE": "delete",
        "PATCH": "patch",
    }.get(method, "update" if exists else "create")


def _duration(value: object) -> timedelta | None:
    if value in (None, "", 0, "0"):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    match = re.fullmatch(r"(\d+)(s|m|h)?", str(value).strip())
    if match is None:
        raise _Answer(_error(400, f"invalid duration {value!r}"))
    unit = {"s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
    return timedelta(seconds=int(match.group(1)) * unit)


def _accessor() -> str:
    return secrets.token_urlsafe(18)


def _json(body: Any, status: int = 200) -> web.Response:
    # exactly `application/json`, as Vault sends it (hvac reads `errors` only then)
    return web.Response(
        body=json.dumps(body).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"errors": [message] if message else []}, status=status)


def _envelope(data: Any = None, auth: Any = None, lease: int = 0) -> dict[str, Any]:
    return {
        "request_id": secrets.token_hex(8),
        "lease_id": "",
        "renewable": False,
        "lease_duration": lease,
        "data": data,
        "wrap_info": None,
        "warnings": None,
        "auth": auth,
    }


def _ok(data: dict[str, Any], *, top_level: bool = False) -> web.Response:
    # sys/ endpoints repeat their data at the top level, as Vault does for old clients
    body = _envelope(data, lease=0 if top_level else KV_LEASE)
    if top_level:
        body = {**data, **body}
    return _json(body)


def _auth(token: Token, now: datetime, *, show_token: bool = True) -> web.Response:
    remaining = int((token.expires - now).total_seconds()) if token.expires else 0
    return _json(
        _envelope(
            auth={
                "client_token": token.id if show_token else "",
                "accessor": token.accessor,
                "policies": token.policies,
                "token_policies": token.policies,
                "metadata": token.meta or None,
                "lease_duration": remaining,
                "renewable": token.renewable,
                "entity_id": "",
                "token_type": "service",
                "orphan": token.orphan,
            }
        )
    )


def _lookup(token: Token, now: datetime) -> dict[str, Any]:
    remaining = int((token.expires - now).total_seconds()) if token.expires else 0
    return {
        "accessor": token.accessor,
        "creation_time": int(token.issued.timestamp()),
        "creation_ttl": int(token.ttl.total_seconds()) if token.ttl else 0,
        "display_name": token.display_name,
        "entity_id": "",
        "expire_time": token.expires.isoformat() if token.expires else None,
        "explicit_max_ttl": 0,
        "id": token.id,
        "issue_time": token.issued.isoformat(),
        "meta": token.meta or None,
        "num_uses": 0,
        "orphan": token.orphan,
        "path": token.path,
        "period": int(token.period.total_seconds()) if token.period else None,
        "policies": token.policies,
        "renewable": token.renewable,
        "ttl": remaining,
        "type": "service",
    }
