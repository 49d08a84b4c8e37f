"""Deploys for real: images in a real staging registry, replicated to a real runtime registry,
run as containers on a real Docker engine, probed until healthy."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from adapters.registry import OciRegistry
from adapters.scheduler import DockerEngine
from bot.bootstrap import Application, build
from commands.access import Principal
from commands.ports import ImageNotFound, RegistryError, SchedulerError
from commands.settings import Settings
from domain.runtime import HealthProbe, LaunchSpec, PortSpec
from domain.states import StackStatus
from tests.dockerworld import busybox_image

MANIFEST = """\
units:
  - name: {unit}
    description: says howdy
    ports:
      - default->8080/http
    {dependencies}
plans:
  - name: default
    cpu: 0.5
    memory: 64
    instances:
      desired: {instances}
    environment:
      - GREETING=howdy
    health_checks:
      - name: alive
        port_reference: default
        protocol: http
        path: {path}
        timeout: 2s
        interval: 1s
namespaces:
  - name: dev
    units:
      - ref: {unit}
        plans: [default]
"""

ADMIN = Principal("U1", "alice")


@pytest.fixture(scope="module")
def engine_client(docker_address: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_address, version="1.41")
    yield client
    client.close()


def settings_for(
    tmp: Path, docker_address: str, registries: tuple[str, str], **units: str
) -> Settings:
    root = tmp / "manifests"
    for unit, text in units.items():
        (root / unit).mkdir(parents=True, exist_ok=True)
        (root / unit / ".nelson.yml").write_text(text, encoding="utf-8")
    staging, runtime = registries
    return Settings.model_validate(
        {
            "database_url": f"sqlite:///{tmp / 'nelson.db'}",
            "manifest_dirs": [str(root)],
            "datacenters": {
                "local": {
                    "scheduler": {"kind": "docker", "address": docker_address},
                    "staging_registry": staging,
                    "runtime_registry": runtime,
                }
            },
            "access": {"admins": ["U1"]},
            "workflow": {"warming_timeout": "8s", "health_interval": 0.2, "attempts": 2},
        }
    )


def manifest(unit: str, *, instances: int = 1, path: str = "/", depends: str = "") -> str:
    dependencies = f"dependencies:\n      - ref: {depends}" if depends else ""
    return MANIFEST.format(unit=unit, instances=instances, path=path, dependencies=dependencies)


@pytest.fixture
async def app(
    tmp_path: Path, docker_address: str, registries: tuple[str, str], request: Any
) -> AsyncIterator[Application]:
    units = getattr(request, "param", None) or {"howdy": manifest("howdy", instances=2)}
    application = await build(settings_for(tmp_path, docker_address, registries, **units))
    yield application
    await application.close()


async def deploy(app: Application, text: str) -> list[Any]:
    answer = await app.conversation.answer(text, ADMIN)
    assert answer.reply.ok, answer.reply
    assert app.deploys is not None
    await app.deploys.wait_idle(timeout=90)
    return await app.store.stacks_by_ids(answer.reply.stack_ids)


def fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return response.read().decode()


async def test_deploy_replicates_runs_and_waits_for_health(
    app: Application, engine_client: docker.DockerClient, registries: tuple[str, str]
) -> None:
    staging, runtime = registries
    busybox_image(engine_client, f"{staging}/howdy:1.0.0", "howdy 1.0.0")
    [stack] = await deploy(app, "deploy howdy 1.0.0 to local")
    assert stack.status is StackStatus.READY, stack.status_message
    # the image is in the runtime registry, by the digest the release recorded
    release = await app.store.release("howdy", stack.version)
    assert release is not None and release.digest is not None
    registry = OciRegistry()
    try:
        assert await registry.resolve(f"{runtime}/howdy:1.0.0") == release.digest
    finally:
        await registry.close()
    # two containers, labelled, each serving the release
    containers = engine_client.containers.list(filters={"label": f"nelson.stack={stack.name}"})
    assert sorted(c.name for c in containers) == [f"{stack.name}-0", f"{stack.name}-1"]
    for container in containers:
        labels = container.labels
        assert (labels["nelson.unit"], labels["nelson.version"]) == ("howdy", "1.0.0")
        assert (labels["nelson.namespace"], labels["nelson.datacenter"]) == ("dev", "local")
        env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
        assert env["NELSON_STACKNAME"] == stack.name and env["GREETING"] == "howdy"
        assert env["NELSON_DATACENTER"] == "local" and env["NELSON_PLAN"] == "default"
        assert container.attrs["HostConfig"]["Memory"] == 64 * 1024 * 1024
        assert container.attrs["HostConfig"]["NanoCpus"] == 500_000_000
        assert fetch(int(env["NELSON_PORT_DEFAULT"])) == "howdy 1.0.0"
    # the log and the status history tell the story
    steps = [line.step for line in await app.store.logs(stack.id)]
    for step in ("resolve", "replicate", "secrets", "launch", "warm", "traffic", "ready"):
        assert step in steps
    history = [c.status for c in await app.store.status_history(stack.id)]
    assert history == [
        StackStatus.PENDING,
        StackStatus.DEPLOYING,
        StackStatus.WARMING,
        StackStatus.READY,
    ]
    runtime_reply = await app.conversation.answer(f"runtime {stack.name}", ADMIN)
    assert "2 of 2 running" in runtime_reply.reply.title
    assert "Health: *healthy*: 2 instance(s) healthy (alive)" in str(runtime_reply.reply.blocks)
    # the same release again is refused; nothing new runs
    again = await app.conversation.answer("deploy howdy 1.0.0 to local", ADMIN)
    assert not again.reply.ok and "already deployed" in again.reply.title


async def test_a_missing_image_fails_at_once_naming_image_and_registry(
    app: Application, registries: tuple[str, str]
) -> None:
    [stack] = await deploy(app, "deploy howdy 9.9.9 to local")
    assert stack.status is StackStatus.FAILED
    assert "howdy:9.9.9 is not in registry" in stack.status_message
    assert registries[0] in stack.status_message
    lines = [line.message for line in await app.store.logs(stack.id)]
    assert not any("trying again" in line for line in lines)  # not a transient fault
    # asked from the console, with no Slack to follow it, the operation is finished all the same
    [operation] = await app.store.operations_for_stack(stack.id)
    assert operation.finished_at is not None and operation.outcome == "failed"


@pytest.mark.parametrize("app", [{"howdy": manifest("howdy", path="/health")}], indirect=True)
async def test_an_unhealthy_stack_fails_with_the_reason_and_leaves_nothing_running(
    app: Application, engine_client: docker.DockerClient, registries: tuple[str, str]
) -> None:
    busybox_image(engine_client, f"{registries[0]}/howdy:2.0.0", "no health endpoint")
    [stack] = await deploy(app, "deploy howdy 2.0.0 to local")
    assert stack.status is StackStatus.FAILED
    assert "not healthy within 8 s" in stack.status_message
    assert "check 'alive' GET /health answered 404" in stack.status_message
    assert not engine_client.containers.list(
        all=True, filters={"label": f"nelson.stack={stack.name}"}
    )


@pytest.mark.parametrize(
    "app",
    [{"db": manifest("db"), "web": manifest("web", depends="db@1.0")}],
    indirect=True,
)
async def test_dependants_get_the_address_of_their_dependencies(
    app: Application, engine_client: docker.DockerClient, registries: tuple[str, str]
) -> None:
    busybox_image(engine_client, f"{registries[0]}/db:1.0.0", "db")
    busybox_image(engine_client, f"{registries[0]}/web:1.0.0", "web")
    refused = await app.conversation.answer("deploy web 1.0.0 to local", ADMIN)
    assert not refused.reply.ok  # its dependency is not there yet
    [db] = await deploy(app, "deploy db 1.0.0 to local")
    [web] = await deploy(app, "deploy web 1.0.0 to local")
    assert web.status is StackStatus.READY, web.status_message
    [container] = engine_client.containers.list(filters={"label": f"nelson.stack={web.name}"})
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    address = env["NELSON_DEPENDENCY_DB"]
    assert fetch(int(address.rsplit(":", 1)[1])) == "db"
    assert db.status is StackStatus.READY


async def test_the_engine_is_idempotent(
    docker_address: str, engine_client: docker.DockerClient, registries: tuple[str, str]
) -> None:
    busybox_image(engine_client, f"{registries[0]}/idem:1.0.0", "idem")
    base = random.randrange(30000, 32700, 3)
    scheduler = DockerEngine(docker_address, "local", ports=(base, base + 2))
    spec = LaunchSpec(
        stack="idem--1-0-0--00000001",
        unit="idem",
        version="1.0.0",
        namespace="dev",
        datacenter="local",
        plan="default",
        image=f"{registries[0]}/idem:1.0.0",
        instances=2,
        cpu=0.1,
        memory_mb=32,
        ports=(PortSpec("default", 8080, "http"),),
        health=(HealthProbe("alive", "default", "http", "/", 2),),
    )
    try:
        first = await scheduler.launch(spec)
        engine_client.containers.get(first[1].name).remove(force=True)  # one instance lost
        second = await scheduler.launch(spec)
        assert [i.name for i in second] == [i.name for i in first]
        assert second[0].ports == first[0].ports  # the surviving instance is kept as it was
        # host ports come from the configured range, one per instance, never shared
        used = [port for i in second for _, port in i.ports]
        assert len(set(used)) == 2 and all(base <= p <= base + 2 for p in used)
        crowded = dataclasses.replace(spec, stack="idem--1-0-0--00000002", instances=2)
        with pytest.raises(SchedulerError, match=f"no free host port left in {base}-{base + 2}"):
            await scheduler.launch(crowded)  # one port is left for two instances
        await scheduler.delete(crowded.stack)
        for _ in range(50):
            if (await scheduler.health(spec)).healthy:
                break
            await asyncio.sleep(0.1)
        assert (await scheduler.health(spec)).healthy
        assert await scheduler.delete(spec.stack) == 2
        assert await scheduler.delete(spec.stack) == 0
        assert await scheduler.instances(spec.stack) == []
    finally:
        await scheduler.delete(spec.stack)
        await scheduler.close()


async def test_an_engine_that_is_not_running_is_named(tmp_path: Path) -> None:
    scheduler = DockerEngine(f"unix://{tmp_path / 'nothing.sock'}", "local")
    try:
        reason = await scheduler.check()
        assert reason is not None and "start Docker (`dockerd`)" in reason
        assert "datacenters.local.scheduler.address" in reason
    finally:
        await scheduler.close()


async def test_registry_copies_are_skipped_when_present_and_errors_are_specific(
    engine_client: docker.DockerClient, registries: tuple[str, str]
) -> None:
    staging, runtime = registries
    busybox_image(engine_client, f"{staging}/copy:1.0.0", "copy")
    registry = OciRegistry()
    try:
        digest = await registry.resolve(f"{staging}/copy:1.0.0")
        target = await registry.replicate(f"{staging}/copy:1.0.0", digest, runtime)
        assert target == f"{runtime}/copy@{digest}"
        assert await registry.resolve(f"{runtime}/copy:1.0.0") == digest
        # the same registry: layers are mounted, not copied
        mounted = await registry.replicate(f"{staging}/copy:1.0.0", digest, staging)
        assert mounted == f"{staging}/copy@{digest}"
        with pytest.raises(ImageNotFound, match=f"copy:2.0.0 is not in registry {staging}"):
            await registry.resolve(f"{staging}/copy:2.0.0")
        with pytest.raises(RegistryError, match="names no registry"):
            await registry.resolve("copy:1.0.0")
        with pytest.raises(RegistryError, match="unreachable"):
            await OciRegistry().resolve("127.0.0.1:9/copy:1.0.0")
    finally:
        await registry.close()


async def test_registries_that_ask_for_credentials(
    engine_client: docker.DockerClient, registries: tuple[str, str]
) -> None:
    from adapters.registry.oci import Credentials
    from tests.registry_auth import basic_auth_registry, token_auth_registry

    staging = registries[0]
    busybox_image(engine_client, f"{staging}/private:1.0.0", "private")
    anonymous = OciRegistry()
    digest = await anonymous.resolve(f"{staging}/private:1.0.0")
    with (
        basic_auth_registry("ci", "s3cret") as basic,
        token_auth_registry("ci", "s3cret") as (
            bearer,
            tokens,
        ),
    ):
        with pytest.raises(RegistryError, match="wants a user name and password"):
            await anonymous.replicate(f"{staging}/private:1.0.0", digest, basic)
        with pytest.raises(RegistryError, match=r"token service .* refused"):
            await anonymous.replicate(f"{staging}/private:1.0.0", digest, bearer)
        wrong = OciRegistry({bearer: Credentials("ci", "wrong")})
        with pytest.raises(RegistryError, match="check the registry credentials"):
            await wrong.replicate(f"{staging}/private:1.0.0", digest, bearer)
        await wrong.close()
        registry = OciRegistry(
            {basic: Credentials("ci", "s3cret"), bearer: Credentials("ci", "s3cret")}
        )
        try:
            for target in (basic, bearer):
                copied = await registry.replicate(f"{staging}/private:1.0.0", digest, target)
                assert copied == f"{target}/private@{digest}"
                assert await registry.resolve(f"{target}/private:1.0.0") == digest
            assert tokens.issued >= 1
        finally:
            await registry.close()
    await anonymous.close()


async def test_everywhere_then_commit_to_another_namespace(
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> None:
    staging, _runtime = registries
    text = (
        manifest("multi")
        + "  - name: qa\n    units:\n      - ref: multi\n        plans: [default]\n"
    )
    settings = settings_for(tmp_path, docker_address, registries, multi=text)
    dc = settings.datacenters["local"]
    settings = settings.model_copy(update={"datacenters": {"east": dc, "west": dc}})
    application = await build(settings)
    try:
        busybox_image(engine_client, f"{staging}/multi:1.0.0", "multi")
        stacks = await deploy(application, "deploy multi 1.0.0 everywhere")
        assert sorted(s.datacenter for s in stacks) == ["east", "west"]
        assert all(s.status is StackStatus.READY for s in stacks), [
            (s.datacenter, s.status, s.status_message) for s in stacks
        ]
        committed = await deploy(application, "commit multi 1.0.0 to qa")
        assert sorted((s.datacenter, s.namespace) for s in committed) == [
            ("east", "qa"),
            ("west", "qa"),
        ]
        assert all(s.status is StackStatus.READY for s in committed)
        # one release, four stacks, each its own container
        assert len(await application.store.releases("multi")) == 1
        running = engine_client.containers.list(filters={"label": "nelson.unit=multi"})
        assert len(running) == 4
    finally:
        for container in engine_client.containers.list(
            all=True, filters={"label": "nelson.unit=multi"}
        ):
            container.remove(force=True)
        await application.close()


async def test_a_default_namespace_other_than_dev_deploys_to_ready(
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> None:
    # The workflow, traffic control and the cleanup read the manifest under the configured
    # default namespace, as registering did: a manifest naming only `qa` is valid here.
    text = manifest("howdy").replace("- name: dev", "- name: qa")
    settings = settings_for(tmp_path, docker_address, registries, howdy=text)
    settings = settings.model_copy(update={"default_namespace": "qa"})
    application = await build(settings)
    try:
        busybox_image(engine_client, f"{registries[0]}/howdy:1.0.0", "howdy 1.0.0")
        [stack] = await deploy(application, "deploy howdy 1.0.0 to local")
        assert stack.status is StackStatus.READY, stack.status_message
        assert stack.namespace == "qa"
        [operation] = await application.store.operations_for_stack(stack.id)
        assert operation.finished_at is not None and operation.outcome == "succeeded"
        assert application.lifecycle is not None
        report = await application.lifecycle.run_once()
        assert report.judged == 1 and not report.failed
    finally:
        await application.close()


async def test_a_failing_registry_is_tried_as_often_as_the_workflow_says(
    tmp_path: Path, docker_address: str, registries: tuple[str, str]
) -> None:
    # A registry that answers every request 503 (a transient fault); every request counts.
    requests = 0

    async def unavailable(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                requests += 1
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(unavailable, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = settings_for(
        tmp_path, docker_address, (f"127.0.0.1:{port}", registries[1]), howdy=manifest("howdy")
    )
    application = await build(settings)
    try:
        [stack] = await deploy(application, "deploy howdy 1.0.0 to local")
        assert stack.status is StackStatus.FAILED
        assert f"registry 127.0.0.1:{port} refused" in stack.status_message
        # one layer retries, the workflow's step: its attempts (2 here), one request each
        assert requests == settings.workflow.attempts == 2
        lines = [line.message for line in await application.store.logs(stack.id)]
        assert [line for line in lines if "trying again" in line] == [
            lines[0]
        ] and "try 1 of 2 failed, trying again in 1s" in lines[0]
    finally:
        await application.close()
        server.close()
        await server.wait_closed()
