"""The fake Vault driven by hvac itself, as Vault's API documentation says it behaves."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any, TypeVar

import hvac
import hvac.exceptions as vault_errors
import pytest
import requests

from tests.fakes.clock import FakeClock
from tests.fakes.vault import AppRole, FakeVault, KubernetesRole, parse_policy

T = TypeVar("T")


async def call(fn: Callable[[], T]) -> T:
    # hvac blocks; the fake serves on this loop
    return await asyncio.to_thread(fn)


@pytest.fixture
async def vault(clock: FakeClock) -> AsyncIterator[FakeVault]:
    async with FakeVault(clock=clock) as fake:
        yield fake


def client(vault: FakeVault, token: str | None = None) -> hvac.Client:
    return hvac.Client(url=vault.address, token=token or vault.root_token, timeout=5)


STACK_POLICY = """
path "sys/*" { capabilities = ["deny"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "nelson/dev/db/creds/web" { capabilities = ["read"] }
"""


async def test_health_and_seal_status_answer_while_sealed(vault: FakeVault) -> None:
    c = client(vault)
    assert (await call(c.sys.read_seal_status))["sealed"] is False
    health = await call(lambda: c.sys.read_health_status(method="GET"))
    assert health["initialized"] is True and health["sealed"] is False
    vault.sealed = True
    assert (await call(c.sys.read_seal_status))["sealed"] is True
    sealed = await call(lambda: c.sys.read_health_status(method="GET"))
    assert sealed.status_code == 503 and sealed.json()["sealed"] is True
    custom = await call(lambda: c.sys.read_health_status(method="GET", sealed_code=200))
    assert custom["sealed"] is True
    with pytest.raises(vault_errors.VaultDown, match="Vault is sealed"):
        await call(lambda: c.sys.read_acl_policy("default"))


async def test_acl_policy_lifecycle(vault: FakeVault) -> None:
    c = client(vault)
    await call(lambda: c.sys.create_or_update_acl_policy("Nelson__Dev__Web", STACK_POLICY))
    assert "nelson__dev__web" in (await call(c.sys.list_acl_policies))["data"]["keys"]
    read = await call(lambda: c.sys.read_acl_policy("nelson__dev__web"))
    assert read["data"]["policy"] == STACK_POLICY
    await call(lambda: c.sys.delete_acl_policy("nelson__dev__web"))
    await call(lambda: c.sys.delete_acl_policy("nelson__dev__web"))  # gone is fine
    with pytest.raises(vault_errors.InvalidPath):
        await call(lambda: c.sys.read_acl_policy("nelson__dev__web"))
    with pytest.raises(vault_errors.InvalidRequest, match="failed to parse"):
        await call(lambda: c.sys.create_or_update_acl_policy("bad", "path {"))
    with pytest.raises(vault_errors.InvalidRequest, match="root"):
        await call(lambda: c.sys.create_or_update_acl_policy("root", STACK_POLICY))
    with pytest.raises(vault_errors.InvalidRequest, match="default"):
        await call(lambda: c.sys.delete_acl_policy("default"))


async def test_periodic_orphan_token_is_limited_to_its_policy(
    vault: FakeVault, clock: FakeClock
) -> None:
    c = client(vault)
    await call(lambda: c.sys.create_or_update_acl_policy("stack", STACK_POLICY))
    vault.kv["nelson/dev/db/creds/web"] = {"username": "web", "password": "pw"}
    vault.kv["nelson/dev/db/creds/other"] = {"username": "other", "password": "pw2"}
    created = await call(
        lambda: c.auth.token.create_orphan(
            policies=["stack"], no_default_policy=True, period="60s", display_name="web"
        )
    )
    auth = created["auth"]
    assert auth["token_policies"] == ["stack"] and auth["renewable"] is True
    assert auth["lease_duration"] == 60 and auth["orphan"] is True
    app = client(vault, auth["client_token"])
    secret = await call(lambda: app.read("nelson/dev/db/creds/web"))
    assert secret["data"]["password"] == "pw"
    with pytest.raises(vault_errors.Forbidden):
        await call(lambda: app.read("nelson/dev/db/creds/other"))
    with pytest.raises(vault_errors.Forbidden):  # sys/* is denied
        await call(lambda: app.sys.read_acl_policy("stack"))
    looked = await call(app.auth.token.lookup_self)
    assert looked["data"]["period"] == 60 and looked["data"]["policies"] == ["stack"]

    clock.advance(50)
    renewed = await call(lambda: c.auth.token.renew_accessor(auth["accessor"]))
    assert renewed["auth"]["client_token"] == "" and renewed["auth"]["lease_duration"] == 60
    clock.advance(50)  # 100 s after creation, 50 after the renewal
    assert (await call(lambda: app.read("nelson/dev/db/creds/web")))["data"]["username"] == "web"
    await call(app.auth.token.renew_self)
    clock.advance(61)
    with pytest.raises(vault_errors.Forbidden):  # expired: one period after the last renewal
        await call(lambda: app.read("nelson/dev/db/creds/web"))
    with pytest.raises(vault_errors.InvalidRequest, match="invalid accessor"):
        await call(lambda: c.auth.token.renew_accessor(auth["accessor"]))


async def test_revoke_accessor_and_unknown_accessor(vault: FakeVault) -> None:
    c = client(vault)
    created = await call(lambda: c.auth.token.create(policies=["default"], ttl="1h"))
    accessor, token = created["auth"]["accessor"], created["auth"]["client_token"]
    await call(lambda: c.auth.token.revoke_accessor(accessor))
    with pytest.raises(vault_errors.Forbidden):
        await call(client(vault, token).auth.token.lookup_self)
    with pytest.raises(vault_errors.InvalidRequest, match="invalid accessor"):
        await call(lambda: c.auth.token.revoke_accessor(accessor))


async def test_non_root_caller_needs_sudo_for_periodic_tokens_and_foreign_policies(
    vault: FakeVault,
) -> None:
    root = client(vault)
    await call(
        lambda: root.sys.create_or_update_acl_policy(
            "bot", 'path "auth/token/create-orphan" { capabilities = ["update"] }'
        )
    )
    bot = client(vault, vault.add_token(["bot"]))
    with pytest.raises(vault_errors.InvalidRequest, match="subset of parent"):
        await call(lambda: bot.auth.token.create_orphan(policies=["stack"]))
    with pytest.raises(vault_errors.InvalidRequest, match="periodic"):
        await call(lambda: bot.auth.token.create_orphan(policies=["bot"], period="1h"))
    await call(
        lambda: root.sys.create_or_update_acl_policy(
            "bot", 'path "auth/token/create-orphan" { capabilities = ["update", "sudo"] }'
        )
    )
    made = await call(lambda: bot.auth.token.create_orphan(policies=["stack"], period="1h"))
    assert made["auth"]["policies"] == ["default", "stack"]
    with pytest.raises(vault_errors.Forbidden):  # no rule for it
        await call(lambda: bot.sys.create_or_update_acl_policy("x", STACK_POLICY))


async def test_approle_and_kubernetes_logins(vault: FakeVault) -> None:
    vault.approles["bot"] = AppRole("role-1", "secret-1", ["bot"], ttl=timedelta(minutes=5))
    vault.kubernetes["nelson"] = KubernetesRole("jwt-value", ["bot"])
    anonymous = hvac.Client(url=vault.address, timeout=5)
    login = await call(lambda: anonymous.auth.approle.login("role-1", "secret-1"))
    assert login["auth"]["policies"] == ["default", "bot"]
    with pytest.raises(vault_errors.InvalidRequest, match="invalid role or secret ID"):
        await call(lambda: anonymous.auth.approle.login("role-1", "wrong"))
    k8s = await call(lambda: anonymous.auth.kubernetes.login("nelson", "jwt-value"))
    assert k8s["auth"]["lease_duration"] == 1200
    with pytest.raises(vault_errors.Forbidden):
        await call(lambda: anonymous.auth.kubernetes.login("nelson", "other-jwt"))


async def test_injected_server_errors_and_refused_connections(vault: FakeVault) -> None:
    c = client(vault)
    vault.fail_next(1, 500, prefix="sys/policies")
    with pytest.raises(vault_errors.InternalServerError):
        await call(lambda: c.sys.read_acl_policy("default"))
    assert (await call(lambda: c.sys.read_acl_policy("default")))["data"]["name"] == "default"
    vault.fail_next(1, 502)
    with pytest.raises(vault_errors.BadGateway):
        await call(c.auth.token.lookup_self)
    with pytest.raises(vault_errors.Forbidden):
        await call(client(vault, "hvs.not-a-token").auth.token.lookup_self)
    await vault.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        await call(c.sys.read_seal_status)


def test_policy_parsing_follows_hcl_rules() -> None:
    rules = parse_policy(
        '# comment\npath "a/+/c" {\n capabilities = ["read", "list"]\n}\n'
        'path "b/*" { policy = "write" }\n'
    )
    assert rules[0] == ("a/+/c", frozenset({"read", "list"}))
    assert "update" in rules[1][1]
    with pytest.raises(ValueError):
        parse_policy('path "a" { capabilities = ["fly"] }')


async def test_most_specific_rule_wins_and_deny_beats_grants(vault: FakeVault) -> None:
    root = client(vault)
    text = (
        'path "kv/*" { capabilities = ["read"] }\n'
        'path "kv/secret" { capabilities = ["deny"] }\n'
        'path "kv/+/leaf" { capabilities = ["read", "create", "update"] }\n'
    )
    await call(lambda: root.sys.create_or_update_acl_policy("p", text))
    for path in ("kv/open", "kv/secret", "kv/x/leaf"):
        vault.kv[path] = {"v": path}
    user = client(vault, vault.add_token(["p"]))
    assert (await call(lambda: user.read("kv/open")))["data"]["v"] == "kv/open"
    with pytest.raises(vault_errors.Forbidden):
        await call(lambda: user.read("kv/secret"))
    await call(lambda: user.write("kv/x/leaf", v="new"))
    with pytest.raises(vault_errors.Forbidden):
        await call(lambda: user.write("kv/open", v="new"))
    assert vault.kv["kv/x/leaf"] == {"v": "new"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_requests_are_recorded_without_tokens(vault: FakeVault) -> None:
    c = client(vault)
    await call(c.auth.token.lookup_self)
    last: Any = vault.requests[-1]
    assert (last.method, last.path, last.status) == ("GET", "auth/token/lookup-self", 200)
    assert vault.root_token not in repr(vault.requests)
