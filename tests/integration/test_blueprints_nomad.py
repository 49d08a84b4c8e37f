"""Blueprints and dry runs on a Nomad datacenter (the fake Nomad, tasks simulated) and on a
Docker one: register, list, pick one per plan, render without deploying, and a blueprint that
makes no valid job fails the deploy before anything reaches Nomad."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest

from adapters.scheduler.nomad_job import default_blueprint
from bot.bootstrap import Application, build
from commands.access import Principal
from commands.settings import Settings
from domain.states import StackStatus
from tests.dockerworld import busybox_image
from tests.fakes.nomad import FakeNomad
from tests.integration.test_deploy_docker import manifest

ADMIN = Principal("U1", "alice")


@pytest.fixture(scope="module")
def engine_client(docker_address: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_address, version="1.41")
    yield client
    client.close()


@pytest.fixture
def nomad() -> Iterator[FakeNomad]:
    with FakeNomad(datacenter="west") as fake:  # no Docker engine: tasks are simulated
        yield fake
    assert not fake.schema_problems


def with_blueprint(text: str, blueprint: str) -> str:
    return text.replace("    cpu: 0.5\n", f"    cpu: 0.5\n    blueprint: {blueprint}\n")


@pytest.fixture
async def app(
    tmp_path: Path, nomad: FakeNomad, registries: tuple[str, str], docker_address: str
) -> AsyncIterator[Application]:
    root = tmp_path / "manifests"
    units = {"howdy": manifest("howdy"), "custom": with_blueprint(manifest("custom"), "tagged")}
    for unit, text in units.items():
        (root / unit).mkdir(parents=True)
        (root / unit / ".nelson.yml").write_text(text, encoding="utf-8")
    staging, runtime = registries
    settings = Settings.model_validate(
        {
            "database_url": f"sqlite:///{tmp_path / 'nelson.db'}",
            "manifest_dirs": [str(root)],
            "datacenters": {
                "west": {
                    "scheduler": {"kind": "nomad", "address": nomad.address},
                    "staging_registry": staging,
                    "runtime_registry": runtime,
                },
                "east": {
                    "scheduler": {"kind": "docker", "address": docker_address},
                    "staging_registry": staging,
                    "runtime_registry": runtime,
                },
            },
            "access": {"admins": ["U1"]},
            "workflow": {"warming_timeout": "10s", "health_interval": 0.2, "attempts": 1},
        }
    )
    application = await build(settings)
    yield application
    await application.close()


async def say(app: Application, text: str) -> tuple[bool, str]:
    answer = await app.conversation.answer(text, ADMIN, local=True)  # the console
    return answer.reply.ok, f"{answer.reply.title}\n{answer.reply.blocks}"


async def test_render_shows_the_job_validated_and_planned_without_deploying(
    app: Application,
    nomad: FakeNomad,
    engine_client: docker.DockerClient,
    registries: tuple[str, str],
) -> None:
    busybox_image(engine_client, f"{registries[0]}/howdy:1.0.0", "howdy")
    answer = await app.conversation.answer("render howdy 1.0.0 at west", ADMIN)
    reply = answer.reply
    assert reply.ok, reply
    assert reply.title == "Dry run: howdy 1.0.0 at west (dev, plan default)"
    [code] = [b for b in reply.blocks if type(b).__name__ == "Code"][:1]
    job = json.loads(code.text)  # type: ignore[attr-defined,union-attr]
    assert job["ID"] == "howdy--1-0-0--00000000" and job["Datacenters"] == ["west"]
    image = job["TaskGroups"][0]["Tasks"][0]["Config"]["image"]
    assert image.startswith(f"{registries[1]}/howdy@sha256:")  # the runtime registry's copy
    text = str(reply.blocks)
    assert "What west would change" in text and "+ " in text
    assert "from the default Nomad blueprint" in text
    assert not nomad.jobs and not await app.store.releases("howdy")  # nothing deployed
    writes = [p for m, p, _ in nomad.requests if m in ("POST", "PUT", "DELETE")]
    assert writes == ["/v1/validate/job", "/v1/job/howdy--1-0-0--00000000/plan"]
    # a Docker datacenter shows its container options
    ok, docker_text = await say(app, "render howdy 1.0.0 at east")
    assert ok and "from the Docker engine's options" in docker_text
    assert '"network_mode": "host"' in docker_text and "howdy--1-0-0--00000000-0" in docker_text
    # Nomad down: the job is still shown, marked as not validated
    nomad.refuse_connections()
    ok, down = await say(app, "render howdy 1.0.0 at west")
    assert ok and "not validated: cannot reach Nomad" in down and "connection refused" in down


async def test_blueprints_are_registered_versioned_and_picked_by_plans(
    app: Application,
    nomad: FakeNomad,
    engine_client: docker.DockerClient,
    registries: tuple[str, str],
    tmp_path: Path,
) -> None:
    busybox_image(engine_client, f"{registries[0]}/custom:1.0.0", "custom")
    ok, missing = await say(app, "render custom 1.0.0 at west")
    assert not ok and "blueprint tagged is not registered" in missing
    path = tmp_path / "tagged.yml"
    path.write_text(default_blueprint().replace("Meta: {{ meta }}\n", "Meta: {team: blue}\n", 1))
    ok, registered = await say(app, f"blueprint tagged {path}")
    assert ok and "Registered revision 1 of blueprint tagged" in registered
    ok, again = await say(app, f"blueprint tagged {path}")
    assert "already has this text (revision 1)" in again
    # from Slack: no paths, but pasted text (or an attached file) is read
    slack = await app.conversation.answer(f"blueprint tagged {path}", ADMIN)
    assert "only read blueprints by path in the local console" in str(slack.reply)
    pasted = "ID: {{ stack }}\nTaskGroups: []\n"
    slack = await app.conversation.answer(f"blueprint other\n```\n{pasted}```", ADMIN)
    assert slack.reply.ok and (await app.store.blueprint("other")).text.strip() == pasted.strip()  # type: ignore[union-attr]
    ok, listing = await say(app, "blueprints")
    assert ok and "'tagged', 'nomad', '1'" in listing and "(default)" in listing
    # a broken template is refused at registration, naming the line
    broken = tmp_path / "broken.yml"
    broken.write_text("ID: {{ stack }}\nTaskGroups: {% for %}\n")
    ok, refused = await say(app, f"blueprint tagged {broken}")
    assert not ok and "line 2" in refused and (await app.store.blueprint("tagged")).revision == 1  # type: ignore[union-attr]
    # deploy: the plan's blueprint makes the job
    answer = await app.conversation.answer("deploy custom 1.0.0 to west", ADMIN)
    assert answer.reply.ok, answer.reply
    assert app.deploys is not None
    await app.deploys.wait_idle(timeout=60)
    [stack] = await app.store.stacks_by_ids(answer.reply.stack_ids)
    assert stack.status is StackStatus.READY, stack.status_message
    assert nomad.jobs[("default", stack.name)]["Meta"] == {"team": "blue"}
    # revision 2 renders no valid job: the deploy fails before anything is submitted
    path.write_text(default_blueprint().replace("Driver: docker", "Driver: {{ driver }}"))
    ok, second = await say(app, f"blueprint tagged {path}")
    assert ok and "revision 2" in second
    answer = await app.conversation.answer("redeploy " + stack.name, ADMIN)
    await app.deploys.wait_idle(timeout=60)
    [failed] = await app.store.stacks_by_ids(answer.reply.stack_ids)
    assert failed.status is StackStatus.FAILED
    assert "blueprint tagged@2 line" in failed.status_message
    assert "'driver' is undefined" in failed.status_message
    assert ("default", failed.name) not in nomad.jobs
    ok, shown = await say(app, "render custom 1.0.0 at west")
    assert not ok and "'driver' is undefined" in shown
