"""Deploys to a Nomad datacenter: the real workflow and registries, python-nomad against the
fake Nomad agent, which runs the job's docker task as real containers on the test dockerd."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from pydantic import SecretStr

from adapters.scheduler import NomadScheduler
from bot.bootstrap import Application, build
from commands.access import Principal
from commands.ports import SchedulerError
from commands.settings import SchedulerSettings, Settings
from domain.runtime import HealthProbe, LaunchSpec, PortSpec
from domain.states import StackStatus
from tests.dockerworld import busybox_image
from tests.fakes.nomad import FakeNomad
from tests.integration.test_deploy_docker import manifest

ADMIN = Principal("U1", "alice")
TOKEN = "b1e7c2d4-0000-4000-8000-00000000cafe"


@pytest.fixture(scope="module")
def engine_client(docker_address: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_address, version="1.41")
    yield client
    client.close()


@pytest.fixture
def nomad(docker_address: str) -> Iterator[FakeNomad]:
    with FakeNomad(docker_address, acl={TOKEN: "management"}, datacenter="west") as fake:
        yield fake
    assert not fake.schema_problems


def settings_for(
    tmp: Path, nomad: FakeNomad, registries: tuple[str, str], **units: str
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
                "west": {
                    "scheduler": {"kind": "nomad", "address": nomad.address, "token": TOKEN},
                    "staging_registry": staging,
                    "runtime_registry": runtime,
                }
            },
            "access": {"admins": ["U1"]},
            "workflow": {"warming_timeout": "10s", "health_interval": 0.2, "attempts": 2},
        }
    )


@pytest.fixture
async def app(
    tmp_path: Path, nomad: FakeNomad, registries: tuple[str, str], request: Any
) -> AsyncIterator[Application]:
    units = getattr(request, "param", None) or {"howdy": manifest("howdy", instances=2)}
    application = await build(settings_for(tmp_path, nomad, registries, **units))
    yield application
    await application.close()


async def deploy(app: Application, text: str) -> list[Any]:
    answer = await app.conversation.answer(text, ADMIN)
    assert answer.reply.ok, answer.reply
    assert app.deploys is not None
    await app.deploys.wait_idle(timeout=90)
    return await app.store.stacks_by_ids(answer.reply.stack_ids)


def fetch(host: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as response:
        return response.read().decode()


async def test_deploy_runs_a_nomad_job_per_stack_and_reads_its_health(
    app: Application,
    nomad: FakeNomad,
    engine_client: docker.DockerClient,
    registries: tuple[str, str],
) -> None:
    staging, runtime = registries
    busybox_image(engine_client, f"{staging}/howdy:1.0.0", "howdy 1.0.0")
    [stack] = await deploy(app, "deploy howdy 1.0.0 to west")
    assert stack.status is StackStatus.READY, stack.status_message
    job = nomad.jobs[("default", stack.name)]
    assert job["Type"] == "service" and job["Datacenters"] == ["west"]
    [group] = job["TaskGroups"]
    [task] = group["Tasks"]
    assert group["Count"] == 2
    assert task["Driver"] == "docker" and task["Config"]["image"].startswith(f"{runtime}/howdy@")
    assert task["Resources"] == {"CPU": 500, "MemoryMB": 64}
    assert task["Env"]["GREETING"] == "howdy" and task["Env"]["NELSON_STACKNAME"] == stack.name
    assert task["Env"]["PORT"] == "${NOMAD_PORT_default}"
    assert job["Meta"]["nelson_stack"] == stack.name
    [service] = group["Services"]
    assert service["Checks"][0]["Path"] == "/" and service["Checks"][0]["Type"] == "http"
    # every request carried the token; the allocations are real containers serving the release
    assert all(
        token == TOKEN for method, path, token in nomad.requests if path != "/v1/status/leader"
    )
    allocs = nomad.running_allocations(stack.name)
    assert len(allocs) == 2
    for alloc in allocs:
        assert fetch("127.0.0.1", alloc.ports["default"]) == "howdy 1.0.0"
    reply = (await app.conversation.answer(f"runtime {stack.name}", ADMIN)).reply
    assert "2 of 2 running" in reply.title
    assert "Health: *healthy*: 2 allocation(s) healthy (alive)" in str(reply.blocks)
    assert f"{stack.name}.howdy[0]" in str(reply.blocks)


@pytest.mark.parametrize("app", [{"howdy": manifest("howdy", path="/health")}], indirect=True)
async def test_an_unhealthy_deployment_fails_and_the_job_is_purged(
    app: Application,
    nomad: FakeNomad,
    engine_client: docker.DockerClient,
    registries: tuple[str, str],
) -> None:
    busybox_image(engine_client, f"{registries[0]}/howdy:2.0.0", "no health endpoint")
    [stack] = await deploy(app, "deploy howdy 2.0.0 to west")
    assert stack.status is StackStatus.FAILED
    assert "not healthy within 10 s" in stack.status_message
    assert "0 of 1 allocations healthy" in stack.status_message
    assert ("default", stack.name) not in nomad.jobs
    assert not engine_client.containers.list(filters={"label": f"fake-nomad.job={stack.name}"})


async def test_a_nomad_datacenter_that_is_down_refuses_deploys_up_front(
    app: Application, nomad: FakeNomad
) -> None:
    nomad.refuse_connections()
    answer = await app.conversation.answer("deploy howdy 1.0.0 to west", ADMIN)
    assert not answer.reply.ok
    text = str(answer.reply)
    assert "Cannot deploy to datacenter 'west' now" in text
    assert f"cannot reach Nomad at {nomad.address}" in text and "connection refused" in text
    assert not (await app.store.releases("howdy"))
    listing = str((await app.conversation.answer("datacenters", ADMIN)).reply)
    assert "nomad " + nomad.address in listing and TOKEN not in listing


async def test_a_token_nomad_refuses_is_named_without_showing_it(
    tmp_path: Path, nomad: FakeNomad, registries: tuple[str, str]
) -> None:
    settings = settings_for(tmp_path, nomad, registries, howdy=manifest("howdy"))
    west = settings.datacenters["west"]
    wrong = west.model_copy(
        update={
            "scheduler": SchedulerSettings(
                kind="nomad", address=nomad.address, token=SecretStr("nope")
            )
        }
    )
    app = await build(settings.model_copy(update={"datacenters": {"west": wrong}}))
    try:
        answer = await app.conversation.answer("deploy howdy 1.0.0 to west", ADMIN)
    finally:
        await app.close()
    text = str(answer.reply)
    assert not answer.reply.ok and "ACL token not found" in text
    assert "NELSON_DATACENTERS__WEST__SCHEDULER__TOKEN" in text and "nope" not in text


def spec(stack: str, image: str = "127.0.0.1:1/howdy@sha256:" + "0" * 64) -> LaunchSpec:
    return LaunchSpec(
        stack=stack,
        unit="howdy",
        version="1.0.0",
        namespace="dev",
        datacenter="west",
        plan="default",
        image=image,
        instances=1,
        cpu=0.5,
        memory_mb=64,
        ports=(PortSpec("default", 8080, "http"), PortSpec("admin-api", 9000, "tcp")),
        health=(HealthProbe("alive", "default", "http", "/", 2, 1),),
    )


async def test_nomad_errors_become_clear_messages_and_only_5xx_is_retried() -> None:
    with FakeNomad(acl={TOKEN: {"default": frozenset({"read-job", "list-jobs"})}}) as fake:
        settings = SchedulerSettings(kind="nomad", address=fake.address, token=SecretStr(TOKEN))
        scheduler = NomadScheduler(settings, "west", timeout=5)
        try:
            assert await scheduler.check() is None
            with pytest.raises(Exception) as refused:
                await scheduler.launch(spec("howdy--1-0-0--aaaaaaaa"))
            assert "Permission denied" in str(refused.value)
            assert "submit-job" in str(refused.value) and not refused.value.transient  # type: ignore[attr-defined]
            assert await scheduler.instances("howdy--9-9-9--missing0") == []
            with pytest.raises(SchedulerError, match=r"deregister job .*: Permission denied"):
                await scheduler.delete("howdy--9-9-9--missing0")
            fake.fail_requests(500, "rpc error: No cluster leader")
            with pytest.raises(Exception) as leaderless:
                await scheduler.instances("howdy--1-0-0--aaaaaaaa")
            assert "answered 500" in str(leaderless.value) and "No cluster leader" in str(
                leaderless.value
            )
            assert leaderless.value.transient  # type: ignore[attr-defined]
            fake.refuse_connections()
            problem = await scheduler.check()
            assert problem is not None and "connection refused" in problem
            assert "datacenters.west.scheduler.address" in problem
        finally:
            await scheduler.close()


async def test_an_invalid_job_is_refused_before_it_is_submitted() -> None:
    with FakeNomad() as fake:
        scheduler = NomadScheduler(SchedulerSettings(kind="nomad", address=fake.address), "west")
        try:
            bad = spec("howdy--1-0-0--bbbbbbbb")
            job = scheduler.job(bad)
            job["TaskGroups"][0]["Tasks"][0]["Driver"] = ""
            assert await scheduler.validate(job) == [
                "Task group howdy validation failed: 1 error occurred:\n\t* Task howdy "
                "validation failed: 1 error occurred:\n\t* Missing task driver"
            ]
            assert await scheduler.validate(scheduler.job(bad)) == []
            assert await scheduler.delete(bad.stack) == 0  # no such job: nothing to remove
            plan = await scheduler.plan(scheduler.job(bad))
            assert plan["Diff"]["Type"] == "Added"
            assert not fake.jobs  # validation and plans submit nothing
            # ports keep their labels (Nomad's with `_`), the admin port is listed back with `-`
            await scheduler.launch(bad)
            job = fake.jobs[("default", bad.stack)]
            labels = [p["Label"] for p in job["TaskGroups"][0]["Networks"][0]["DynamicPorts"]]
            assert labels == ["default", "admin_api"]
        finally:
            await scheduler.close()
