"""API tokens and announced releases through the console's conversation (the same handlers as
Slack and the API), and what a token's scope allows."""

from __future__ import annotations

import hashlib

from commands.access import Principal, Role, authorize
from commands.replies import Code
from commands.settings import AccessRule, AccessSettings
from domain.api_tokens import digest, new_token, well_formed
from domain.versions import Version
from tests.unit.test_handlers import ACCOUNTS, DEV, Harness, h, register

__all__ = ["h"]

ACCESS = AccessSettings(admins=("*",), rules=(AccessRule(namespace="*", deploy=("*",)),))


def token(namespaces: tuple[str, ...], right: str) -> Principal:
    return Principal("token:ci", token_namespaces=namespaces, token_right=right)


def test_a_token_may_only_what_its_scope_says_whatever_the_rules() -> None:
    deployer = token(("dev",), "deploy")
    assert authorize(ACCESS, deployer, Role.DEPLOY, "dev").allowed
    assert authorize(ACCESS, deployer, Role.VIEW, "dev/sandbox").allowed
    refused = authorize(ACCESS, deployer, Role.DEPLOY, "prod")
    assert not refused.allowed and "scoped to dev" in refused.reason
    assert not authorize(ACCESS, deployer, Role.APPROVE, "dev").allowed  # approvals stay human
    assert not authorize(ACCESS, deployer, Role.ADMIN, "dev").allowed  # `*` admins: not tokens
    viewer = token(("dev", "qa"), "view")
    assert authorize(ACCESS, viewer, Role.VIEW, "qa").allowed
    assert "may only view" in authorize(ACCESS, viewer, Role.DEPLOY, "qa").reason


def test_tokens_are_random_shaped_and_kept_as_sha256() -> None:
    first = new_token(lambda n: bytes(range(n)))
    assert well_formed(first) and len(first) == len("nelson_") + 43
    assert new_token(lambda n: b"\x01" * n) != first
    assert digest(first) == hashlib.sha256(first.encode()).hexdigest()
    assert not well_formed("nelson_short") and not well_formed(first + "x")


async def test_token_create_shows_it_once_privately_and_stores_its_hash(h: Harness) -> None:
    answer = await h.ok("token create ci for dev, qa can deploy")
    assert answer.reply.private
    shown = next(b.text for b in answer.reply.blocks if isinstance(b, Code))
    (stored,) = await h.store.api_tokens()
    assert stored.digest == digest(shown) and stored.namespaces == ("dev", "qa")
    listing = await h.ok("tokens")
    assert shown not in repr(listing.reply) and "ci" in repr(listing.reply)
    assert "already a token named 'ci'" in await h.fails("token create ci for dev")
    assert "no namespace 'staging'" in await h.fails("token create other for staging")
    assert "may not admin" in await h.fails("token create mine for dev", DEV)
    assert "may not admin" in await h.fails("token revoke ci", DEV)
    await h.ok("token revoke ci")
    assert await h.store.api_tokens() == []
    assert "no token 'ci'" in await h.fails("token revoke ci")
    events = await h.store.audit_events()
    assert all(shown not in e.detail + e.target for e in events)


async def test_announce_records_a_release_pinned_to_its_digest(h: Harness) -> None:
    await register(h, "acme/accounts", ACCOUNTS)
    pinned = "stage:5000/accounts:1.2.0@sha256:" + "ab" * 32
    await h.ok(f"announce accounts 1.2.0 image {pinned}", DEV)
    release = await h.store.release("accounts", Version(1, 2, 0))
    assert release is not None and release.digest == "sha256:" + "ab" * 32
    assert h.workflow.submitted == []  # announced, not deployed
    await h.ok(f"announce accounts 1.2.0 image {pinned}", DEV)  # the same again: fine
    other = "stage:5000/accounts:1.2.0-other"
    assert "never changes its image" in await h.fails(f"announce accounts 1.2.0 image {other}")
    assert "no unit 'nobody'" in await h.fails(f"announce nobody 1.0.0 image {other}")
    assert "may not deploy" in await h.fails(
        f"announce accounts 1.3.0 image {other}", Principal("UGUEST", "guest")
    )
    # a deploy of the announced version uses its image
    await h.ok("deploy accounts 1.2.0 to dc-east in dev", DEV)
    assert (await h.store.release("accounts", Version(1, 2, 0))).image == pinned  # type: ignore[union-attr]
