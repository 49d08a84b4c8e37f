"""The Store port on real SQLite and real PostgreSQL, and its in-memory fake.

Tests taking `store` are the contract: each runs on SQLite, PostgreSQL and `MemoryStore`, so
the fake the handler tests use keeps the rules the SQL adapter keeps. Tests taking
`database_url` are about the SQL adapter alone (migrations, schema, drivers)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from adapters.storage import open_store
from adapters.storage.migrate import MIGRATIONS, current_revision, upgrade
from commands.ports import Conflict, Store, StoreError
from domain.approvals import ApprovalKind, ApprovalStatus, Decision
from domain.records import AuditEvent, LiveUnit, NewApproval, NewStack, StackQuery, UnitRecord
from domain.states import LIVE_STATUSES, IllegalTransition, StackStatus
from domain.traffic import Direction, ShiftPolicy, ShiftState
from domain.versions import Version
from tests.fakes.clock import FakeClock
from tests.fakes.memory_store import MemoryStore
from tests.pgserver import fresh_database

V1 = Version(1, 0, 0)
HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "memory"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore(clock)
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'nelson.db'}"
    else:
        url = fresh_database(request.getfixturevalue("postgres_admin_url"))
    opened = await open_store(url, clock=clock)
    yield opened
    await opened.close()


def unit(name: str, repo: str = "acme/svc") -> UnitRecord:
    return UnitRecord(name, repo, "service", f"{name} service", 0)


def new_stack(
    n: int,
    version: Version = V1,
    dc: str = "dc-east",
    ns: str = "dev",
    unit_name: str = "svc",
    plan: str = "default",
) -> NewStack:
    return NewStack(
        release_id=0,
        name=f"{unit_name}--{version.dashed}--{n:08d}",
        guid=f"{n:04d}abcdef{n:02d}",
        unit=unit_name,
        version=version,
        datacenter=dc,
        namespace=ns,
        plan=plan,
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        created_by="U1",
    )


async def deploy(store: Store, *stacks: NewStack, version: Version = V1, unit_name: str = "svc"):
    manifest = await store.latest_manifest("acme/svc") or await store.register_manifest(
        "acme/svc", "units: []", [unit("svc")], "U1"
    )
    release = await store.release(unit_name, version)
    return await store.create_deployment(
        release, unit_name, version, f"stage/{unit_name}:{version}", manifest.id, list(stacks), "U1"
    )


async def test_migrations_are_idempotent(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    await asyncio.to_thread(upgrade, database_url)
    assert await asyncio.to_thread(current_revision, database_url) == HEAD


def _schema_differences(url: str) -> list[object]:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    from adapters.storage import tables
    from adapters.storage.urls import sync_url

    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": False})
            return list(compare_metadata(context, tables.metadata))
    finally:
        engine.dispose()


async def test_migrations_build_exactly_the_declared_schema(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    assert await asyncio.to_thread(_schema_differences, database_url) == []


async def test_manifest_revisions_and_identical_text(store: Store) -> None:
    first = await store.register_manifest("acme/svc", "a: 1", [unit("svc")], "U1")
    same = await store.register_manifest("acme/svc", "a: 1", [unit("svc")], "U2")
    second = await store.register_manifest(
        "acme/svc", "a: 2", [unit("svc"), unit("svc-worker")], "U2"
    )
    assert (first.revision, same.id, second.revision) == (1, first.id, 2)
    assert len(first.digest) == 64
    latest = await store.latest_manifest("acme/svc")
    assert latest is not None and latest.text == "a: 2" and latest.registered_by == "U2"
    assert latest.registered_at.tzinfo is not None
    assert [u.name for u in await store.units()] == ["svc", "svc-worker"]
    worker = await store.unit("svc-worker")
    assert worker is not None and worker.manifest_revision == 2
    assert (await store.manifest_by_id(first.id)) is not None
    third = await store.register_manifest("acme/svc", "a: 3", [unit("svc")], "U2")
    assert await store.unit("svc-worker") is None  # dropped from the repository's catalogue
    assert [m.revision for m in await store.manifests()] == [third.revision]


async def test_unit_owned_by_another_repository_is_a_conflict(store: Store) -> None:
    await store.register_manifest("acme/svc", "a: 1", [unit("svc")], "U1")
    with pytest.raises(Conflict, match=r"svc \(declared by acme/svc\)"):
        await store.register_manifest("other/repo", "b: 1", [unit("svc", "other/repo")], "U1")
    assert await store.latest_manifest("other/repo") is None


async def test_create_deployment_and_lookups(store: Store) -> None:
    release, stacks = await deploy(store, new_stack(1), new_stack(2, dc="dc-west"))
    assert release.version == V1 and release.image == "stage/svc:1.0.0" and release.digest is None
    assert [s.status for s in stacks] == [StackStatus.PENDING, StackStatus.PENDING]
    first = stacks[0]
    assert (await store.stack(first.name)) == first
    assert (await store.stack(first.guid)) == first
    assert (await store.stack(first.guid[:7])) == first
    assert await store.stack("0001") is None  # too short a prefix
    assert await store.stack("nothing") is None
    assert (await store.stack_by_id(first.id)) == first
    history = await store.status_history(first.id)
    assert [(h.status, h.actor) for h in history] == [(StackStatus.PENDING, "U1")]
    assert await store.releases("svc") == [release]


async def test_ambiguous_guid_prefix_finds_nothing(store: Store) -> None:
    one = replace(new_stack(1), guid="abcdef111111")
    two = replace(new_stack(2), guid="abcdef222222")
    await deploy(store, one, two)
    assert await store.stack("abcdef") is None
    found = await store.stack("abcdef1")
    assert found is not None and found.guid == "abcdef111111"


async def test_same_release_cannot_be_created_twice(store: Store) -> None:
    await deploy(store, new_stack(1))
    manifest = await store.latest_manifest("acme/svc")
    assert manifest is not None
    with pytest.raises(Conflict, match=r"svc 1\.0\.0"):
        await store.create_deployment(None, "svc", V1, "other", manifest.id, [new_stack(2)], "U2")
    page = await store.list_stacks(StackQuery())
    assert page.total == 1  # the failed attempt left nothing behind


async def test_concurrent_releases_exactly_one_wins(store: Store) -> None:
    manifest = await store.register_manifest("acme/svc", "a", [unit("svc")], "U1")
    attempts = [
        store.create_deployment(None, "svc", V1, "img", manifest.id, [new_stack(n)], f"U{n}")
        for n in range(1, 6)
    ]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1
    assert all(isinstance(r, Conflict) for r in lost), lost


async def test_status_changes_follow_the_state_machine(store: Store) -> None:
    _, (stack,) = await deploy(store, new_stack(1))
    moved = await store.change_status(stack.id, StackStatus.DEPLOYING, "launching", "nelson")
    assert moved.status is StackStatus.DEPLOYING and moved.status_message == "launching"
    with pytest.raises(IllegalTransition):
        await store.change_status(stack.id, StackStatus.READY, "skip warming", "nelson")
    current = await store.stack_by_id(stack.id)
    assert current is not None and current.status is StackStatus.DEPLOYING
    history = await store.status_history(stack.id)
    assert [h.status for h in history] == [StackStatus.PENDING, StackStatus.DEPLOYING]
    with pytest.raises(StoreError):
        await store.change_status(999_999, StackStatus.DEPLOYING, "", "nelson")


async def test_listing_filters_pages_and_orders_newest_first(store: Store) -> None:
    stacks = [
        new_stack(n, dc="dc-east" if n % 2 else "dc-west", ns="dev" if n < 8 else "qa")
        for n in range(1, 11)
    ]
    _, created = await deploy(store, *stacks)
    await store.change_status(created[0].id, StackStatus.FAILED, "boom", "nelson")
    page = await store.list_stacks(StackQuery(namespace="dev", limit=3))
    assert page.total == 7
    assert [s.id for s in page.stacks] == sorted((s.id for s in created[:7]), reverse=True)[:3]
    second = await store.list_stacks(StackQuery(namespace="dev", limit=3, offset=3))
    assert not {s.id for s in page.stacks} & {s.id for s in second.stacks}
    east = await store.list_stacks(StackQuery(namespace="dev", datacenter="dc-east"))
    assert {s.datacenter for s in east.stacks} == {"dc-east"} and east.total == 4
    failed = await store.list_stacks(StackQuery(statuses=(StackStatus.FAILED,)))
    assert [s.id for s in failed.stacks] == [created[0].id]
    both = await store.list_stacks(StackQuery(statuses=(StackStatus.FAILED, StackStatus.PENDING)))
    assert both.total == 10
    by_unit = await store.list_stacks(StackQuery(unit="other"))
    assert by_unit.total == 0


async def test_live_stacks_of_a_release_at_a_target(store: Store) -> None:
    _, (a, b) = await deploy(store, new_stack(1), new_stack(2, dc="dc-west"))
    assert [s.id for s in await store.live_stacks("svc", V1, "dc-east", "dev")] == [a.id]
    await store.change_status(a.id, StackStatus.FAILED, "no", "nelson")
    assert await store.live_stacks("svc", V1, "dc-east", "dev") == []
    assert [s.id for s in await store.live_stacks("svc", V1, "dc-west", "dev")] == [b.id]


async def test_logs_newest_lines_returned_oldest_first(store: Store) -> None:
    _, (stack,) = await deploy(store, new_stack(1))
    for n in range(5):
        await store.append_log(stack.id, f"line {n}", step="replicate")
    lines = await store.logs(stack.id, limit=3)
    assert [line.message for line in lines] == ["line 2", "line 3", "line 4"]
    assert lines[0].step == "replicate" and lines[0].at.tzinfo is not None


async def test_dependencies_both_directions_and_idempotent(store: Store) -> None:
    _, (a, b, c) = await deploy(store, new_stack(1), new_stack(2), new_stack(3))
    await store.add_dependency(a.id, b.id)
    await store.add_dependency(a.id, b.id)
    await store.add_dependency(c.id, b.id)
    assert [s.id for s in await store.dependencies(a.id)] == [b.id]
    assert [s.id for s in await store.dependents(b.id)] == [a.id, c.id]
    with pytest.raises(StoreError):
        await store.add_dependency(a.id, a.id)


async def test_expiry_workflow_step_and_digest(store: Store) -> None:
    release, (stack,) = await deploy(store, new_stack(1))
    when = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    await store.set_expiry(stack.id, when)
    await store.set_workflow_step(stack.id, "replicate")
    fresh = await store.stack_by_id(stack.id)
    assert fresh is not None
    assert fresh.expires_at == when and fresh.expires_at.tzinfo == UTC
    assert fresh.workflow_step == "replicate"
    await store.set_release_digest(release.id, "sha256:" + "a" * 64)
    await store.set_release_digest(release.id, "sha256:" + "a" * 64)
    with pytest.raises(Conflict, match="pinned"):
        await store.set_release_digest(release.id, "sha256:" + "b" * 64)


async def test_audit_round_trip(store: Store) -> None:
    await store.audit(AuditEvent("U1", "deploy", "svc 1.0.0", allowed=False, detail="rule x"))
    await store.audit(AuditEvent("U2", "deploy", "svc 1.0.0"))
    await store.audit(AuditEvent("U3", "stacks", "namespace:dev"))
    events = await store.audit_events(target="svc 1.0.0")
    assert [(e.actor, e.allowed) for e in events] == [("U2", True), ("U1", False)]
    assert events[1].detail == "rule x" and events[0].at is not None


async def test_no_approvals_yet(store: Store) -> None:
    assert await store.approvals() == []
    assert await store.approval(1) is None


async def test_bad_urls_give_clear_messages(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StoreError, match="not supported"):
        await open_store("mysql://root:hunter2@localhost/db", clock=FakeClock())
    with pytest.raises(StoreError) as info:
        await open_store("postgresql://nelson:hunter2@127.0.0.1:1/nelson", clock=FakeClock())
    assert "hunter2" not in str(info.value) and "cannot" in str(info.value)


def test_the_partial_indexes_spell_the_statuses_of_the_domain() -> None:
    from adapters.storage.tables import JUDGED_SQL, LIVE_SQL

    def statuses(condition: object) -> set[str]:
        return set(re.findall(r"'([a-z]+)'", str(condition)))

    assert statuses(LIVE_SQL) == {s.value for s in LIVE_STATUSES}
    assert statuses(JUDGED_SQL) == {StackStatus.READY.value, StackStatus.DEPRECATED.value}


async def test_live_units_count_stacks_and_versions_per_unit(store: Store) -> None:
    v2, v3 = Version(2, 0, 0), Version(1, 10, 0)
    _, (a, _b, _c) = await deploy(
        store, new_stack(1), new_stack(2, dc="dc-west"), new_stack(3, ns="qa")
    )
    await deploy(store, new_stack(4, version=v2), version=v2)
    assert await store.live_units("dev") == {"svc": LiveUnit(3, 2, (v2, V1))}
    assert await store.live_units("dev", "dc-west") == {"svc": LiveUnit(1, 1, (V1,))}
    assert await store.live_units("dev", newest=1) == {"svc": LiveUnit(3, 2, (v2,))}
    await store.change_status(a.id, StackStatus.FAILED, "no", "nelson")
    assert await store.live_units("dev") == {"svc": LiveUnit(2, 2, (v2, V1))}
    assert await store.live_units("prod") == {}
    # versions order by number, not by text: 1.10.0 is newer than 1.0.0
    await deploy(store, new_stack(5, version=v3), version=v3)
    assert (await store.live_units("dev"))["svc"].newest == (v2, v3, V1)


async def test_unit_pages_run_by_name_with_their_live_stacks(store: Store) -> None:
    names = [f"u{i:02}" for i in range(7)] + ["svc"]
    await store.register_manifest("acme/svc", "units: []", [unit(n) for n in names], "U1")
    await deploy(store, new_stack(1), new_stack(2, dc="dc-west"), new_stack(3, ns="qa"))
    first = await store.unit_page("dev", None, limit=3)
    assert [u.name for u, _ in first.units] == ["svc", "u00", "u01"]
    assert (first.total, first.before) == (8, 0)
    assert first.units[0] == ((await store.units())[0], LiveUnit(2, 1, (V1,)))
    assert first.units[1][1] is None
    middle = await store.unit_page("dev", "dc-west", limit=3, offset=3)
    assert [u.name for u, _ in middle.units] == ["u02", "u03", "u04"]
    assert middle.before == 3
    # keyset: after a name (a unit or not), the same page an offset gives
    assert await store.unit_page("dev", "dc-west", limit=3, after="u01") == middle
    assert await store.unit_page("dev", "dc-west", limit=3, after="u01x") == middle
    assert await store.unit_page("dev", "dc-west", limit=2, after="") == replace(
        first, units=((first.units[0][0], LiveUnit(1, 1, (V1,))), first.units[1])
    )
    assert (await store.unit_page("qa", "dc-west", limit=1)).units[0][1] is None
    last = await store.unit_page("dev", None, limit=3, after="u04")
    assert [u.name for u, _ in last.units] == ["u05", "u06"] and last.before == 6
    beyond = await store.unit_page("dev", None, limit=3, offset=30)
    assert (beyond.units, beyond.total, beyond.before) == ((), 8, 8)
    assert (await store.unit_page("dev", None, limit=3, after="zz")).units == ()


def new_approval(stack_id: int | None = None, required: int = 2) -> NewApproval:
    return NewApproval(
        kind=ApprovalKind.TRAFFIC_SHIFT,
        stack_id=stack_id,
        namespace="prod",
        datacenter="dc-east",
        summary="shift svc 1.x from 1.0.0 to 1.0.1",
        requested_by="U1",
        required=required,
        deadline=datetime(2030, 1, 1, tzinfo=UTC),
        details=("linear over 10 minutes", "from svc--1-0-0 to svc--1-0-1"),
    )


async def test_approval_votes_count_once_and_decisions_happen_once(store: Store) -> None:
    _, stacks = await deploy(store, new_stack(1))
    approval = await store.create_approval(new_approval(stacks[0].id))
    assert approval.status == "pending" and approval.approvers == ()
    assert approval.details == ("linear over 10 minutes", "from svc--1-0-0 to svc--1-0-1")
    at = datetime(2029, 1, 1, tzinfo=UTC)
    assert await store.vote(approval.id, "U2", Decision.APPROVE, at)
    assert not await store.vote(approval.id, "U2", Decision.APPROVE, at)  # double click
    assert not await store.vote(approval.id, "U2", Decision.REJECT, at)  # one vote per person
    assert await store.vote(approval.id, "U3", Decision.APPROVE, at)
    current = await store.approval(approval.id)
    assert current is not None and current.approvers == ("U2", "U3")
    decided = await store.decide_approval(approval.id, ApprovalStatus.APPROVED, "U3", at)
    assert decided is not None and (decided.status, decided.decided_by) == ("approved", "U3")
    assert await store.decide_approval(approval.id, ApprovalStatus.REJECTED, "U4", at) is None
    assert [a.id for a in await store.approvals(ApprovalStatus.APPROVED)] == [approval.id]


async def test_approvals_of_stacks_are_those_of_the_kind_about_them_oldest_first(
    store: Store,
) -> None:
    _, stacks = await deploy(store, new_stack(1), new_stack(2), new_stack(3))
    a, b, c = (s.id for s in stacks)
    at = datetime(2029, 1, 1, tzinfo=UTC)
    first = await store.create_approval(new_approval(a))
    await store.decide_approval(first.id, ApprovalStatus.REJECTED, "U3", at)
    second = await store.create_approval(new_approval(a))
    other = await store.create_approval(new_approval(b))
    await store.create_approval(new_approval(c))  # a stack not asked about
    await store.create_approval(replace(new_approval(b), kind=ApprovalKind.ROLLBACK))
    await store.create_approval(new_approval())  # about no stack
    found = await store.approvals_of_stacks(ApprovalKind.TRAFFIC_SHIFT, [a, b])
    assert [x.id for x in found] == [first.id, second.id, other.id]
    assert [x.status for x in found] == ["rejected", "pending", "pending"]
    assert await store.approvals_of_stacks(ApprovalKind.TRAFFIC_SHIFT, []) == []
    rollbacks = await store.approvals_of_stacks(ApprovalKind.ROLLBACK, [a, b, c])
    assert [(x.kind, x.stack_id) for x in rollbacks] == [(ApprovalKind.ROLLBACK, b)]


async def test_approved_rollbacks_not_acted_on_are_found_until_marked_once(
    store: Store,
) -> None:
    _, stacks = await deploy(store, new_stack(1), new_stack(2))
    a, b = (s.id for s in stacks)
    at = datetime(2029, 1, 1, tzinfo=UTC)
    rollback = replace(new_approval(a), kind=ApprovalKind.ROLLBACK)
    first = await store.create_approval(rollback)
    second = await store.create_approval(replace(rollback, stack_id=b))
    rejected = await store.create_approval(rollback)
    shift = await store.create_approval(new_approval(a))
    assert await store.approved_not_acted_on(ApprovalKind.ROLLBACK) == []  # all pending
    for approval in (first, second, shift):
        await store.decide_approval(approval.id, ApprovalStatus.APPROVED, "U3", at)
    await store.decide_approval(rejected.id, ApprovalStatus.REJECTED, "U3", at)
    found = await store.approved_not_acted_on(ApprovalKind.ROLLBACK)
    assert [(x.id, x.acted_at) for x in found] == [(first.id, None), (second.id, None)]
    assert await store.mark_acted_on(first.id, at)
    assert not await store.mark_acted_on(first.id, at)  # once
    acted = await store.approval(first.id)
    assert acted is not None and acted.acted_at == at and acted.status == "approved"
    assert [x.id for x in await store.approved_not_acted_on(ApprovalKind.ROLLBACK)] == [second.id]
    assert [x.id for x in await store.approved_not_acted_on(ApprovalKind.TRAFFIC_SHIFT)] == [
        shift.id
    ]


async def test_overdue_approvals(store: Store) -> None:
    soon = await store.create_approval(
        replace(new_approval(), deadline=datetime(2029, 1, 1, tzinfo=UTC))
    )
    await store.create_approval(new_approval())
    now = datetime(2029, 6, 1, tzinfo=UTC)
    assert [a.id for a in await store.overdue_approvals(now)] == [soon.id]
    await store.decide_approval(soon.id, ApprovalStatus.EXPIRED, "nelson", now)
    assert await store.overdue_approvals(now) == []


async def test_operations_follow_their_stacks(store: Store) -> None:
    _, stacks = await deploy(store, new_stack(1), new_stack(2, dc="dc-west"))
    ids = [s.id for s in stacks]
    op = await store.create_operation("deploy", "deploy svc 1.0.0", "U1", "C1", ids)
    other = await store.create_operation("redeploy", "redeploy", "U2", None, ids[:1])
    assert op.stack_ids == tuple(ids) and op.finished_at is None
    assert [o.id for o in await store.operations_for_stack(ids[0])] == [op.id, other.id]
    assert [o.id for o in await store.operations_for_stack(ids[1])] == [op.id]
    assert [o.id for o in await store.recent_operations("U1")] == [op.id]
    at = datetime(2029, 1, 1, tzinfo=UTC)
    assert await store.finish_operation(op.id, "succeeded", at)
    assert not await store.finish_operation(op.id, "failed", at)
    done = await store.operation(op.id)
    assert done is not None and (done.outcome, done.finished_at) == ("succeeded", at)
    assert [s.id for s in await store.stacks_by_ids(ids[::-1])] == ids
    assert await store.stacks_by_ids([]) == []


async def test_posted_messages(store: Store) -> None:
    await store.remember_message("operation:1", "C1", "1.000100")
    await store.remember_message("operation:1", "C2", "1.000200")
    with pytest.raises(Conflict):
        await store.remember_message("operation:1", "C1", "1.000300")
    assert [(m.channel, m.ts) for m in await store.messages_for("operation:1")] == [
        ("C1", "1.000100"),
        ("C2", "1.000200"),
    ]
    assert await store.messages_for("operation:2") == []


async def test_deliveries_are_claimed_once(store: Store) -> None:
    t0 = datetime(2029, 1, 1, tzinfo=UTC)
    assert await store.claim_delivery("event:Ev1", t0)
    assert not await store.claim_delivery("event:Ev1", t0)
    results = await asyncio.gather(*(store.claim_delivery("event:Ev2", t0) for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    assert await store.forget_deliveries(t0 + timedelta(seconds=1)) == 2
    assert await store.claim_delivery("event:Ev1", t0)


# -- the rest of the contract: units of work, blueprints, lifecycle, traffic, Vault tokens ------


async def ready(store: Store, stack_id: int) -> None:
    for status in (StackStatus.DEPLOYING, StackStatus.WARMING, StackStatus.READY):
        await store.change_status(stack_id, status, "test", "nelson")


async def test_a_unit_of_work_that_raises_writes_nothing(store: Store) -> None:
    manifest = await store.register_manifest("acme/svc", "units: []", [unit("svc")], "U1")
    with pytest.raises(StoreError, match="does not exist"):
        async with store.unit_of_work() as uow:
            _, (stack,) = await uow.create_deployment(
                None, "svc", V1, "stage/svc:1.0.0", manifest.id, [new_stack(1)], "U1"
            )
            await uow.create_operation("deploy", "deploy svc", "U1", None, [stack.id])
            await uow.audit(AuditEvent("U1", "deploy", "svc 1.0.0"))
            await uow.add_dependency(stack.id, stack.id + 1000)  # no such stack
    assert await store.release("svc", V1) is None
    assert (await store.list_stacks(StackQuery())).total == 0
    assert await store.recent_operations("U1") == []
    assert await store.audit_events(target="svc 1.0.0") == []
    # the store still works, and ids taken by the undone writes do not matter
    _, (stack,) = await deploy(store, new_stack(1))
    assert (await store.list_stacks(StackQuery())).stacks == (stack,)


async def test_a_unit_of_work_commits_at_its_end_and_joins_an_enclosing_one(
    store: Store,
) -> None:
    async with store.unit_of_work() as uow:
        release, (a, b) = await deploy(uow, new_stack(1), new_stack(2))
        async with uow.unit_of_work() as inner:
            await inner.add_dependency(a.id, b.id)
        assert [s.id for s in await uow.dependencies(a.id)] == [b.id]  # sees its own writes
    assert await store.release("svc", V1) == release
    assert [s.id for s in await store.dependents(b.id)] == [a.id]


async def test_blueprint_revisions(store: Store) -> None:
    first = await store.register_blueprint("web", "nomad", "job {}", "U1")
    assert (first.revision, await store.register_blueprint("web", "nomad", "job {}", "U2")) == (
        1,
        first,
    )
    second = await store.register_blueprint("web", "nomad", "job { x }", "U1")
    await store.register_blueprint("api", "nomad", "job {}", "U1")
    assert second.revision == 2 and second.digest != first.digest
    assert await store.blueprint("web") == second
    assert await store.blueprint("web", 1) == first
    assert await store.blueprint("web", 3) is None
    assert [(b.name, b.revision) for b in await store.blueprints()] == [("api", 1), ("web", 2)]


async def test_garbage_its_reasons_announcements_and_expiries(store: Store) -> None:
    _, (a, b, c) = await deploy(store, new_stack(1), new_stack(2), new_stack(3))
    await ready(store, a.id)
    await ready(store, b.id)
    at = datetime(2029, 1, 1, tzinfo=UTC)
    until = datetime(2029, 2, 1, tzinfo=UTC)
    await store.extend_expiries({a.id: until, c.id: until})
    assert [(await store.stack_by_id(i)).expires_at for i in (a.id, c.id)] == [until, until]  # type: ignore[union-attr]
    # c is pending: not judged, so not collected
    changed = await store.mark_garbage({a.id: "expired", b.id: "superseded", c.id: "x"}, at)
    assert sorted(changed) == [a.id, b.id]
    assert await store.mark_garbage({a.id: "again"}, at) == []
    gone = await store.stack_by_id(a.id)
    assert gone is not None and gone.status is StackStatus.GARBAGE
    assert (await store.status_history(a.id))[-1].message == "expired"
    assert [e.detail for e in await store.audit_events(target=a.name)] == ["expired"]
    removals = await store.pending_removals()
    assert [(r.stack.id, r.reason, r.since) for r in removals] == [
        (a.id, "expired", at),
        (b.id, "superseded", at),
    ]
    later = at + timedelta(days=1)
    assert await store.garbage_due(later, later) == []  # not announced yet
    assert await store.mark_announced([a.id, c.id], at) == 1
    assert await store.mark_announced([a.id], later) == 0  # the first announcement counts
    assert [s.id for s in await store.garbage_due(later, later)] == [a.id]
    assert await store.garbage_due(at - timedelta(seconds=1), later) == []


async def test_lifecycle_batches_hold_whole_groups_with_live_dependants(store: Store) -> None:
    _, (a, b) = await deploy(store, new_stack(1), new_stack(2, dc="dc-west"))
    v2 = Version(2, 0, 0)
    _, (c, d) = await deploy(store, new_stack(3, version=v2), new_stack(4, version=v2), version=v2)
    for s in (a, b, c, d):
        await ready(store, s.id)
    await store.add_dependency(c.id, a.id)
    await store.add_dependency(d.id, a.id)
    await store.mark_garbage({d.id: "gone"}, datetime(2029, 1, 1, tzinfo=UTC))
    batches = [x async for x in store.lifecycle_batches(size=1, collected={d.id})]
    groups = [[view.id for _, view in batch] for batch, _ in batches]
    assert groups == [[a.id, c.id], [b.id]]  # dc-east's group whole, though over the size
    names = [name for batch, _ in batches for name, _ in batch]
    assert names == [a.name, c.name, b.name]
    assert batches[0][1] == {a.id: 2}  # c live, d garbage but collected in this pass
    again = [x async for x in store.lifecycle_batches(size=10)]
    assert len(again) == 1 and again[0][1] == {a.id: 1}


async def test_leases_are_held_by_one_holder_until_they_expire(store: Store) -> None:
    t0 = datetime(2029, 1, 1, tzinfo=UTC)
    minute = timedelta(minutes=1)
    assert await store.acquire_lease("lifecycle", "r1", t0 + minute, t0)
    assert not await store.acquire_lease("lifecycle", "r2", t0 + minute, t0)
    assert await store.acquire_lease("lifecycle", "r1", t0 + 2 * minute, t0)  # renewal
    assert await store.acquire_lease("lifecycle", "r2", t0 + 4 * minute, t0 + 3 * minute)
    await store.release_lease("lifecycle", "r1")  # not the holder: nothing changes
    assert not await store.acquire_lease("lifecycle", "r1", t0 + 5 * minute, t0 + 3 * minute)
    await store.release_lease("lifecycle", "r2")
    assert await store.acquire_lease("lifecycle", "r1", t0 + 5 * minute, t0 + 3 * minute)


async def test_shifts_one_active_per_route(store: Store) -> None:
    _, (a, b, c) = await deploy(store, new_stack(1), new_stack(2), new_stack(3))
    at = datetime(2029, 1, 1, tzinfo=UTC)
    first = await store.create_shift(
        a.id, b.id, ShiftPolicy.LINEAR, 600, ShiftState.RUNNING, at, route="r"
    )
    assert (first.direction, first.started_at, first.current_new_weight) == ("forward", at, 0)
    waiting, _ = await store.open_shift(
        "q", a.id, c.id, ShiftPolicy.ATOMIC, 0, ShiftState.AWAITING_APPROVAL, at
    )
    assert waiting.started_at is None
    later = at + timedelta(minutes=1)
    second, superseded = await store.open_shift(
        "r", b.id, c.id, ShiftPolicy.LINEAR, 60, ShiftState.RUNNING, later, start_new_weight=100
    )
    assert [(s.id, s.state, s.updated_at) for s in superseded] == [(first.id, "superseded", later)]
    assert second.current_new_weight == 100
    assert [s.id for s in await store.shifts((ShiftState.RUNNING,))] == [second.id]
    assert [s.id for s in await store.shifts(stack_id=a.id)] == [first.id, waiting.id]
    moved = await store.update_shift(
        second.id, ShiftState.RUNNING, state=ShiftState.PAUSED, paused_since=later
    )
    assert moved is not None and (moved.state, moved.paused_since) == ("paused", later)
    assert await store.update_shift(second.id, ShiftState.RUNNING, state=ShiftState.DONE) is None
    assert await store.shift(second.id) == moved
    assert await store.shift(999) is None


async def test_daemons_say_they_are_alive(store: Store) -> None:
    t0 = datetime(2029, 1, 1, tzinfo=UTC)
    await store.heartbeat("serve-1", "serve", t0)
    await store.heartbeat("console-1", "console", t0 + timedelta(seconds=5))
    await store.heartbeat("serve-1", "serve", t0 + timedelta(seconds=30))
    alive = await store.daemons(t0 + timedelta(seconds=10))
    assert [(d.holder, d.started_at, d.seen_at) for d in alive] == [
        ("serve-1", t0, t0 + timedelta(seconds=30))
    ]
    await store.forget_daemon("serve-1")
    assert [d.holder for d in await store.daemons(t0)] == ["console-1"]


async def test_vault_tokens_keep_only_the_accessor(store: Store) -> None:
    _, (a, b) = await deploy(store, new_stack(1), new_stack(2))
    at = datetime(2029, 1, 1, tzinfo=UTC)
    assert await store.record_vault_token(a.id, "stack-a", "acc-1", at) is None
    assert await store.record_vault_token(a.id, "stack-a", "acc-1", at) is None
    assert await store.record_vault_token(a.id, "stack-a", "acc-2", at) == "acc-1"
    await store.record_vault_token(b.id, "stack-b", "acc-3", at)
    tokens = await store.vault_tokens()
    assert [(v.stack, v.accessor, v.status) for v in tokens] == [
        (a.name, "acc-2", StackStatus.PENDING),
        (b.name, "acc-3", StackStatus.PENDING),
    ]
    await store.forget_vault_token(a.id, "acc-1")  # an older token: the newer one stays
    assert [v.accessor for v in await store.vault_tokens(a.id)] == ["acc-2"]
    await store.forget_vault_token(a.id, "acc-2")
    assert await store.vault_tokens(a.id) == []


async def test_shift_and_approval_words_are_the_vocabulary(store: Store) -> None:
    """Stored words come back as the domain's enums, equal to the strings they always were,
    and a word outside the vocabulary is refused instead of stored."""
    _, (a, b) = await deploy(store, new_stack(1), new_stack(2))
    at = datetime(2029, 1, 1, tzinfo=UTC)
    shift = await store.create_shift(a.id, b.id, ShiftPolicy.ATOMIC, 600, ShiftState.RUNNING, at)
    read = await store.shift(shift.id)
    assert read is not None
    assert (read.state, read.direction, read.policy) == ("running", "forward", "atomic")
    assert read.state is ShiftState.RUNNING and read.direction is Direction.FORWARD
    assert read.policy is ShiftPolicy.ATOMIC
    with pytest.raises(ValueError, match="bogus"):
        await store.update_shift(shift.id, ShiftState.RUNNING, state="bogus")
    assert await store.shift(shift.id) == read
    approval = await store.create_approval(new_approval(b.id))
    assert approval.kind is ApprovalKind.TRAFFIC_SHIFT
    assert approval.status is ApprovalStatus.PENDING and f"{approval.status}" == "pending"
