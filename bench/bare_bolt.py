"""The baseline for bench/slack_ack.py: a Bolt AsyncApp on aiohttp that only acks /nelson.

.venv/bin/python bench/bare_bolt.py PORT   (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_API_URL)
"""

from __future__ import annotations

import os
import sys
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient


def main() -> None:
    client = AsyncWebClient(
        token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"]
    )
    app = AsyncApp(client=client, signing_secret=os.environ["SLACK_SIGNING_SECRET"])

    @app.command("/nelson")
    async def only_ack(ack: Any) -> None:
        await ack()

    async def events(request: web.Request) -> web.StreamResponse:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    async def healthz(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True})

    server = web.Application()
    server.router.add_post("/slack/events", events)
    server.router.add_get("/healthz", healthz)
    web.run_app(server, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
