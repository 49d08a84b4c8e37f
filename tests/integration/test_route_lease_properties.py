"""Several replicas driving one route's traffic shift, over random sequences of ticks, replicas
dying, stalling past their lease and restarting, leases expiring, router restarts, pauses and
reverses (hypothesis). After every operation:

- at most one writer per route: every weight write that landed carries a lease token no
  smaller than the one before it, and one token belongs to one holder;
- weights never move backwards except by a reverse: the new stack's share in the table and in
  the router's projection only grows while the shift moves forward, only shrinks once
  reversed;
- the projection converges to the table: after a replica converges its router, the router
  routes exactly what the table says.

Replicas share one store (SQLite) and one projected router, as replicas on one host share
one HAProxy; every store call may yield to the other replicas first, so their steps
interleave."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.storage import open_store
from commands.access import Principal
from commands.approval_desk import ApprovalDesk
from commands.events import EventHub
from commands.ports import Route, Store, WeightFence
from commands.replies import AccessDenied, UserError
from commands.repositories import RouteRepository
from commands.settings import Settings
from commands.shifting import TrafficControl
from domain.records import NewStack, Stack, UnitRecord
from domain.runtime import Health, RuntimeReport
from domain.states import StackStatus
from domain.traffic import Direction, ShiftState
from domain.versions import Version
from tests.fakes.clock import FakeClock
from tests.integration.test_routing_properties import MANIFEST, Router, Scheduler

BOSS = Principal(user_id="U0BOSS", name="boss")
ROUTE = Route("dev", "svc", 1)
SETTINGS = Settings.model_validate(
    {
        "access": {"admins": ["U0BOSS"]},
        "approvals": {"dev": {"needed": False}},
        "traffic": {"step_interval": "5s", "lease_ttl": "15s"},
    }
)


class Yielding:
    """The store, letting other tasks run (a random number of times) before each call."""

    def __init__(self, store: Store, rng: random.Random) -> None:
        self._store = store
        self._rng = rng

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._store, name)
        if not asyncio.iscoroutinefunction(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            for _ in range(self._rng.randrange(3)):
                await asyncio.sleep(0)
            return await target(*args, **kwargs)

        return call


@dataclass
class Projection:
    """What one shared router (HAProxy) routes, and every write that landed in the table."""

    routed: dict[str, dict[str, int]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    writes: list[tuple[str, int]] = field(default_factory=list)  # (holder, token), in order


class ProjectedRouter(Router):
    """A replica's router: writes the table (fenced), then projects the table onto the shared
    router under its lock, reading the table inside it, as HaproxyRouter does. `stalled` holds
    a write just before it reaches the table (a replica paused past its lease)."""

    def __init__(self, table: RouteRepository, projection: Projection) -> None:
        super().__init__(table)
        self.projection = projection
        self.stalled: asyncio.Event | None = None

    async def set_weights(
        self,
        route: Route,
        backends: dict[str, tuple[list[str], int]],
        fence: WeightFence | None = None,
    ) -> None:
        if self.stalled is not None:
            await self.stalled.wait()
        await super().set_weights(route, backends, fence)
        if fence is not None:
            self.projection.writes.append((fence.lease.holder, fence.lease.token))
        await self.converge()

    async def remove(self, route: Route, stack: str) -> None:
        await super().remove(route, stack)
        await self.converge()

    async def converge(self, wait: bool = True) -> None:
        async with self.projection.lock:
            self.projection.routed = await self.routes()


@dataclass
class Replica:
    traffic: TrafficControl
    router: ProjectedRouter
    stalled: asyncio.Task[None] | None = None


class World:
    def __init__(self, store: Store, clock: FakeClock, rng: random.Random) -> None:
        self.store = store
        self.clock = clock
        self.rng = rng
        self.projection = Projection()
        self.scheduler = Scheduler()
        self.replicas: dict[int, Replica] = {}
        self.born = 0
        # (direction, table, routed); routed is None while a fresh router knows nothing
        self.seen: list[tuple[Direction, int, int | None]] = []

    async def begin(self, replicas: int) -> None:
        """The unit's manifest registered, and `replicas` replicas started."""
        await self.store.register_manifest(
            "acme/svc",
            MANIFEST.format(policy="linear"),
            [UnitRecord("svc", "acme/svc", "service", "", 1)],
            "U1",
        )
        for slot in range(replicas):
            self.start(slot)

    def start(self, slot: int) -> None:
        """A replica (re)starts in `slot`: a new process, a new holder."""
        self.born += 1
        yielding = cast(Store, Yielding(self.store, self.rng))
        router = ProjectedRouter(yielding, self.projection)
        events = EventHub()

        async def health(stack: Stack) -> RuntimeReport:
            return RuntimeReport(
                tuple(await self.scheduler.instances(stack.name)), Health(True, "")
            )

        traffic = TrafficControl(
            SETTINGS,
            yielding,
            events,
            self.clock,
            ApprovalDesk(SETTINGS, yielding, events, self.clock),
            {"local": router},  # type: ignore[dict-item]
            {"local": self.scheduler},  # type: ignore[dict-item]
            health,
            holder=f"replica-{slot}-{self.born}",
        )
        self.replicas[slot] = Replica(traffic, router)

    async def stack(self, n: int) -> Stack:
        version = Version(1, 0, n)
        manifest = await self.store.latest_manifest("acme/svc")
        assert manifest is not None
        _, [stack] = await self.store.create_deployment(
            None,
            "svc",
            version,
            f"127.0.0.1:5000/svc:{version}",
            manifest.id,
            [
                NewStack(
                    release_id=0,
                    name=f"svc--{version.dashed}--{n:08d}",
                    guid=f"{n:012x}",
                    unit="svc",
                    version=version,
                    datacenter="local",
                    namespace="dev",
                    plan="default",
                    expires_at=self.clock.now() + timedelta(hours=3),
                    created_by="U1",
                )
            ],
            "U1",
        )
        for status in (StackStatus.DEPLOYING, StackStatus.WARMING, StackStatus.READY):
            stack = await self.store.change_status(stack.id, status, "", "nelson")
        return stack

    async def kill(self, slot: int) -> None:
        """kill -9: the process and whatever it was doing vanish; its leases stay until they
        expire."""
        replica = self.replicas.pop(slot, None)
        if replica is not None and replica.stalled is not None:
            replica.stalled.cancel()
            await asyncio.gather(replica.stalled, return_exceptions=True)

    async def stall(self, slot: int) -> None:
        """The replica's next step stops just before its write (a long GC pause, a frozen VM)."""
        replica = self.replicas.get(slot)
        if replica is None or replica.stalled is not None:
            return
        replica.router.stalled = asyncio.Event()
        replica.stalled = asyncio.create_task(replica.traffic.tick())
        for _ in range(50):  # until it waits at the write (or had nothing to write)
            await asyncio.sleep(0)

    async def unstall(self, slot: int) -> None:
        replica = self.replicas.get(slot)
        if replica is None or replica.stalled is None or replica.router.stalled is None:
            return
        replica.router.stalled.set()
        await replica.stalled
        replica.router.stalled = None
        replica.stalled = None

    async def tick_all(self) -> None:
        await asyncio.gather(
            *(r.traffic.tick() for r in self.replicas.values() if r.stalled is None)
        )

    async def person(self, action: str, slot: int) -> None:
        replica = self.replicas.get(slot)
        shifts = await self.store.shifts()
        if replica is None or not shifts:
            return
        try:
            await getattr(replica.traffic, action)(shifts[-1].id, BOSS)
        except AccessDenied:
            raise  # the model's person may do all of this: a refusal is a fault of the model
        except UserError:
            pass  # the shift is not in a state for it (done, paused, already reversed)

    async def apply(self, name: str, argument: int) -> None:
        if name == "tick":
            for _ in range(argument):
                self.clock.advance(5)
                await self.tick_all()
        elif name == "advance":
            self.clock.advance(argument)
        elif name == "kill":
            await self.kill(argument)
        elif name == "start":
            if argument not in self.replicas:
                self.start(argument)
        elif name == "stall":
            await self.stall(argument)
        elif name == "unstall":
            await self.unstall(argument)
        elif name == "converge":
            replica = self.replicas.get(argument)
            if replica is not None and replica.stalled is None:
                await replica.router.converge()
                entry = await self.store.route_entry("local", ROUTE.key)
                assert entry is not None
                assert self.projection.routed.get(ROUTE.key) == entry.weights(), entry
        elif name == "restart-router":
            self.projection.routed = {}  # a fresh router knows nothing until it converges
            self.seen.append((self.seen[-1][0], self.seen[-1][1], None))
        else:
            await self.person(name, argument)

    async def check(self, new: Stack) -> None:
        # one token, one holder; tokens never go down
        holders: dict[int, str] = {}
        for holder, token in self.projection.writes:
            assert holders.setdefault(token, holder) == holder, self.projection.writes
        tokens = [token for _, token in self.projection.writes]
        assert tokens == sorted(tokens), self.projection.writes
        # weights move one way, the shift's
        [shift] = await self.store.shifts()
        entry = await self.store.route_entry("local", ROUTE.key)
        table = entry.weights().get(new.name, 0) if entry else 0
        projected = self.projection.routed.get(ROUTE.key)
        routed = None if projected is None else projected.get(new.name, 0)
        direction = shift.direction
        if self.seen and shift.state is not ShiftState.CANCELLED:
            before_direction, before_table, before_routed = self.seen[-1]
            if direction is before_direction is Direction.FORWARD:
                assert table >= before_table, (self.seen, table)
            if direction is before_direction is Direction.REVERSE:
                assert table <= before_table, (self.seen, table)
            # a router that restarted starts from nothing: its first projection is no move
            if routed is not None and before_routed is not None:
                if direction is before_direction is Direction.FORWARD:
                    assert routed >= before_routed, (self.seen, routed)
                if direction is before_direction is Direction.REVERSE:
                    assert routed <= before_routed, (self.seen, routed)
        self.seen.append((direction, table, routed))
        assert shift.current_new_weight == table or shift.state is not ShiftState.RUNNING


