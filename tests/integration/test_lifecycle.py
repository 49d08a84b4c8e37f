"""The cleanup pass on real SQLite and PostgreSQL: policies, protection by live dependants,
garbage, reaping after the grace, a scheduler outage during reaping, and the lease that keeps
two processes from cleaning up at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.storage import SqlStore
from commands.events import EventHub
from commands.lifecycle import Lifecycle
from commands.ports import SchedulerError
from commands.settings import Settings
from domain.records import NewStack, Stack
from domain.runtime import Health, Instance, LaunchSpec
from domain.states import StackStatus
from domain.versions import Version

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

MANIFEST = """\
units:
  - name: svc
    description: a service
    ports:
      - default->8080/http
  - name: client
    description: depends on svc
    ports:
      - default->8080/http
    dependencies:
      - ref: svc@1.0
plans:
  - name: default
    expiration_policy: retain-latest
namespaces:
  - name: dev
    units:
      - ref: svc
        plans: [default]
      - ref: client
        plans: [default]
"""


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


class Engine:
    """A scheduler double that records deletions, and can be down."""

    def __init__(self) -> None:
        self.deleted: list[str] = []
        self.down = False

    async def check(self) -> str | None:
        return None

    async def launch(self, spec: LaunchSpec) -> list[Instance]:
        return []

    async def instances(self, stack: str) -> list[Instance]:
        return []

    async def health(self, spec: LaunchSpec) -> Health:
        return Health(True, "")

    async def delete(self, stack: str) -> int:
        if self.down:
            raise SchedulerError("the Docker engine at unix:///x is not reachable", transient=True)
        self.deleted.append(stack)
        return 1

    async def close(self) -> None:
        pass


async def make(store: SqlStore, unit: str, version: str, n: int, created: datetime) -> Stack:
    manifest = await store.latest_manifest("acme/svc")
    assert manifest is not None
    v = Version.parse(version)
    release = await store.release(unit, v)
    _, [stack] = await store.create_deployment(
        release,
        unit,
        v,
        f"127.0.0.1:5000/{unit}:{version}",
        manifest.id,
        [
            NewStack(
                release_id=release.id if release else 0,
                name=f"{unit}--{v.dashed}--{n:08d}",
                guid=f"{n:012x}",
                unit=unit,
                version=v,
                datacenter="local",
                namespace="dev",
                plan="default",
                expires_at=created + timedelta(minutes=30),
                created_by="U1",
            )
        ],
        "U1",
    )
    for status in (StackStatus.DEPLOYING, StackStatus.WARMING, StackStatus.READY):
        stack = await store.change_status(stack.id, status, "", "nelson", at=created)
    return stack


async def test_a_cleanup_pass(store: SqlStore) -> None:
    from domain.records import UnitRecord

    await store.register_manifest(
        "acme/svc",
        MANIFEST,
        [
            UnitRecord("svc", "acme/svc", "service", "", 1),
            UnitRecord("client", "acme/svc", "service", "", 1),
        ],
        "U1",
    )
    old = await make(store, "svc", "1.0.0", 1, T0 - timedelta(hours=5))
    kept_by_client = await make(store, "svc", "1.0.1", 2, T0 - timedelta(hours=4))
    newest = await make(store, "svc", "1.0.2", 3, T0 - timedelta(hours=3))
    client = await make(store, "client", "1.0.0", 4, T0 - timedelta(hours=3))
    young = await make(store, "svc", "0.9.0", 5, T0 - timedelta(minutes=5))
    await store.add_dependency(client.id, kept_by_client.id)

    engine = Engine()
    clock = Clock(T0)
    settings = Settings()
    first = Lifecycle(settings, store, EventHub(), clock, {"local": engine}, {})
    report = await first.run_once()
    assert report.ran
    # retain-latest keeps 1.0.2; 1.0.1 is kept because a live stack depends on it
    assert [s.name for s in report.garbage] == [old.name]
    status = {
        s.id: s.status
        for s in await store.stacks_by_ids([old.id, kept_by_client.id, newest.id, young.id])
    }
    assert status[old.id] is StackStatus.GARBAGE
    assert status[kept_by_client.id] is StackStatus.READY
    assert status[newest.id] is StackStatus.READY
    assert status[young.id] is StackStatus.READY  # new stacks are left alone in their grace
    extended = await store.stack_by_id(newest.id)
    assert extended is not None and extended.expires_at is not None and extended.expires_at > T0
    audit = await store.audit_events(target=old.name)
    assert audit[0].action == "garbage" and audit[0].actor == "nelson"

    # a second process is refused while the first holds the lease
    second = Lifecycle(settings, store, EventHub(), clock, {"local": engine}, {})
    assert not (await second.run_once()).ran

    # the garbage grace passes, the scheduler is down: nothing is marked terminated
    clock.at = T0 + settings.lifecycle.garbage_grace + timedelta(minutes=1)
    engine.down = True
    report = await first.run_once()
    assert [s.name for s, _ in report.failed] == [old.name]
    still = await store.stack_by_id(old.id)
    assert still is not None and still.status is StackStatus.GARBAGE
    failed = await store.audit_events(target=old.name)
    assert failed[0].action == "reap-failed" and "not reachable" in failed[0].detail

    # back up: the next pass reaps it
    engine.down = False
    clock.at += timedelta(minutes=5)
    report = await first.run_once()
    assert [s.name for s in report.reaped] == [old.name]
    assert engine.deleted == [old.name]
    gone = await store.stack_by_id(old.id)
    assert gone is not None and gone.status is StackStatus.TERMINATED
