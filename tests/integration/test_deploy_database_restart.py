"""A deploy under way when its PostgreSQL server stops, on the real dockerd and registries:
the run stops at its next write without failing the stack or removing its container, says so
in one warning, and once the server is back the next takeover continues it (its claim, still
unexpired, is this process's) to `ready`, its history never going backwards, launched once.
A restart longer than the claims' TTL, where another replica takes the deploy over, is
tests/e2e/test_replicas.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from bot.bootstrap import build
from domain.states import StackStatus
from tests.dockerworld import busybox_image
from tests.fakes.clock import FakeClock
from tests.integration.test_deploy_docker import manifest, settings_for
from tests.integration.test_deploy_stopping import deploying
from tests.pgserver import PostgresServer, PostgresUnavailable, fresh_database, own_postgres_server

pytestmark = pytest.mark.postgres


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    try:
        with own_postgres_server() as running:
            yield running
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))  # never skip silently


@pytest.fixture
def engine_client(docker_address: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_address, version="1.41")
    yield client
    client.close()


async def test_a_deploy_cut_off_by_a_database_restart_continues_when_it_is_back(
    tmp_path: Path,
    server: PostgresServer,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    busybox_image(engine_client, f"{registries[0]}/calm:1.0.0", "calm 1.0.0")
    settings = settings_for(tmp_path, docker_address, registries, calm=manifest("calm"))
    settings = settings.model_copy(update={"database_url": fresh_database(server.url)})
    clock = FakeClock(ticking=True)
    app = await build(settings, clock=clock)
    try:
        assert app.deploys is not None
        gated, stack_id = await deploying(app, "deploy calm 1.0.0 to local")
        await asyncio.to_thread(server.stop)
        gated.gate.set()  # the launch ends; the run's next write finds no database
        await app.deploys.wait_idle(60)
        said = [r.getMessage() for r in caplog.records if r.name == "nelson.workflow"]
        assert any("database became unreachable" in line for line in said), said
        assert not [r for r in caplog.records if r.exc_info], "no traceback for an outage"
        assert not app.deploys._claims  # the run let go of its claim: it could not renew it

        await asyncio.to_thread(server.start)
        # the pool reconnects by itself; the claim, still this process's, is taken again at
        # once rather than after it expires
        assert await app.deploys.take_over() == 1
        await app.deploys.wait_idle(60)
        stack = await app.store.stack_by_id(stack_id)
        assert stack is not None and stack.status is StackStatus.READY, stack
        history = [change.status for change in await app.store.status_history(stack_id)]
        assert history == [
            StackStatus.PENDING,
            StackStatus.DEPLOYING,
            StackStatus.WARMING,
            StackStatus.READY,
        ]
        logs = [line.message for line in await app.store.logs(stack_id)]
        assert sum(line.startswith("launched") for line in logs) == 1, logs
        assert not any(line.startswith("failed") for line in logs), logs
        containers = engine_client.containers.list(
            all=True, filters={"label": f"nelson.stack={stack.name}"}
        )
        assert [c.status for c in containers] == ["running"]
        [claim] = await app.store.workflow_claims()
        assert (claim.holder, claim.token) == (app.deploys.holder, 1)  # nobody else had it
    finally:
        await app.close()
