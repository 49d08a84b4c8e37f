"""The fake Slack's parts for several replicas, driven with slack_sdk: message metadata and
`conversations.history`; requests delivered over HTTP to several request URLs in turn (a
failed slash command is not sent again, an Events API delivery is retried on the next URL with
Slack's retry headers); Socket Mode with several connections, each envelope going to one of
them at random."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.e2e.slack_harness import free_port
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_requests import app_mention, event_callback, slash_command

SECRET = "replica-secret"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(rng=random.Random(7)) as workspace:
        yield workspace


@pytest.fixture
def bot(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)


async def test_metadata_comes_back_in_the_history_only_when_asked_for(
    fake: FakeSlack, bot: AsyncWebClient
) -> None:
    meta = {"event_type": "nelson_thread", "event_payload": {"operation": 12}}
    posted = await bot.chat_postMessage(channel="C1", text="parent", metadata=meta)
    await bot.chat_postMessage(channel="C1", text="later")
    await bot.chat_postMessage(channel="C1", text="reply", thread_ts=posted["ts"])
    history = await bot.conversations_history(channel="C1", include_all_metadata=True)
    assert [m["text"] for m in history["messages"]] == ["later", "parent"], "newest first"
    assert history["messages"][1]["metadata"] == meta
    assert history["messages"][1]["reply_count"] == 1
    plain = await bot.conversations_history(channel="C1")
    assert all("metadata" not in m for m in plain["messages"])
    assert fake.messages("C1")[0].metadata == meta
    one = await bot.conversations_history(channel="C1", limit=1)
    assert len(one["messages"]) == 1 and one["has_more"] is True


async def test_a_thread_is_read_with_its_replies_metadata(bot: AsyncWebClient) -> None:
    meta = {"event_type": "nelson_thread_closed", "event_payload": {"operation": 7}}
    parent = await bot.chat_postMessage(channel="C1", text="parent")
    await bot.chat_postMessage(channel="C1", text="one", thread_ts=parent["ts"])
    await bot.chat_postMessage(channel="C1", text="end", thread_ts=parent["ts"], metadata=meta)
    thread = await bot.conversations_replies(
        channel="C1", ts=parent["ts"], include_all_metadata=True
    )
    assert [m["text"] for m in thread["messages"]] == ["parent", "one", "end"], "oldest first"
    assert thread["messages"][2]["metadata"] == meta
    plain = await bot.conversations_replies(channel="C1", ts=parent["ts"])
    assert all("metadata" not in m for m in plain["messages"])
    for channel, ts, error in (
        ("C404", parent["ts"], "channel_not_found"),
        ("C1", "1.2", "thread_not_found"),
    ):
        with pytest.raises(SlackApiError) as refused:
            await bot.conversations_replies(channel=channel, ts=ts)
        assert refused.value.response["error"] == error


async def test_bad_metadata_and_unknown_channels_are_refused(bot: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as refused:
        await bot.chat_postMessage(channel="C1", text="x", metadata={"event_type": "only"})
    assert refused.value.response["error"] == "invalid_metadata_schema"
    with pytest.raises(SlackApiError) as unknown:
        await bot.conversations_history(channel="C404")
    assert unknown.value.response["error"] == "channel_not_found"


class Replica:
    """A request URL that checks Slack's signature with slack_sdk and acks or fails."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.verifier = SignatureVerifier(SECRET)
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        assert self.verifier.is_valid_request(body, dict(request.headers))
        self.received.append((dict(request.headers), body))
        return web.Response(status=self.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/slack/events", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def test_http_requests_go_to_the_request_urls_in_turn(fake: FakeSlack) -> None:
    replicas = [Replica(), Replica(), Replica()]
    for replica in replicas:
        await replica.start()
    try:
        fake.deliver_over_http([r.url for r in replicas], SECRET)
        for n in range(6):
            command = slash_command(f"stacks {n}", response_url=fake.new_response_url())
            delivery = await fake.deliver("slash_commands", command)
            assert delivery.acked and delivery.attempts == 1
        texts = [[parse_qs(body.decode())["text"][0] for _, body in r.received] for r in replicas]
        assert texts == [
            ["stacks 0", "stacks 3"],
            ["stacks 1", "stacks 4"],
            ["stacks 2", "stacks 5"],
        ]
    finally:
        for replica in replicas:
            await replica.stop()


async def test_a_command_to_a_dead_url_fails_once_and_an_event_is_retried_on_the_next(
    fake: FakeSlack,
) -> None:
    alive, failing = Replica(), Replica(status=500)
    await alive.start()
    await failing.start()
    dead = f"http://127.0.0.1:{free_port()}/slack/events"
    try:
        fake.deliver_over_http([dead, failing.url, alive.url], SECRET)
        command = slash_command("stacks", response_url=fake.new_response_url())
        lost = await fake.deliver("slash_commands", command)
        assert (lost.acked, lost.attempts, lost.failures) == (False, 1, ["connection_failed"])
        event = await fake.deliver("events_api", event_callback(app_mention("<@UBOT> hi")))
        assert (event.acked, event.attempts) == (True, 2), "the failing URL, then the alive one"
        assert event.failures == ["http_error"]
        [(headers, body)] = alive.received
        assert (
            headers["X-Slack-Retry-Num"] == "1" and headers["X-Slack-Retry-Reason"] == "http_error"
        )
        assert json.loads(body)["event"]["text"] == "<@UBOT> hi"
        [(first, _)] = failing.received
        assert "X-Slack-Retry-Num" not in first
    finally:
        await alive.stop()
        await failing.stop()


async def connect(
    fake: FakeSlack, seen: list[str], name: str, ack: bool = True
) -> SocketModeClient:
    client = SocketModeClient(
        app_token=fake.app_token,
        web_client=AsyncWebClient(base_url=fake.base_url),
        auto_reconnect_enabled=False,
    )

    async def listener(socket: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        seen.append(name)
        if ack:
            await socket.send_socket_mode_response(SocketModeResponse(request.envelope_id))

    client.socket_mode_request_listeners.append(listener)
    await client.connect()
    return client


async def test_socket_mode_envelopes_go_to_random_connections(fake: FakeSlack) -> None:
    seen: list[str] = []
    clients = [await connect(fake, seen, name) for name in ("a", "b", "c")]
    try:
        await fake.wait_socket_connected(count=3)
        assert fake.socket_connections == 3
        for n in range(30):
            command = slash_command(f"stacks {n}", response_url=fake.new_response_url())
            delivery = await fake.deliver("slash_commands", command)
            assert delivery.acked
        assert len(seen) == 30 and set(seen) == {"a", "b", "c"}, seen
        assert seen != [("a", "b", "c")[n % 3] for n in range(30)], "random, not in turn"
    finally:
        for client in clients:
            await client.close()


async def test_socket_mode_retries_an_unacknowledged_event_on_a_connection(
    fake: FakeSlack,
) -> None:
    seen: list[str] = []
    mute = await connect(fake, seen, "mute", ack=False)
    await fake.wait_socket_connected(count=1)
    other = await connect(fake, seen, "acks")
    try:
        await fake.wait_socket_connected(count=2)
        fake.rng = random.Random(0)
        events = [
            await fake.deliver("events_api", event_callback(app_mention(f"<@UBOT> {n}")))
            for n in range(4)
        ]
        assert all(e.acked for e in events)
        retried = [e for e in events if e.attempts > 1]
        assert retried and all(set(e.failures) == {"timeout"} for e in retried)
        command = await fake.deliver("slash_commands", slash_command("x", response_url="u"))
        assert command.attempts == 1, "a slash command is not sent again"
        assert "mute" in seen and "acks" in seen
    finally:
        await mute.close()
        await other.close()


async def test_deliveries_are_recorded(fake: FakeSlack) -> None:
    fake.deliver_over_http([f"http://127.0.0.1:{free_port()}/"], SECRET)
    await asyncio.gather(
        *(fake.deliver("interactive", {"type": "block_actions"}) for _ in range(2))
    )
    assert [d.kind for d in fake.deliveries] == ["interactive", "interactive"]
    assert not any(d.acked for d in fake.deliveries)
