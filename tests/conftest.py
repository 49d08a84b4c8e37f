from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from adapters.storage import SqlStore, open_store
from tests.dockerworld import DockerUnavailable, docker_engine, registry
from tests.fakes.clock import FakeClock
from tests.pgserver import PostgresUnavailable, fresh_database, postgres_server


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))  # never skip silently: these tests must run


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nelson.db'}"
    admin: str = request.getfixturevalue("postgres_admin_url")
    return fresh_database(admin)


@pytest.fixture
def clock() -> FakeClock:
    """The test's one clock, shared by the store and whatever the test builds on it."""
    return FakeClock()


@pytest.fixture
async def store(database_url: str, clock: FakeClock) -> AsyncIterator[SqlStore]:
    opened = await open_store(database_url, clock=clock)
    yield opened
    await opened.close()


@pytest.fixture(scope="session")
def docker_address() -> Iterator[str]:
    try:
        with docker_engine() as address:
            yield address
    except DockerUnavailable as exc:
        pytest.fail(str(exc))  # never skip silently: these tests must run


@pytest.fixture(scope="session")
def registries() -> Iterator[tuple[str, str]]:
    """(staging, runtime): two real Docker registries on loopback."""
    try:
        with registry() as staging, registry() as runtime:
            yield staging, runtime
    except DockerUnavailable as exc:
        pytest.fail(str(exc))
