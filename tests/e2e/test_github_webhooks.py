"""GitHub's webhooks on the running bot with the scripted deploy engine (test_ci.py runs real
deploys): what is refused and how GitHub is told, a manifest from the configuration, and a
deployment still reported after the bot restarted in the middle of it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from commands.settings import Settings
from domain.records import StackQuery
from domain.states import StackStatus
from domain.versions import Version
from tests.e2e.slack_harness import MANIFEST, RunningBot, Scripted, settings_for, start_bot
from tests.fakes.github import FakeGitHub, signature
from tests.fakes.slack import FakeSlack

SECRET = "another webhook secret"
REPOSITORY = "acme/howdy"


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub() as fake:
        yield fake


def webhook_settings(
    fake: FakeSlack, github: FakeGitHub, tmp: Path, **github_keys: Any
) -> Settings:
    manifest = tmp / "howdy.nelson.yml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    return settings_for(
        fake,
        tmp,
        manifest_dirs=[],
        github={
            "webhook_secret": SECRET,
            "token": github.token,
            "api_url": github.base_url,
            "namespaces": ["dev"],
            "manifests": {REPOSITORY: str(manifest)},
        },
    )


@pytest.fixture
async def bot(fake: FakeSlack, github: FakeGitHub, tmp_path: Path) -> AsyncIterator[RunningBot]:
    running = await start_bot(webhook_settings(fake, github, tmp_path))
    yield running
    await running.shutdown()


async def reported(github: FakeGitHub, deployment: dict[str, Any], last: str) -> list[str]:
    deadline = time.monotonic() + 20
    found: list[str] = []
    while time.monotonic() < deadline:
        found = [s["state"] for s in github.statuses(REPOSITORY, deployment["id"])]
        if found and found[-1] == last:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"GitHub heard {found}, not {last}")


async def test_refused_deliveries_change_nothing(bot: RunningBot, github: FakeGitHub) -> None:
    hook = f"{bot.url}/github/events"
    store = bot.application.store
    release = github.create_release(REPOSITORY, "v1.0.0")
    event = github.release_event(REPOSITORY, release)

    status, body = await FakeGitHub.deliver(hook, "release", event, "wrong")
    assert status == 401 and body["status"] == 401
    assert await store.latest_manifest(REPOSITORY) is None
    # signed for one body, sent with another
    raw = json.dumps(event).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            hook,
            data=raw.replace(b"v1.0.0", b"v7.7.7"),
            headers={
                "X-GitHub-Event": "release",
                "X-GitHub-Delivery": "forged",
                "X-Hub-Signature-256": signature(SECRET, raw),
                "Content-Type": "application/json",
            },
        ) as response,
    ):
        assert response.status == 401
    assert await store.release("howdy", Version(7, 7, 7)) is None

    status, body = await FakeGitHub.deliver(hook, "release", {}, SECRET, body=b"not json")
    assert status == 400 and "not JSON" in body["detail"]
    bad_tag = github.release_event(REPOSITORY, github.create_release(REPOSITORY, "latest"))
    status, body = await FakeGitHub.deliver(hook, "release", bad_tag, SECRET)
    assert status == 422 and "'latest' is not a version" in body["detail"]
    status, body = await FakeGitHub.deliver(hook, "push", {"ref": "main"}, SECRET)
    assert status == 202 and "ignored" in body
    draft = {**event, "action": "created"}
    status, body = await FakeGitHub.deliver(hook, "release", draft, SECRET)
    assert status == 202

    # a deployment of a repository the bot knows nothing of: refused, GitHub told why
    unknown = github.create_deployment("acme/unknown", "v1.0.0", "dev")
    status, body = await FakeGitHub.deliver(
        hook, "deployment", github.deployment_event("acme/unknown", unknown), SECRET
    )
    assert status == 404
    (told,) = github.statuses("acme/unknown", unknown["id"])
    assert told["state"] == "failure" and "acme/unknown" in told["description"]
    page = await store.list_stacks(StackQuery())
    assert page.total == 0
    audited = [(e.actor, e.action, e.allowed) for e in await store.audit_events(limit=50)]
    assert ("github:acme/unknown", "github deployment", False) in audited
    assert ("github:acme/howdy", "github release", False) in audited  # the bad tag


async def test_a_manifest_from_the_configuration_then_a_deployment(
    bot: RunningBot, github: FakeGitHub, fake: FakeSlack
) -> None:
    hook = f"{bot.url}/github/events"
    store = bot.application.store
    release = github.create_release(REPOSITORY, "1.2.0")  # nothing attached
    status, body = await FakeGitHub.deliver(
        hook, "release", github.release_event(REPOSITORY, release), SECRET
    )
    assert status == 201, body
    assert body["announced"][0]["unit"] == "howdy"
    announced = await store.release("howdy", Version(1, 2, 0))
    assert announced is not None and announced.image == "127.0.0.1:5000/howdy:1.2.0"

    deployment = github.create_deployment(REPOSITORY, "v1.2.0", "dev")
    status, body = await FakeGitHub.deliver(
        hook, "deployment", github.deployment_event(REPOSITORY, deployment), SECRET
    )
    assert status == 202
    assert await reported(github, deployment, "success") == ["in_progress", "success"]
    page = await store.list_stacks(StackQuery(unit="howdy"))
    assert {s.status for s in page.stacks} == {StackStatus.READY}
    assert {s.datacenter for s in page.stacks} == {"dc-east", "dc-west"}
    # the deploy thread, in the unit's channel
    await fake.wait_for(lambda: fake.messages("C3"))


async def test_a_restart_still_reports_the_outcome(
    fake: FakeSlack, github: FakeGitHub, tmp_path: Path
) -> None:
    settings = webhook_settings(fake, github, tmp_path)
    held = Scripted()
    held.gate.clear()  # the deploys do not move while the first bot runs
    first = await start_bot(settings, held)
    hook = f"{first.url}/github/events"
    release = github.create_release(REPOSITORY, "v2.0.0")
    await FakeGitHub.deliver(hook, "release", github.release_event(REPOSITORY, release), SECRET)
    deployment = github.create_deployment(REPOSITORY, "v2.0.0", "dev")
    status, _ = await FakeGitHub.deliver(
        hook, "deployment", github.deployment_event(REPOSITORY, deployment), SECRET
    )
    assert status == 202
    assert await reported(github, deployment, "in_progress") == ["in_progress"]
    first.stop.set()
    await asyncio.wait_for(first.task, 20)
    for task in held.tasks:
        task.cancel()
    await asyncio.gather(*held.tasks, return_exceptions=True)
    await first.application.close()

    second = await start_bot(settings, clock=first.clock)
    try:
        store = second.application.store
        # what the engine would do after the restart: one stack ready, the other failed
        page = await store.list_stacks(StackQuery(unit="howdy"))
        ready, failed = sorted(page.stacks, key=lambda s: s.datacenter)
        for stack, status_ in ((ready, StackStatus.READY), (failed, StackStatus.FAILED)):
            await store.change_status(stack.id, StackStatus.DEPLOYING, "resumed", "nelson")
            if status_ is StackStatus.READY:
                await store.change_status(stack.id, StackStatus.WARMING, "launched", "nelson")
            await store.change_status(stack.id, status_, "image not found", "nelson")
        assert await reported(github, deployment, "failure") == ["in_progress", "failure"]
        told = github.statuses(REPOSITORY, deployment["id"])[-1]["description"]
        assert failed.name in told and "image not found" in told
        assert await store.unreported_github_deployments() == []
    finally:
        await second.shutdown()
