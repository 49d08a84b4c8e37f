"""The fake Slack workspace answers as Slack does, driven through the real slack_sdk clients
and plain aiohttp; the request builders sign as Slack does."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.fakes.slack import FakeSlack, block_problems
from tests.fakes.slack_requests import (
    app_home_opened,
    app_mention,
    block_action,
    direct_message,
    encode_event,
    encode_form,
    encode_interactive,
    event_callback,
    post_signed,
    retry_headers,
    sign,
    slash_command,
)

Blocks = list[dict[str, Any]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as workspace:
        yield workspace


@pytest.fixture
def bot(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)


async def slack_error(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as raised:
        await call
    return raised.value


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(value: str = "v", action_id: str = "approve", label: str = "Approve") -> Any:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": value,
    }


def actions(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "actions", "elements": list(elements)}


def header(text: str, kind: str = "plain_text") -> dict[str, Any]:
    return {"type": "header", "text": {"type": kind, "text": text}}


def fields(count: int, size: int = 5) -> dict[str, Any]:
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": "x" * size}] * count}


# -- tokens ---------------------------------------------------------------------------------


async def test_missing_token_is_not_authed(fake: FakeSlack) -> None:
    error = await slack_error(AsyncWebClient(base_url=fake.base_url).auth_test())
    assert error.response.status_code == 200
    assert error.response["error"] == "not_authed"
    assert fake.calls == []


async def test_unknown_token_is_invalid_auth(fake: FakeSlack) -> None:
    client = AsyncWebClient(token="xoxb-wrong", base_url=fake.base_url)
    error = await slack_error(client.chat_postMessage(channel="C1", text="hi"))
    assert (error.response.status_code, error.response["error"]) == (200, "invalid_auth")
    assert fake.messages("C1") == []


async def test_app_and_bot_tokens_only_work_where_they_belong(fake: FakeSlack) -> None:
    app = AsyncWebClient(token=fake.app_token, base_url=fake.base_url)
    error = await slack_error(app.chat_postMessage(channel="C1", text="hi"))
    assert error.response["error"] == "not_allowed_token_type"
    bot = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)
    error = await slack_error(bot.apps_connections_open(app_token=fake.bot_token))
    assert error.response["error"] == "not_allowed_token_type"
    opened = await app.apps_connections_open(app_token=fake.app_token)
    assert opened["url"].startswith(f"ws://127.0.0.1:{fake.port}/socket?ticket=")


async def test_token_may_come_as_a_form_field(fake: FakeSlack) -> None:
    async with aiohttp.ClientSession() as session:
        form = {"token": fake.bot_token, "channel": "C1", "text": "hi"}
        async with session.post(fake.base_url + "chat.postMessage", data=form) as response:
            body = await response.json()
    assert body["ok"] is True
    call = fake.calls_to("chat.postMessage")[0]
    assert call.token == fake.bot_token and "token" not in call.params


async def test_unknown_method_is_404(fake: FakeSlack, bot: AsyncWebClient) -> None:
    error = await slack_error(bot.api_call("chat.frobnicate", json={"channel": "C1"}))
    assert error.response.status_code == 404
    assert error.response["error"] == "unknown_method"


# -- methods --------------------------------------------------------------------------------


async def test_auth_test(fake: FakeSlack, bot: AsyncWebClient) -> None:
    answer = await bot.auth_test()
    assert answer["user_id"] == "UBOT" and answer["team_id"] == "T0001"
    assert answer["bot_id"] and answer["url"] and answer["team"] and answer["user"]


async def test_post_message_records_the_message(fake: FakeSlack, bot: AsyncWebClient) -> None:
    blocks = [section("*deploying* howdy")]
    answer = await bot.chat_postMessage(channel="C1", text="deploying howdy", blocks=blocks)
    assert answer["channel"] == "C1" and answer["message"]["text"] == "deploying howdy"
    assert answer["message"]["ts"] == answer["ts"]
    [message] = fake.messages("C1")
    assert (message.ts, message.text, message.blocks) == (answer["ts"], "deploying howdy", blocks)
    assert message.user == "UBOT" and message.thread_ts is None and message.edits == 0
    call = fake.calls_to("chat.postMessage")[0]
    assert call.params["blocks"] == blocks and call.token == fake.bot_token and call.error is None


async def test_channel_by_name_and_direct_messages(fake: FakeSlack, bot: AsyncWebClient) -> None:
    assert (await bot.chat_postMessage(channel="#ops", text="a"))["channel"] == "C2"
    assert (await bot.chat_postMessage(channel="D42", text="b"))["channel"] == "D42"
    assert [m.text for m in fake.messages("D42")] == ["b"]


async def test_form_posted_blocks_are_decoded(fake: FakeSlack) -> None:
    blocks = [section("from a form")]
    form = {"channel": "C1", "blocks": json.dumps(blocks)}
    headers = {"Authorization": f"Bearer {fake.bot_token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(fake.base_url + "chat.postMessage", data=form) as response:
            assert (await response.json())["ok"] is True
        form["blocks"] = "[{not json"
        async with session.post(fake.base_url + "chat.postMessage", data=form) as response:
            assert (await response.json())["error"] == "invalid_blocks_format"
    assert fake.messages("C1")[0].blocks == blocks


async def test_timestamps_are_unique_and_increasing(fake: FakeSlack, bot: AsyncWebClient) -> None:
    stamps = [(await bot.chat_postMessage(channel="C2", text=str(i)))["ts"] for i in range(5)]
    assert stamps == sorted(stamps, key=float) and len(set(stamps)) == 5
    assert all(len(ts.split(".")[1]) == 6 for ts in stamps)


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_post_message_errors(fake: FakeSlack, bot: AsyncWebClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"channel": "C404", "text": "x"}, "channel_not_found"),
        ({"channel": "C1"}, "no_text"),
        ({"channel": "C1", "text": "x", "thread_ts": "1.000001"}, "thread_not_found"),
    ]
    for kwargs, expected in cases:
        error = await slack_error(bot.chat_postMessage(**kwargs))
        assert (error.response.status_code, error.response["error"]) == (200, expected)
    assert fake.messages("C1") == []
    assert [c.error for c in fake.calls_to("chat.postMessage")] == [
        "channel_not_found",
        "no_text",
        "thread_not_found",
    ]


async def test_thread_replies(fake: FakeSlack, bot: AsyncWebClient) -> None:
    parent = (await bot.chat_postMessage(channel="C1", text="deploy"))["ts"]
    first = await bot.chat_postMessage(channel="C1", text="step 1", thread_ts=parent)
    assert first["message"]["thread_ts"] == parent
    await bot.chat_postMessage(channel="C1", text="step 2", thread_ts=parent)
    assert [m.text for m in fake.messages("C1")] == ["deploy"]
    assert [m.text for m in fake.thread("C1", parent)] == ["step 1", "step 2"]
    assert fake.messages("C1")[0].replies == fake.thread("C1", parent)
    assert all(m.thread_ts == parent for m in fake.thread("C1", parent))
    error = await slack_error(bot.chat_postMessage(channel="C2", text="x", thread_ts=parent))
    assert error.response["error"] == "thread_not_found"  # that message is in another channel


async def test_update_replaces_text_and_blocks(fake: FakeSlack, bot: AsyncWebClient) -> None:
    ts = (await bot.chat_postMessage(channel="C1", text="1/3", blocks=[section("1/3")]))["ts"]
    answer = await bot.chat_update(channel="C1", ts=ts, text="3/3", blocks=[section("done")])
    assert (answer["channel"], answer["ts"], answer["text"]) == ("C1", ts, "3/3")
    [message] = fake.messages("C1")
    assert message.text == "3/3" and message.blocks == [section("done")] and message.edits == 1
    reply = (await bot.chat_postMessage(channel="C1", text="r", thread_ts=ts))["ts"]
    await bot.chat_update(channel="C1", ts=reply, text="r2")
    assert fake.thread("C1", ts)[0].text == "r2"
    error = await slack_error(bot.chat_update(channel="C1", ts="1.000009", text="x"))
    assert error.response["error"] == "message_not_found"
    error = await slack_error(bot.chat_update(channel="C9", ts=ts, text="x"))
    assert error.response["error"] == "channel_not_found"


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_post_ephemeral(fake: FakeSlack, bot: AsyncWebClient) -> None:
    answer = await bot.chat_postEphemeral(channel="C1", user="U4", text="only you")
    assert answer["message_ts"]
    [ephemeral] = fake.ephemerals
    assert (ephemeral.channel, ephemeral.user, ephemeral.text) == ("C1", "U4", "only you")
    assert fake.messages("C1") == []
    error = await slack_error(bot.chat_postEphemeral(channel="C1", user="U99", text="x"))
    assert error.response["error"] == "user_not_found"
    error = await slack_error(bot.chat_postEphemeral(channel="C1", user="U1"))
    assert error.response["error"] == "no_text"


async def test_views_publish_home(fake: FakeSlack, bot: AsyncWebClient) -> None:
    view = {"type": "home", "blocks": [section("welcome")]}
    answer = await bot.views_publish(user_id="U2", view=view)
    assert answer["view"]["id"] and answer["view"]["type"] == "home"
    assert answer["view"]["blocks"] == view["blocks"]
    assert fake.home("U2") == view and fake.home("U1") is None
    newer = {"type": "home", "blocks": [section("again")]}
    await bot.views_publish(user_id="U2", view=newer)
    assert fake.home("U2") == newer
    error = await slack_error(bot.views_publish(user_id="U99", view=view))
    assert error.response["error"] == "invalid_arguments"
    error = await slack_error(bot.views_publish(user_id="U2", view={**view, "type": "modal"}))
    assert error.response["error"] == "invalid_arguments"


async def test_users_info(fake: FakeSlack, bot: AsyncWebClient) -> None:
    user = (await bot.users_info(user="U2"))["user"]
    assert (user["id"], user["name"], user["real_name"], user["is_bot"]) == (
        "U2",
        "bob",
        "Bob",
        False,
    )
    assert user["profile"] == {"display_name": "bob", "real_name": "Bob"}
    assert (await bot.users_info(user="UBOT"))["user"]["is_bot"] is True
    error = await slack_error(bot.users_info(user="U99"))
    assert error.response["error"] == "user_not_found"


async def test_conversations_info(fake: FakeSlack, bot: AsyncWebClient) -> None:
    channel = (await bot.conversations_info(channel="C3"))["channel"]
    assert channel == {"id": "C3", "name": "howdy-team", "is_channel": True, "is_im": False}
    im = (await bot.conversations_info(channel="D1"))["channel"]
    assert im["is_im"] is True and im["is_channel"] is False
    error = await slack_error(bot.conversations_info(channel="C404"))
    assert error.response["error"] == "channel_not_found"


async def test_usergroups_list() -> None:
    groups = {"S1": {"handle": "sre", "users": ["U3"]}, "S2": {"handle": "dev", "users": []}}
    async with FakeSlack(usergroups=groups) as fake:
        bot = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)
        listed = (await bot.usergroups_list(include_users=True))["usergroups"]
        assert [(g["id"], g["handle"], g["users"]) for g in listed] == [
            ("S1", "sre", ["U3"]),
            ("S2", "dev", []),
        ]
        assert all("users" not in g for g in (await bot.usergroups_list())["usergroups"])


async def test_custom_workspace() -> None:
    users = {"W1": {"name": "erin", "real_name": "Erin"}}
    async with FakeSlack(bot_token="xoxb-x", users=users, channels={"G1": "secret"}) as fake:
        bot = AsyncWebClient(token="xoxb-x", base_url=fake.base_url)
        assert (await bot.users_info(user="W1"))["user"]["name"] == "erin"
        assert (await bot.chat_postMessage(channel="#secret", text="s"))["channel"] == "G1"
        error = await slack_error(bot.chat_postMessage(channel="C1", text="s"))
        assert error.response["error"] == "channel_not_found"


# -- Block Kit limits -----------------------------------------------------------------------

VALID: dict[str, Callable[[], Blocks]] = {
    "50 blocks": lambda: [section("x")] * 50,
    "section text of 3000": lambda: [section("x" * 3000)],
    "header of 150": lambda: [header("h" * 150)],
    "10 fields of 2000": lambda: [fields(10, 2000)],
    "button value of 2000": lambda: [actions(button(value="v" * 2000))],
    "action_id of 255": lambda: [actions(button(action_id="a" * 255))],
    "button label of 75": lambda: [actions(button(label="l" * 75))],
    "25 elements": lambda: [actions(*[button(action_id=f"a{i}") for i in range(25)])],
    "divider and context": lambda: [
        {"type": "divider"},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}]},
    ],
}

INVALID: dict[str, tuple[Callable[[], Blocks], str]] = {
    "51 blocks": (
        lambda: [section("x")] * 51,
        "no more than 50 items allowed [json-pointer:/blocks]",
    ),
    "section text of 3001": (lambda: [section("x" * 3001)], "/blocks/0/text/text]"),
    "empty section text": (lambda: [section("")], "must be more than 0 characters"),
    "section without text": (lambda: [{"type": "section"}], "[json-pointer:/blocks/0]"),
    "header of 151": (lambda: [header("h" * 151)], "/blocks/0/text/text]"),
    "mrkdwn header": (lambda: [header("h", "mrkdwn")], "/blocks/0/text/type]"),
    "11 fields": (
        lambda: [fields(11)],
        "no more than 10 items allowed [json-pointer:/blocks/0/fields]",
    ),
    "field of 2001": (lambda: [fields(2, 2001)], "/blocks/0/fields/0/text]"),
    "button value of 2001": (lambda: [actions(button(value="v" * 2001))], "/elements/0/value]"),
    "action_id of 256": (lambda: [actions(button(action_id="a" * 256))], "/elements/0/action_id]"),
    "button label of 76": (lambda: [actions(button(label="l" * 76))], "/elements/0/text/text]"),
    "26 elements": (lambda: [actions(*[button()] * 26)], "/blocks/0/elements]"),
    "empty actions": (lambda: [actions()], "/blocks/0/elements]"),
    "unknown block type": (lambda: [{"type": "sectoin"}], "/blocks/0/type]"),
}


@pytest.mark.parametrize("name", VALID)
async def test_blocks_at_the_limits_are_accepted(bot: AsyncWebClient, name: str) -> None:
    blocks = VALID[name]()
    assert block_problems(blocks) == []
    assert (await bot.chat_postMessage(channel="C1", text="t", blocks=blocks))["ok"]


@pytest.mark.parametrize("name", INVALID)
async def test_blocks_over_the_limits_are_invalid_blocks(
    fake: FakeSlack, bot: AsyncWebClient, name: str
) -> None:
    build, problem = INVALID[name]
    blocks = build()
    for call in (
        bot.chat_postMessage(channel="C1", text="t", blocks=blocks),
        bot.chat_postEphemeral(channel="C1", user="U1", text="t", blocks=blocks),
    ):
        error = await slack_error(call)
        assert error.response["error"] == "invalid_blocks"
        messages = error.response["response_metadata"]["messages"]
        assert any(problem in m and m.startswith("[ERROR] ") for m in messages), messages
    assert fake.messages("C1") == [] and fake.ephemerals == []


async def test_update_with_invalid_blocks_keeps_the_message(
    fake: FakeSlack, bot: AsyncWebClient
) -> None:
    ts = (await bot.chat_postMessage(channel="C1", text="ok"))["ts"]
    error = await slack_error(
        bot.chat_update(channel="C1", ts=ts, text="t", blocks=[header("h" * 151)])
    )
    assert error.response["error"] == "invalid_blocks"
    assert fake.messages("C1")[0].text == "ok" and fake.messages("C1")[0].edits == 0


async def test_text_over_40000_is_msg_too_long(fake: FakeSlack, bot: AsyncWebClient) -> None:
    assert (await bot.chat_postMessage(channel="C1", text="x" * 40_000))["ok"]
    error = await slack_error(bot.chat_postMessage(channel="C1", text="x" * 40_001))
    assert error.response["error"] == "msg_too_long"
    ts = fake.messages("C1")[0].ts
    error = await slack_error(bot.chat_update(channel="C1", ts=ts, text="x" * 40_001))
    assert error.response["error"] == "msg_too_long"


async def test_home_view_allows_100_blocks_not_101(fake: FakeSlack, bot: AsyncWebClient) -> None:
    await bot.views_publish(user_id="U1", view={"type": "home", "blocks": [section("x")] * 100})
    view = {"type": "home", "blocks": [section("x")] * 101}
    error = await slack_error(bot.views_publish(user_id="U1", view=view))
    assert error.response["error"] == "invalid_arguments"
    messages = error.response["response_metadata"]["messages"]
    assert "[ERROR] no more than 100 items allowed [json-pointer:/view/blocks]" in messages
    bad = {"type": "home", "blocks": [section("x" * 3001)]}
    error = await slack_error(bot.views_publish(user_id="U1", view=bad))
    assert any(
        "/view/blocks/0/text/text]" in m for m in error.response["response_metadata"]["messages"]
    )
    assert len(fake.home("U1")["blocks"]) == 100  # type: ignore[index]


# -- rate limits ----------------------------------------------------------------------------


async def test_post_message_is_limited_per_channel() -> None:
    async with FakeSlack(rate_limits={"chat.postMessage": (2, 5.0)}) as fake:
        bot = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)
        for _ in range(2):
            await bot.chat_postMessage(channel="C1", text="x")
        error = await slack_error(bot.chat_postMessage(channel="C1", text="x"))
        assert error.response.status_code == 429
        assert error.response["error"] == "ratelimited"
        assert int(error.response.headers["Retry-After"]) in (4, 5)
        assert (await bot.chat_postMessage(channel="C2", text="other channel"))["ok"]
        assert len(fake.messages("C1")) == 2 and fake.ratelimited["chat.postMessage"] == 1
        assert len(fake.calls_to("chat.postMessage")) == 3  # the 429 is not recorded


async def test_limit_frees_after_the_window() -> None:
    async with FakeSlack(rate_limits={"chat.update": (1, 0.3)}) as fake:
        bot = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)
        ts = (await bot.chat_postMessage(channel="C1", text="a"))["ts"]
        await bot.chat_update(channel="C1", ts=ts, text="b")
        error = await slack_error(bot.chat_update(channel="C2", ts=ts, text="c"))
        assert error.response.status_code == 429  # per method, whatever the channel
        assert error.response.headers["Retry-After"] == "1"  # at least 1
        await asyncio.sleep(0.35)
        await bot.chat_update(channel="C1", ts=ts, text="d")
        assert fake.messages("C1")[0].text == "d" and fake.messages("C1")[0].edits == 2


async def test_forced_ratelimit(fake: FakeSlack, bot: AsyncWebClient) -> None:
    fake.force_ratelimit("auth.test", times=2, retry_after=7)
    for _ in range(2):
        error = await slack_error(bot.auth_test())
        assert error.response.status_code == 429
        assert error.response.headers["Retry-After"] == "7"
    assert (await bot.auth_test())["ok"]
    assert fake.ratelimited["auth.test"] == 2 and len(fake.calls_to("auth.test")) == 1


async def test_sdk_retry_handler_retries_through_429(fake: FakeSlack) -> None:
    bot = AsyncWebClient(
        token=fake.bot_token,
        base_url=fake.base_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    fake.force_ratelimit("chat.postMessage", times=1, retry_after=1)
    started = time.monotonic()
    answer = await bot.chat_postMessage(channel="C1", text="eventually")
    assert answer["ok"] and time.monotonic() - started >= 1.0
    assert fake.ratelimited["chat.postMessage"] == 1
    assert [m.text for m in fake.messages("C1")] == ["eventually"]


# -- response_url ---------------------------------------------------------------------------


async def test_response_url_takes_five_posts(fake: FakeSlack) -> None:
    url = fake.new_response_url()
    rid = url.rsplit("/", 1)[1]
    assert url == f"http://127.0.0.1:{fake.port}/response/{rid}"
    webhook = AsyncWebhookClient(url)
    first = await webhook.send(text="one", response_type="ephemeral", replace_original=False)
    assert first.status_code == 200 and json.loads(first.body) == {"ok": True}
    for n in range(2, 6):
        assert (await webhook.send(text=str(n), blocks=[section(str(n))])).status_code == 200
    sixth = await webhook.send(text="six")
    assert sixth.status_code == 404 and json.loads(sixth.body)["error"] == "used_url"
    assert len(fake.responses[rid]) == 5
    assert fake.responses[rid][0] == {
        "text": "one",
        "response_type": "ephemeral",
        "replace_original": False,
    }
    assert fake.all_text(fake.responses[rid][1]) == "2\n2"


async def test_response_url_rejects_bad_payloads(fake: FakeSlack) -> None:
    url = fake.new_response_url()
    webhook = AsyncWebhookClient(url)
    assert (await webhook.send(blocks=[header("h" * 151)])).status_code == 400
    assert (await webhook.send(response_type="ephemeral")).status_code == 400  # no text
    assert fake.responses[url.rsplit("/", 1)[1]] == []
    unknown = await AsyncWebhookClient(f"http://127.0.0.1:{fake.port}/response/nope").send(text="x")
    assert unknown.status_code == 404


async def test_response_url_expires(fake: FakeSlack) -> None:
    fake.response_url_ttl = 0.05
    url = fake.new_response_url()
    await asyncio.sleep(0.1)
    late = await AsyncWebhookClient(url).send(text="late")
    assert late.status_code == 404 and json.loads(late.body)["error"] == "expired_url"


async def test_response_url_bound_to_a_message(fake: FakeSlack, bot: AsyncWebClient) -> None:
    ts = (await bot.chat_postMessage(channel="C1", text="approve?"))["ts"]
    replace = AsyncWebhookClient(fake.new_response_url("C1", ts))
    await replace.send(text="approved", replace_original=True)
    assert fake.messages("C1")[0].text == "approved" and fake.messages("C1")[0].edits == 1
    await AsyncWebhookClient(fake.new_response_url("C1", ts)).send(delete_original=True)
    assert fake.messages("C1") == []


# -- Socket Mode ----------------------------------------------------------------------------


async def open_socket(fake: FakeSlack, session: aiohttp.ClientSession) -> Any:
    app = AsyncWebClient(token=fake.app_token, base_url=fake.base_url)
    url = (await app.apps_connections_open(app_token=fake.app_token))["url"]
    return await session.ws_connect(url)


async def test_socket_mode_hello_and_acks(fake: FakeSlack) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await open_socket(fake, session)
        hello = await ws.receive_json(timeout=5)
        assert hello["type"] == "hello" and hello["num_connections"] == 1
        assert hello["connection_info"] == {"app_id": "A0001"} and "debug_info" in hello
        await fake.wait_socket_connected(timeout=1)

        async def client() -> dict[str, Any]:
            envelope: dict[str, Any] = await ws.receive_json(timeout=5)
            await ws.send_json({"envelope_id": envelope["envelope_id"], "payload": {"text": "ok"}})
            return envelope

        payload = slash_command("datacenters", response_url=fake.new_response_url())
        received, ack = await asyncio.gather(
            client(),
            fake.socket_send("slash_commands", payload, accepts_response_payload=True),
        )
        assert received["type"] == "slash_commands" and received["payload"] == payload
        assert received["accepts_response_payload"] is True
        assert (received["retry_attempt"], received["retry_reason"]) == (0, "")
        assert ack == {"envelope_id": received["envelope_id"], "payload": {"text": "ok"}}
        assert fake.socket_acks == [ack]

        event = event_callback(app_mention("<@UBOT> hi"))
        sent = asyncio.create_task(
            fake.socket_send("events_api", event, retry_attempt=1, retry_reason="timeout")
        )
        envelope = await ws.receive_json(timeout=5)
        assert (envelope["retry_attempt"], envelope["retry_reason"]) == (1, "timeout")
        await ws.send_json({"envelope_id": envelope["envelope_id"]})
        assert (await sent) == {"envelope_id": envelope["envelope_id"]}

        await fake.socket_disconnect()
        assert (await ws.receive_json(timeout=5))["type"] == "disconnect"
        await ws.close()


async def test_socket_tickets_are_checked_and_single_use(fake: FakeSlack) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(f"ws://127.0.0.1:{fake.port}/socket?ticket=forged")
        app = AsyncWebClient(token=fake.app_token, base_url=fake.base_url)
        url = (await app.apps_connections_open(app_token=fake.app_token))["url"]
        ws = await session.ws_connect(url)
        await ws.close()
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(url)


async def test_unacked_envelope_fails_the_test(fake: FakeSlack, monkeypatch: Any) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await open_socket(fake, session)
        await ws.receive_json(timeout=5)
        real_wait_for = asyncio.wait_for

        async def quick(awaitable: Any, timeout: float | None) -> Any:
            return await real_wait_for(awaitable, 0.1)

        monkeypatch.setattr("tests.fakes.slack.asyncio.wait_for", quick)
        with pytest.raises(AssertionError, match="no ack"):
            await fake.socket_send("events_api", event_callback(app_home_opened()))
        await ws.close()


# -- recording helpers ----------------------------------------------------------------------


async def test_wait_for_returns_the_value_or_explains(fake: FakeSlack, bot: AsyncWebClient) -> None:
    async def later() -> None:
        await asyncio.sleep(0.05)
        await bot.chat_postMessage(channel="C1", text="hello")

    task = asyncio.create_task(later())
    messages = await fake.wait_for(lambda: fake.messages("C1"), timeout=2)
    assert messages[0].text == "hello"
    await task
    await slack_error(bot.chat_postMessage(channel="C404", text="lost"))
    with pytest.raises(AssertionError) as raised:
        await fake.wait_for(lambda: fake.messages("C2"), timeout=0.05)
    assert "chat.postMessage -> channel_not_found" in str(raised.value)


async def test_all_text_reaches_into_blocks(fake: FakeSlack, bot: AsyncWebClient) -> None:
    blocks = [header("Deploy"), fields(1), actions(button(label="Approve"))]
    await bot.chat_postMessage(channel="C1", text="fallback", blocks=blocks)
    text = fake.all_text(fake.messages("C1")[0]).split("\n")
    assert text == ["fallback", "Deploy", "xxxxx", "Approve"]
    assert fake.all_text(fake.calls_to("chat.postMessage")[0]) == "\n".join(text)


# -- what Slack sends to the bot ------------------------------------------------------------

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def test_signatures_verify_with_slack_sdk() -> None:
    body = encode_form(slash_command("deploy", response_url="http://x/response/1"))
    headers = sign(SECRET, body)
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    assert verifier.is_valid_request(body, headers)
    assert not SignatureVerifier("other-secret").is_valid_request(body, headers)
    assert not verifier.is_valid_request(body + b"x", headers)
    stale = sign(SECRET, body, timestamp=int(time.time()) - 6 * 60)
    assert not verifier.is_valid_request(body, stale)  # Slack's 5 minute window


def test_known_signature() -> None:
    # Slack's documented example: this secret, timestamp and body give this signature
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
        b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
        b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
        b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = sign(SECRET, body, timestamp=1531420618)
    assert headers == {
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
    }


def test_payload_shapes() -> None:
    fields_ = slash_command("status", response_url="http://r/1", user_id="U2", user_name="bob")
    assert set(fields_) == {
        "token", "team_id", "team_domain", "channel_id", "channel_name", "user_id",
        "user_name", "command", "text", "api_app_id", "is_enterprise_install",
        "response_url", "trigger_id",
    }  # fmt: skip
    assert parse_qs(encode_form(fields_).decode())["command"] == ["/nelson"]
    click = block_action("approve", "42", message_ts="1.000001", response_url="http://r/2")
    decoded = json.loads(parse_qs(encode_interactive(click).decode())["payload"][0])
    assert decoded == click and decoded["type"] == "block_actions"
    assert decoded["container"] == {
        "type": "message",
        "message_ts": "1.000001",
        "channel_id": "C1",
        "is_ephemeral": False,
    }
    assert (
        decoded["actions"][0]["action_id"] == "approve" and decoded["actions"][0]["value"] == "42"
    )
    envelope = event_callback(direct_message("whoami", user="U2"))
    assert json.loads(encode_event(envelope)) == envelope
    assert envelope["type"] == "event_callback" and envelope["event_id"].startswith("Ev")
    assert envelope["authorizations"][0]["user_id"] == "UBOT"
    assert envelope["event"]["channel_type"] == "im" and envelope["event"]["channel"] == "D1"
    assert event_callback(app_home_opened("U3"))["event"]["user"] == "U3"
    assert event_callback(app_mention("x"), event_id="Ev1")["event_id"] == "Ev1"
    assert retry_headers(2) == {"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_timeout"}


async def test_post_signed_is_accepted_by_a_verifying_server() -> None:
    verifier, seen = SignatureVerifier(SECRET), []

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        if not verifier.is_valid_request(body, dict(request.headers)):
            return web.Response(status=401)
        seen.append((request.headers.get("X-Slack-Retry-Num"), request.content_type))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/slack/events", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    try:
        async with aiohttp.ClientSession() as session:
            body = encode_event(event_callback(app_mention("<@UBOT> hi")))
            answer = await post_signed(
                session, url, body, "application/json", SECRET, extra_headers=retry_headers(1)
            )
            assert (answer.status, answer.json()) == (200, {"ok": True})
            form = encode_form(slash_command("hi", response_url="http://r/1"))
            forged = await post_signed(
                session, url, form, "application/x-www-form-urlencoded", "wrong-secret"
            )
            assert forged.status == 401
            stale = await post_signed(
                session, url, form, "application/x-www-form-urlencoded", SECRET,
                timestamp=int(time.time()) - 600,
            )  # fmt: skip
            assert stale.status == 401
    finally:
        await runner.cleanup()
    assert seen == [("1", "application/json")]


# -- files: the external upload flow ------------------------------------------------------------


async def test_files_upload_v2_shares_a_file_in_a_thread(
    fake: FakeSlack, bot: AsyncWebClient
) -> None:
    parent = await bot.chat_postMessage(channel="C1", text="graph")
    content = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    result = await bot.files_upload_v2(
        channel="C1",
        thread_ts=parent["ts"],
        file=content,
        filename="graph.png",
        title="Dependency graph",
        alt_txt="two boxes",
        initial_comment="the picture",
    )
    assert result["file"]["name"] == "graph.png" and result["file"]["size"] == len(content)
    [uploaded] = fake.uploaded_files("C1")
    assert uploaded.content == content and uploaded.title == "Dependency graph"
    assert (uploaded.alt_txt, uploaded.thread_ts) == ("two boxes", parent["ts"])
    [reply] = fake.thread("C1", parent["ts"])
    assert reply.text == "the picture" and reply.files == [uploaded]
    assert fake.uploaded_files("C2") == []


async def test_file_upload_errors(fake: FakeSlack, bot: AsyncWebClient) -> None:
    stranger = AsyncWebClient(token="xoxb-wrong", base_url=fake.base_url)
    with pytest.raises(SlackApiError) as caught:
        await stranger.files_getUploadURLExternal(filename="a.png", length=3)
    assert caught.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as caught:
        await bot.api_call("files.getUploadURLExternal", params={"filename": "a.png"})
    assert caught.value.response["error"] == "invalid_arguments"
    asked = await bot.files_getUploadURLExternal(filename="a.png", length=3)
    files = [{"id": asked["file_id"], "title": "a"}]
    with pytest.raises(SlackApiError) as caught:  # the bytes never reached the upload URL
        await bot.files_completeUploadExternal(files=files, channel_id="C1")
    assert caught.value.response["error"] == "file_not_found"
    async with (
        aiohttp.ClientSession() as session,
        session.post(asked["upload_url"], data=b"four") as response,
    ):
        assert response.status == 200 and (await response.text()) == "OK - 4"
    with pytest.raises(SlackApiError) as caught:
        await bot.files_completeUploadExternal(files=files, channel_id="C1")
    assert caught.value.response["error"] == "file_upload_size_mismatch"
    with pytest.raises(SlackApiError) as caught:
        await bot.files_completeUploadExternal(files=[{"id": "FNOPE"}], channel_id="C1")
    assert caught.value.response["error"] == "file_not_found"
    with pytest.raises(SlackApiError) as caught:
        await bot.files_upload_v2(channel="CNOPE", content="x", filename="x.txt")
    assert caught.value.response["error"] == "channel_not_found"


async def test_upload_url_arguments(bot: AsyncWebClient) -> None:
    missing = await slack_error(bot.api_call("files.getUploadURLExternal", params={"length": 3}))
    assert missing.response["error"] == "invalid_arguments"
    assert missing.response["response_metadata"]["messages"] == [
        "[ERROR] missing required field: filename"
    ]
    for length in ("-3", "2.5", "many", "²"):
        params = {"filename": "a.txt", "length": length}
        error = await slack_error(bot.api_call("files.getUploadURLExternal", params=params))
        assert error.response["error"] == "invalid_arguments", length
    empty = await slack_error(bot.files_getUploadURLExternal(filename="a.txt", length=0))
    assert empty.response["error"] == "missing_argument"  # Slack's documented answer to 0
    wordy = bot.files_getUploadURLExternal(filename="a.png", length=3, alt_txt="x" * 1001)
    assert (await slack_error(wordy)).response["error"] == "alt_txt_too_large"


async def test_file_shared_under_a_reply_goes_to_its_thread(
    fake: FakeSlack, bot: AsyncWebClient
) -> None:
    parent = await bot.chat_postMessage(channel="C1", text="graph")
    reply = await bot.chat_postMessage(channel="C1", text="here", thread_ts=parent["ts"])
    await bot.files_upload_v2(
        channel="C1", thread_ts=reply["ts"], content="a -> b", filename="g.txt"
    )
    [_, shared] = fake.thread("C1", parent["ts"])
    [uploaded] = shared.files
    assert (uploaded.content, uploaded.title) == (b"a -> b", "g.txt")
    assert uploaded.thread_ts == parent["ts"]


async def test_failed_completion_changes_nothing_and_can_be_retried(
    fake: FakeSlack, bot: AsyncWebClient
) -> None:
    asked = await bot.files_getUploadURLExternal(filename="a.txt", length=3)
    form = aiohttp.FormData()  # multipart, with a field ahead of the file part
    form.add_field("note", "not the file")
    form.add_field("file", b"abc", filename="a.txt")
    async with aiohttp.ClientSession() as session:
        async with session.post(asked["upload_url"], data=form) as response:
            assert (await response.text()) == "OK - 3"
        files = [{"id": asked["file_id"], "title": "first try"}]
        failed = bot.files_completeUploadExternal(files=files, channel_id="CNOPE")
        assert (await slack_error(failed)).response["error"] == "channel_not_found"
        assert fake.files[asked["file_id"]].title == "" and fake.uploaded_files() == []
        await bot.files_completeUploadExternal(files=[{"id": asked["file_id"]}], channel_id="C2")
        [uploaded] = fake.uploaded_files("C2")
        assert (uploaded.content, uploaded.title) == (b"abc", "a.txt")
        assert fake.messages("C2")[0].files == [uploaded]
        async with session.post(asked["upload_url"], data=b"abc") as late:
            assert late.status == 404  # the upload URL is spent once the file is completed
        again = bot.files_completeUploadExternal(files=files, channel_id="C2")
        assert (await slack_error(again)).response["error"] == "file_not_found"


MODAL: dict[str, Any] = {
    "type": "modal",
    "callback_id": "confirm",
    "private_metadata": '{"id": 1}',
    "title": {"type": "plain_text", "text": "Reject #1?"},
    "submit": {"type": "plain_text", "text": "Reject"},
    "close": {"type": "plain_text", "text": "Cancel"},
    "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*shift* 1.0.0 to 1.0.1"}},
        {
            "type": "input",
            "block_id": "reason",
            "label": {"type": "plain_text", "text": "Why"},
            "element": {"type": "plain_text_input", "action_id": "text"},
        },
    ],
}


async def test_views_open_exchanges_a_fresh_trigger_once(
    bot: AsyncWebClient, fake: FakeSlack
) -> None:
    trigger = fake.issue_trigger("U2")
    answer = await bot.views_open(trigger_id=trigger, view=MODAL)
    view = answer["view"]
    assert view["id"].startswith("V") and view["callback_id"] == "confirm"
    assert view["state"] == {"values": {}} and view["private_metadata"] == '{"id": 1}'
    shown = fake.modal("U2")
    assert shown is not None and shown["id"] == view["id"]
    for trigger_id, error in (
        (trigger, "exchanged_trigger_id"),
        ("123.456.abc", "invalid_trigger_id"),
    ):
        with pytest.raises(SlackApiError) as raised:
            await bot.views_open(trigger_id=trigger_id, view=MODAL)
        assert raised.value.response["error"] == error
    fake.trigger_ttl = 0.0
    late = fake.issue_trigger("U2")
    await asyncio.sleep(0.01)
    with pytest.raises(SlackApiError) as raised:
        await bot.views_open(trigger_id=late, view=MODAL)
    assert raised.value.response["error"] == "expired_trigger_id"


async def test_views_open_validates_the_modal(bot: AsyncWebClient, fake: FakeSlack) -> None:
    broken = [
        {**MODAL, "type": "home"},
        {**MODAL, "title": {"type": "plain_text", "text": "a title far longer than allowed"}},
        {k: v for k, v in MODAL.items() if k != "submit"},  # an input needs a submit button
        {**MODAL, "private_metadata": "x" * 3001},
        {**MODAL, "blocks": [{"type": "nonsense"}]},
    ]
    for view in broken:
        with pytest.raises(SlackApiError) as raised:
            await bot.views_open(trigger_id=fake.issue_trigger("U1"), view=view)
        assert raised.value.response["error"] == "invalid_arguments"
        assert raised.value.response["response_metadata"]["messages"]
    assert fake.views == []


def test_view_submission_carries_the_view_and_what_was_typed(fake: FakeSlack) -> None:
    from tests.fakes.slack_requests import view_submission

    opened = {**MODAL, "id": "V1", "user_id": "U2", "state": {"values": {}}}
    payload = view_submission(opened, user_id="U2", values={"reason": {"text": "too risky"}})
    assert payload["type"] == "view_submission" and payload["user"]["id"] == "U2"
    assert payload["view"]["callback_id"] == "confirm" and "user_id" not in payload["view"]
    typed = payload["view"]["state"]["values"]["reason"]["text"]
    assert typed == {"type": "plain_text_input", "value": "too risky"}
