"""A deploy's writes land together or not at all, on real SQLite and real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import pytest

from adapters.storage import SqlStore, open_store
from bot.conversation import Outcome
from domain.records import Operation, StackQuery
from domain.states import StackStatus
from tests.fakes.clock import FakeClock
from tests.unit.test_handlers import ACCOUNTS, HOWDY, Harness, RecordingWorkflow, register


class OperationsFail(SqlStore):
    """The real store, but recording an operation fails: the last write of a deploy."""

    async def create_operation(
        self,
        kind: str,
        title: str,
        requested_by: str,
        channel: str | None,
        stack_ids: Sequence[int],
        at: datetime | None = None,
    ) -> Operation:
        await super().create_operation(kind, title, requested_by, channel, stack_ids, at)
        raise OSError("the disk is full")


@pytest.fixture
async def failing(database_url: str, clock: FakeClock) -> AsyncIterator[SqlStore]:
    store = await open_store(database_url, clock=clock)
    yield OperationsFail(store._engine, database_url, clock)
    await store.close()


async def test_a_failed_deploy_leaves_no_release_stacks_edges_or_operation(
    failing: SqlStore, clock: FakeClock
) -> None:
    plain = SqlStore(failing._engine, "", clock)  # the same database, nothing failing
    ok = Harness(plain, RecordingWorkflow(), clock)
    await register(ok, "acme/accounts", ACCOUNTS)
    await register(ok, "acme/howdy", HOWDY)
    dependency = (await ok.ok("deploy accounts 1.3.0 to dc-east")).reply.stack_ids[0]
    for status in (StackStatus.DEPLOYING, StackStatus.WARMING, StackStatus.READY):
        await plain.change_status(dependency, status, "test", "nelson")
    before = await plain.recent_operations("UADMIN")

    h = Harness(failing, RecordingWorkflow(), clock)
    answer = await h.say("deploy howdy-http 0.1.0 to dc-east")

    assert answer.outcome is Outcome.INTERNAL_ERROR
    assert h.workflow.submitted == []
    assert await plain.releases("howdy-http") == []
    assert (await plain.list_stacks(StackQuery(unit="howdy-http"))).total == 0
    assert await plain.dependents(dependency) == []
    assert await plain.recent_operations("UADMIN") == before
    # and the same deploy through a working store goes through
    done = await ok.ok("deploy howdy-http 0.1.0 to dc-east")
    assert [s.id for s in await plain.dependencies(done.reply.stack_ids[0])] == [dependency]
