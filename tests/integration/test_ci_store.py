"""The store's CI part on SQLite and PostgreSQL: API tokens (kept by digest) and the GitHub
deployments the bot still has to report."""

from __future__ import annotations

import pytest

from adapters.storage import SqlStore
from commands.ports import Conflict
from domain.api_tokens import ApiToken, digest
from domain.github import GitHubDeployment
from tests.fakes.clock import FakeClock


async def test_api_tokens_by_digest_and_revoked(store: SqlStore, clock: FakeClock) -> None:
    token = ApiToken("ci", digest("nelson_secret"), ("dev", "qa/x"), "deploy", "U1", clock.now())
    await store.create_api_token(token)
    with pytest.raises(Conflict):
        await store.create_api_token(token)
    assert await store.api_token_by_digest(digest("nelson_secret")) == token
    assert await store.api_token_by_digest(digest("nelson_other")) is None
    assert await store.api_tokens() == [token]
    assert await store.revoke_api_token("ci")
    assert not await store.revoke_api_token("ci")
    assert await store.api_token_by_digest(token.digest) is None


async def test_github_deployments_until_reported(store: SqlStore, clock: FakeClock) -> None:
    big = 2**40  # GitHub's ids outgrow 32 bits
    record = GitHubDeployment("acme/howdy", big, "production", (3, 4), clock.now())
    await store.record_github_deployment(record)
    with pytest.raises(Conflict):
        await store.record_github_deployment(record)
    other = GitHubDeployment("acme/other", big, "dev", (5,), clock.now())
    await store.record_github_deployment(other)
    assert await store.unreported_github_deployments() == [record, other]
    await store.github_deployment_reported("acme/howdy", big, "success")
    assert await store.unreported_github_deployments() == [other]
