"""Deployables from CI, end to end on the local Docker datacenter (real dockerd, registries
and HAProxy), the bot serving Slack and GitHub's webhooks:

- a release published on GitHub (signed delivery, manifest attached) registers the manifest
  and announces the unit pinned to its digest; a GitHub deployment then deploys it to the
  environment's namespace, the thread goes to the unit's channel, and GitHub hears
  in_progress then success through its deployment statuses;
- forged and repeated deliveries change nothing; an environment outside the webhooks' scope
  is refused and reported to GitHub as a failure;
- CI with a scoped API token deploys the next version to ready, and is refused elsewhere."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest

from domain.records import Stack, StackQuery
from domain.states import StackStatus
from domain.versions import Version
from tests.dockerworld import busybox_image
from tests.e2e.local_dc import stop, with_local_datacenter
from tests.e2e.slack_harness import RunningBot, settings_for, start_bot
from tests.e2e.test_api import new_token
from tests.fakes.github import FakeGitHub
from tests.fakes.slack import FakeSlack
from tests.openapi_check import check_response

SECRET = "a webhook secret nobody guesses"
REPOSITORY = "acme/greet"
MANIFEST = """\
units:
  - name: greet
    description: greets with its version
    ports:
      - default->8080/http
plans:
  - name: default
    memory: 64
    health_checks:
      - name: alive
        port_reference: default
        protocol: http
        path: /
        timeout: 1s
        interval: 1s
namespaces:
  - name: dev
    units:
      - ref: greet
        plans: [default]
  - name: prod
    units:
      - ref: greet
        plans: [default]
notifications:
  slack:
    - channel: C3
