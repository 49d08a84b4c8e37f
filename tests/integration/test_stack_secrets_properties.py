"""Stack secrets over random sequences of grants, releases, renewals and Vault faults (sealed,
5xx, a run of failures that also hits the undo): whatever happens, no token lives that the
bot does not know (so none escapes revocation), every token the bot knows lives and carries
only its stack's policy, and every released stack has nothing left in Vault."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.secrets import VaultSecrets
from adapters.storage import open_store
from commands.ports import SecretsError
from commands.settings import Settings
from commands.stack_secrets import StackSecrets, policy_name
from domain.records import NewStack, UnitRecord
from domain.versions import Version
from tests.fakes.clock import FakeClock
from tests.fakes.vault import FakeVault

BOT = """
path "sys/policies/acl" { capabilities = ["list"] }
path "sys/policies/acl/nelson__*" { capabilities = ["create", "read", "update", "delete"] }
path "auth/token/create-orphan" { capabilities = ["update", "sudo"] }
path "auth/token/renew-accessor" { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
"""

STACKS = 3
step = st.one_of(
    st.tuples(st.sampled_from(["grant", "release"]), st.integers(0, STACKS - 1)),
    st.tuples(st.just("tend"), st.just(0)),
    st.tuples(st.sampled_from(["fail", "fail-tokens", "fail-policies"]), st.integers(1, 3)),
    st.tuples(st.sampled_from(["seal", "unseal"]), st.just(0)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, max_size=14))
def test_nothing_leaks_and_nothing_is_half_written(steps: list[tuple[str, int]]) -> None:
    asyncio.run(scenario(steps))


async def scenario(steps: list[tuple[str, int]]) -> None:
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_store(f"sqlite:///{Path(tmp) / 'n.db'}", clock=clock)
        async with FakeVault(clock=clock) as vault:
            vault.policies["nelson-bot"] = BOT
            bot_token = vault.add_token(["nelson-bot"])
            settings_ = Settings.model_validate(
                {
                    "datacenters": {
                        "local": {
                            "staging_registry": "a:1",
                            "runtime_registry": "b:1",
                            "vault": {"address": vault.address, "token": bot_token, "timeout": 5},
                        }
                    }
                }
            )
            assert settings_.datacenters["local"].vault is not None
            adapter = VaultSecrets(settings_.datacenters["local"].vault, "local")
            secrets = StackSecrets(settings_, store, clock, {"local": adapter})
            manifest = await store.register_manifest(
                "acme/web", "units: []", [UnitRecord("web", "acme/web", "service", "", 0)], "U1"
            )
            version = Version(1, 0, 0)
            _, stacks = await store.create_deployment(
                None,
                "web",
                version,
                "r/web:1.0.0",
                manifest.id,
                [
                    NewStack(
                        0,
                        f"web--1-0-0--{n:08d}",
                        f"{n:04d}aaaaaaa{n}",
                        "web",
                        version,
                        "local",
                        "dev",
                        "default",
                        datetime(2030, 1, 1, tzinfo=UTC),
                        "U1",
                    )
                    for n in range(STACKS)
                ],
                "U1",
            )
            released: set[int] = set(range(STACKS))
            try:
                for op, n in steps:
                    try:
                        if op == "grant":
                            await secrets.grant(stacks[n], ["db"], token=True)
                            released.discard(n)
                        elif op == "release":
                            await secrets.release(stacks[n])
                            released.add(n)
                        elif op == "tend":
                            await secrets.tend()
                        elif op.startswith("fail"):
                            # the next n calls, or the next n on tokens or on policies only
                            prefix = {"fail-tokens": "auth/token/", "fail-policies": "sys/"}
                            vault.fail_next(n, 500, prefix=prefix.get(op, ""))
                        elif op == "seal":
                            vault.sealed = True
                        else:
                            vault.sealed = False
                    except SecretsError:
                        if op == "release":
                            released.discard(n)  # not known to be clean
                    await check(vault, secrets, stacks, released, bot_token)
            finally:
                await adapter.close()
                await store.close()


async def check(
    vault: FakeVault, secrets: StackSecrets, stacks: Sequence[object], released: set[int], bot: str
) -> None:
    records = {r.accessor: r for r in await secrets.store.vault_tokens()}
    live = {t.accessor: t for t in vault.live_tokens() if t.id not in (vault.root_token, bot)}
    assert set(live) <= set(records), "a token lives that the bot would never revoke"
    for accessor, record in records.items():
        token = live.get(accessor)
        assert token is not None, f"the bot keeps a token that is gone ({record.stack})"
        assert token.policies == [record.policy]
    by_stack = [r.stack_id for r in records.values()]
    assert len(by_stack) == len(set(by_stack)), "two tokens for one stack"
    for n in released:
        stack = stacks[n]
        assert policy_name(stack) not in vault.policies  # type: ignore[arg-type]
        assert stack.id not in by_stack  # type: ignore[attr-defined]


async def test_a_scheduler_with_its_own_vault_integration_gets_only_the_policy(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    store = await open_store(f"sqlite:///{tmp_path / 'n.db'}", clock=clock)
    async with FakeVault(clock=clock) as vault:
        vault.policies["nelson-bot"] = BOT
        settings_ = Settings.model_validate(
            {
                "namespaces": ["dev", "dev/sandbox"],
                "datacenters": {
                    "local": {
                        "staging_registry": "a:1",
                        "runtime_registry": "b:1",
                        "vault": {
                            "address": vault.address,
                            "token": vault.add_token(["nelson-bot"]),
                            "creds_path": "creds/%env%/%unit%/%resource%",
                        },
                    }
                },
            }
        )
        assert settings_.datacenters["local"].vault is not None
        adapter = VaultSecrets(settings_.datacenters["local"].vault, "local")
        secrets = StackSecrets(settings_, store, clock, {"local": adapter})
        manifest = await store.register_manifest(
            "acme/web", "units: []", [UnitRecord("web", "acme/web", "service", "", 0)], "U1"
        )
        version = Version(2, 1, 0)
        new = NewStack(0, "web--2-1-0--abcdefgh", "abcdabcdabcd", "web", version, "local",
                       "dev/sandbox", "default", None, "U1")  # fmt: skip
        _, [stack] = await store.create_deployment(
            None, "web", version, "r/web:2.1.0", manifest.id, [new], "U1"
        )
        grant = await secrets.grant(stack, ["queue", "db"], token=False)
        name = "nelson__dev__web--2-1-0--abcdefgh"  # the root namespace, as Nelson names it
        assert grant.policy == name and grant.environment == (("NELSON_VAULT_POLICYNAME", name),)
        assert 'path "creds/dev/web/db"' in vault.policies[name]
        assert 'path "creds/dev/web/queue"' in vault.policies[name]
        assert len(vault.live_tokens()) == 2  # root and the bot: no token for the stack
        assert await secrets.release(stack) is True
        assert name not in vault.policies
        assert await secrets.release(stack) is False  # nothing left to remove
        await adapter.close()
    await store.close()
