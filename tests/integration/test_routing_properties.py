"""The routing invariants of traffic shifting, over random sequences of what people and time
do: deploy (a newer stack becomes ready), approve, reject, reverse, pause, resume, steps of
the driver, the driver away for a while, cleanup passes, and restarts (a new TrafficControl
on the same store). A real SQLite store; the router and the scheduler are in-memory doubles
with the ports' contracts (weights per mille per stack, instances per stack).

After every operation:
- each route's weights sum to 100% (once it has any),
- only ready (or deprecated) stacks receive weight, never garbage,
- a stack whose shift was superseded receives no weight,
- a route has at most one open shift (awaiting approval, running or paused)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.storage import SqlStore, open_store
from commands.access import Principal
from commands.approval_desk import ApprovalDesk
from commands.events import EventHub
from commands.lifecycle import Lifecycle
from commands.ports import Route, WeightFence
from commands.replies import UserError
from commands.repositories import RouteRepository, RouteServer
from commands.settings import Settings
from commands.shifting import KIND, OPEN, ROUTABLE, TrafficControl
from domain.approvals import ApprovalStatus, Decision
from domain.records import NewStack, Stack, StackQuery, UnitRecord
from domain.runtime import Health, Instance, LaunchSpec, RuntimeReport
from domain.states import StackStatus
from domain.traffic import ShiftState
from domain.versions import Version
from tests.fakes.clock import FakeClock

MANIFEST = """\
units:
  - name: svc
    description: a service
    ports:
      - default->8080/http
plans:
  - name: default
    expiration_policy: retain-latest
    traffic_shift:
      policy: {policy}
      duration: "2 minutes"
namespaces:
  - name: dev
    units:
      - ref: svc
        plans: [default]
  - name: prod
    units:
      - ref: svc
        plans: [default]
