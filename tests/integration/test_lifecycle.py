"""The cleanup pass on real SQLite and PostgreSQL: policies, protection by live dependants,
garbage, reaping after the grace, a scheduler outage during reaping, and the lease that keeps
two processes from cleaning up at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import pytest

from adapters.storage import SqlStore
from commands.access import Principal
from commands.events import CleanupDone, Event, EventHub
from commands.lifecycle import Lifecycle
from commands.ports import SchedulerError
from commands.replies import AccessDenied
from commands.settings import Settings
from domain.records import NewStack, Stack, UnitRecord
from domain.runtime import Health, Instance, LaunchSpec, Rendering
from domain.states import StackStatus
from domain.versions import Version
from tests.fakes.clock import T0, FakeClock

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
notifications:
  slack:
    - channel: "#svc-team"
"""


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

    async def render(self, spec: LaunchSpec) -> Rendering:
        raise SchedulerError("this double renders nothing")

    async def close(self) -> None:
        pass


async def register(store: SqlStore, *units: str) -> None:
    """The test manifest, declaring `units`, as repository acme/svc."""
    records = [UnitRecord(u, "acme/svc", "service", "", 1) for u in units]
    await store.register_manifest("acme/svc", MANIFEST, records, "U1")


async def make(
    store: SqlStore,
    clock: FakeClock,
    unit: str,
    version: str,
    n: int,
    created: datetime,
    namespace: str = "dev",
) -> Stack:
    """A ready stack deployed at `created`; the clock is back where it was afterwards."""
    back_to = clock.now()
    clock.set(created)
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
                namespace=namespace,
                plan="default",
                expires_at=created + timedelta(minutes=30),
                created_by="U1",
            )
        ],
        "U1",
    )
    for status in (StackStatus.DEPLOYING, StackStatus.WARMING, StackStatus.READY):
        stack = await store.change_status(stack.id, status, "", "nelson")
    clock.set(back_to)
    return stack


async def test_a_cleanup_pass(store: SqlStore, clock: FakeClock) -> None:
    await register(store, "svc", "client")
    old = await make(store, clock, "svc", "1.0.0", 1, T0 - timedelta(hours=5))
    kept_by_client = await make(store, clock, "svc", "1.0.1", 2, T0 - timedelta(hours=4))
    newest = await make(store, clock, "svc", "1.0.2", 3, T0 - timedelta(hours=3))
    client = await make(store, clock, "client", "1.0.0", 4, T0 - timedelta(hours=3))
    young = await make(store, clock, "svc", "0.9.0", 5, T0 - timedelta(minutes=5))
    await store.add_dependency(client.id, kept_by_client.id)

    engine = Engine()
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

    # a second process is refused while a pass holds the lease, and runs once it ended
    second = Lifecycle(settings, store, EventHub(), clock, {"local": engine}, {})
    assert await store.acquire_lease("lifecycle", "a-pass-elsewhere", T0 + timedelta(hours=1), T0)
    assert not (await second.run_once()).ran
    await store.release_lease("lifecycle", "a-pass-elsewhere")
    assert (await second.run_once()).garbage == []  # decided once: nothing more to do
    assert (await first.run_once()).ran  # the lease was released when the pass ended

    # the daily announcement: the unit's channel is told what goes, why and when
    told: list[Event] = []
    first.events.subscribe(_record(told))
    announced = await first.announce_daily()
    assert announced is not None and [r.stack.name for r in announced.removals] == [old.name]
    removal = announced.removals[0]
    assert removal.remove_at == T0 + settings.lifecycle.garbage_grace
    assert "not the latest version" in removal.reason
    assert dict(announced.digests).keys() == {"svc-team"}
    assert told == [announced]
    # a second replica announcing the same day stays quiet, and so does the first
    assert await second.announce_daily() is None
    assert await first.announce_daily() is None
    audit = await store.audit_events(target="1 stacks")
    assert audit[0].action == "cleanup-announced" and "svc-team" in audit[0].detail

    # within the grace nothing goes; after it, the scheduler is down: nothing is terminated
    clock.set(T0 + settings.lifecycle.garbage_grace - timedelta(minutes=1))
    assert (await first.run_once()).reaped == []
    clock.advance(timedelta(minutes=2))
    # 0.9.0 left its grace and is collected now, but it was never announced: it stays
    engine.down = True
    report = await first.run_once()
    assert [s.name for s, _ in report.failed] == [old.name]
    still = await store.stack_by_id(old.id)
    assert still is not None and still.status is StackStatus.GARBAGE
    failed = await store.audit_events(target=old.name)
    assert failed[0].action == "reap-failed" and "not reachable" in failed[0].detail

    # back up: the next pass reaps it
    engine.down = False
    clock.advance(timedelta(minutes=5))
    report = await first.run_once()
    assert [s.name for s in report.reaped] == [old.name]
    assert engine.deleted == [old.name]
    gone = await store.stack_by_id(old.id)
    assert gone is not None and gone.status is StackStatus.TERMINATED
    # the failure was told once, then the removal, each to the unit's channel
    done = [e for e in told if isinstance(e, CleanupDone)]
    assert [(e.summaries[0][0], [s.name for s, _ in e.failed]) for e in done] == [
        ("svc-team", [old.name]),
        ("svc-team", []),
    ]
    assert [s.name for s in done[1].reaped] == [old.name]