OPERATIONS = st.one_of(
    st.tuples(st.just("tick"), st.integers(1, 4)),
    st.tuples(st.just("advance"), st.integers(1, 40)),
    st.tuples(
        st.sampled_from(["kill", "start", "stall", "unstall", "converge"]), st.integers(0, 2)
    ),
    st.tuples(st.sampled_from(["reverse", "pause", "resume"]), st.integers(0, 2)),
    st.tuples(st.just("restart-router"), st.just(0)),
)


async def play(tmp: Path, seed: int, operations: list[tuple[str, int]]) -> None:
    clock = FakeClock()
    path = tmp / f"leases-{seed}-{abs(hash(tuple(operations)))}.db"
    path.unlink(missing_ok=True)
    store = await open_store(f"sqlite:///{path}", clock=clock)
    world = World(store, clock, random.Random(seed))
    try:
        await world.begin(3)
        old = await world.stack(1)
        await world.replicas[0].traffic.on_ready(old)
        new = await world.stack(2)
        await world.replicas[1].traffic.on_ready(new)  # no approval in dev: the shift runs
        await world.check(new)
        for name, argument in operations:
            await world.apply(name, argument)
            await world.check(new)
        # whatever happened, surviving replicas finish the shift
        for slot in range(3):
            await world.unstall(slot)
            if slot not in world.replicas:
                world.start(slot)
        for _ in range(200):
            clock.advance(5)
            await world.tick_all()
            await world.check(new)
            [shift] = await store.shifts()
            if shift.state in (ShiftState.DONE, ShiftState.REVERSED):
                break
            if shift.state is ShiftState.PAUSED:
                await world.person("resume", 0)
        [shift] = await store.shifts()
        assert shift.state in (ShiftState.DONE, ShiftState.REVERSED), shift
        await world.replicas[0].router.converge()
        entry = await store.route_entry("local", ROUTE.key)
        assert entry is not None
        expected = {new.name: 1000, old.name: 0}
        if shift.state is ShiftState.REVERSED:
            expected = {new.name: 0, old.name: 1000}
        assert entry.weights() == expected
        assert world.projection.routed[ROUTE.key] == expected
    finally:
        for slot in list(world.replicas):
            await world.kill(slot)
        await store.close()
        path.unlink(missing_ok=True)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**16), operations=st.lists(OPERATIONS, min_size=1, max_size=25))
def test_one_writer_per_route_and_weights_move_one_way(
    tmp_path: Path, seed: int, operations: list[tuple[str, int]]
) -> None:
    asyncio.run(play(tmp_path, seed, operations))


def test_a_replica_stalled_past_its_lease_cannot_write(tmp_path: Path) -> None:
    """The fencing story: replica 1 (which started the shift and holds the route) stops just
    before a write, its lease expires, another replica takes the route over and moves on;
    replica 1's late write does not land."""
    asyncio.run(
        play(
            tmp_path,
            7,
            [("tick", 2), ("stall", 1), ("advance", 20), ("tick", 3), ("unstall", 1)],
        )
    )
