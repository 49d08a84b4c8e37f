"""`nelson serve`: the Slack bot in HTTP mode (aiohttp: `POST /slack/events`, `GET /healthz`)
or, when an app-level token is set, in Socket Mode (no public URL; `/healthz` still served);
`nelson serve --no-slack` (`serve_headless`) runs everything but Slack: deploy workflows and
the ones an earlier run left unfinished, traffic shifts, cleanup passes and the daily digest
(written to the log), with `GET /healthz`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.bootstrap import Application
from bot.http.routes import add_ci_routes
from bot.jobs import Jobs
from bot.outage import describe, is_outage
from bot.slack.app import SlackBot, api_url
from bot.slack.guard import Refusal, check_signature, forwarded_headers, parse_body
from commands.settings import Settings
from domain.redaction import redact

log = logging.getLogger("nelson.serve")

MAX_BODY = 1024 * 1024  # Slack's payloads are far smaller
# On SIGTERM each deploy may finish the step it is in for this long (a container runtime's
# stop timeout must allow it plus the last Slack posts: `docker stop -t 30`).
STOP_GRACE = 15.0


class SetupError(Exception):
    """The bot cannot start as configured; the message says what to set."""


@dataclass(frozen=True, slots=True)
class Mode:
    socket: bool
    description: str


def check_tokens(settings: Settings) -> Mode:
    """One clear message for a missing or malformed token, before anything starts."""
    slack = settings.slack
    bot = slack.bot_token.get_secret_value() if slack.bot_token else ""
    if not bot:
        raise SetupError(
            "SLACK_BOT_TOKEN is not set. `nelson serve` needs the app's bot token (xoxb-…), "
            "from the app's OAuth & Permissions page; see README, 'Connect to Slack'."
        )
    if not bot.startswith("xoxb-"):
        raise SetupError(
            "SLACK_BOT_TOKEN does not look like a bot token: it should start with 'xoxb-' "
            "(user tokens xoxp- and app tokens xapp- do not work here)."
        )
    app = slack.app_token.get_secret_value() if slack.app_token else ""
    if app:
        if not app.startswith("xapp-"):
            raise SetupError(
                "SLACK_APP_TOKEN does not look like an app-level token: it should start with "
                "'xapp-' and have the connections:write scope."
            )
        return Mode(True, "Socket Mode")
    secret = slack.signing_secret.get_secret_value() if slack.signing_secret else ""
    if not secret:
        raise SetupError(
            "SLACK_SIGNING_SECRET is not set. HTTP mode verifies every request with it (Basic "
            "Information page of the app); or set SLACK_APP_TOKEN to use Socket Mode instead."
        )
    if len(secret) < 16 or not all(c in "0123456789abcdef" for c in secret.lower()):
        raise SetupError(
            "SLACK_SIGNING_SECRET does not look like a signing secret (32 hex characters on "
            "the app's Basic Information page)."
        )
    return Mode(False, "HTTP mode")


async def verify_token(bot: SlackBot) -> str:
    """auth.test: the token works and Slack is reachable."""
    try:
        response = await bot.client.auth_test()
    except SlackApiError as exc:
        raise SetupError(
            f"Slack refused SLACK_BOT_TOKEN ({exc.response.get('error')}); check the token "
            "and that the app is installed in the workspace."
        ) from None
    except Exception as exc:
        raise SetupError(
            f"cannot reach Slack at {redact(api_url(bot.settings))} ({exc!r}); check the network, "
            "or SLACK_API_URL if you use a proxy or GovSlack."
        ) from None
    return str(response.get("user_id", ""))


def _healthz(application: Application, mode: str) -> Any:
    async def healthz(_request: web.Request) -> web.StreamResponse:
        try:
            await application.store.operation(0)
        except Exception as exc:
            # The driver's text names the database host: it stays in the log, and at debug
            # level, since probes come every few seconds and the jobs already warn once.
            if not is_outage(exc):
                log.exception("the health check failed")
            else:
                log.debug("health check: the database is unreachable: %s", describe(exc))
            return web.json_response({"ok": False, "database": "unreachable"}, status=503)
        return web.json_response({"ok": True, "mode": mode})

    return healthz


async def serve_headless(
    application: Application,
    *,
    host: str | None = None,
    port: int | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Everything but Slack, until SIGTERM/SIGINT (or `stop`)."""
    settings = application.settings
    stop = stop or asyncio.Event()
    _on_signals(stop)
    resumed = await application.start()
    if resumed:
        log.info("continuing %s deploy(s) an earlier run left unfinished", resumed)
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_get("/healthz", _healthz(application, "no-slack"))
    add_ci_routes(app, application)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(
        runner, host or settings.slack.host, settings.slack.port if port is None else port
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise SetupError(
            f"cannot listen on {host or settings.slack.host}:{port or settings.slack.port} "
            f"({exc.strerror or exc}); choose another with --port"
        ) from None
    bound = _bound_port(site, port)
    jobs = Jobs(application, "nelson serve --no-slack")
    try:
        await jobs.start()
        where = f"http://{host or settings.slack.host}:{bound}"
        log.info("nelson is running without Slack; health on port %s", bound)
        print(
            f"nelson: running without Slack: deploys, traffic shifts and cleanups "
            f"(health: {where}/healthz)",
            flush=True,
        )
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await jobs.stop()
        await runner.cleanup()
        _stopped(await _drain(application))
    return 0


async def _drain(application: Application) -> int:
    """Let each deploy finish the step in hand; how many continue at the next start."""
    return await application.deploys.drain(STOP_GRACE) if application.deploys else 0


def _stopped(left: int) -> None:
    later = f"; {left} deploy(s) continue at the next start" if left else ""
    print(f"nelson: stopped{later}", flush=True)


def _on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)


