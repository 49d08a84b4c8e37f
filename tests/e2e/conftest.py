from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import docker
import pytest

from tests.fakes.slack import FakeSlack


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as workspace:
        yield workspace


@pytest.fixture
def engine_client(docker_address: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_address, version="1.41")
    yield client
    client.close()
