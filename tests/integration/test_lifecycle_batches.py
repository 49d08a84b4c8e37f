"""The cleanup pass reads and judges stacks in batches: on real SQLite and PostgreSQL, any
batch size gives the decisions one look at every stack would (groups are never split, live
dependants are counted as they were when the pass began), and every judged stack is read
exactly once."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.storage import SqlStore, open_store
from commands.events import EventHub
from commands.lifecycle import Lifecycle
from commands.settings import Settings
from domain import expiration
from domain.expiration import ExpirationPolicy, StackView, Verdict
from domain.records import NewStack, Stack, StackQuery, UnitRecord
from domain.states import LIVE_STATUSES, StackStatus
from domain.versions import Version
from tests.fakes.clock import T0, FakeClock
from tests.integration.test_lifecycle import MANIFEST
from tests.pgserver import fresh_database

UNITS = ("svc", "client", "other")  # "other" is in no manifest: retain-active by default
NAMESPACES = ("dev", "qa")
DATACENTERS = ("local", "remote")
FINAL = (StackStatus.READY, StackStatus.DEPRECATED, StackStatus.FAILED, StackStatus.WARMING)


@dataclass(frozen=True)
class Spec:
    unit: str
    namespace: str
    datacenter: str
    version: tuple[int, int, int]
    status: StackStatus
    age_hours: int
    expires_in_minutes: int


# few groups, so that batches of 1 to 4 stacks would often cut one
specs = st.builds(
    Spec,
    unit=st.sampled_from(("svc", "other")),
    namespace=st.just("dev"),
    datacenter=st.sampled_from(DATACENTERS),
    version=st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
    status=st.sampled_from(FINAL),
    age_hours=st.integers(0, 48),
    expires_in_minutes=st.integers(-600, 600),
)


async def build(store: SqlStore, clock: FakeClock, stacks: list[Spec]) -> list[Stack]:
    records = [UnitRecord(u, "acme/svc", "service", "", 1) for u in ("svc", "client")]
    manifest = await store.register_manifest("acme/svc", MANIFEST, records, "U1")
    made = []
    for n, spec in enumerate(stacks, start=1):
        clock.set(T0 - timedelta(hours=spec.age_hours))
        version = Version(*spec.version)
        release = await store.release(spec.unit, version)
        _, [stack] = await store.create_deployment(
            release,
            spec.unit,
            version,
            f"127.0.0.1:5000/{spec.unit}:{version}",
            manifest.id,
            [
                NewStack(
                    release_id=release.id if release else 0,
                    name=f"{spec.unit}--{version.dashed}--{n:08d}",
                    guid=f"{n:012x}",
                    unit=spec.unit,
                    version=version,
                    datacenter=spec.datacenter,
                    namespace=spec.namespace,
                    plan="default",
                    expires_at=T0 + timedelta(minutes=spec.expires_in_minutes),
                    created_by="U1",
                )
            ],
            "U1",
        )
        path = [StackStatus.DEPLOYING, StackStatus.WARMING, StackStatus.READY]
        if spec.status is StackStatus.FAILED:
            path = [StackStatus.FAILED]
        elif spec.status is StackStatus.WARMING:
            path = path[:2]
        elif spec.status is StackStatus.DEPRECATED:
            path.append(StackStatus.DEPRECATED)
        for status in path:
            stack = await store.change_status(stack.id, status, "", "nelson")
        made.append(stack)
    clock.set(T0)
    return made


async def judged_now(store: SqlStore) -> list[Stack]:
    page = await store.list_stacks(
        StackQuery(statuses=(StackStatus.READY, StackStatus.DEPRECATED), limit=10_000)
    )
    return list(page.stacks)


async def live_dependants(store: SqlStore, stacks: list[Stack]) -> dict[int, int]:
    counts = {}
    for stack in stacks:
        live = [d for d in await store.dependents(stack.id) if d.status in LIVE_STATUSES]
        if live:
            counts[stack.id] = len(live)
    return counts


def fresh_url(database_url: str, request: pytest.FixtureRequest, folder: Path) -> str:
    """An empty database of the test's backend, one per generated example."""
    if database_url.startswith("sqlite"):
        return f"sqlite:///{folder / uuid.uuid4().hex}.db"
    return fresh_database(request.getfixturevalue("postgres_admin_url"))


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    stacks=st.lists(specs, min_size=4, max_size=14),
    edges=st.lists(st.tuples(st.integers(0, 13), st.integers(0, 13)), max_size=10),
    batch=st.integers(1, 4),
)
async def test_any_batch_size_judges_as_one_look_at_every_stack(
    database_url: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    stacks: list[Spec],
    edges: list[tuple[int, int]],
    batch: int,
) -> None:
    clock = FakeClock()
    store = await open_store(fresh_url(database_url, request, tmp_path), clock=clock)
    try:
        made = await build(store, clock, stacks)
        for a, b in edges:
            if a < len(made) and b < len(made) and a != b:
                await store.add_dependency(made[a].id, made[b].id)
        settings_ = Settings()
        lifecycle = Lifecycle(settings_, store, EventHub(), clock, {}, {}, batch=batch)

        # the oracle: every judged stack and its live dependants read at once, then judged
        judged = await judged_now(store)
        depended = await live_dependants(store, judged)
        by_policy: dict[ExpirationPolicy, list[StackView]] = defaultdict(list)
        for s in judged:
            # each stack by the manifest revision it was deployed with
            release = await store.release(s.unit, s.version)
            assert release is not None
            policies = await lifecycle.manifests.policies(release.manifest_id)
            policy = policies.expiration.get((s.unit, s.plan), ExpirationPolicy.RETAIN_ACTIVE)
            by_policy[policy].append(
                StackView(
                    id=s.id,
                    unit=s.unit,
                    version=s.version,
                    namespace=s.namespace,
                    datacenter=s.datacenter,
                    status=s.status,
                    created_at=s.created_at,
                    expires_at=s.expires_at,
                    plan=s.plan,
                )
            )
        expire, extend = set(), set()
        for policy, views in by_policy.items():
            decisions = expiration.review(
                policy,
                views,
                depended,
                T0,
                grace_new=settings_.lifecycle.new_stack_grace,
                extend_by=settings_.lifecycle.extension_step,
            )
            for stack_id, decision in decisions.items():
                if decision.verdict is Verdict.EXPIRE:
                    expire.add(stack_id)
                elif decision.verdict is Verdict.EXTEND:
                    extend.add(stack_id)

        report = await lifecycle.run_once()
        assert report.judged == len(judged)
        assert {s.id for s in report.garbage} == expire
        assert report.extended == len(extend)
        assert {s.id for s in await judged_now(store)} == {s.id for s in judged} - expire
    finally:
        await store.close()