def _record(into: list[Event]) -> Callable[[Event], Awaitable[None]]:
    async def listen(event: Event) -> None:
        into.append(event)

    return listen


async def test_keep_and_remove_now(store: SqlStore, clock: FakeClock) -> None:
    await register(store, "svc")
    one = await make(store, clock, "svc", "1.0.0", 1, T0 - timedelta(hours=5))
    two = await make(store, clock, "svc", "1.0.1", 2, T0 - timedelta(hours=5))
    three = await make(store, clock, "svc", "1.0.2", 3, T0 - timedelta(hours=5))
    await store.change_status(two.id, StackStatus.DEPRECATED, "old", "U1", at=T0)
    await make(store, clock, "svc", "1.0.3", 4, T0 - timedelta(hours=5))
    settings = Settings.model_validate(
        {
            "access": {
                "admins": ["UADMIN"],
                "rules": [{"namespace": "dev", "view": ["*"], "deploy": ["UDEV"]}],
            }
        }
    )
    engine = Engine()
    lifecycle = Lifecycle(settings, store, EventHub(), clock, {"local": engine}, {})
    report = await lifecycle.run_once()
    assert {s.id for s in report.garbage} == {one.id, two.id, three.id}

    # Keep: deployers only; garbage returns to where it was, for keep_for
    with pytest.raises(AccessDenied, match="may not keep"):
        await lifecycle.keep([one.id], Principal("UGUEST"))
    refused = await store.audit_events(target=one.name)
    assert refused[0].action == "keep" and not refused[0].allowed
    message = await lifecycle.keep([one.id, two.id], Principal("UDEV", "dev"))
    assert one.name in message and two.name in message
    kept = {s.id: s for s in await store.stacks_by_ids([one.id, two.id])}
    assert kept[one.id].status is StackStatus.READY
    assert kept[two.id].status is StackStatus.DEPRECATED  # it was deprecated before
    assert kept[one.id].expires_at == T0 + settings.lifecycle.keep_for
    assert (await store.audit_events(target=one.name))[0].action == "keep"
    # the next pass leaves kept stacks alone until their new expiry
    clock.set(T0 + timedelta(hours=1))
    assert {s.id for s in (await lifecycle.run_once()).garbage} == set()

    # Remove now: admins only, garbage only, at once (no announcement needed)
    with pytest.raises(AccessDenied):
        await lifecycle.remove_now([three.id], Principal("UDEV", "dev"))
    message = await lifecycle.remove_now([three.id, one.id], Principal("UADMIN", "admin"))
    assert f"Removed {three.name}" in message and f"{one.name} (it is ready)" in message
    assert engine.deleted == [three.name]
    gone = await store.stack_by_id(three.id)
    assert gone is not None and gone.status is StackStatus.TERMINATED
    assert (await store.audit_events(target=three.name))[0].action == "reaped"

    # a scheduler that is down: nothing is marked terminated, and the clicker is told
    clock.set(T0 + timedelta(days=2))
    await lifecycle.run_once()
    engine.down = True
    garbage = [p.stack for p in await store.pending_removals()]
    assert garbage
    message = await lifecycle.remove_now([garbage[0].id], Principal("UADMIN"))
    assert "Could not remove" in message and "not reachable" in message
    still = await store.stack_by_id(garbage[0].id)
    assert still is not None and still.status is StackStatus.GARBAGE


