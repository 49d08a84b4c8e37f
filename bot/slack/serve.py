"""`nelson serve`: the Slack bot in HTTP mode (aiohttp: `POST /slack/events`, `GET /healthz`)
or, when an app-level token is set, in Socket Mode (no public URL; `/healthz` still served)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.bootstrap import Application
from bot.jobs import Jobs
from bot.slack.app import SlackBot, api_url
from commands.settings import Settings

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
            f"cannot reach Slack at {api_url(bot.settings)} ({exc!r}); check the network, "
            "or SLACK_API_URL if you use a proxy or GovSlack."
        ) from None
    return str(response.get("user_id", ""))


def web_app(bot: SlackBot, *, http_mode: bool) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)

    async def events(request: web.Request) -> web.StreamResponse:
        bolt_request = await to_bolt_request(request)
        bolt_response = await bot.app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    async def healthz(_request: web.Request) -> web.StreamResponse:
        try:
            await bot.application.store.operation(0)
        except Exception as exc:
            return web.json_response({"ok": False, "database": repr(exc)}, status=503)
        return web.json_response({"ok": True, "mode": "http" if http_mode else "socket"})

    if http_mode:
        app.router.add_post("/slack/events", events)
    app.router.add_get("/healthz", healthz)
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
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(
        web_app(bot, http_mode=not mode.socket), access_log=None, shutdown_timeout=5.0
    )
    await runner.setup()
    site = web.TCPSite(
        runner, host or settings.slack.host, settings.slack.port if port is None else port
    )
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    socket_handler: AsyncSocketModeHandler | None = None
    jobs = Jobs(application)
    try:
        if mode.socket:
            assert settings.slack.app_token is not None
            socket_handler = AsyncSocketModeHandler(
                bot.app,
                settings.slack.app_token.get_secret_value(),
                web_client=AsyncWebClient(base_url=api_url(settings), timeout=10),
            )
            await socket_handler.connect_async()  # type: ignore[no-untyped-call]
        jobs.start()
        log.info("nelson is serving Slack in %s; health on port %s", mode.description, bound)
        where = f"http://{host or settings.slack.host}:{bound}"
        print(f"nelson: serving Slack in {mode.description} (health: {where}/healthz)", flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        # Stop taking work, let deploys finish the step in hand, then post what is left.
        jobs.stop()
        if socket_handler is not None:
            await socket_handler.close_async()  # type: ignore[no-untyped-call]
        await runner.cleanup()
        left = await application.engine.drain(STOP_GRACE) if application.engine else 0
        await bot.close()
        later = f"; {left} deploy(s) continue at the next start" if left else ""
        print(f"nelson: stopped{later}", flush=True)
    return 0
