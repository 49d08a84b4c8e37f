"""The bot's PostgreSQL server stops while the bot serves Slack, then comes back.

While it is down every kind of request is acknowledged and answered honestly (the database is
unreachable, try again), `/healthz` says 503 without naming the server, and the background
jobs log one warning instead of a traceback per run. When it is back, everything works again
without a restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bot.outage import UNREACHABLE
from bot.slack.messages import APPROVE_ACTION
from tests.e2e.slack_harness import RunningBot, settings_for, start_bot
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_requests import (
    app_home_opened,
    app_mention,
    block_action,
    direct_message,
    encode_event,
    encode_form,
    encode_interactive,
    event_callback,
    slash_command,
)
from tests.pgserver import PostgresServer, PostgresUnavailable, fresh_database, own_postgres_server

pytestmark = pytest.mark.postgres

FORM = "application/x-www-form-urlencoded"
UNREACHABLE_WORDS = "cannot reach my database"


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    try:
        with own_postgres_server() as running:
            yield running
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))  # never skip silently


async def slash(bot: RunningBot, fake: FakeSlack, text: str) -> dict[str, object]:
    url = fake.new_response_url()
    status, _ = await bot.post(encode_form(slash_command(text, response_url=url)), FORM)
    assert status == 200
    rid = url.rsplit("/", 1)[1]
    answers = await fake.wait_for(lambda: fake.responses.get(rid))
    answer: dict[str, object] = answers[0]
    return answer


async def health(bot: RunningBot) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{bot.url}/healthz") as response,
    ):
        return response.status, await response.text()


async def test_a_database_outage_is_told_honestly_and_recovered_from(
    fake: FakeSlack,
    tmp_path: Path,
    server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    url = fresh_database(server.url)
    bot = await start_bot(settings_for(fake, tmp_path, database_url=url))
    try:
        answer = await slash(bot, fake, "stacks")
        assert UNREACHABLE_WORDS not in FakeSlack.all_text(answer)
        assert (await health(bot))[0] == 200

        await asyncio.to_thread(server.stop)

        status, text = await health(bot)
        assert status == 503 and "unreachable" in text
        port = url.rsplit(":", 1)[1].split("/")[0]
        assert port not in text and "127.0.0.1" not in text

        answer = await slash(bot, fake, "stacks")
        assert answer["response_type"] == "ephemeral"
        assert UNREACHABLE_WORDS in FakeSlack.all_text(answer)

        mention = event_callback(app_mention("<@UBOT> stacks"))
        assert (await bot.post(encode_event(mention), "application/json"))[0] == 200
        told = await fake.wait_for(lambda: fake.ephemerals)
        assert UNREACHABLE_WORDS in told[0].text

        dm = event_callback(direct_message("stacks"))
        assert (await bot.post(encode_event(dm), "application/json"))[0] == 200
        posted = await fake.wait_for(lambda: fake.messages("D1"))
        assert UNREACHABLE_WORDS in posted[0].text

        click = block_action(
            APPROVE_ACTION, "1", message_ts="1700000000.000001", response_url=fake.base_url
        )
        assert (await bot.post(encode_interactive(click), FORM))[0] == 200
        await fake.wait_for(lambda: len(fake.ephemerals) >= 2)
        assert fake.ephemerals[1].text == UNREACHABLE

        home = event_callback(app_home_opened("U1"))
        assert (await bot.post(encode_event(home), "application/json"))[0] == 200

        # the approvals sweep runs every 0.2 s: several runs fail while down, one warning
        await fake.wait_for(
            lambda: any("database is unreachable" in r.getMessage() for r in job_records(caplog)),
            timeout=10,
        )
        await asyncio.sleep(2)
        warnings = [r for r in job_records(caplog) if "unreachable" in r.getMessage()]
        assert len(warnings) == 1

        await asyncio.to_thread(server.start)

        await fake.wait_for(
            lambda: any("reachable again" in r.getMessage() for r in job_records(caplog)),
            timeout=20,
        )
        answer = await slash(bot, fake, "stacks")
        assert UNREACHABLE_WORDS not in FakeSlack.all_text(answer)
        assert answer["response_type"] == "in_channel"
        assert (await health(bot))[0] == 200
    finally:
        await bot.shutdown()
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert not tracebacks
    assert "Traceback" not in caplog.text


def job_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "nelson.jobs"]
