"""Vault on a Docker datacenter, for real but for Vault: a real dockerd and registries, the
fake Vault on loopback, the bot authenticated with a token holding only what the docs say it
needs. The containers (host network) use the token they were given against that Vault."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import pytest

from bot.bootstrap import Application, build
from bot.terminal import render
from commands.access import Principal
from commands.settings import Settings
from domain.records import Stack
from domain.states import StackStatus
from tests.dockerworld import busybox_image
from tests.fakes.clock import FakeClock
from tests.fakes.vault import FakeVault

MANIFEST = """\
units:
  - name: howdy
    description: says howdy
    ports:
      - default->8080/http
    resources:
      - name: db
      - name: queue
plans:
  - name: default
    cpu: 0.5
    memory: 64
    resources:
      - ref: db
        uri: postgresql://db.example.com/howdy
      - ref: queue
        uri: amqp://queue.example.com/howdy
    health_checks:
      - name: alive
        port_reference: default
        protocol: http
        path: /
        timeout: 2s
        interval: 1s
namespaces:
  - name: dev
    units:
      - ref: howdy
        plans: [default]
"""

# What the bot's own Vault identity needs (docs/secrets.md says the same).
BOT_POLICY = """
path "sys/policies/acl" { capabilities = ["list"] }
path "sys/policies/acl/nelson__*" { capabilities = ["create", "read", "update", "delete"] }
path "auth/token/create-orphan" { capabilities = ["update", "sudo"] }
path "auth/token/renew-accessor" { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
"""

ADMIN = Principal("U1", "alice")


@pytest.fixture(scope="module")
def engine_client(docker_address: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_address, version="1.41")
    yield client
    client.close()


@pytest.fixture
async def vault(clock: FakeClock) -> AsyncIterator[FakeVault]:
    async with FakeVault(clock=clock) as fake:
        fake.policies["nelson-bot"] = BOT_POLICY
        fake.kv["nelson/dev/db/creds/howdy"] = {"username": "howdy", "password": "s3cret"}
        fake.kv["nelson/dev/db/creds/other"] = {"username": "other", "password": "n0pe"}
        yield fake


def settings_for(
    tmp: Path, docker_address: str, registries: tuple[str, str], vault: FakeVault, token: str
) -> Settings:
    (tmp / "manifests" / "howdy").mkdir(parents=True, exist_ok=True)
    (tmp / "manifests" / "howdy" / ".nelson.yml").write_text(MANIFEST, encoding="utf-8")
    staging, runtime = registries
    return Settings.model_validate(
        {
            "database_url": f"sqlite:///{tmp / 'nelson.db'}",
            "manifest_dirs": [str(tmp / "manifests")],
            "datacenters": {
                "local": {
                    "scheduler": {"kind": "docker", "address": docker_address},
                    "staging_registry": staging,
                    "runtime_registry": runtime,
                    "vault": {"address": vault.address, "token": token, "timeout": 5},
                }
            },
            "access": {"admins": ["U1"]},
            "workflow": {"warming_timeout": "8s", "health_interval": 0.2, "attempts": 2},
        }
    )


@pytest.fixture
async def app(
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    vault: FakeVault,
    clock: FakeClock,
    engine_client: docker.DockerClient,
) -> AsyncIterator[Application]:
    staging, _ = registries
    await asyncio.to_thread(busybox_image, engine_client, f"{staging}/howdy:1.0.0", "howdy 1.0.0")
    token = vault.add_token(["nelson-bot"], display_name="nelson")
    application = await build(
        settings_for(tmp_path, docker_address, registries, vault, token), clock=clock
    )
    yield application
    await application.close()
    for container in engine_client.containers.list(
        all=True, filters={"label": "nelson.unit=howdy"}
    ):
        container.remove(force=True)


async def deploy(app: Application, text: str = "deploy howdy 1.0.0 to local") -> Stack:
    answer = await app.conversation.answer(text, ADMIN)
    assert answer.reply.ok, answer.reply
    assert app.deploys is not None
    await app.deploys.wait_idle(timeout=120)
    [stack] = await app.store.stacks_by_ids(answer.reply.stack_ids)
    return stack


def in_container(client: docker.DockerClient, stack: Stack, path: str) -> tuple[int, str]:
    """What the stack's first container gets from its Vault at `path`, with its own token."""
    container = client.containers.get(f"{stack.name}-0")
    result: Any = container.exec_run(
        [
            "/bin/sh",
            "-c",
            'busybox wget -q -O - --header "X-Vault-Token: $VAULT_TOKEN" '
            f'"$VAULT_ADDR/v1/{path}" 2>&1',
        ]
    )
    return int(result.exit_code), result.output.decode()


async def test_stack_gets_a_policy_and_a_token_limited_to_it_until_reaped(
    app: Application,
    vault: FakeVault,
    clock: FakeClock,
    engine_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    stack = await deploy(app)
    assert stack.status is StackStatus.READY, stack.status_message
    policy = f"nelson__dev__{stack.name}"
    text = vault.policies[policy]
    assert 'path "nelson/dev/db/creds/howdy"' in text
    assert 'path "nelson/dev/queue/creds/howdy"' in text
    assert 'path "sys/*" {\n  capabilities = ["deny"]' in text

    [record] = await app.store.vault_tokens(stack.id)
    token = vault.token_by_accessor(record.accessor)
    assert token is not None and token.policies == [policy] and token.orphan
    assert token.period == timedelta(hours=1) and token.renewable

    # the container holds that token and can read its own credentials, nothing else
    env = engine_client.containers.get(f"{stack.name}-0").attrs["Config"]["Env"]
    assert f"VAULT_TOKEN={token.id}" in env and f"VAULT_ADDR={vault.address}" in env
    assert f"NELSON_VAULT_POLICYNAME={policy}" in env
    code, body = await asyncio.to_thread(
        in_container, engine_client, stack, "nelson/dev/db/creds/howdy"
    )
    assert code == 0 and '"password":"s3cret"' in body.replace(" ", ""), body
    code, body = await asyncio.to_thread(
        in_container, engine_client, stack, "nelson/dev/db/creds/other"
    )
    assert code != 0 and "403" in body, body

    # never in plain text in the database, in the stack's log or its status
    assert token.id.encode() not in (tmp_path / "nelson.db").read_bytes()
    logs = " ".join(line.message for line in await app.store.logs(stack.id))
    assert token.id not in logs and policy in logs

    # chat shows the policy and the Vault's state, never the token
    shown = render((await app.conversation.answer(f"inspect {stack.name}", ADMIN)).reply, 200)
    assert f"{policy}: read on nelson/dev/db/creds/howdy, nelson/dev/queue/creds/howdy" in shown
    assert "periodic, renewed by the bot" in shown and token.id not in shown
    shown = render((await app.conversation.answer("datacenters", ADMIN)).reply, 200)
    assert "local: Vault unsealed (Vault 1.15.6)\n" in shown + "\n", shown
    vault.sealed = True
    shown = render((await app.conversation.answer("datacenters", ADMIN)).reply, 200)
    assert "local: Vault SEALED" in shown, shown
    vault.sealed = False

    # renewed while it lives: two periods later the token still works
    assert app.secrets is not None
    for _ in range(3):
        clock.advance(timedelta(minutes=40))
        report = await app.secrets.tend()
        assert report.renewed == 1 and not report.failed, report
    code, _ = await asyncio.to_thread(
        in_container, engine_client, stack, "nelson/dev/db/creds/howdy"
    )
    assert code == 0

    # reaping revokes the token and deletes the policy
    assert app.lifecycle is not None
    await app.store.mark_garbage({stack.id: "test"}, clock.now())
    said = await app.lifecycle.remove_now([stack.id], ADMIN)
    assert said.startswith("Removed"), said
    assert vault.token_by_accessor(record.accessor) is None
    assert policy not in vault.policies
    assert await app.store.vault_tokens() == []


async def test_a_sealed_vault_fails_the_step_and_leaves_nothing(
    app: Application, vault: FakeVault, engine_client: docker.DockerClient
) -> None:
    vault.sealed = True
    stack = await deploy(app)
    assert stack.status is StackStatus.FAILED
    assert "sealed" in stack.status_message, stack.status_message
    vault.sealed = False
    assert not [p for p in vault.policies if p.startswith("nelson__")]
    assert len(vault.live_tokens()) == 2  # root and the bot's own
    assert await app.store.vault_tokens() == []
    assert not engine_client.containers.list(all=True, filters={"label": "nelson.unit=howdy"})


@pytest.mark.parametrize(
    ("token_rule", "said"),
    [
        ('["update"]', "child policies must be subset of parent"),  # no sudo
        ('["read"]', "permission denied"),  # 403
    ],
)
async def test_a_refusal_undoes_the_policy_it_wrote(
    app: Application, vault: FakeVault, token_rule: str, said: str
) -> None:
    # the bot may write policies but not create periodic orphan tokens
    vault.policies["nelson-bot"] = BOT_POLICY.replace('["update", "sudo"]', token_rule)
    stack = await deploy(app)
    assert stack.status is StackStatus.FAILED
    assert said in stack.status_message, stack.status_message
    assert "needs update and sudo on auth/token/create-orphan" in stack.status_message
    assert not [p for p in vault.policies if p.startswith("nelson__")]
    assert await app.store.vault_tokens() == []


async def test_an_unreachable_vault_is_retried_then_fails_cleanly(
    app: Application, vault: FakeVault
) -> None:
    await vault.stop()
    stack = await deploy(app)
    assert stack.status is StackStatus.FAILED
    assert "cannot be reached" in stack.status_message, stack.status_message
    logs = [line.message for line in await app.store.logs(stack.id)]
    assert any("trying again" in line for line in logs), logs
    await vault.start()
    assert not [p for p in vault.policies if p.startswith("nelson__")]


async def test_reaping_while_vault_is_down_is_retried(
    app: Application, vault: FakeVault, clock: FakeClock, engine_client: docker.DockerClient
) -> None:
    stack = await deploy(app)
    assert stack.status is StackStatus.READY, stack.status_message
    [record] = await app.store.vault_tokens(stack.id)
    assert app.lifecycle is not None
    await app.store.mark_garbage({stack.id: "test"}, clock.now())
    vault.fail_next(10, 503)
    said = await app.lifecycle.remove_now([stack.id], ADMIN)
    assert "Could not remove" in said and "tries again" in said, said
    still = await app.store.stack_by_id(stack.id)
    assert still is not None and still.status is StackStatus.GARBAGE
    assert vault.token_by_accessor(record.accessor) is not None
    vault.heal()
    said = await app.lifecycle.remove_now([stack.id], ADMIN)
    assert said.startswith("Removed"), said
    assert vault.token_by_accessor(record.accessor) is None
    assert f"nelson__dev__{stack.name}" not in vault.policies


async def test_what_a_failed_deploy_could_not_remove_is_swept_later(
    app: Application, vault: FakeVault
) -> None:
    vault.fail_next(100, 500, prefix="auth/token/create-orphan")
    vault.fail_next(100, 500, prefix="sys/policies/acl/", method="DELETE")
    stack = await deploy(app)
    assert stack.status is StackStatus.FAILED
    assert "could not be removed yet" in " ".join(m.message for m in await app.store.logs(stack.id))
    policy = f"nelson__dev__{stack.name}"
    assert policy in vault.policies  # Vault refused to delete it
    vault.heal()
    assert app.secrets is not None
    report = await app.secrets.tend()
    assert report.revoked == [stack.name] and not report.failed
    assert policy not in vault.policies
