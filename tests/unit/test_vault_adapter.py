"""The hvac adapter against the fake Vault: logins, idempotence, and Vault's faults turned
into messages people can act on."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from adapters.secrets.vault import VaultSecrets, policy_text, shown_address
from commands.ports import SecretsError
from commands.settings import VaultSettings
from tests.fakes.clock import FakeClock
from tests.fakes.vault import AppRole, FakeVault, KubernetesRole

BOT = """
path "sys/policies/acl" { capabilities = ["list"] }
path "sys/policies/acl/nelson__*" { capabilities = ["create", "read", "update", "delete"] }
path "auth/token/create-orphan" { capabilities = ["update", "sudo"] }
path "auth/token/renew-accessor" { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
"""


@pytest.fixture
async def vault(clock: FakeClock) -> AsyncIterator[FakeVault]:
    async with FakeVault(clock=clock) as fake:
        fake.policies["nelson-bot"] = BOT
        yield fake


async def adapter(vault: FakeVault, **settings: Any) -> VaultSecrets:
    values: dict[str, Any] = {"address": vault.address, "timeout": 3} | settings
    if values.get("auth", "token") == "token" and "token" not in values:
        values["token"] = vault.add_token(["nelson-bot"])
    return VaultSecrets(VaultSettings.model_validate(values), "local")


async def test_policy_token_renew_revoke_round_trip(vault: FakeVault, clock: FakeClock) -> None:
    secrets = await adapter(vault)
    await secrets.write_policy("nelson__dev__web", ["nelson/dev/db/creds/web"])
    assert await secrets.policies() == ["default", "nelson-bot", "nelson__dev__web", "root"]
    text = await secrets.policy("nelson__dev__web")
    assert text is not None and 'path "nelson/dev/db/creds/web"' in text
    issued = await secrets.issue_token("nelson__dev__web", 120, "web--1-0-0--abc")
    assert "token=" not in repr(issued) and issued.token not in repr(issued)
    token = vault.token_by_accessor(issued.accessor)
    assert token is not None and token.policies == ["nelson__dev__web"]
    assert token.meta == {"nelson_stack": "web--1-0-0--abc", "nelson_datacenter": "local"}
    clock.advance(100)
    assert await secrets.renew(issued.accessor) is True
    clock.advance(100)
    assert vault.token_by_accessor(issued.accessor) is not None
    await secrets.revoke(issued.accessor)
    await secrets.revoke(issued.accessor)  # already gone: fine
    assert await secrets.renew(issued.accessor) is False
    await secrets.delete_policy("nelson__dev__web")
    await secrets.delete_policy("nelson__dev__web")
    assert await secrets.policy("nelson__dev__web") is None
    await secrets.close()


async def test_status_says_sealed_unreachable_or_refused(vault: FakeVault) -> None:
    secrets = await adapter(vault)
    status = await secrets.status()
    assert (status.reachable, status.sealed, status.detail) == (
        True,
        False,
        "unsealed (Vault 1.15.6)",
    )
    vault.sealed = True
    assert (await secrets.status()).detail == "sealed (Vault 1.15.6)"
    vault.sealed = False
    stranger = await adapter(vault, token="hvs.unknown")
    assert "permission denied" in (await stranger.status()).detail
    await vault.stop()
    down = await secrets.status()
    assert not down.reachable and "cannot be reached" in down.detail


async def test_faults_become_clear_errors(vault: FakeVault) -> None:
    secrets = await adapter(vault)
    vault.fail_next(1, 500)
    with pytest.raises(SecretsError, match="failed to write the policy") as info:
        await secrets.write_policy("nelson__dev__web", [])
    assert info.value.transient
    vault.sealed = True
    with pytest.raises(SecretsError, match="is sealed: it cannot write the policy") as info:
        await secrets.write_policy("nelson__dev__web", [])
    assert not info.value.transient
    vault.sealed = False
    with pytest.raises(SecretsError, match="needs update on sys/policies/acl/other") as info:
        await secrets.write_policy("other", [])
    assert not info.value.transient
    await vault.stop()
    with pytest.raises(SecretsError, match="cannot be reached") as info:
        await secrets.write_policy("nelson__dev__web", [])
    assert info.value.transient


async def test_nothing_listens_there(vault: FakeVault) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secrets = VaultSecrets(
        VaultSettings(address=f"http://user:pw@127.0.0.1:{port}", token=SecretStr("t")),
        "local",  # type: ignore[arg-type]
    )
    with pytest.raises(SecretsError) as info:
        await secrets.policy("x")
    assert "pw" not in str(info.value) and f"127.0.0.1:{port}" in str(info.value)


async def test_approle_logs_in_again_when_its_token_expired(
    vault: FakeVault, clock: FakeClock
) -> None:
    vault.approles["nelson"] = AppRole("role-1", "secret-1", ["nelson-bot"], timedelta(minutes=5))
    secrets = await adapter(vault, auth="approle", role_id="role-1", secret_id="secret-1")
    await secrets.write_policy("nelson__dev__a", [])
    logins = [r for r in vault.requests if r.path == "auth/approle/login"]
    assert len(logins) == 1
    clock.advance(timedelta(minutes=6))  # the login token expired
    await secrets.write_policy("nelson__dev__b", [])
    assert len([r for r in vault.requests if r.path == "auth/approle/login"]) == 2
    assert {"nelson__dev__a", "nelson__dev__b"} <= set(vault.policies)
    wrong = await adapter(vault, auth="approle", role_id="role-1", secret_id="nope")
    with pytest.raises(SecretsError, match="rejected the request to log in"):
        await wrong.policy("nelson__dev__a")


async def test_kubernetes_login_reads_the_service_account_token(vault: FakeVault) -> None:
    vault.kubernetes["nelson"] = KubernetesRole("the-jwt", ["nelson-bot"])
    settings = VaultSettings(address=vault.address, auth="kubernetes", role="nelson")
    secrets = VaultSecrets(settings, "local", read_file=lambda path: "the-jwt")
    await secrets.write_policy("nelson__dev__k", [])
    assert "nelson__dev__k" in vault.policies

    def unreadable(path: str) -> str:
        raise FileNotFoundError(2, "No such file or directory")

    broken = VaultSecrets(settings, "local", read_file=unreadable)
    with pytest.raises(SecretsError, match=r"service account token .* cannot be read"):
        await broken.policy("x")
    refused = VaultSecrets(settings, "local", read_file=lambda path: "other-jwt")
    with pytest.raises(SecretsError, match="refused the bot's kubernetes login"):
        await refused.policy("x")


def test_policy_text_and_shown_address() -> None:
    text = policy_text("nelson__dev__web", ["b/creds", "a/creds", "a/creds"])
    assert text.index('path "a/creds"') < text.index('path "b/creds"')
    assert text.count('path "a/creds"') == 1
    with pytest.raises(SecretsError, match="cannot be a Vault path"):
        policy_text("p", ['x" { capabilities = ["sudo"] } path "y'])
    assert shown_address("https://u:p@vault.internal:8200/x") == "https://vault.internal:8200"