async def test_a_datacenter_without_a_scheduler_is_never_reaped(
    store: SqlStore, clock: FakeClock
) -> None:
    await register(store, "svc")
    old = await make(store, clock, "svc", "1.0.0", 1, T0 - timedelta(hours=5))
    await make(store, clock, "svc", "1.0.1", 2, T0 - timedelta(hours=5))
    lifecycle = Lifecycle(Settings(), store, EventHub(), clock, {}, {})
    await lifecycle.run_once()
    await lifecycle.announce()
    clock.set(T0 + timedelta(days=2))
    report = await lifecycle.run_once()
    assert [(s.name, why) for s, why in report.failed] == [
        (old.name, "datacenter 'local' has no scheduler this bot drives")
    ]


async def test_a_chain_across_namespaces_and_a_deprecated_dependency(
    store: SqlStore, clock: FakeClock
) -> None:
    """svc 1.0.0 (dev, deprecated) <- client (qa) <- edge (prod): everything a live stack
    depends on stays, whatever its namespace; once the chain's end goes, the rest follows."""
    await register(store, "svc", "client")
    old = T0 - timedelta(hours=5)
    svc = await make(store, clock, "svc", "1.0.0", 1, old)
    await make(store, clock, "svc", "1.0.1", 2, old)  # the latest: retain-latest keeps it anyway
    client = await make(store, clock, "client", "1.0.0", 3, old, namespace="qa")
    await make(store, clock, "client", "1.0.1", 4, old, namespace="qa")
    edge = await make(store, clock, "client", "0.1.0", 5, old, namespace="prod")
    await make(store, clock, "client", "0.2.0", 6, old, namespace="prod")
    await store.add_dependency(client.id, svc.id)
    await store.add_dependency(edge.id, client.id)
    await store.change_status(svc.id, StackStatus.DEPRECATED, "old", "U1", at=old)

    lifecycle = Lifecycle(Settings(), store, EventHub(), clock, {"local": Engine()}, {})
    report = await lifecycle.run_once()
    # retain-latest would drop svc 1.0.0 (deprecated, not the latest), client 1.0.0 and
    # edge 0.1.0; the live chain edge -> client -> svc keeps client and svc
    assert [s.name for s in report.garbage] == [edge.name]
    # edge is garbage (not live) now, so nothing keeps client once the expiry it got
    # while protected passes; then the same for svc
    clock.advance(timedelta(minutes=5))
    assert (await lifecycle.run_once()).garbage == []
    clock.advance(timedelta(hours=1))
    assert [s.name for s in (await lifecycle.run_once()).garbage] == [client.name]
    clock.advance(timedelta(hours=1))
    assert [s.name for s in (await lifecycle.run_once()).garbage] == [svc.name]
    history = await store.status_history(svc.id)
    assert history[-1].status is StackStatus.GARBAGE and "deprecated" in history[-1].message


async def test_a_stack_is_judged_by_the_manifest_it_was_deployed_with(
    store: SqlStore, clock: FakeClock
) -> None:
    # revision 1 keeps every release; both stacks are deployed with it
    always = MANIFEST.replace("retain-latest", "retain-always")
    records = [UnitRecord(u, "acme/svc", "service", "", 1) for u in ("svc", "client")]
    await store.register_manifest("acme/svc", always, records, "U1")
    older = await make(store, clock, "svc", "1.0.0", 1, T0 - timedelta(hours=5))
    newer = await make(store, clock, "svc", "1.0.1", 2, T0 - timedelta(hours=4))
    # revision 2 keeps only the latest: it applies to what is deployed after it, not to these
    await store.register_manifest("acme/svc", MANIFEST, records, "U1")
    latest = await store.latest_manifest("acme/svc")
    assert latest is not None and latest.revision == 2
    report = await Lifecycle(Settings(), store, EventHub(), clock, {}, {}).run_once()
    assert report.judged == 2 and report.garbage == []
    for stack in (older, newer):
        found = await store.stack_by_id(stack.id)
        assert found is not None and found.status is StackStatus.READY
