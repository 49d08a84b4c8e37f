"""The `live_versions` summary that `units` reads says, after any sequence of deploys, status
changes and cleanup collections, what counting the live stacks says: on real SQLite and
PostgreSQL, for every namespace, with and without a datacenter, for any number of newest
versions asked."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, insert, select

from adapters.storage import SqlStore, live_versions, open_store
from adapters.storage import tables as t
from adapters.storage.migrate import upgrade
from adapters.storage.urls import sync_url
from domain.records import LiveUnit, NewStack, StackQuery
from domain.states import LIVE_STATUSES, TRANSITIONS, StackStatus
from domain.versions import Version
from tests.fakes.clock import T0, FakeClock
from tests.pgserver import fresh_database

UNITS = ("svc", "client")
NAMESPACES = ("dev", "qa")
DATACENTERS = ("east", "west")


@dataclass(frozen=True)
class Deploy:
    unit: str
    version: tuple[int, int, int]
    targets: tuple[tuple[str, str], ...]  # (namespace, datacenter), one stack each


@dataclass(frozen=True)
class Move:
    pick: int  # which stack (modulo those there are)
    choice: int  # which of its allowed next statuses


@dataclass(frozen=True)
class Collect:
    picks: tuple[int, ...]  # ready or deprecated stacks the cleanup pass marks garbage


operations = st.one_of(
    st.builds(
        Deploy,
        unit=st.sampled_from(UNITS),
        version=st.tuples(st.integers(0, 2), st.integers(0, 11), st.integers(0, 2)),
        targets=st.lists(
            st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(DATACENTERS)),
            min_size=1,
            max_size=3,
            unique=True,
        ).map(tuple),
    ),
    st.builds(Move, pick=st.integers(0, 99), choice=st.integers(0, 2)),
    st.builds(Collect, picks=st.lists(st.integers(0, 99), max_size=4).map(tuple)),
)


def counted(stacks: list[tuple[str, str, str, Version, StackStatus]]) -> dict[str, LiveUnit]:
    """The oracle, from every stack: (namespace, datacenter, unit, version, status)."""
    found: dict[str, tuple[int, set[Version]]] = {}
    for _, _, unit, version, _ in stacks:
        count, versions = found.get(unit, (0, set()))
        found[unit] = (count + 1, versions | {version})
    return {
        unit: LiveUnit(count, len(versions), tuple(sorted(versions, reverse=True)))
        for unit, (count, versions) in found.items()
    }


async def check(store: SqlStore) -> None:
    page = await store.list_stacks(StackQuery(limit=10_000))
    live = [
        (s.namespace, s.datacenter, s.unit, s.version, s.status)
        for s in page.stacks
        if s.status in LIVE_STATUSES
    ]
    for namespace in NAMESPACES:
        for datacenter in (None, *DATACENTERS):
            here = [s for s in live if s[0] == namespace and datacenter in (None, s[1])]
            expected = counted(here)
            # more than the summary keeps: the store counts the stacks
            assert await store.live_units(namespace, datacenter, newest=10) == expected
            for newest in range(1, live_versions.KEPT + 1):
                assert await store.live_units(namespace, datacenter, newest) == {
                    unit: LiveUnit(u.stacks, u.versions, u.newest[:newest])
                    for unit, u in expected.items()
                }


async def apply(store: SqlStore, op: Deploy | Move | Collect, n: int) -> None:
    if isinstance(op, Deploy):
        version = Version(*op.version)
        manifest = await store.latest_manifest("acme/svc")
        assert manifest is not None
        release = await store.release(op.unit, version)
        taken = {
            (s.namespace, s.datacenter)
            for s in await store.release_stacks(op.unit, version)
            if s.status.is_live
        }
        stacks = [
            NewStack(
                release_id=release.id if release else 0,
                name=f"{op.unit}--{version.dashed}--{n:04d}{k}",
                guid=f"{n:06d}{k:06d}",
                unit=op.unit,
                version=version,
                datacenter=dc,
                namespace=ns,
                plan="default",
                expires_at=T0,
                created_by="U1",
            )
            for k, (ns, dc) in enumerate(op.targets)
            if (ns, dc) not in taken  # the workflow refuses a second live stack there
        ]
        if stacks:
            await store.create_deployment(
                release, op.unit, version, "stage/x", manifest.id, stacks, "U1"
            )
        return
    everything = sorted(
        (await store.list_stacks(StackQuery(limit=10_000))).stacks, key=lambda s: s.id
    )
    if isinstance(op, Move):
        movable = [s for s in everything if TRANSITIONS[s.status]]
        if movable:
            stack = movable[op.pick % len(movable)]
            allowed = sorted(TRANSITIONS[stack.status])
            await store.change_status(stack.id, allowed[op.choice % len(allowed)], "", "U1")
        return
    judged = [s for s in everything if s.status in (StackStatus.READY, StackStatus.DEPRECATED)]
    if judged:
        chosen = {judged[p % len(judged)].id for p in op.picks}
        await store.mark_garbage({i: "expired" for i in chosen}, T0)


def fresh_url(database_url: str, request: pytest.FixtureRequest, folder: Path) -> str:
    if database_url.startswith("sqlite"):
        return f"sqlite:///{folder / uuid.uuid4().hex}.db"
    return fresh_database(request.getfixturevalue("postgres_admin_url"))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(operations, min_size=1, max_size=25))
async def test_the_summary_says_what_counting_the_live_stacks_says(
    database_url: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    ops: list[Deploy | Move | Collect],
) -> None:
    store = await open_store(fresh_url(database_url, request, tmp_path), clock=FakeClock())
    try:
        await store.register_manifest("acme/svc", "units: []", [], "U1")
        for n, op in enumerate(ops):
            await apply(store, op, n)
            await check(store)
    finally:
        await store.close()


async def test_a_recount_gives_the_summary_the_changes_kept(store: SqlStore) -> None:
    """What the benches use after loading stacks around the store, and what the migration
    fills: the same rows as the changes kept."""
    await store.register_manifest("acme/svc", "units: []", [], "U1")
    script: list[Deploy | Move | Collect] = [
        Deploy("svc", (1, 0, 0), (("dev", "east"), ("dev", "west"), ("qa", "east"))),
        Deploy("svc", (1, 10, 0), (("dev", "east"),)),
        Deploy("client", (0, 1, 0), (("qa", "west"),)),
        Move(0, 1),  # svc 1.0.0 in dev/east fails
    ]
    for n, op in enumerate(script):
        await apply(store, op, n)
    engine = create_engine(sync_url(store._url))
    try:
        with engine.begin() as conn:
            kept = sorted(conn.execute(select(t.live_versions)).all())
            live_versions.rebuild(conn)
            assert sorted(conn.execute(select(t.live_versions)).all()) == kept
        assert ("dev", "svc", "*", 2, 2, "1.10.0 1.0.0") in kept
        assert ("dev", "svc", "east", 1, 1, "1.10.0") in kept
    finally:
        engine.dispose()


async def test_the_migration_fills_the_summary_from_the_stacks_there_are(
    database_url: str, clock: FakeClock
) -> None:
    await asyncio.to_thread(upgrade, database_url, "0008")
    # stacks written before the summary existed, as an older Nelson wrote them
    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as conn:
            conn.execute(insert(t.repositories).values(id=1, name="acme/svc", created_at=T0))
            conn.execute(
                insert(t.manifests).values(
                    id=1,
                    repository_id=1,
                    revision=1,
                    text="",
                    digest="0" * 64,
                    registered_by="U1",
                    registered_at=T0,
                )
            )
            conn.execute(
                insert(t.releases).values(
                    id=1,
                    unit="svc",
                    major=1,
                    minor=0,
                    patch=0,
                    image="i",
                    manifest_id=1,
                    created_by="U1",
                    created_at=T0,
                )
            )
            conn.execute(
                insert(t.stacks),
                [
                    {
                        "guid": f"{n:012x}",
                        "name": f"svc--{n}",
                        "release_id": 1,
                        "unit": "svc",
                        "major": 1,
                        "minor": n,
                        "patch": 0,
                        "datacenter": dc,
                        "namespace": "dev",
                        "plan": "default",
                        "status": status,
                        "status_message": "",
                        "created_by": "U1",
                        "created_at": T0,
                        "updated_at": T0,
                    }
                    for n, (dc, status) in enumerate(
                        [
                            ("east", "ready"),
                            ("west", "warming"),
                            ("east", "failed"),
                            ("west", "deprecated"),
                            ("east", "ready"),
                            ("east", "garbage"),
                        ]
                    )
                ],
            )
    finally:
        engine.dispose()
    store = await open_store(database_url, clock=clock)  # migrates to the newest schema
    try:
        v = [Version(1, n, 0) for n in range(6)]
        assert await store.live_units("dev") == {"svc": LiveUnit(4, 4, (v[4], v[3], v[1]))}
        assert await store.live_units("dev", "east") == {"svc": LiveUnit(2, 2, (v[4], v[0]))}
        assert await store.live_units("dev", "west", newest=1) == {"svc": LiveUnit(2, 2, (v[3],))}
        assert await store.live_units("qa") == {}
    finally:
        await store.close()


async def test_a_pass_touching_many_units_rewrites_each_of_them(store: SqlStore) -> None:
    """More pairs at once than SQLite rewrites one by one (they go through a temporary table)."""
    await store.register_manifest("acme/svc", "units: []", [], "U1")
    many = live_versions.FEW + 3
    units = [f"unit-{n}" for n in range(many)]
    for n, unit in enumerate(units):
        await apply(store, Deploy(unit, (1, n, 0), (("dev", "east"), ("qa", "west"))), n)
        await apply(store, Deploy(unit, (2, 0, 0), (("dev", "east"),)), many + n)
    everything = (await store.list_stacks(StackQuery(limit=10_000))).stacks
    for stack in everything:
        for status in (StackStatus.DEPLOYING, StackStatus.WARMING, StackStatus.READY):
            await store.change_status(stack.id, status, "", "U1")
    older = [s.id for s in everything if s.version.major == 1]
    assert len(await store.mark_garbage({i: "expired" for i in older}, T0)) == 2 * many
    assert await store.live_units("qa") == {}
    assert await store.live_units("dev") == {
        unit: LiveUnit(1, 1, (Version(2, 0, 0),)) for unit in units
    }
    await check(store)
