"""The fake GitHub, driven by PyGithub (a client written against the real GitHub): what the
bot relies on answers as GitHub documents it, failures included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from github import Auth, BadCredentialsException, Github, GithubException, UnknownObjectException
from pydantic import SecretStr

from bot.http.github_client import GitHubClient, GitHubError
from commands.settings import GitHubSettings
from tests.fakes.github import FakeGitHub


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub() as fake:
        yield fake


def client(fake: FakeGitHub, token: str | None = None) -> Github:
    return Github(base_url=fake.base_url, auth=Auth.Token(token or fake.token), retry=None)


async def test_deployment_statuses_as_pygithub_sees_them(github: FakeGitHub) -> None:
    deployment = github.create_deployment("acme/howdy", "v1.2.3", "production")

    def drive() -> list[tuple[str, str]]:
        gh = client(github)
        repo = gh.get_repo("acme/howdy")
        found = repo.get_deployment(deployment["id"])
        assert (found.ref, found.environment) == ("v1.2.3", "production")
        found.create_status("in_progress", description="deploying")
        found.create_status("success", description="ready", environment="production")
        return [(s.state, s.description) for s in found.get_statuses()]

    statuses = await asyncio.to_thread(drive)
    assert statuses == [("success", "ready"), ("in_progress", "deploying")]  # newest first


async def test_failures_are_githubs(github: FakeGitHub) -> None:
    deployment = github.create_deployment("acme/howdy", "v1.2.3", "production")

    def drive() -> None:
        with pytest.raises(BadCredentialsException) as bad:
            client(github, "ghp_wrong").get_repo("acme/howdy")
        assert bad.value.status == 401 and bad.value.data["message"] == "Bad credentials"
        gh = client(github)
        with pytest.raises(UnknownObjectException) as missing:
            gh.get_repo("acme/nothing")
        assert missing.value.status == 404
        found = gh.get_repo("acme/howdy").get_deployment(deployment["id"])
        with pytest.raises(GithubException) as invalid:
            found.create_status("finished")
        assert invalid.value.status == 422
        assert invalid.value.data["message"] == "Validation Failed"
        assert invalid.value.data["errors"][0]["field"] == "state"
        with pytest.raises(GithubException) as long:
            found.create_status("success", description="x" * 141)
        assert long.value.status == 422

    await asyncio.to_thread(drive)
    assert github.statuses("acme/howdy", deployment["id"]) == []


async def test_the_bots_client_reads_assets_and_reports_refusals(github: FakeGitHub) -> None:
    release = github.create_release("acme/howdy", "v1.0.0", {".nelson.yml": b"units: []\n"})
    deployment = github.create_deployment("acme/howdy", "v1.0.0", "dev")
    settings = GitHubSettings(api_url=github.base_url, token=SecretStr(github.token))
    bot = GitHubClient(settings)
    assert await bot.asset("acme/howdy", release["assets"][0]["id"]) == "units: []\n"
    posted = await bot.deployment_status("acme/howdy", deployment["id"], "success", "ready")
    assert posted["state"] == "success"
    with pytest.raises(GitHubError, match="HTTP 401 Bad credentials"):
        await GitHubClient(
            GitHubSettings(api_url=github.base_url, token=SecretStr("ghp_wrong"))
        ).deployment_status("acme/howdy", deployment["id"], "success", "ready")
    with pytest.raises(GitHubError, match="HTTP 404 Not Found"):
        await bot.deployment_status("acme/howdy", 1, "success", "ready")
    with pytest.raises(GitHubError, match="HTTP 422 Validation Failed"):
        await bot.deployment_status("acme/howdy", deployment["id"], "done", "ready")
    # the token went only in the Authorization header
    assert all(github.token not in path for _, path, _ in github.requests)
