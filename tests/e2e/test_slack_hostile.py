"""Hostile requests against the running bot in HTTP mode: malformed signatures, timestamps,
bodies and payload shapes, clicks on buttons it does not know or with ids no record has.
Each must be answered below 500, and nothing the outside sent may put a traceback in the
log. Requests go over a raw socket so that headers and bodies can be anything at all."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from bot.slack.cleanup import KEEP_ACTION, REMOVE_ACTION
from bot.slack.messages import (
    APPROVE_ACTION,
    PAUSE_ACTION,
    REJECT_ACTION,
    RESUME_ACTION,
    REVERSE_ACTION,
)
from tests.e2e.slack_harness import SIGNING_SECRET, RunningBot, settings_for, start_bot
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_requests import (
    app_mention,
    block_action,
    encode_event,
    encode_form,
    encode_interactive,
    event_callback,
    sign,
    slash_command,
)

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
HUGE = "99999999999999999999"  # beyond 64 bits


@pytest.fixture
async def bot(
    fake: FakeSlack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[RunningBot]:
    caplog.set_level(logging.INFO)
    running = await start_bot(settings_for(fake, tmp_path))
    yield running
    await running.shutdown()
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    assert "Traceback" not in caplog.text


async def raw_post(bot: RunningBot, body: bytes, headers: Mapping[str, bytes | str]) -> int:
    """POST /slack/events with exactly these bytes; the response's status."""
    where = urlsplit(bot.url)
    assert where.hostname is not None and where.port is not None
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    lines = [b"POST /slack/events HTTP/1.1", f"Host: {where.netloc}".encode()]
    for name, value in {**headers, "Content-Length": str(len(body))}.items():
        lines.append(
            name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
        )
    writer.write(b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n" + body)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return int(status_line.split()[1])


def signed(body: bytes, content_type: str = FORM) -> dict[str, bytes | str]:
    return {**sign(SIGNING_SECRET, body), "Content-Type": content_type}


def with_payload(raw_json: str) -> bytes:
    return b"payload=" + quote(raw_json).encode()


def click(action_id: str, value: str, **changes: Any) -> bytes:
    payload = block_action(
        action_id, value, message_ts="1700000000.000001", response_url="http://127.0.0.1:9/"
    )
    payload.update(changes)
    return encode_interactive(payload)


NOW = str(int(time.time()))
DEEP = "[" * 100_000 + "]" * 100_000

UNSIGNED: list[tuple[str, dict[str, bytes | str], bytes]] = [
    ("timestamp abc", {"X-Slack-Request-Timestamp": "abc", "X-Slack-Signature": "v0=00"}, b"a=b"),
    ("timestamp empty", {"X-Slack-Request-Timestamp": "", "X-Slack-Signature": "v0=00"}, b"a=b"),
    ("timestamp 1e9", {"X-Slack-Request-Timestamp": "1e9", "X-Slack-Signature": "v0=00"}, b"a=b"),
    (
        "timestamp with a fraction",
        {"X-Slack-Request-Timestamp": NOW + ".5", "X-Slack-Signature": "v0=00"},
        b"a=b",
    ),
    ("timestamp of 5,000 digits", {"X-Slack-Request-Timestamp": "9" * 5000}, b"a=b"),
    (
        "signature with non-ASCII bytes",
        {"X-Slack-Request-Timestamp": NOW, "X-Slack-Signature": b"v0=\xff\xfe\xc3("},
        b"a=b",
    ),
    ("no signature at all", {}, b"a=b"),
    (
        "wrong signature",
        {"X-Slack-Request-Timestamp": NOW, "X-Slack-Signature": "v0=" + "0" * 64},
        b"a=b",
    ),
    ("text=\\xff", {"X-Slack-Request-Timestamp": NOW}, b"text=\xff"),
    ("{not json", {"X-Slack-Request-Timestamp": NOW, "Content-Type": JSON}, b"{not json"),
    ("payload=[]", {"X-Slack-Request-Timestamp": NOW}, b"payload=[]"),
    ("[1,2]", {"X-Slack-Request-Timestamp": NOW, "Content-Type": JSON}, b"[1,2]"),
    ("deep payload", {"X-Slack-Request-Timestamp": NOW}, with_payload(DEEP)),
]


@pytest.mark.parametrize("name,headers,body", UNSIGNED, ids=[c[0] for c in UNSIGNED])
async def test_unsigned_requests_are_refused(
    bot: RunningBot,
    fake: FakeSlack,
    caplog: pytest.LogCaptureFixture,
    name: str,
    headers: dict[str, bytes | str],
    body: bytes,
) -> None:
    headers = {"Content-Type": FORM, "X-Slack-Signature": "v0=" + "1" * 64, **headers}
    status = await raw_post(bot, body, headers)
    assert status in (400, 401, 431), name  # 400/431: aiohttp refuses an oversized header
    refused = [r for r in caplog.records if r.getMessage().startswith("refused a request")]
    assert status != 401 or len(refused) == 1
    assert not fake.calls_to("chat.postMessage") and not fake.calls_to("chat.postEphemeral")


def _event(event: Any) -> bytes:
    envelope = event_callback({"type": "app_mention", "text": "hi", "user": "U1"})
    envelope["event"] = event
    return encode_event(envelope)


SIGNED_MALFORMED: list[tuple[str, bytes, str]] = [
    ("payload=null", with_payload("null"), FORM),
    ("payload=1", with_payload("1"), FORM),
    ('payload="x"', with_payload('"x"'), FORM),
    ("payload=[]", with_payload("[]"), FORM),
    ("[1,2] as JSON", b"[1,2]", JSON),
    ("{not json", b"{not json", JSON),
    ("deep JSON", DEEP.encode(), JSON),
    ("deep payload", with_payload(DEEP), FORM),
    ("event is a string", _event("boo"), JSON),
    ("event is a list", _event([1, 2]), JSON),
    ("event user is a list", _event({"type": "app_mention", "user": ["U1"], "text": "x"}), JSON),
    ("actions []", click(APPROVE_ACTION, "1", actions=[]), FORM),
    ("actions a string", click(APPROVE_ACTION, "1", actions="approve"), FORM),
    ("action without id", click(APPROVE_ACTION, "1", actions=[{"value": "1"}]), FORM),
    (
        "action value a list",
        click(APPROVE_ACTION, "1", actions=[{"action_id": APPROVE_ACTION, "value": [1]}]),
        FORM,
    ),
    ("user a string", click(APPROVE_ACTION, "1", user="U1"), FORM),
    ("container a string", click(APPROVE_ACTION, "1", container="C1"), FORM),
    ("message a list", click(APPROVE_ACTION, "1", message=[1]), FORM),
    ("type a number", click(APPROVE_ACTION, "1", type=7), FORM),
    ("enterprise a number", click(APPROVE_ACTION, "1", enterprise=5), FORM),
    ("team a number", click(APPROVE_ACTION, "1", team=7), FORM),
    (
        "authorizations a number",
        encode_event(
            {**event_callback({"type": "app_mention", "user": "U1"}), "authorizations": 3}
        ),
        JSON,
    ),
    ("non-UTF-8 text", b"command=%2Fnelson&text=\xff\xfe&user_id=U1", FORM),
    ("non-UTF-8 escaped text", b"command=%2Fnelson&text=%ff%fe&user_id=U1", FORM),
    ("duplicate payload", with_payload("{}") + b"&" + with_payload('{"type": "x"}'), FORM),
    ("empty body", b"", FORM),
]


@pytest.mark.parametrize(
    "name,body,content_type", SIGNED_MALFORMED, ids=[c[0] for c in SIGNED_MALFORMED]
)
async def test_signed_but_malformed_requests_are_400(
    bot: RunningBot, fake: FakeSlack, name: str, body: bytes, content_type: str
) -> None:
    status = await raw_post(bot, body, signed(body, content_type))
    assert status == 400, name
    assert not fake.calls_to("chat.postMessage")


async def test_a_bogus_charset_is_400(bot: RunningBot) -> None:
    body = encode_form(slash_command("whoami", response_url="http://127.0.0.1:9/r"))
    assert await raw_post(bot, body, signed(body, FORM + "; charset=bogus")) == 400


async def test_bolts_internal_headers_are_not_taken_from_outside(
    bot: RunningBot, fake: FakeSlack
) -> None:
    """`X-Slack-Bolt-Lazy-Only` would make Bolt skip the listener (and its ack)."""
    url = fake.new_response_url()
    body = encode_form(slash_command("whoami", response_url=url))
    headers = {**signed(body), "X-Slack-Bolt-Lazy-Only": "1"}
    assert await raw_post(bot, body, headers) == 200
    await fake.wait_for(lambda: fake.responses.get(url.rsplit("/", 1)[1]))


async def test_a_command_mentioning_payload_is_still_a_command(
    bot: RunningBot, fake: FakeSlack
) -> None:
    url = fake.new_response_url()
    body = encode_form(slash_command("lint payload", response_url=url))
    assert await raw_post(bot, body, signed(body)) == 200
    rid = url.rsplit("/", 1)[1]
    await fake.wait_for(lambda: fake.responses.get(rid))


@pytest.mark.parametrize(
    "action,answer",
    [
        (APPROVE_ACTION, "no such approval"),
        (REJECT_ACTION, "no such approval"),
        (PAUSE_ACTION, "no such traffic shift"),
        (RESUME_ACTION, "no such traffic shift"),
        (REVERSE_ACTION, "no such traffic shift"),
        (KEEP_ACTION, "no such stack"),
        (REMOVE_ACTION, "no such stack"),
    ],
)
async def test_button_ids_beyond_64_bits_name_no_record(
    bot: RunningBot, fake: FakeSlack, action: str, answer: str
) -> None:
    body = click(action, HUGE)
    assert await raw_post(bot, body, signed(body)) == 200
    told = await fake.wait_for(lambda: fake.calls_to("chat.postEphemeral"))
    assert answer in FakeSlack.all_text(told[0].params)


async def test_unknown_and_stale_buttons_are_acknowledged_and_explained(
    bot: RunningBot, fake: FakeSlack
) -> None:
    body = click("deploy.retry.v0", "12")
    started = time.monotonic()
    assert await raw_post(bot, body, signed(body)) == 200
    assert time.monotonic() - started < 2.5  # the ack, not Bolt's 3-second give-up
    told = await fake.wait_for(lambda: fake.calls_to("chat.postEphemeral"))
    assert "no longer active" in FakeSlack.all_text(told[0].params)


async def test_events_no_listener_handles_are_acknowledged(bot: RunningBot) -> None:
    body = encode_event(event_callback({"type": "reaction_added", "user": "U1"}))
    assert await raw_post(bot, body, signed(body, JSON)) == 200


async def test_a_stale_timestamp_is_still_refused_by_bolt(bot: RunningBot) -> None:
    body = b"a=b"
    headers = {**sign(SIGNING_SECRET, body, int(time.time()) - 600), "Content-Type": FORM}
    assert await raw_post(bot, body, headers) == 401


async def test_after_all_that_the_bot_still_answers(bot: RunningBot, fake: FakeSlack) -> None:
    for _, headers, body in UNSIGNED:
        await raw_post(bot, body, {"Content-Type": FORM, **headers})
    for _, body, content_type in SIGNED_MALFORMED:
        await raw_post(bot, body, signed(body, content_type))
    url = fake.new_response_url()
    body = encode_form(slash_command("whoami", response_url=url))
    assert await raw_post(bot, body, signed(body)) == 200
    rid = url.rsplit("/", 1)[1]
    answer = await fake.wait_for(lambda: fake.responses.get(rid))
    assert "U1" in FakeSlack.all_text(answer[0])


async def test_starting_logs_no_warning_about_an_unused_token(
    fake: FakeSlack,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bolt reads SLACK_BOT_TOKEN from the environment, where deployments put it."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", fake.bot_token)
    caplog.set_level(logging.INFO)
    running = await start_bot(settings_for(fake, tmp_path))
    try:
        url = fake.new_response_url()
        body = encode_form(slash_command("whoami", response_url=url))
        assert await raw_post(running, body, signed(body)) == 200
        await fake.wait_for(lambda: fake.responses.get(url.rsplit("/", 1)[1]))
    finally:
        await running.shutdown()
    assert "unused" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_socket_mode_acknowledges_unknown_and_misshapen_clicks(
    fake: FakeSlack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    running = await start_bot(settings_for(fake, tmp_path, socket_mode=True))
    try:
        await fake.wait_socket_connected()
        old = block_action(
            "deploy.retry.v0", "12", message_ts="1700000000.000001", response_url=fake.base_url
        )
        assert (await fake.socket_send("interactive", old))["envelope_id"]
        told = await fake.wait_for(lambda: fake.ephemerals)
        assert "no longer active" in told[0].text
        for changes in ({"user": "U1"}, {"container": "C1", "message": [1]}):
            shaped = block_action(
                APPROVE_ACTION, HUGE, message_ts="1700000000.000001", response_url=fake.base_url
            )
            shaped.update(changes)
            assert (await fake.socket_send("interactive", shaped))["envelope_id"]
        event = event_callback({"type": "app_mention", "user": ["U1"], "text": 7, "ts": 1})
        assert (await fake.socket_send("events_api", event))["envelope_id"]
        # what each of them led to: a refusal where the clicker is known, a warning where not
        await fake.wait_for(lambda: len(fake.ephemerals) >= 2)
        assert "no such approval" in fake.ephemerals[1].text
        await fake.wait_for(lambda: sum("could not" in r.getMessage() for r in caplog.records) >= 2)
    finally:
        await running.shutdown()
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert not tracebacks and "Traceback" not in caplog.text


def _scramble(rng: random.Random, data: Any, depth: int = 0) -> Any:
    """`data` with a few values swapped for values of other kinds."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for key in rng.sample(sorted(out), k=min(len(out), rng.randint(1, 3))):
        if isinstance(out[key], dict) and depth < 2 and rng.random() < 0.5:
            out[key] = _scramble(rng, out[key], depth + 1)
        else:
            out[key] = rng.choice(ODD_VALUES)
    return out


ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    10**20,
    "",
    "x",
    "U1",
    "C1",
    [],
    [1, "a"],
    {},
    {"id": 7},
    "<!channel>",
]


async def test_scrambled_requests_are_never_a_5xx(bot: RunningBot, fake: FakeSlack) -> None:
    """Slack's own request shapes with values of the wrong kind put anywhere (a fixed seed,
    so a failure replays)."""
    rng = random.Random(12)
    statuses: dict[int, int] = {}
    for _ in range(300):
        kind = rng.choice(("click", "event", "command"))
        if kind == "click":
            action = rng.choice((APPROVE_ACTION, PAUSE_ACTION, KEEP_ACTION, "gone.button"))
            body = encode_interactive(
                _scramble(
                    rng,
                    block_action(
                        action, "1", message_ts="1700000000.000001", response_url=fake.base_url
                    ),
                )
            )
            content_type = FORM
        elif kind == "event":
            body = encode_event(_scramble(rng, event_callback(app_mention("<@UBOT> whoami"))))
            content_type = JSON
        else:
            fields = slash_command("whoami", response_url=fake.new_response_url())
            for key in rng.sample(sorted(fields), k=2):
                fields[key] = rng.choice(("", "%ff", "x" * 300, "U1"))
            body, content_type = encode_form(fields), FORM
        status = await raw_post(bot, body, signed(body, content_type))
        statuses[status] = statuses.get(status, 0) + 1
    assert all(status < 500 for status in statuses), statuses
    assert statuses.get(200, 0) > 0 and statuses.get(400, 0) > 0, statuses


async def test_url_verification_still_answers_its_challenge(bot: RunningBot) -> None:
    body = json.dumps({"type": "url_verification", "challenge": "c-123", "token": "t"}).encode()
    status, text = await bot.post(body, JSON)
    assert status == 200 and "c-123" in text


async def test_a_button_answers_as_its_text_twin_does(bot: RunningBot, fake: FakeSlack) -> None:
    # The Pause button runs the `pause` command: where no datacenter routes traffic, the
    # click is told what the command tells.
    body = click(PAUSE_ACTION, "7")
    assert await raw_post(bot, body, signed(body)) == 200
    told = await fake.wait_for(lambda: fake.calls_to("chat.postEphemeral"))
    assert "No datacenter routes traffic in this setup." in FakeSlack.all_text(told[0].params)
