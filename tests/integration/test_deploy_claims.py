"""Two workflows on one database (as two replicas), the real dockerd and registries: the
first stalls in the launch step past its claim's TTL, the second takes the deploy over and
finishes it; when the first wakes up it writes nothing, fails nothing and removes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from bot.bootstrap import build
from commands.deploy_workflow import HANDOVER
from commands.events import Event, StackReady
from domain.states import StackStatus
from tests.dockerworld import busybox_image
from tests.fakes.clock import FakeClock
from tests.integration.test_deploy_docker import manifest, settings_for
from tests.integration.test_deploy_stopping import ADMIN, deploying


@pytest.fixture
def engine_client(docker_address: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_address, version="1.41")
    yield client
    client.close()


async def test_a_stalled_replica_loses_its_deploy_to_another_and_writes_nothing_after(
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> None:
    busybox_image(engine_client, f"{registries[0]}/calm:1.0.0", "calm 1.0.0")
    settings = settings_for(tmp_path, docker_address, registries, calm=manifest("calm"))
    clock = FakeClock(ticking=True)
    first = await build(settings, clock=clock)
    second = await build(settings, clock=clock)
    try:
        assert first.deploys is not None and second.deploys is not None
        gated, stack_id = await deploying(first, "deploy calm 1.0.0 to local")
        [claim] = await first.store.workflow_claims()
        assert (claim.holder, claim.token) == (first.deploys.holder, 1)
        assert await second.deploys.take_over() == 0  # held: the second keeps off

        clock.advance(settings.workflow.claim_ttl)  # the first stalls past its claim's TTL
        assert await second.deploys.take_over() == 1
        await second.deploys.wait_idle(90)
        stack = await second.store.stack_by_id(stack_id)
        assert stack is not None and stack.status is StackStatus.READY, stack
        [claim] = await second.store.workflow_claims()
        assert (claim.holder, claim.token) == (second.deploys.holder, 2)

        gated.gate.set()  # the first wakes up in the middle of its launch
        await first.deploys.wait_idle(90)
        stack = await first.store.stack_by_id(stack_id)
        assert stack is not None and stack.status is StackStatus.READY
        history = [change.status for change in await first.store.status_history(stack_id)]
        assert history == [
            StackStatus.PENDING,
            StackStatus.DEPLOYING,
            StackStatus.WARMING,
            StackStatus.READY,
        ]
        logs = [line.message for line in await first.store.logs(stack_id)]
        assert sum(line.startswith("launched") for line in logs) == 1, logs
        assert not any(line.startswith("failed") for line in logs), logs
        containers = engine_client.containers.list(
            all=True, filters={"label": f"nelson.stack={stack.name}"}
        )
        assert [c.status for c in containers] == ["running"]
    finally:
        await first.close()
        await second.close()


async def test_a_ready_stack_whose_replica_died_handing_it_over_is_handed_over_by_another(
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> None:
    """The first replica writes the stack ready and dies while its traffic handover runs
    (StackReady's listeners): the stack stays in the handover step, so the takeover of another
    replica hands it over again; the first, waking up, writes nothing more."""
    busybox_image(engine_client, f"{registries[0]}/calm:1.0.0", "calm 1.0.0")
    settings = settings_for(tmp_path, docker_address, registries, calm=manifest("calm"))
    clock = FakeClock(ticking=True)
    first = await build(settings, clock=clock)
    second = await build(settings, clock=clock)
    stuck = asyncio.Event()
    heard: list[int] = []

    async def dies_handing_over(event: Event) -> None:
        if isinstance(event, StackReady):
            await stuck.wait()

    async def hands_over(event: Event) -> None:
        if isinstance(event, StackReady):
            heard.append(event.stack.id)

    first.events.subscribe(dies_handing_over)
    second.events.subscribe(hands_over)
    try:
        assert first.deploys is not None and second.deploys is not None
        answer = await first.conversation.answer("deploy calm 1.0.0 to local", ADMIN)
        assert answer.reply.ok, answer.reply
        [stack_id] = answer.reply.stack_ids
        for _ in range(600):
            stack = await first.store.stack_by_id(stack_id)
            if stack is not None and stack.status is StackStatus.READY:
                break
            await asyncio.sleep(0.1)
        assert stack is not None
        assert stack.status is StackStatus.READY and stack.workflow_step == HANDOVER
        assert await second.deploys.take_over() == 0  # still held by the first

        clock.advance(settings.workflow.claim_ttl)  # the first is gone past its claim's TTL
        assert await second.deploys.take_over() == 1
        await second.deploys.wait_idle(60)
        assert heard == [stack_id]
        stack = await second.store.stack_by_id(stack_id)
        assert stack is not None and stack.workflow_step is None
        assert stack.status is StackStatus.READY
        said = [line.message for line in await second.store.logs(stack_id)]
        assert said.count(f"continuing after a restart at step '{HANDOVER}'") == 1
        assert await second.deploys.take_over() == 0  # handed over: nothing left

        stuck.set()  # the first wakes up at the end of its handover
        await first.deploys.wait_idle(60)
        assert [line.message for line in await first.store.logs(stack_id)] == said
        history = [change.status for change in await first.store.status_history(stack_id)]
        assert history[-1] is StackStatus.READY and history.count(StackStatus.READY) == 1
    finally:
        stuck.set()
        await first.close()
        await second.close()
