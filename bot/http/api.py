"""The HTTP API for CI under /v1/ (docs/api.md; the contract is bot/http/openapi.json).

Another front end of the same typed commands and handlers as chat: a request becomes a
command (commands.model), runs with the token as principal, so access rules, approvals,
deploy threads and the audit apply as they do in Slack. JSON in and out; every refusal is an
RFC 9457 problem (bot.http.problems); no outside input yields a 5xx."""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.bootstrap import Application
from bot.http.problems import problem
from bot.outage import describe, is_outage
from commands import model
from commands.access import Principal
from commands.gate import Held
from commands.handlers import handle
from commands.replies import AccessDenied, NotAvailable, NotFound, Reply, UserError
from domain.api_tokens import digest, well_formed
from domain.records import AuditEvent, Stack, StackQuery
from domain.states import IllegalTransition, StackStatus
from domain.versions import InvalidVersion, Version

log = logging.getLogger("nelson.api")

OPENAPI = Path(__file__).with_name("openapi.json")
PAGE = 50
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,199}")
_NAMESPACE = re.compile(r"[a-z0-9][a-z0-9-]*(?:/[a-z0-9][a-z0-9-]*)*")
_REPOSITORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_STATUSES = tuple(s.value for s in StackStatus)
MAX_MANIFEST = 200_000