"""
BOSS = Principal(user_id="boss", name="boss")


class Router:
    """The Router port on the route table alone: what HaproxyRouter projects onto HAProxy."""

    def __init__(self, table: RouteRepository) -> None:
        self.table = table

    async def check(self) -> str | None:
        return None

    async def address(self, route: Route) -> str:
        entry = await self.table.route_entry("local", route.key)
        if entry is None:
            port = 20000 + len(await self.table.route_entries("local"))
            entry = await self.table.create_route("local", route.key, port)
            assert entry is not None
        return f"127.0.0.1:{entry.port}"

    async def set_weights(
        self,
        route: Route,
        backends: dict[str, tuple[list[str], int]],
        fence: WeightFence | None = None,
    ) -> None:
        await self.address(route)
        servers = [  # as HAProxy: a stack without instances has no server to weigh
            RouteServer(f"{stack}-0", stack, addresses[0], per_mille, per_mille)
            for stack, (addresses, per_mille) in backends.items()
            if addresses
        ]
        await self.table.write_route("local", route.key, servers, fence)

    async def weights(self, route: Route) -> dict[str, int]:
        entry = await self.table.route_entry("local", route.key)
        return entry.weights() if entry else {}

    async def remove(self, route: Route, stack: str) -> None:
        await self.table.remove_route_stack("local", route.key, stack)

    async def serving(self) -> set[str]:
        return {
            s.stack
            for entry in await self.table.route_entries("local")
            for s in entry.servers
            if s.per_mille > 0
        }

    async def converge(self, wait: bool = True) -> None:
        pass

    async def routes(self) -> dict[str, dict[str, int]]:
        return {e.key: e.weights() for e in await self.table.route_entries("local")}

    async def close(self) -> None:
        pass


class Scheduler:
    """One running instance per stack until deleted; `sick` stacks fail their checks."""

    def __init__(self) -> None:
        self.deleted: set[str] = set()
        self.sick: set[str] = set()

    async def check(self) -> str | None:
        return None

    async def launch(self, spec: LaunchSpec) -> list[Instance]:
        return []

    async def instances(self, stack: str) -> list[Instance]:
        if stack in self.deleted:
            return []
        return [Instance(f"{stack}-0", "running", (("default", 30000 + hash(stack) % 1000),))]

    async def health(self, spec: LaunchSpec) -> Health:
        return Health(spec.stack not in self.sick, "")

    async def delete(self, stack: str) -> int:
        self.deleted.add(stack)
        return 1

    async def close(self) -> None:
        pass


class World:
    def __init__(self, store: SqlStore, clock: FakeClock, settings_: Settings) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings_
        self.router = Router(store)
        self.scheduler = Scheduler()
        self.versions = 0
        self.restart()

    def restart(self) -> None:
        """What a new process builds on the same database, router and scheduler."""
        events = EventHub()
        self.desk = ApprovalDesk(self.settings, self.store, events, self.clock)

        async def health(stack: Stack) -> RuntimeReport:
            instances = tuple(await self.scheduler.instances(stack.name))
            return RuntimeReport(instances, Health(stack.name not in self.scheduler.sick, "sick"))

        self.traffic = TrafficControl(
            self.settings,
            self.store,
            events,
            self.clock,
            self.desk,
            {"local": self.router},  # type: ignore[dict-item]
            {"local": self.scheduler},  # type: ignore[dict-item]
            health,
            holder="world",  # a restart here is a clean one: the lease stays its own
        )
        events.subscribe(self.traffic.on_event)
        self.lifecycle = Lifecycle(
            self.settings,
            self.store,
            events,
            self.clock,
            {"local": self.scheduler},  # type: ignore[dict-item]
            {"local": self.router},  # type: ignore[dict-item]
        )

    async def deploy(self, namespace: str) -> None:
        self.versions += 1
        version = Version(1, 0, self.versions)
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
                    name=f"svc--{version.dashed}--{self.versions:08d}",
                    guid=f"{self.versions:012x}",
                    unit="svc",
                    version=version,
                    datacenter="local",
                    namespace=namespace,
                    plan="default",
                    expires_at=self.clock.now() + timedelta(minutes=30),
                    created_by="U1",
                )
            ],
            "U1",
        )
        for status in (StackStatus.DEPLOYING, StackStatus.WARMING, StackStatus.READY):
            stack = await self.store.change_status(stack.id, status, "", "nelson")
        await self.traffic.on_ready(stack)

    async def decide(self, pick: int, decision: str) -> None:
        pending = [a for a in await self.store.approvals(ApprovalStatus.PENDING) if a.kind == KIND]
        if pending:
            approval = pending[pick % len(pending)]
            with contextlib.suppress(UserError):
                await self.desk.decide(approval.id, BOSS, Decision(decision))

    async def person(self, action: str, pick: int) -> None:
        shifts = await self.store.shifts()
        if not shifts:
            return
        shift = shifts[pick % len(shifts)]
        with contextlib.suppress(UserError):
            await getattr(self.traffic, action)(shift.id, BOSS)

    async def sicken(self, pick: int) -> None:
        ready = await self.ready_stacks()
        if ready:
            self.scheduler.sick.add(ready[pick % len(ready)].name)

    async def cleanup(self) -> None:
        await self.lifecycle.run_once()
        await self.lifecycle.announce()
        self.clock.advance(1)
        await self.lifecycle.run_once()  # reaps what was announced

    async def ready_stacks(self) -> list[Stack]:
        page = await self.store.list_stacks(StackQuery(statuses=(StackStatus.READY,), limit=1000))
        return sorted(page.stacks, key=lambda s: s.id)

    async def check(self) -> None:
        page = await self.store.list_stacks(StackQuery(limit=1000))
        status = {s.name: s.status for s in page.stacks}
        routes = await self.router.routes()
        for key, weights in routes.items():
            if weights:
                assert sum(weights.values()) == 1000, (key, weights)
            for name, weight in weights.items():
                if weight > 0:
                    assert status.get(name) in ROUTABLE, (name, status.get(name), weights)
        open_per_route: dict[str | None, int] = defaultdict(int)
        shifts = await self.store.shifts()
        for shift in shifts:
            if shift.state in OPEN:
                open_per_route[shift.route] += 1
        # a superseded stack answers no more requests
        live_targets = {s.to_stack_id for s in shifts if s.state != "superseded"}
        served = {n for weights in routes.values() for n, w in weights.items() if w}
        for shift in shifts:
            if shift.state == "superseded" and shift.to_stack_id not in live_targets:
                target = await self.store.stack_by_id(shift.to_stack_id)
                assert target is not None and target.name not in served, target
        assert all(count == 1 for count in open_per_route.values()), open_per_route


OPERATIONS = st.one_of(
    st.tuples(st.just("deploy"), st.sampled_from(["dev", "prod"])),
    st.tuples(st.just("approve"), st.integers(0, 5)),
    st.tuples(st.just("reject"), st.integers(0, 5)),
    st.tuples(st.sampled_from(["reverse", "pause", "resume"]), st.integers(0, 9)),
    st.tuples(st.just("tick"), st.integers(1, 30)),
    st.tuples(st.just("away"), st.integers(30, 600)),
    st.tuples(st.just("sicken"), st.integers(0, 9)),
    st.tuples(st.just("cleanup"), st.just(0)),
    st.tuples(st.just("restart"), st.just(0)),
)


async def play(
    tmp: Path, policy: str, operations: list[tuple[str, Any]]
) -> tuple[dict[str, dict[str, int]], list[tuple[ShiftState, str, int]]]:
    """Run `operations`, checking the invariants after each; the final weights per route and
    (state, target, weight) of each shift."""
    clock = FakeClock()
    path = tmp / f"routing-{abs(hash((policy, tuple(operations))))}.db"
    path.unlink(missing_ok=True)
    store = await open_store(f"sqlite:///{path}", clock=clock)
    try:
        await store.register_manifest(
            "acme/svc",
            MANIFEST.format(policy=policy),
            [UnitRecord("svc", "acme/svc", "service", "", 1)],
            "U1",
        )
        world = World(
            store,
            clock,
            Settings.model_validate(
                {
                    "access": {"admins": ["boss"]},
                    "approvals": {"dev": {"needed": False}, "prod": {"required": 1}},
                    "traffic": {"step_interval": "5s", "unhealthy_threshold": 2},
                    "lifecycle": {
                        "new_stack_grace": "0s",
                        "garbage_grace": "0s",
                        "notice": "0s",
                    },
                }
            ),
        )
        for name, argument in operations:
            if name == "deploy":
                await world.deploy(argument)
            elif name in ("approve", "reject"):
                await world.decide(argument, name)
            elif name in ("reverse", "pause", "resume"):
                await world.person(name, argument)
            elif name == "tick":
                for _ in range(argument):
                    clock.advance(5)
                    await world.traffic.tick()
            elif name == "away":
                clock.advance(argument)
                await world.traffic.tick()
            elif name == "sicken":
                await world.sicken(argument)
            elif name == "cleanup":
                await world.cleanup()
            elif name == "restart":
                world.restart()
            await world.check()
        shifts = []
        for shift in await store.shifts():
            target = await store.stack_by_id(shift.to_stack_id)
            assert target is not None
            shifts.append((shift.state, target.name, shift.current_new_weight))
        return await world.router.routes(), shifts
    finally:
        await store.close()
        path.unlink(missing_ok=True)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    policy=st.sampled_from(["linear", "atomic"]),
    operations=st.lists(OPERATIONS, min_size=1, max_size=20),
)
def test_routing_invariants_hold_over_any_sequence(
    tmp_path: Path, policy: str, operations: list[tuple[str, Any]]
) -> None:
    asyncio.run(play(tmp_path, policy, operations))


def test_three_deploys_without_a_driver_then_a_daemon(tmp_path: Path) -> None:
    """The story of the issue: three versions become ready with nobody driving; exactly one
    shift is open, and once a driver runs the newest ends at 100%, never skipping."""
    operations: list[tuple[str, Any]] = [
        ("deploy", "dev"),
        ("deploy", "dev"),
        ("away", 25),
        ("deploy", "dev"),
        ("cleanup", 0),
        ("away", 600),
        ("restart", 0),
        ("tick", 1),
    ]
    routes, shifts = asyncio.run(play(tmp_path, "linear", operations))
    [weights] = routes.values()
    # 1.0.3 superseded the shift to 1.0.2, which had a step's worth and now has none; ten
    # minutes away did not count: one step later the newest holds a step's worth (5 s of 120)
    assert [state for state, _, _ in shifts] == ["superseded", "running"]
    assert weights["svc--1-0-3--00000003"] == shifts[1][2]
    assert 0 < shifts[1][2] <= 200, shifts
    assert "svc--1-0-2--00000002" not in weights or weights["svc--1-0-2--00000002"] == 0
    routes, shifts = asyncio.run(play(tmp_path, "linear", [*operations, ("tick", 30)]))
    [weights] = routes.values()
    assert shifts[1][0] == "done" and weights["svc--1-0-3--00000003"] == 1000