def _bound_port(site: web.TCPSite, port: int | None) -> int | None:
    sockets = getattr(site._server, "sockets", None) or []
    return int(sockets[0].getsockname()[1]) if sockets else port


def web_app(bot: SlackBot, *, http_mode: bool) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)

    secret_setting = bot.settings.slack.signing_secret
    secret = secret_setting.get_secret_value() if secret_setting else ""

    def refuse(refusal: Refusal, request: web.Request) -> web.StreamResponse:
        log.warning(
            "refused a request to %s from %s: %s (%s)",
            request.path,
            request.remote,
            refusal.reason,
            refusal.status,
        )
        return web.json_response({"error": refusal.reason}, status=refusal.status)

    async def events(request: web.Request) -> web.StreamResponse:
        raw = await request.read()  # more than MAX_BODY is refused by aiohttp (413)
        refusal = check_signature(secret, request.headers, raw)
        if refusal is not None:
            return refuse(refusal, request)
        body = parse_body(raw, request.headers.get("Content-Type", ""))
        if isinstance(body, Refusal):
            return refuse(body, request)
        try:
            # Bolt reads ids from many places (team, enterprise, authorizations, …) assuming
            # Slack's shapes; a body it cannot read is refused here rather than failing there.
            context = build_async_context(AsyncBoltContext({}), body)
        except Exception:
            return refuse(Refusal(400, "a field is not of the kind Slack sends"), request)
        bolt_request = AsyncBoltRequest(
            body=raw.decode("utf-8"),
            query=request.query_string,
            headers=forwarded_headers(request.headers),  # type: ignore[arg-type]
        )
        if bolt_request.body != body:
            # Bolt reads any form mentioning "payload" as an interactive payload; the strict
            # reading above is the one listeners get.
            bolt_request.body = body
            bolt_request.context = context
        bolt_response = await bot.app.async_dispatch(bolt_request)
        if bolt_response.status == 404:
            # Signed, well formed, but nothing here handles it (an event type or interaction
            # the app does not use): Slack only needs to know it arrived.
            log.info("ignored a %s request no listener handles", body.get("type") or "command")
            return web.Response(status=200)
        return await to_aiohttp_response(bolt_response)

    if http_mode:
        app.router.add_post("/slack/events", events)
    app.router.add_get("/healthz", _healthz(bot.application, "http" if http_mode else "socket"))
    add_ci_routes(app, bot.application)
    return app


async def serve(
    application: Application,
    *,
    host: str | None = None,
    port: int | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set). Raises SetupError before serving."""
    settings = application.settings
    mode = check_tokens(settings)
    bot = SlackBot(application)
    await verify_token(bot)
    resumed = await application.start()
    if resumed:
        log.info("continuing %s deploy(s) an earlier run left unfinished", resumed)
    stop = stop or asyncio.Event()
    _on_signals(stop)
    runner = web.AppRunner(
        web_app(bot, http_mode=not mode.socket), access_log=None, shutdown_timeout=5.0
    )
    await runner.setup()
    site = web.TCPSite(
        runner, host or settings.slack.host, settings.slack.port if port is None else port
    )
    await site.start()
    bound = _bound_port(site, port)
    socket_handler: AsyncSocketModeHandler | None = None
    jobs = Jobs(application, "nelson serve")
    try:
        if mode.socket:
            assert settings.slack.app_token is not None
            socket_handler = AsyncSocketModeHandler(
                bot.app,
                settings.slack.app_token.get_secret_value(),
                web_client=AsyncWebClient(base_url=api_url(settings), timeout=10),
            )
            await socket_handler.connect_async()  # type: ignore[no-untyped-call]
        await jobs.start()
        await bot.start()
        log.info("nelson is serving Slack in %s; health on port %s", mode.description, bound)
        where = f"http://{host or settings.slack.host}:{bound}"
        print(f"nelson: serving Slack in {mode.description} (health: {where}/healthz)", flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        # Stop taking work, let deploys finish the step in hand, then post what is left.
        await jobs.stop()
        if socket_handler is not None:
            await socket_handler.close_async()  # type: ignore[no-untyped-call]
        await runner.cleanup()
        left = await _drain(application)
        await bot.close()  # after the drain: the paused deploys' last lines still go out
        _stopped(left)
    return 0