"""


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub() as fake:
        yield fake


@pytest.fixture
async def bot(
    fake: FakeSlack,
    github: FakeGitHub,
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> AsyncIterator[RunningBot]:
    for version in ("1.0.0", "1.0.1"):
        busybox_image(engine_client, f"{registries[0]}/greet:{version}", f"greet {version}")
    settings = settings_for(
        fake,
        tmp_path,
        access={"admins": ["U9"]},
        approvals={"dev": {"needed": False}},
        workflow={"warming_timeout": "30s", "health_interval": 0.2},
        github={
            "webhook_secret": SECRET,
            "token": github.token,
            "api_url": github.base_url,
            "namespaces": ["dev"],
            "environments": {"development": "dev", "production": "prod"},
        },
    )
    running = await start_bot(
        with_local_datacenter(settings, tmp_path, docker_address, registries), real=True
    )
    yield running
    await stop(running, engine_client, ["greet"])


async def ready(bot: RunningBot, version: str, timeout: float = 90) -> Stack:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = await bot.application.store.list_stacks(StackQuery(unit="greet", limit=20))
        found = next((s for s in page.stacks if str(s.version) == version), None)
        if found is not None and found.status is StackStatus.FAILED:
            raise AssertionError(found.status_message)
        if found is not None and found.status is StackStatus.READY:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"greet {version} was not ready within {timeout}s")


async def states(github: FakeGitHub, deployment: dict[str, Any], last: str) -> list[str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [s["state"] for s in github.statuses(REPOSITORY, deployment["id"])]
        if found and found[-1] == last:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"GitHub heard {found}, not {last}")


async def test_a_github_release_and_deployment_end_ready_with_the_status_reported(
    bot: RunningBot, fake: FakeSlack, github: FakeGitHub
) -> None:
    hook = f"{bot.url}/github/events"
    store = bot.application.store
    status, _ = await FakeGitHub.deliver(
        hook, "ping", {"zen": "Keep it logically awesome."}, SECRET
    )
    assert status == 200

    release = github.create_release(REPOSITORY, "v1.0.0", {".nelson.yml": MANIFEST.encode()})
    event = github.release_event(REPOSITORY, release)
    # forged: signed with another secret; nothing is registered
    status, body = await FakeGitHub.deliver(hook, "release", event, "not the secret")
    assert status == 401 and body["type"] == "urn:nelson:problem:unauthorized"
    assert await store.latest_manifest(REPOSITORY) is None

    status, body = await FakeGitHub.deliver(hook, "release", event, SECRET, delivery="d-1")
    assert status == 201, body
    assert (await store.latest_manifest(REPOSITORY)) is not None
    release_record = await store.release("greet", Version(1, 0, 0))
    assert release_record is not None and release_record.digest is not None
    assert release_record.created_by == f"github:{REPOSITORY}"
    # the same delivery again is not processed twice
    status, body = await FakeGitHub.deliver(hook, "release", event, SECRET, delivery="d-1")
    assert status == 200 and body == {"duplicate": "d-1"}

    deployment = github.create_deployment(REPOSITORY, "v1.0.0", "development")
    status, body = await FakeGitHub.deliver(
        hook, "deployment", github.deployment_event(REPOSITORY, deployment), SECRET
    )
    assert status == 202, body
    stack = await ready(bot, "1.0.0")
    assert stack.namespace == "dev" and stack.created_by == f"github:{REPOSITORY}"
    assert await states(github, deployment, "success") == ["in_progress", "success"]
    assert stack.name in github.statuses(REPOSITORY, deployment["id"])[-1]["description"]
    assert any("Bearer" in auth for _, _, auth in github.requests)
    await fake.wait_for(lambda: fake.messages("C3"))
    assert "deploy greet 1.0.0" in fake.all_text(fake.messages("C3")[0])

    # an environment whose namespace the webhooks may not deploy to: refused, and GitHub told
    refused = github.create_deployment(REPOSITORY, "v1.0.0", "production")
    status, body = await FakeGitHub.deliver(
        hook, "deployment", github.deployment_event(REPOSITORY, refused), SECRET
    )
    assert status == 403 and "prod" in body["detail"]
    assert [s["state"] for s in github.statuses(REPOSITORY, refused["id"])] == ["failure"]
    assert (await store.list_stacks(StackQuery(namespace="prod"))).total == 0


async def test_ci_with_a_scoped_token_deploys_to_ready(
    bot: RunningBot, fake: FakeSlack, github: FakeGitHub, registries: tuple[str, str]
) -> None:
    token = await new_token(bot, fake, "token create pipeline for dev can deploy")
    headers = {"Authorization": f"Bearer {token}"}

    async def call(method: str, template: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, bot.url + path, json=body, headers=headers) as response,
        ):
            answer = await response.json(content_type=None)
            check_response(template, method, response.status, response.content_type, answer)
            return response.status, answer

    status, body = await call(
        "POST", "/v1/manifests", "/v1/manifests", {"repository": REPOSITORY, "manifest": MANIFEST}
    )
    assert status == 201 and body["units"] == ["greet"]
    image = f"{registries[0]}/greet:1.0.1"
    status, body = await call(
        "POST",
        "/v1/deployables",
        "/v1/deployables",
        {"unit": "greet", "version": "1.0.1", "image": image},
    )
    assert status == 201
    status, body = await call(
        "POST", "/v1/deployments", "/v1/deployments", {"unit": "greet", "version": "1.0.1"}
    )
    assert status == 202 and body["stacks"][0]["namespace"] == "dev"
    stack = await ready(bot, "1.0.1")
    assert stack.created_by == "token:pipeline"
    status, body = await call("GET", "/v1/stacks/{stack}", f"/v1/stacks/{stack.name}")
    assert status == 200 and body["status"] == "ready"
    status, body = await call("GET", "/v1/stacks/{stack}/log", f"/v1/stacks/{stack.name}/log")
    assert any("launched" in line["message"] for line in body["lines"])  # "ready" may follow
    status, body = await call(
        "POST",
        "/v1/commits",
        "/v1/commits",
        {"unit": "greet", "version": "1.0.1", "namespace": "prod"},
    )
    assert status == 403 and "scoped to dev" in body["detail"]
    assert (await bot.application.store.list_stacks(StackQuery(namespace="prod"))).total == 0