async def test_batches_hold_whole_groups_and_every_judged_stack_once(
    store: SqlStore, clock: FakeClock
) -> None:
    specs_ = [
        Spec(unit, ns, dc, (1, 0, n), status, 5, -60)
        for n, (unit, ns, dc, status) in enumerate(
            (u, ns, dc, st_)
            for u in UNITS
            for ns in NAMESPACES
            for dc in DATACENTERS
            for st_ in (StackStatus.READY, StackStatus.DEPRECATED, StackStatus.FAILED)
        )
    ]
    made = await build(store, clock, specs_)
    caller, callee = made[0], made[4]  # a ready svc stack calls a deprecated one
    gone = made[1]  # a deprecated caller: live too
    await store.add_dependency(caller.id, callee.id)
    await store.add_dependency(gone.id, callee.id)
    judged = {s.id for s in made if s.status in (StackStatus.READY, StackStatus.DEPRECATED)}
    for size in (1, 2, 3, 5, 1000):
        seen: list[int] = []
        groups: list[set[tuple[str, str, str]]] = []
        async for batch, depended in store.lifecycle_batches(size):
            assert batch, "no batch is empty"
            seen += [view.id for _, view in batch]
            groups.append({view.group for _, view in batch})
            if callee.id in {view.id for _, view in batch}:
                assert depended == {callee.id: 2}
            else:
                assert depended == {}
        assert sorted(seen) == sorted(judged)  # each exactly once
        for one, other in pairwise(groups):
            assert not one & other, "a group split across batches"
    # a caller collected during the pass still counts, as it did when the pass began
    await store.mark_garbage({caller.id: "test"}, T0)
    async for _, depended in store.lifecycle_batches(1000, collected={caller.id}):
        assert depended == {callee.id: 2}
    async for _, depended in store.lifecycle_batches(1000):
        assert depended == {callee.id: 1}


async def test_a_write_that_fails_fails_the_pass_and_the_next_pass_finishes_the_work(
    store: SqlStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decisions are written while later batches are judged: a write that fails ends the
    pass with its error (no write left running, the lease given back), and the next pass
    collects every expired stack once."""
    specs_ = [
        Spec("other", "dev", dc, (1, 0, n), StackStatus.READY, 5, -60)
        for n in range(6)
        for dc in DATACENTERS
    ]
    made = await build(store, clock, specs_)
    writes = 0
    real = store.mark_garbage

    async def failing_second(
        reasons: dict[int, str], at: object, actor: str = "nelson"
    ) -> list[int]:
        nonlocal writes
        writes += 1
        if writes == 2:
            raise OSError("the database went away")
        return await real(reasons, T0, actor)

    monkeypatch.setattr(store, "mark_garbage", failing_second)
    lifecycle = Lifecycle(Settings(), store, EventHub(), clock, {}, {}, batch=1)
    with pytest.raises(OSError, match="went away"):
        await lifecycle.run_once()
    assert writes >= 2
    monkeypatch.setattr(store, "mark_garbage", real)

    report = await lifecycle.run_once()  # the lease was given back: it runs
    assert report.ran
    garbage = {s.id for s in made}  # retain-active, no traffic, expired an hour ago
    page = await store.list_stacks(StackQuery(statuses=(StackStatus.GARBAGE,), limit=100))
    assert {s.id for s in page.stacks} == garbage
    for stack in made:  # collected once: one garbage entry in its history
        history = await store.status_history(stack.id)
        assert [h.status for h in history].count(StackStatus.GARBAGE) == 1
