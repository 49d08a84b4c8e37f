"""Stopping the bot mid-deploy (SIGTERM): each deploy finishes the step in hand and stops
there, and the next start continues from it; a step that outlasts the grace is cancelled
and simply run again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from bot.bootstrap import Application, build
from commands.access import Principal
from commands.ports import Scheduler
from domain.runtime import Instance, LaunchSpec
from domain.states import StackStatus
from tests.dockerworld import busybox_image
from tests.integration.test_deploy_docker import manifest, settings_for

ADMIN = Principal("U1", "alice")


@pytest.fixture
def engine_client(docker_address: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_address, version="1.41")
    yield client
    client.close()


class GatedLaunch:
    """The real scheduler, with `launch` held until the test opens the gate."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.launching = asyncio.Event()
        self.gate = asyncio.Event()

    async def launch(self, spec: LaunchSpec) -> list[Instance]:
        self.launching.set()
        await self.gate.wait()
        return await self.scheduler.launch(spec)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.scheduler, name)


async def deploying(app: Application, text: str) -> tuple[GatedLaunch, int]:
    assert app.deploys is not None
    gated = GatedLaunch(app.deploys.schedulers["local"])
    app.deploys.schedulers["local"] = gated  # type: ignore[assignment]
    answer = await app.conversation.answer(text, ADMIN)
    assert answer.reply.ok, answer.reply
    [stack_id] = answer.reply.stack_ids
    await asyncio.wait_for(gated.launching.wait(), 60)
    return gated, stack_id


async def lines(app: Application, stack_id: int) -> list[str]:
    return [line.message for line in await app.store.logs(stack_id)]


async def test_a_stopping_bot_finishes_the_step_in_hand_and_the_next_start_continues(
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> None:
    busybox_image(engine_client, f"{registries[0]}/calm:1.0.0", "calm 1.0.0")
    settings = settings_for(tmp_path, docker_address, registries, calm=manifest("calm"))
    app = await build(settings)
    try:
        gated, stack_id = await deploying(app, "deploy calm 1.0.0 to local")
        assert app.deploys is not None
        draining = asyncio.create_task(app.deploys.drain(grace=30))
        await asyncio.sleep(0.2)
        assert not draining.done()  # it waits for the launch in hand
        gated.gate.set()
        assert await asyncio.wait_for(draining, 30) == 1  # one deploy left for the next start
        stack = await app.store.stack_by_id(stack_id)
        assert stack is not None
        # the launch finished; warming was not started
        assert (stack.status, stack.workflow_step) == (StackStatus.DEPLOYING, "launch")
        assert len(engine_client.containers.list(filters={"label": f"nelson.stack={stack.name}"}))
        said = await lines(app, stack_id)
        assert any("launched 1 instance" in line for line in said), said
        assert "paused in step 'launch'" in said[-1], said
        # nothing new starts while stopping
        busybox_image(engine_client, f"{registries[0]}/calm:1.0.1", "calm 1.0.1")
        later = await app.conversation.answer("deploy calm 1.0.1 to local", ADMIN)
        [later_id] = later.reply.stack_ids
        await asyncio.sleep(0.2)
        assert (await app.store.stack_by_id(later_id)).status is StackStatus.PENDING  # type: ignore[union-attr]
    finally:
        await app.close()

    again = await build(settings)
    try:
        assert await again.start() == 2
        assert again.deploys is not None
        await again.deploys.wait_idle(timeout=90)
        for resumed in (stack_id, later_id):
            stack = await again.store.stack_by_id(resumed)
            assert stack is not None and stack.status is StackStatus.READY, stack
        said = await lines(again, stack_id)
        assert any("continuing after a restart at step 'launch'" in line for line in said)
        containers = engine_client.containers.list(
            all=True, filters={"label": f"nelson.stack={stack.name}"}
        )
        assert len(containers) == 1  # the finished launch was not repeated
    finally:
        await again.close()
        for container in engine_client.containers.list(
            all=True, filters={"label": "nelson.unit=calm"}
        ):
            container.remove(force=True)


async def test_a_step_that_outlasts_the_grace_is_cancelled_and_run_again(
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> None:
    busybox_image(engine_client, f"{registries[0]}/slow:1.0.0", "slow 1.0.0")
    settings = settings_for(tmp_path, docker_address, registries, slow=manifest("slow"))
    app = await build(settings)
    try:
        _gated, stack_id = await deploying(app, "deploy slow 1.0.0 to local")
        assert app.deploys is not None
        assert await app.deploys.drain(grace=0.5) == 1
        stack = await app.store.stack_by_id(stack_id)
        assert stack is not None
        assert (stack.status, stack.workflow_step) == (StackStatus.DEPLOYING, "launch")
    finally:
        await app.close()
    again = await build(settings)
    try:
        await again.start()
        assert again.deploys is not None
        await again.deploys.wait_idle(timeout=90)
        stack = await again.store.stack_by_id(stack_id)
        assert stack is not None and stack.status is StackStatus.READY, stack
    finally:
        await again.close()
        for container in engine_client.containers.list(
            all=True, filters={"label": "nelson.unit=slow"}
        ):
            container.remove(force=True)
