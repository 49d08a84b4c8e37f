"""What end-to-end tests on the local Docker datacenter share: the datacenter's settings
(a real dockerd, two registries, a real HAProxy), slash commands, and stopping it all."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import docker

from commands.settings import DatacenterSettings, Settings
from tests.e2e.slack_harness import RunningBot
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_requests import encode_form, slash_command


def with_local_datacenter(
    settings: Settings, tmp: Path, docker_address: str, registries: tuple[str, str]
) -> Settings:
    """`settings` with one datacenter, `local`: the test dockerd, both registries, and an
    HAProxy of its own on ports no other test uses."""
    staging, runtime = registries
    base = random.randrange(21000, 29900, 100)
    local = {
        "scheduler": {"kind": "docker", "address": docker_address},
        "staging_registry": staging,
        "runtime_registry": runtime,
        "router": {
            "kind": "haproxy",
            "address": str(tmp / "haproxy"),
            "ports": f"{base}-{base + 99}",
        },
    }
    return settings.model_copy(
        update={"datacenters": {"local": DatacenterSettings.model_validate(local)}}
    )


def use_manifest(tmp: Path, repository: str, text: str) -> None:
    """Replace the harness's example manifest by `text` under manifests/<repository>."""
    (tmp / "manifests" / "howdy" / ".nelson.yml").unlink()
    repo = tmp / "manifests" / repository
    repo.mkdir(parents=True, exist_ok=True)
    (repo / ".nelson.yml").write_text(text, encoding="utf-8")


async def slash(bot: RunningBot, fake: FakeSlack, text: str, user: str = "U1") -> None:
    fields = slash_command(text, user_id=user, response_url=fake.new_response_url())
    assert (await bot.post(encode_form(fields), "application/x-www-form-urlencoded"))[0] == 200


async def stop(
    running: RunningBot, engine_client: docker.DockerClient, units: Sequence[str]
) -> None:
    """Stop the bot and its HAProxy, and remove the containers of `units`."""
    routers = list(running.application.routers.values())
    await running.shutdown()
    for router in routers:
        await router.stop()  # type: ignore[attr-defined]
    for unit in units:
        for container in engine_client.containers.list(
            all=True, filters={"label": f"nelson.unit={unit}"}
        ):
            container.remove(force=True)
