"""A deploy's writes land together or not at all, on real SQLite and real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import pytest

from adapters.storage import SqlStore, open_store
from bot.conversation import Outcome
from commands.ports import StoreError
from domain.records import Operation, StackQuery
from domain.states import StackStatus
from tests.fakes.clock import FakeClock
from tests.integration.test_store import V1, deploy, new_stack
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


async def test_an_edge_to_a_missing_stack_undoes_the_whole_unit_of_work(store: SqlStore) -> None:
    manifest = await store.register_manifest("acme/svc", "units: []", [], "U1")
    with pytest.raises(StoreError, match="does not exist"):
        async with store.unit_of_work() as uow:
            _, (stack,) = await uow.create_deployment(
                None, "svc", V1, "stage/svc:1.0.0", manifest.id, [new_stack(1)], "U1"
            )
            await uow.create_operation("deploy", "deploy svc", "U1", None, [stack.id])
            await uow.add_dependency(stack.id, stack.id + 1000)
    assert await store.release("svc", V1) is None
    assert (await store.list_stacks(StackQuery())).total == 0
    assert await store.recent_operations("U1") == []


async def test_a_unit_of_work_commits_at_its_end_and_joins_an_enclosing_one(
    store: SqlStore,
) -> None:
    async with store.unit_of_work() as uow:
        release, (a, b) = await deploy(uow, new_stack(1), new_stack(2))
        async with uow.unit_of_work() as inner:
            assert inner is uow
            await inner.add_dependency(a.id, b.id)
        # reads inside see the unit's own writes
        assert [s.id for s in await uow.dependencies(a.id)] == [b.id]
    assert await store.release("svc", V1) == release
    assert [s.id for s in await store.dependents(b.id)] == [a.id]