class Refused(Exception):
    """A request refused before any command runs; carries its problem response."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.reason)
        self.response = response


def bad_request(detail: str, errors: list[str] | None = None) -> Refused:
    return Refused(problem("bad-request", 400, detail, errors=errors))


def stack_json(stack: Stack) -> dict[str, Any]:
    return {
        "name": stack.name,
        "guid": stack.guid,
        "unit": stack.unit,
        "version": str(stack.version),
        "datacenter": stack.datacenter,
        "namespace": stack.namespace,
        "plan": stack.plan,
        "status": stack.status.value,
        "status_message": stack.status_message,
        "created_by": stack.created_by,
        "created_at": stack.created_at.isoformat(),
        "updated_at": stack.updated_at.isoformat(),
        "expires_at": stack.expires_at.isoformat() if stack.expires_at else None,
    }


class Body:
    """The fields of a JSON object, read with every problem collected for one answer."""

    def __init__(self, data: dict[str, Any], known: tuple[str, ...]) -> None:
        self.data = data
        self.errors = [
            f"unknown field '{key}' (known: {', '.join(known)})" for key in data if key not in known
        ]

    def text(
        self, key: str, pattern: re.Pattern[str] | None = None, *, required: bool = True
    ) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                self.errors.append(f"'{key}' is required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.errors.append(f"'{key}' must be a non-empty string")
            return None
        if pattern is not None and not (value.isascii() and pattern.fullmatch(value)):
            self.errors.append(f"'{key}': '{value[:80]}' is not a valid {key}")
            return None
        return value

    def version(self, key: str = "version") -> Version | None:
        value = self.text(key)
        if value is None:
            return None
        try:
            return Version.parse(value)
        except InvalidVersion as exc:
            self.errors.append(f"'{key}': {exc}")
            return None

    def names(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.errors.append(f"'{key}' must be a list of strings")
            return ()
        bad = [v for v in value if not (v.isascii() and _NAME.fullmatch(v))]
        if bad:
            self.errors.append(f"'{key}': {', '.join(repr(b[:80]) for b in bad)} are not names")
        return tuple(dict.fromkeys(value))

    def check(self) -> None:
        if self.errors:
            raise bad_request("; ".join(self.errors) + ".", self.errors)


Route = Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Api:
    def __init__(self, application: Application) -> None:
        self.application = application
        self.store = application.store
        self.settings = application.settings

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/openapi.json", self.openapi)
        app.router.add_post("/v1/manifests", self._authenticated(self.register_manifest))
        app.router.add_post("/v1/deployables", self._authenticated(self.announce))
        app.router.add_post("/v1/deployments", self._authenticated(self.deploy))
        app.router.add_post("/v1/commits", self._authenticated(self.commit))
        app.router.add_get("/v1/stacks", self._authenticated(self.stacks))
        app.router.add_get("/v1/stacks/{stack}", self._authenticated(self.stack))
        app.router.add_get("/v1/stacks/{stack}/log", self._authenticated(self.log))

    async def openapi(self, _request: web.Request) -> web.StreamResponse:
        return web.Response(body=OPENAPI.read_bytes(), content_type="application/json")

    # -- authentication and the audit -------------------------------------------------------

    async def principal(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="nelson"'}
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(
                problem(
                    "unauthorized",
                    401,
                    "send an API token as `Authorization: Bearer <token>` "
                    "(an admin creates one with `token create`)",
                    headers=challenge,
                )
            )
        token = token.strip()
        found = await self.store.api_token_by_digest(digest(token)) if well_formed(token) else None
        if found is None:
            raise Refused(
                problem(
                    "unauthorized",
                    401,
                    "the API token is not valid: unknown, revoked, or mistyped",
                    headers=challenge,
                )
            )
        return Principal(
            user_id=found.actor,
            name=found.actor,
            token_namespaces=found.namespaces,
            token_right=found.right,
        )

    def _authenticated(
        self, route: Route
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            if not self.settings.api.enabled:
                return problem("disabled", 404, "the HTTP API is disabled (api.enabled = false)")
            principal: Principal | None = None
            try:
                principal = await self.principal(request)
                response = await route(request, principal)
            except Refused as refused:
                response = refused.response
            except web.HTTPException:
                raise  # aiohttp's own (a body too large): the middleware answers
            except Exception as exc:
                response = self.internal_error(exc, principal)
            if principal is not None:
                await self._audit(request, principal, response.status)
            return response

        return run

    async def _audit(self, request: web.Request, principal: Principal, status: int) -> None:
        try:
            await self.store.audit(
                AuditEvent(
                    actor=principal.user_id,
                    action=f"api {request.method} {request.path}"[:200],
                    target=request.match_info.get("stack", "") or request.path,
                    allowed=status < 400,
                    detail=f"HTTP {status}",
                    at=self.application.clock.now(),
                )
            )
        except Exception as exc:  # the answer stands; the outage is reported elsewhere
            log.warning("could not audit an API call: %s", describe(exc))

    def internal_error(self, exc: Exception, principal: Principal | None) -> web.Response:
        if is_outage(exc):
            log.warning("API: %s", describe(exc))
            return problem("unavailable", 503, "the database is unreachable; try again shortly")
        reference = secrets.token_hex(4)
        who = principal.user_id if principal else "anonymous"
        log.exception("internal error %s while answering %s on the API", reference, who)
        return problem(
            "internal",
            500,
            f"something went wrong on the bot's side (reference {reference}); nothing more "
            "was done",
            reference=reference,
        )

    # -- running a command ------------------------------------------------------------------

    async def run(self, command: model.Command, principal: Principal) -> Reply:
        """The command through the same handlers as chat; a refusal becomes its problem."""
        ctx = self.application.conversation.context(principal)
        try:
            return await handle(command, ctx)
        except AccessDenied as exc:
            raise Refused(problem("forbidden", 403, exc.message, hint=exc.hint or None)) from None
        except NotFound as exc:
            raise Refused(problem("not-found", 404, exc.message, hint=exc.hint or None)) from None
        except (NotAvailable, Held) as exc:  # not now: a datacenter closed, a lock, a freeze
            raise Refused(problem("conflict", 409, exc.message, hint=exc.hint or None)) from None
        except UserError as exc:
            raise Refused(
                problem(
                    "unprocessable",
                    422,
                    exc.message,
                    hint=exc.hint or None,
                    errors=list(exc.details) or None,
                )
            ) from None
        except IllegalTransition as exc:
            raise Refused(problem("conflict", 409, str(exc))) from None

    async def body(self, request: web.Request, known: tuple[str, ...]) -> Body:
        if request.content_type != "application/json":
            raise Refused(
                problem(
                    "unsupported-media-type",
                    415,
                    f"send JSON with Content-Type: application/json (not "
                    f"'{request.content_type[:80]}')",
                )
            )
        raw = await request.read()
        try:
            data = json.loads(raw)
        except UnicodeDecodeError:
            raise bad_request("the body is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise bad_request(
                f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
        except RecursionError:
            raise bad_request("the body's JSON is nested too deeply") from None
        if not isinstance(data, dict):
            raise bad_request(f"the body must be a JSON object, not {type(data).__name__}")
        return Body(data, known)

    # -- the routes -------------------------------------------------------------------------

    async def register_manifest(self, request: web.Request, who: Principal) -> web.StreamResponse:
        body = await self.body(request, ("repository", "manifest"))
        repository = body.text("repository", _REPOSITORY)
        text = body.text("manifest")
        if text is not None and len(text) > MAX_MANIFEST:
            body.errors.append(f"'manifest' is longer than {MAX_MANIFEST} characters")
        body.check()
        assert repository is not None and text is not None
        reply = await self.run(model.RegisterManifest(repository, text=text), who)
        record = await self.store.latest_manifest(repository)
        units = [u.name for u in await self.store.units() if u.repository == repository]
        return web.json_response(
            {
                "message": reply.title,
                "repository": repository,
                "revision": record.revision if record else None,
                "units": units,
            },
            status=201,
        )

    async def announce(self, request: web.Request, who: Principal) -> web.StreamResponse:
        body = await self.body(request, ("unit", "version", "image"))
        unit, version = body.text("unit", _NAME), body.version()
        image = body.text("image")
        body.check()
        assert unit is not None and version is not None and image is not None
        reply = await self.run(model.Announce(unit, version, image), who)
        release = await self.store.release(unit, version)
        return web.json_response(
            {
                "message": reply.title,
                "unit": unit,
                "version": str(version),
                "image": release.image if release else image,
                "digest": release.digest if release else None,
            },
            status=201,
        )

    async def deploy(self, request: web.Request, who: Principal) -> web.StreamResponse:
        body = await self.body(request, ("unit", "version", "namespace", "datacenters", "plan"))
        unit, version = body.text("unit", _NAME), body.version()
        namespace = body.text("namespace", _NAMESPACE, required=False)
        datacenters = body.names("datacenters")
        plan = body.text("plan", _NAME, required=False)
        body.check()
        assert unit is not None and version is not None
        command = model.Deploy(unit, version, datacenters, namespace=namespace, plan=plan)
        return await self._started(await self.run(command, who))

    async def commit(self, request: web.Request, who: Principal) -> web.StreamResponse:
        body = await self.body(request, ("unit", "version", "namespace"))
        unit, version = body.text("unit", _NAME), body.version()
        namespace = body.text("namespace", _NAMESPACE)
        body.check()
        assert unit is not None and version is not None and namespace is not None
        return await self._started(await self.run(model.Commit(unit, version, namespace), who))

    async def _started(self, reply: Reply) -> web.StreamResponse:
        stacks = await self.store.stacks_by_ids(reply.stack_ids)
        return web.json_response(
            {
                "message": reply.title,
                "operation": reply.operation_id,
                "stacks": [stack_json(s) for s in stacks],
            },
            status=202,
        )

    async def stacks(self, request: web.Request, who: Principal) -> web.StreamResponse:
        query = request.query
        unknown = sorted(set(query) - {"namespace", "datacenter", "status", "unit"})
        body = Body(dict(query), ("namespace", "datacenter", "status", "unit"))
        body.errors = [f"unknown query parameter '{k}'" for k in unknown]
        namespace = body.text("namespace", _NAMESPACE, required=False)
        datacenter = body.text("datacenter", _NAME, required=False)
        unit = body.text("unit", _NAME, required=False)
        statuses: list[StackStatus] = []
        for word in (query.get("status") or "").split(","):
            if word and word not in _STATUSES:
                body.errors.append(f"'status': '{word[:40]}' is not one of {', '.join(_STATUSES)}")
            elif word:
                statuses.append(StackStatus(word))
        body.check()
        command = model.ListStacks(namespace, datacenter, tuple(dict.fromkeys(statuses)), unit)
        await self.run(command, who)  # checks names and access, audits
        page = await self.store.list_stacks(
            StackQuery(
                namespace=namespace or self.settings.default_namespace,
                datacenter=datacenter,
                statuses=command.statuses,
                unit=unit,
                limit=PAGE,
            )
        )
        return web.json_response(
            {"stacks": [stack_json(s) for s in page.stacks], "total": page.total}
        )

    async def _stack(self, request: web.Request) -> str:
        ref = request.match_info["stack"]
        if not (ref.isascii() and _NAME.fullmatch(ref)):
            raise Refused(problem("not-found", 404, f"there is no stack '{ref[:80]}'"))
        return ref

    async def stack(self, request: web.Request, who: Principal) -> web.StreamResponse:
        ref = await self._stack(request)
        await self.run(model.Inspect(ref), who)
        stack = await self.store.stack(ref)
        if stack is None:  # removed in between
            raise Refused(problem("not-found", 404, f"there is no stack '{ref}'"))
        history = await self.store.status_history(stack.id)
        return web.json_response(
            {
                **stack_json(stack),
                "history": [
                    {
                        "status": h.status.value,
                        "message": h.message,
                        "actor": h.actor,
                        "at": h.at.isoformat(),
                    }
                    for h in history
                ],
            }
        )

    async def log(self, request: web.Request, who: Principal) -> web.StreamResponse:
        ref = await self._stack(request)
        await self.run(model.Logs(ref), who)
        stack = await self.store.stack(ref)
        if stack is None:
            raise Refused(problem("not-found", 404, f"there is no stack '{ref}'"))
        lines = await self.store.logs(stack.id, limit=500)
        return web.json_response(
            {
                "stack": stack.name,
                "lines": [
                    {"at": line.at.isoformat(), "step": line.step, "message": line.message}
                    for line in lines
                ],
            }
        )


@web.middleware
async def problems_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own refusals (no route, wrong method, body too large) as problems, for the
    API and webhook paths; Slack's path keeps aiohttp's answers."""
    if not request.path.startswith(("/v1/", "/v1", "/github/")):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return problem("not-found", 404, f"there is no endpoint {request.path[:200]}")
    except web.HTTPMethodNotAllowed as exc:
        return problem(
            "method-not-allowed",
            405,
            f"{request.method} is not allowed on {request.path[:200]}; "
            f"allowed: {', '.join(sorted(exc.allowed_methods))}",
            headers={"Allow": ",".join(sorted(exc.allowed_methods))},
        )
    except web.HTTPRequestEntityTooLarge:
        return problem("too-large", 413, "the request body is larger than the bot accepts")
