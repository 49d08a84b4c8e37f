"""The API against its own OpenAPI document, with requests schemathesis generates from it:
valid and invalid bodies, query strings and paths, with the CI's token and with made-up ones.
Whatever arrives, the answer is documented for that operation and status, matches its
schema, and is never a 5xx."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from commands.access import Principal
from tests.e2e.slack_harness import RunningBot, settings_for, start_bot
from tests.e2e.test_api import TOKEN
from tests.fakes.slack import FakeSlack
from tests.openapi_check import DOCUMENT, check_response

SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = [
    (path, method.upper())
    for path, methods in DOCUMENT["paths"].items()
    for method in methods
    if path != "/v1/openapi.json"
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The bot (scripted deploys) on a loop of its own: schemathesis calls synchronously."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(60)

    fake = FakeSlack()
    run(fake.__aenter__())
    tmp: Path = tmp_path_factory.mktemp("schema")
    bot: RunningBot = run(start_bot(settings_for(fake, tmp, access={"admins": ["U9"]})))
    answer = run(bot.application.conversation.answer("token create ci for dev", Principal("U9")))
    token = TOKEN.search(repr(answer.reply))
    assert token is not None
    try:
        yield bot.url, token.group(0)
    finally:
        run(bot.shutdown())
        run(fake.__aexit__(None, None, None))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def answered(response: Any, path: str, method: str) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    # schemathesis keeps headers lowercased, each a list of values
    headers = {k.lower(): v for k, v in response.headers.items()}
    (content_type,) = headers["content-type"]
    check_response(path, method, response.status_code, content_type, response.json())


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_is_documented_and_never_a_server_error(
    server: tuple[str, str], path: str, method: str, mode: GenerationMode
) -> None:
    url, token = server

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=SCHEMA[path][method].as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        answered(
            case.call(base_url=url, headers={"Authorization": f"Bearer {token}"}), path, method
        )
        # and with the made-up credentials schemathesis chose
        answered(case.call(base_url=url), path, method)

    check()
