"""The HTTP API for CI on the running bot (the scripted deploy engine; test_ci.py runs real
deploys): a token made in Slack, shown once and only to its creator, then used from outside
as CI would. Every answer is checked against the OpenAPI document; refusals are problems."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.bootstrap import build
from bot.slack.serve import serve_headless
from commands.access import Principal
from domain.records import StackQuery
from domain.states import StackStatus
from domain.versions import Version
from tests.e2e.slack_harness import RunningBot, Scripted, free_port, settings_for, start_bot
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_requests import encode_form, slash_command
from tests.openapi_check import DOCUMENT, check_response

TOKEN = re.compile(r"nelson_[A-Za-z0-9_-]{43}")
DIGEST = "sha256:" + "ab" * 32
ADMIN = "U9"


@pytest.fixture
async def bot(fake: FakeSlack, tmp_path: Path) -> AsyncIterator[RunningBot]:
    settings = settings_for(fake, tmp_path, access={"admins": [ADMIN]})
    running = await start_bot(settings)
    yield running
    await running.shutdown()


async def slash(bot: RunningBot, fake: FakeSlack, text: str, user: str = ADMIN) -> dict[str, Any]:
    url = fake.new_response_url()
    fields = slash_command(text, user_id=user, response_url=url)
    assert (await bot.post(encode_form(fields), "application/x-www-form-urlencoded"))[0] == 200
    rid = url.rsplit("/", 1)[1]
    await fake.wait_for(lambda: fake.responses.get(rid))
    return fake.responses[rid][0]


async def new_token(bot: RunningBot, fake: FakeSlack, text: str) -> str:
    answer = await slash(bot, fake, text)
    assert answer["response_type"] == "ephemeral", "the token is for its creator's eyes only"
    found = TOKEN.search(FakeSlack.all_text(answer))
    assert found is not None, FakeSlack.all_text(answer)
    return found.group(0)


class Client:
    """CI's side: JSON requests with a bearer token; every answer checked against the
    document (the route template names which operation it is)."""

    def __init__(self, bot: RunningBot, token: str | None) -> None:
        self.url = bot.url
        self.token = token

    async def call(
        self,
        method: str,
        template: str,
        path: str | None = None,
        json: Any = None,
        *,
        data: bytes | None = None,
        content_type: str = "application/json",
        token: str | None = None,
    ) -> tuple[int, Any]:
        headers = {"Content-Type": content_type}
        bearer = token if token is not None else self.token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method, self.url + (path or template), json=json, data=data, headers=headers
            ) as response,
        ):
            body = await response.json(content_type=None)
            if method.lower() in DOCUMENT["paths"].get(template, {}):
                check_response(template, method, response.status, response.content_type, body)
            if response.status >= 400:
                assert response.content_type == "application/problem+json"
                assert body["status"] == response.status and body["detail"]
            return response.status, body


async def test_a_scoped_token_deploys_and_reads_what_it_may(
    bot: RunningBot, fake: FakeSlack
) -> None:
    token = await new_token(bot, fake, "token create ci for dev can deploy")
    stored = (await bot.application.store.api_tokens())[0]
    assert stored.digest == hashlib.sha256(token.encode()).hexdigest()
    assert (stored.namespaces, stored.right) == (("dev",), "deploy")
    listing = FakeSlack.all_text(await slash(bot, fake, "tokens"))
    assert "ci" in listing and token not in listing

    ci = Client(bot, token)
    status, doc = await ci.call("GET", "/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")

    image = f"127.0.0.1:5000/howdy:1.0.0@{DIGEST}"
    status, body = await ci.call(
        "POST", "/v1/deployables", json={"unit": "howdy", "version": "1.0.0", "image": image}
    )
    assert status == 201 and body["digest"] == DIGEST
    release = await bot.application.store.release("howdy", Version(1, 0, 0))
    assert release is not None and release.digest == DIGEST and release.created_by == "token:ci"

    status, body = await ci.call(
        "POST", "/v1/deployments", json={"unit": "howdy", "version": "1.0.0", "namespace": "dev"}
    )
    assert status == 202, body
    names = [s["name"] for s in body["stacks"]]
    assert len(names) == 2 and all(s["namespace"] == "dev" for s in body["stacks"])
    # the deploy thread goes to the unit's channel, as for a chat deploy
    await fake.wait_for(lambda: fake.messages("C3"))
    assert "deploy howdy 1.0.0" in fake.all_text(fake.messages("C3")[0])

    async def ready() -> bool:
        page = await bot.application.store.list_stacks(StackQuery(unit="howdy"))
        return all(s.status is StackStatus.READY for s in page.stacks)

    for _ in range(100):
        if await ready():
            break
        await fake.wait_for(lambda: True, timeout=0.1)
    status, body = await ci.call("GET", "/v1/stacks/{stack}", f"/v1/stacks/{names[0]}")
    assert status == 200 and body["status"] == "ready"
    assert [h["status"] for h in body["history"]][-1] == "ready"
    status, body = await ci.call("GET", "/v1/stacks/{stack}/log", f"/v1/stacks/{names[0]}/log")
    assert status == 200 and body["stack"] == names[0]
    status, body = await ci.call("GET", "/v1/stacks", "/v1/stacks?namespace=dev&status=ready")
    assert status == 200 and sorted(s["name"] for s in body["stacks"]) == sorted(names)

    # out of scope: another namespace, for deploying and for reading
    status, body = await ci.call(
        "POST", "/v1/deployments", json={"unit": "howdy", "version": "1.0.0", "namespace": "prod"}
    )
    assert status == 403 and "scoped to dev" in body["detail"]
    status, body = await ci.call("GET", "/v1/stacks", "/v1/stacks?namespace=prod")
    assert status == 403
    assert (await bot.application.store.list_stacks(StackQuery(namespace="prod"))).total == 0

    events = await bot.application.store.audit_events(limit=200)
    by_token = [e for e in events if e.actor == "token:ci"]
    assert any(e.action == "api POST /v1/deployments" and e.allowed for e in by_token)
    assert any(e.action == "deploy" and not e.allowed for e in by_token)
    assert all(token not in (e.detail + e.target + e.action) for e in events)

    # revoked: refused from then on
    await slash(bot, fake, "token revoke ci")
    status, body = await ci.call("GET", "/v1/stacks")
    assert status == 401


async def test_a_locked_unit_refuses_ci_as_it_refuses_chat(
    bot: RunningBot, fake: FakeSlack
) -> None:
    token = await new_token(bot, fake, "token create ci for dev can deploy")
    ci = Client(bot, token)
    await slash(bot, fake, "lock howdy in dev for 1h because the database migrates")
    deploy = {"unit": "howdy", "version": "1.0.0", "namespace": "dev"}
    status, body = await ci.call("POST", "/v1/deployments", json=deploy)
    assert status == 409, body
    assert "locked" in body["detail"] and "the database migrates" in body["detail"]
    assert ADMIN in body["detail"]  # who locked it
    assert (await bot.application.store.list_stacks(StackQuery(unit="howdy"))).total == 0
    events = await bot.application.store.audit_events(limit=200)
    assert any(e.actor == "token:ci" and not e.allowed and "held" in e.detail for e in events)

    await slash(bot, fake, "unlock howdy in dev")
    status, body = await ci.call("POST", "/v1/deployments", json=deploy)
    assert status == 202, body


async def test_refusals_are_problems_and_change_nothing(bot: RunningBot, fake: FakeSlack) -> None:
    viewer = await new_token(bot, fake, "token create dashboards for dev, prod can view")
    ci = Client(bot, viewer)
    deploy = {"unit": "howdy", "version": "1.0.0", "namespace": "dev"}

    status, body = await ci.call("POST", "/v1/deployments", json=deploy, token="")
    assert status == 401
    status, body = await ci.call("POST", "/v1/deployments", json=deploy, token="nelson_" + "A" * 43)
    assert status == 401 and "not valid" in body["detail"]
    status, body = await ci.call("POST", "/v1/deployments", json=deploy)
    assert status == 403 and "may only view" in body["detail"]
    status, body = await ci.call("GET", "/v1/stacks", "/v1/stacks?namespace=prod")
    assert status == 200

    deployer = await new_token(bot, fake, "token create ci for dev")
    ci = Client(bot, deployer)
    status, body = await ci.call("POST", "/v1/deployments", data=b'{"unit": "howdy",', json=None)
    assert status == 400 and "not valid JSON" in body["detail"]
    status, body = await ci.call("POST", "/v1/deployments", json=["howdy"])
    assert status == 400 and "JSON object" in body["detail"]
    status, body = await ci.call(
        "POST", "/v1/deployments", data=b"unit=howdy", content_type="text/plain"
    )
    assert status == 415
    status, body = await ci.call(
        "POST", "/v1/deployments", json={"unit": "howdy", "version": "one", "namspace": "dev"}
    )
    assert status == 400 and len(body["errors"]) == 2
    assert any("namspace" in e for e in body["errors"])
    status, body = await ci.call("POST", "/v1/deployments", json={**deploy, "unit": "nobody"})
    assert status == 404 and "no unit 'nobody'" in body["detail"]
    status, body = await ci.call("GET", "/v1/stacks/{stack}", "/v1/stacks/nothing-here")
    assert status == 404
    status, body = await ci.call("GET", "/v1/stacks", "/v1/stacks?status=bogus&colour=red")
    assert status == 400 and len(body["errors"]) == 2
    status, body = await ci.call(
        "POST", "/v1/deployables", json={"unit": "howdy", "version": "1.0.0", "image": "howdy"}
    )
    assert status == 422 and "names no registry" in body["detail"]
    status, body = await ci.call(
        "POST", "/v1/manifests", json={"repository": "acme/howdy", "manifest": "units: [1]"}
    )
    assert status == 422 and body["errors"]
    status, body = await ci.call("GET", "/v1/nothing")
    assert status == 404 and body["type"] == "urn:nelson:problem:not-found"
    status, body = await ci.call("DELETE", "/v1/stacks")
    assert status == 405
    status, body = await ci.call("POST", "/v1/manifests", data=b"[" * 100_000)
    assert status == 400
    page = await bot.application.store.list_stacks(StackQuery())
    assert page.stacks == ()
    assert await bot.application.store.release("howdy", Version(1, 0, 0)) is None


async def test_only_admins_make_tokens(bot: RunningBot, fake: FakeSlack) -> None:
    answer = await slash(bot, fake, "token create mine for dev", user="U1")
    assert "may not admin" in FakeSlack.all_text(answer)
    assert await bot.application.store.api_tokens() == []


async def test_the_headless_daemon_serves_the_api_too(fake: FakeSlack, tmp_path: Path) -> None:
    """`nelson serve --no-slack`: CI without Slack; the token made in the console."""
    settings = settings_for(fake, tmp_path, access={"admins": ["local"]})
    workflow = Scripted()
    application = await build(settings, workflow=workflow, clock=FakeClock(ticking=True))
    workflow.bind(application)
    port = free_port()
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        serve_headless(application, host="127.0.0.1", port=port, ready=ready, stop=stop)
    )
    try:
        await asyncio.wait_for(ready.wait(), 20)
        console = Principal("local", local=True)
        answer = await application.conversation.answer("token create ci for dev", console)
        token = TOKEN.search(repr(answer.reply))
        assert token is not None and answer.reply.private
        running = RunningBot(application, f"http://127.0.0.1:{port}", stop, task, None, FakeClock())
        ci = Client(running, token.group(0))
        status, body = await ci.call(
            "POST", "/v1/deployments", json={"unit": "howdy", "version": "1.0.0"}
        )
        assert status == 202 and body["stacks"][0]["namespace"] == "dev"
        # GitHub webhooks without a secret configured: refused, as a problem
        status, body = await ci.call("POST", "/github/events", json={"zen": "hi"})
        assert status == 404 and "not configured" in body["detail"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await asyncio.gather(*workflow.tasks)
        await application.close()


async def test_a_fault_in_the_bot_is_a_problem_with_a_reference(
    bot: RunningBot, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    ci = Client(bot, await new_token(bot, fake, "token create ci for dev"))

    async def broken(*_args: object, **_kw: object) -> None:
        raise RuntimeError("a bug with a secret: hunter2")

    monkeypatch.setattr(bot.application.store, "list_stacks", broken)
    status, body = await ci.call("GET", "/v1/stacks")
    assert status == 500 and body["reference"] in body["detail"]
    assert "hunter2" not in str(body) and "Traceback" not in str(body)
