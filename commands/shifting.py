"""Traffic migration: when a new stack is ready and an older stack of the same unit and major
version serves traffic at the same target, ask for approval, then move traffic by the plan's
policy (`domain.traffic`) in steps through the datacenter's Router; pause, resume, reverse,
and reverse on its own when the new stack's health checks keep failing.

Shifts live in the Store (policy, duration, start, paused time, weights, when a driver last
stepped). Time no process drove a shift does not count: after a restart, or when a daemon
starts long after `nelson run` approved a shift, the shift continues from the weight last
applied and spreads the rest of its policy over the rest of its duration, one health-gated
step per `traffic.step_interval`, and the thread says how long it was delayed.

One shift per route (datacenter, namespace, unit, major version): a newer stack that becomes
ready supersedes the active shift there and starts from the weights as they are. Only ready
(or deprecated) stacks receive weight.

Several replicas: one drives a route's shift at a time, holding the route's lease in the
Store (renewed every step; taken over once it expires, with a larger token). Each step's
weights are written fenced by that lease: the write lands only while the lease is held and
the shift still runs its way with its new stack's weight not past the step's, so a replica
that lost the lease (or a shift paused, reversed or rolled back meanwhile) changes nothing,
and weights never move backwards except by a reverse or a rollback."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from commands import daemons
from commands.access import Principal, Role, authorize
from commands.approval_desk import ApprovalDesk
from commands.events import ApprovalDecided, Event, EventHub, StackProgress, StackReady
from commands.gate import Gate
from commands.manifests import ManifestMissing, Manifests
from commands.ports import (
    Clock,
    LeaseLost,
    Route,
    Router,
    RouterError,
    Scheduler,
    Store,
    WeightFence,
)
from commands.replies import AccessDenied, UserError
from commands.repositories import RouteLease
from commands.settings import Settings
from domain import traffic
from domain.approvals import ApprovalKind, ApprovalStatus
from domain.manifest import ManifestInvalid
from domain.records import Approval, AuditEvent, Stack, TrafficShift
from domain.runtime import RuntimeReport
from domain.states import StackStatus
from domain.traffic import ACTIVE_SHIFT_STATES, OPEN_SHIFT_STATES, ShiftState

log = logging.getLogger("nelson.traffic")

KIND = ApprovalKind.TRAFFIC_SHIFT
ACTIVE = ACTIVE_SHIFT_STATES
OPEN = OPEN_SHIFT_STATES  # at most one of these per route
ROUTABLE = (StackStatus.READY, StackStatus.DEPRECATED)
# A gap between two steps longer than this (and than three step intervals) means no process
# drove the shift; shorter ones are a busy event loop and count as shift time.
AWAY = timedelta(seconds=2)

HealthCheck = Callable[[Stack], Awaitable[RuntimeReport]]


def _human(seconds: float) -> str:
    seconds = round(seconds)
    if seconds % 60 == 0 and seconds >= 60:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    if seconds >= 120:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds} seconds"


def route_of(stack: Stack) -> Route:
    return Route(stack.namespace, stack.unit, stack.version.major)


def route_key(stack: Stack) -> str:
    """The route's name in the Store: one active shift per value."""
    return f"{stack.datacenter}/{stack.namespace}/{stack.unit}/{stack.version.major}"


def split(total: int, shares: Mapping[str, int]) -> dict[str, int]:
    """`total` per mille spread over `shares` in proportion (largest remainder: the parts sum
    to `total` exactly)."""
    if not shares:
        return {}
    whole = sum(shares.values())
    if whole <= 0:
        shares = dict.fromkeys(shares, 1)
        whole = len(shares)
    exact = {name: total * w / whole for name, w in shares.items()}
    parts = {name: int(value) for name, value in exact.items()}
    left = total - sum(parts.values())
    for name in sorted(exact, key=lambda n: (parts[n] - exact[n], n))[:left]:
        parts[name] += 1
    return parts


class TrafficControl:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        events: EventHub,
        clock: Clock,
        desk: ApprovalDesk,
        routers: Mapping[str, Router],
        schedulers: Mapping[str, Scheduler],
        health: HealthCheck,
        *,
        manifests: Manifests | None = None,
        holder: str | None = None,
    ) -> None:
        self.settings = settings
        # who holds route leases: unique per process (a restarted one is someone new)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._leases: dict[str, RouteLease] = {}  # route -> the lease this process holds
        self.store = store
        self.manifests = manifests or Manifests(store, settings)
        self.events = events
        self.clock = clock
        self.desk = desk
        self.routers = dict(routers)
        self.schedulers = dict(schedulers)
        self.health = health
        self._failures: dict[int, int] = {}  # shift id -> consecutive failed health probes
        self.gate = Gate(settings, store, clock, events)
        self._route_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # -- a stack became ready ----------------------------------------------------------------

    async def on_ready(self, stack: Stack) -> None:
        """Route a stack that became ready: the first of its route gets all traffic, a later
        one a shift from the stack serving. Heard again for the same stack when the replica
        handing it over died first (the workflow's handover step): then only what is not done
        yet is done."""
        router = self.routers.get(stack.datacenter)
        if router is None:
            await self._say(stack, f"traffic: {stack.datacenter} has no router; not routed")
            return
        opened = [
            s for s in await self.store.shifts(stack_id=stack.id) if s.to_stack_id == stack.id
        ]
        if opened:
            await self._ask_if_never_asked(stack, opened[-1])
            return
        serving = await self._join_route(stack, router)
        if not serving:
            return
        newer = await self._newer_target(stack)
        if newer is not None:
            await self._say(
                stack,
                f"traffic: the shift to {newer.name} ({newer.version}), a newer version, "
                "continues; this stack gets no traffic",
            )
            return
        old = await self.store.stack(max(serving, key=lambda n: (serving[n], n)))
        if old is None or await self._held(stack, old):
            return
        await self._open_shift(stack, old)

    async def _join_route(self, stack: Stack, router: Router) -> dict[str, int]:
        """Put the stack on its route with no weight; the other stacks serving there with
        their weights. Empty when nothing more is to do: the stack is the first of its major
        version there and gets all traffic, or the router failed (both told)."""
        route = route_of(stack)
        addresses = await self._addresses(stack)
        try:
            entry = await router.address(route)
            weights = await router.weights(route)
            serving = {name: w for name, w in weights.items() if w > 0 and name != stack.name}
            if not serving and weights.get(stack.name, 0) >= 1000:
                return {}  # routed so before the replica handing it over died
            if not serving:
                await router.set_weights(route, {stack.name: (addresses, 1000)})
                await self._audit("nelson", stack, "first stack of its major version: 100%")
                await self._say(
                    stack,
                    f"traffic: first stack of {stack.unit} {stack.version.major}.x in "
                    f"{stack.datacenter}/{stack.namespace}: it gets all traffic at {entry}",
                )
                return {}
            await router.set_weights(route, {stack.name: (addresses, 0)})
        except RouterError as exc:
            await self._say(stack, f"traffic: the router failed ({exc}); not routed", failed=True)
            return {}
        return serving

    async def _held(self, stack: Stack, old: Stack) -> bool:
        """A lock or freeze holding the stack: no shift starts (told and audited)."""
        held = await self.gate.holding_stack(stack)
        if held:
            why = held[0].describe(self.clock.now())
            await self._audit("nelson", stack, f"no shift started: {why}")
            await self._say(
                stack,
                f"traffic: no shift starts: {why}; traffic stays with {old.name} "
                f"({old.version}) and this stack gets none (once lifted, `redeploy "
                f"{stack.name}` deploys it again)",
            )
        return bool(held)

    async def _open_shift(self, stack: Stack, old: Stack) -> None:
        """A shift from `old` to `stack` on their route: started at once where the namespace
        needs no approval, otherwise waiting for one (asked here)."""
        policy, duration = await self._policy(stack)
        rule_name, rule = self.settings.approval_rule(stack.namespace)
        now = self.clock.now()
        shift, superseded = await self.store.open_shift(
            route_key(stack),
            old.id,
            stack.id,
            policy,
            duration,
            ShiftState.AWAITING_APPROVAL if rule.needed else ShiftState.RUNNING,
            now,
        )
        for earlier in superseded:
            await self._superseded(earlier, stack, shift)
        if not rule.needed:
            await self._say(
                stack,
                f"traffic: {rule_name} needs no approval; shifting from {old.version} now "
                f"({policy} over {_human(duration)}); {await self.drivers()}",
            )
            await self._audit("nelson", stack, f"shift #{shift.id} started without approval")
            await self.tick_one(shift)
            return
        await self._say(stack, f"traffic: asking for approval to shift from {old.version}")
        await self._ask(stack, old, policy, duration)

    async def _ask_if_never_asked(self, stack: Stack, shift: TrafficShift) -> None:
        """A shift to `stack` awaiting an approval nobody was asked for: the replica that
        opened it died first."""
        if shift.state is not ShiftState.AWAITING_APPROVAL:
            return
        if await self.store.approvals_of_stacks(KIND, [stack.id]):
            return
        old = await self.store.stack_by_id(shift.from_stack_id)
        if old is None:
            return
        await self._say(stack, f"traffic: asking for approval to shift from {old.version}")
        await self._ask(stack, old, shift.policy, shift.duration_seconds)

    async def _ask(
        self, stack: Stack, old: Stack, policy: traffic.ShiftPolicy, duration: int
    ) -> None:
        await self.desk.request(
            KIND,
            namespace=stack.namespace,
            datacenter=stack.datacenter,
            summary=(
                f"Shift traffic for {stack.unit} {stack.version.major}.x in "
                f"{stack.datacenter}/{stack.namespace} from {old.version} to {stack.version}, "
                f"{policy} over {_human(duration)}?"
            ),
            requested_by=stack.created_by,
            stack_id=stack.id,
            details=(
                f"from {old.name} ({old.version}) to {stack.name} ({stack.version})",
                f"{policy} over {_human(duration)}; Pause, Resume and Reverse stay available",
            ),
        )

    async def drivers(self) -> str:
        """Who moves shifts' weights: a running daemon, or nobody until one starts."""
        found = await daemons.running(self.store, self.clock)
        return daemons.drivers_note(found, self.settings.traffic.step_interval)

    async def _newer_target(self, stack: Stack) -> Stack | None:
        """The target of an open shift on this route that is newer than `stack`, if any."""
        for shift in await self.store.shifts(OPEN):
            if shift.route != route_key(stack) or shift.to_stack_id == stack.id:
                continue
            target = await self.store.stack_by_id(shift.to_stack_id)
            if target is not None and target.version > stack.version:
                return target
        return None

    async def _withdraw(self, target: Stack, by: Stack, earlier: TrafficShift) -> None:
        """A superseded stack answers no more requests: its share goes to the other ready
        stacks on the route that serve (the one its shift came from, at least)."""
        router = self.routers.get(target.datacenter)
        if router is None:
            return
        route = route_of(target)
        current = await router.weights(route)
        share = current.get(target.name, 0)
        others: dict[str, int] = {}
        backends: dict[str, tuple[list[str], int]] = {
            target.name: (await self._addresses(target), 0)
        }
        for name, weight in current.items():
            if name in (target.name, by.name) or weight <= 0:
                continue
            stack = await self.store.stack(name)
            if stack is not None and stack.status in ROUTABLE:
                others[name] = weight
                backends[name] = (await self._addresses(stack), weight)
        if not others:
            source = await self.store.stack_by_id(earlier.from_stack_id)
            if source is None or source.status not in ROUTABLE:
                return  # nothing else may serve: it keeps its share until the new shift moves
            others[source.name] = 0
            backends[source.name] = (await self._addresses(source), 0)
        total = sum(others.values()) + share
        for name, weight in split(total, others).items():
            backends[name] = (backends[name][0], weight)
        await router.set_weights(route, backends)
        await self.store.update_shift(earlier.id, current_new_weight=0)

    async def _superseded(self, earlier: TrafficShift, by: Stack, shift: TrafficShift) -> None:
        """Tell both threads, audit, and withdraw the earlier shift's pending approval."""
        target = await self.store.stack_by_id(earlier.to_stack_id)
        if target is None:
            return
        self._failures.pop(earlier.id, None)
        at = f"{earlier.current_new_weight / 10:g}%"
        await self._audit(
            "nelson",
            target,
            f"shift #{earlier.id} ({earlier.state}, at {at}) superseded by shift #{shift.id} "
            f"to {by.name}",
        )
        if earlier.current_new_weight > 0:
            await self._withdraw(target, by, earlier)
        await self._say(
            target,
            f"traffic: superseded by {by.name} ({by.version}), which became ready; this stack "
            f"had {at} and now gets none (its share went back to the stacks serving before); "
            f"the new shift starts from there",
        )
        await self._say(
            by,
            f"traffic: supersedes the shift to {target.name} ({target.version}, at {at})",
        )
        if earlier.state is ShiftState.AWAITING_APPROVAL:
            for approval in await self.store.approvals(ApprovalStatus.PENDING):
                if approval.kind == KIND and approval.stack_id == target.id:
                    await self.desk.withdraw(
                        approval.id,
                        ApprovalStatus.SUPERSEDED,
                        f"superseded by {by.name} ({by.version}), which became ready",
                    )

    async def _policy(self, stack: Stack) -> tuple[traffic.ShiftPolicy, int]:
        try:
            plan = (await self.manifests.of_stack(stack)).plan(stack.plan)
        except (ManifestMissing, ManifestInvalid):
            plan = None  # shifted by the defaults, as a plan without a traffic shift is
        if plan is not None and plan.traffic_shift is not None:
            return plan.traffic_shift.policy, plan.traffic_shift.duration_seconds
        return traffic.DEFAULT_POLICY, int(traffic.DEFAULT_DURATION.total_seconds())

    async def addresses(self, stack: Stack) -> list[str]:
        """Where the stack's running instances listen (host:port); empty when none runs."""
        return await self._addresses(stack)

    async def _addresses(self, stack: Stack) -> list[str]:
        scheduler = self.schedulers.get(stack.datacenter)
        if scheduler is None:
            return []
        return [
            f"{i.host}:{i.ports[0][1]}"
            for i in await scheduler.instances(stack.name)
            if i.state == "running" and i.ports
        ]

    # -- decisions ----------------------------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        if isinstance(event, StackReady):
            await self.on_ready(event.stack)
        if isinstance(event, StackProgress) and (
            event.failed or event.status in (StackStatus.FAILED, StackStatus.GARBAGE)
        ):
            # what a pending request about this stack asks is no longer what would happen
            why = event.message or f"the stack became {(event.status or 'failed')!s}"
            await self.desk.void_for_stack(event.stack_id, why.removeprefix("traffic: "))
            return
        if not isinstance(event, ApprovalDecided) or event.approval.kind != KIND:
            return
        approval = event.approval
        if approval.stack_id is None:
            return
        for shift in await self.store.shifts(
            (ShiftState.AWAITING_APPROVAL,), stack_id=approval.stack_id
        ):
            if shift.to_stack_id == approval.stack_id:
                await self.settle(shift, approval)

    async def settle(self, shift: TrafficShift, approval: Approval) -> None:
        """Act on a decided approval of a shift awaiting it: start it when approved, cancel it
        otherwise. Compare-and-set on the shift's state: of replicas settling one shift at once
        (the one that recorded the decision, others sweeping), one wins and only it speaks."""
        stack = await self.store.stack_by_id(shift.to_stack_id)
        old = await self.store.stack_by_id(shift.from_stack_id)
        if stack is None or old is None:
            return
        if approval.status is ApprovalStatus.APPROVED:
            now = self.clock.now()
            started = await self.store.update_shift(
                shift.id,
                ShiftState.AWAITING_APPROVAL,
                state=ShiftState.RUNNING,
                started_at=now,
                last_step_at=now,
            )
            if started is not None:
                await self._say(
                    stack,
                    f"traffic: approved; shifting from {old.version} to {stack.version}; "
                    f"{await self.drivers()}",
                )
                await self.tick_one(started)
        elif approval.status is not ApprovalStatus.PENDING:
            cancelled = await self.store.update_shift(
                shift.id, ShiftState.AWAITING_APPROVAL, state=ShiftState.CANCELLED
            )
            if cancelled is not None:
                await self._say(
                    stack,
                    f"traffic: {approval.status}; traffic stays with {old.name} ({old.version})",
                )

    async def settle_decided(self) -> None:
        """Settle the shifts still awaiting an approval that is already decided: the replica
        that recorded the decision died before acting on it. Looks only at the approvals of
        the shifts awaiting one; a shift follows its newest approval."""
        awaiting = await self.store.shifts((ShiftState.AWAITING_APPROVAL,))
        if not awaiting:
            return
        newest: dict[int, Approval] = {}
        for found in await self.store.approvals_of_stacks(
            KIND, sorted({s.to_stack_id for s in awaiting})
        ):
            if found.stack_id is not None:
                newest[found.stack_id] = found  # oldest first: the last one wins
        for shift in awaiting:
            approval = newest.get(shift.to_stack_id)
            if approval is None or approval.status is ApprovalStatus.PENDING:
                continue
            try:
                await self.settle(shift, approval)
            except Exception:
                log.exception(
                    "traffic shift #%s: approval #%s not acted on yet", shift.id, approval.id
                )

    # -- moving weights ------------------------------------------------------------------------

    def route_lock(self, route: str) -> asyncio.Lock:
        """Held while the periodic driver moves a route's weights, so that whoever takes
        traffic elsewhere at once (a rollback) is never undone by a step read just before."""
        return self._route_locks[route]

    def lease_ttl(self) -> timedelta:
        """How long a route's lease lasts unrenewed: a dead replica's shifts move on again
        within it (three steps at least, so a busy step never loses it)."""
        traffic_settings = self.settings.traffic
        return max(traffic_settings.lease_ttl, traffic_settings.step_interval * 3)

    async def _lease(self, shift: TrafficShift) -> RouteLease | None:
        """This process's lease on the shift's route, taken or renewed; None while another
        replica's runs (that one steps the shift)."""
        return await self.lease(shift.route or f"shift-{shift.id}")

    async def lease(self, route: str) -> RouteLease | None:
        """This process's lease on `route`, taken or renewed; None while another replica's
        runs (that one drives the route)."""
        lease = await self.store.take_route_lease(route, self.holder, self.lease_ttl())
        if lease is None:
            self._leases.pop(route, None)
            return None
        before = self._leases.get(route)
        if before is None or before.token != lease.token:
            log.info("traffic: driving route %s (lease token %d)", route, lease.token)
        self._leases[route] = lease
        return lease

    async def release_leases(self) -> None:
        """Give up the routes this process drives (it stops): another replica steps their
        shifts at its next tick instead of after the lease expires."""
        for route, lease in list(self._leases.items()):
            try:
                await self.store.release_route_lease(route, lease.holder, lease.token)
            except Exception as exc:  # it expires anyway
                log.warning("could not release the lease on %s: %s", route, exc)
            self._leases.pop(route, None)

    async def tick(self) -> None:
        """Put every running shift's weights where its policy says they are now, for the
        routes this process holds (or takes over) the lease of; first, start or cancel the
        shifts whose approval was decided by a replica that died before acting on it."""
        try:
            await self.settle_decided()
        except Exception:
            log.exception("could not look for decided approvals; will try again")
        for shift in await self.store.shifts((ShiftState.RUNNING,)):
            try:
                lease = await self._lease(shift)
                if lease is None:
                    continue
                async with self.route_lock(shift.route or ""):
                    fresh = await self.store.shift(shift.id)  # it may have changed meanwhile
                    if fresh is not None:
                        await self.tick_one(fresh, lease)
            except Exception:
                log.exception("traffic shift #%s failed to advance; will try again", shift.id)

    def _stopped(self, shift: TrafficShift) -> timedelta:
        """Time that does not count: pauses, and time no process drove the shift."""
        return timedelta(seconds=shift.paused_seconds + shift.delayed_seconds)

    def _weights(self, shift: TrafficShift, now: datetime) -> traffic.Weights:
        assert shift.started_at is not None
        return traffic.weights_at(
            shift.policy,
            shift.started_at,
            timedelta(seconds=shift.duration_seconds),
            now,
            self._stopped(shift),
            shift.paused_since,
            traffic.Weights.of_new(shift.start_new_weight / 1000),
            shift.direction,
        )

    async def tick_one(self, shift: TrafficShift, lease: RouteLease | None = None) -> None:
        if shift.state is not ShiftState.RUNNING or shift.started_at is None:
            return
        if lease is None:
            lease = await self._lease(shift)
            if lease is None:
                return  # another replica drives this route: it steps the shift
        try:
            await self._step(shift, lease)
        except LeaseLost as exc:
            # another replica took the route over, or the shift changed under this step
            self._leases.pop(lease.route, None)
            log.info("traffic shift #%s: step not applied: %s", shift.id, exc)

    async def _step(self, shift: TrafficShift, lease: RouteLease) -> None:
        assert shift.started_at is not None
        new = await self.store.stack_by_id(shift.to_stack_id)
        old = await self.store.stack_by_id(shift.from_stack_id)
        if new is None or old is None:
            return
        if shift.direction is traffic.Direction.FORWARD and new.status not in ROUTABLE:
            await self._cancel_unroutable(shift, old, new)
            return
        shift = await self._count_absence(shift, new)
        assert shift.started_at is not None
        if shift.direction is traffic.Direction.FORWARD and await self._unhealthy(shift, new):
            return
        now = self.clock.now()  # one instant: the weights applied are the ones judged complete
        weights = self._weights(shift, now)
        per_mille = round(weights.new * 1000)
        if per_mille != shift.current_new_weight:
            await self._apply(shift, old, new, per_mille, lease)
        done = traffic.is_complete(
            shift.policy,
            shift.started_at,
            timedelta(seconds=shift.duration_seconds),
            now,
            self._stopped(shift),
            shift.paused_since,
        )
        if done:
            final = (
                ShiftState.DONE
                if shift.direction is traffic.Direction.FORWARD
                else ShiftState.REVERSED
            )
            # the weights above were read a moment before completion: end exactly there
            target = 1000 if final is ShiftState.DONE else 0
            if per_mille != target:
                await self._apply(shift, old, new, target, lease)
            if await self.store.update_shift(shift.id, ShiftState.RUNNING, state=final):
                self._failures.pop(shift.id, None)
                await self.store.release_route_lease(lease.route, lease.holder, lease.token)
                self._leases.pop(lease.route, None)
                winner, loser = (new, old) if final is ShiftState.DONE else (old, new)
                await self._say(
                    new,
                    f"traffic: {final}; {winner.name} ({winner.version}) gets all traffic, "
                    f"{loser.name} gets none and is left for cleanup",
                )

    async def _count_absence(self, shift: TrafficShift, new: Stack) -> TrafficShift:
        """Steps are never skipped: a gap since the last step longer than a driver leaves
        (the bot was down, or nothing ran since `nelson run` started the shift) does not
        count as shift time, so the shift continues from the weight last applied."""
        now = self.clock.now()
        last = shift.last_step_at or shift.started_at
        assert last is not None
        interval = self.settings.traffic.step_interval
        gap = now - last
        if gap <= max(AWAY, interval * 3):
            await self.store.update_shift(shift.id, last_step_at=now)
            return replace(shift, last_step_at=now)
        delay = (gap - interval).total_seconds()
        delayed = await self.store.update_shift(
            shift.id,
            ShiftState.RUNNING,
            delayed_seconds=shift.delayed_seconds + delay,
            last_step_at=now,
        )
        if delayed is None:
            return shift
        remaining = self._remaining(delayed)
        await self._audit(
            "nelson", new, f"shift #{shift.id} delayed {_human(delay)}: no process drove it"
        )
        await self._say(
            new,
            f"traffic: this shift was delayed by {_human(delay)} (no `nelson serve` or console "
            f"drove it); continuing from {shift.current_new_weight / 10:g}%"
            + (f" over the remaining {_human(remaining)}" if remaining > 0 else ""),
        )
        return delayed

    def _remaining(self, shift: TrafficShift) -> float:
        """Seconds of the policy still to run (shift time, pauses excluded)."""
        if shift.started_at is None:
            return float(shift.duration_seconds)
        ran = traffic.elapsed(
            shift.started_at, self.clock.now(), self._stopped(shift), shift.paused_since
        )
        return max(shift.duration_seconds - ran.total_seconds(), 0.0)

    async def _cancel_unroutable(self, shift: TrafficShift, old: Stack, new: Stack) -> None:
        """The new stack is no longer ready (collected, failed): it must not get traffic."""
        cancelled = await self.store.update_shift(
            shift.id, ShiftState.RUNNING, state=ShiftState.CANCELLED
        )
        if cancelled is None:
            return
        self._failures.pop(shift.id, None)
        if shift.current_new_weight > 0:
            await self._apply(cancelled, old, new, 0)
        await self._audit("nelson", new, f"shift #{shift.id} cancelled: {new.status.value}")
        await self._say(
            new,
            f"traffic: shift cancelled: {new.name} is {new.status.value}; it gets no traffic",
            failed=True,
        )

    async def _apply(
        self,
        shift: TrafficShift,
        old: Stack,
        new: Stack,
        per_mille: int,
        lease: RouteLease | None = None,
    ) -> None:
        """Give `new` its share; every other ready stack on the route keeps its proportion of
        the rest (a superseded shift's stacks go down together); stacks no longer ready get
        nothing. With `lease`, a step of the running shift: written fenced by the lease and
        the shift (`LeaseLost` when either moved on; nothing changed)."""
        router = self.routers.get(new.datacenter)
        if router is None:
            return
        route = route_of(new)
        current = await router.weights(route)
        others: dict[str, int] = {}
        backends: dict[str, tuple[list[str], int]] = {}
        for name, weight in current.items():
            if name == new.name or weight <= 0:
                continue
            stack = old if name == old.name else await self.store.stack(name)
            addresses = await self._addresses(stack) if stack is not None else []
            if stack is not None and stack.status in ROUTABLE:
                others[name] = weight
            backends[name] = (addresses, 0)
        if not others and old.status in ROUTABLE:
            others[old.name] = 1
            backends[old.name] = (await self._addresses(old), 0)
        if not others:
            per_mille = 1000  # nothing else may serve
        for name, weight in split(1000 - per_mille, others).items():
            backends[name] = (backends[name][0], weight)
        backends[new.name] = (await self._addresses(new), per_mille)
        before = shift.current_new_weight
        if lease is not None:
            fence = WeightFence(lease, shift.id, shift.direction.value, per_mille)
            await router.set_weights(route, backends, fence)  # records the shift's weight too
        else:
            await router.set_weights(route, backends)
            await self.store.update_shift(shift.id, current_new_weight=per_mille)
        await self._audit(
            "nelson",
            new,
            f"shift #{shift.id}: {old.version} {100 - per_mille / 10:g}% / "
            f"{new.version} {per_mille / 10:g}%",
        )
        crossed = before // 250 != per_mille // 250 or per_mille in (0, 1000)
        message = (
            f"traffic: {old.version} {100 - per_mille / 10:g}% · {new.version} {per_mille / 10:g}%"
            if crossed
            else ""
        )
        await self.events.publish(StackProgress(new.id, message, self.clock.now()))

    async def _unhealthy(self, shift: TrafficShift, new: Stack) -> bool:
        """Probe the new stack; after `unhealthy_threshold` failures in a row, reverse."""
        try:
            report = await self.health(new)
            healthy = report.health is not None and report.health.healthy
            detail = report.health.detail if report.health else "no instance runs"
        except Exception as exc:
            healthy, detail = False, str(exc)
        if healthy:
            self._failures.pop(shift.id, None)
            return False
        count = self._failures.get(shift.id, 0) + 1
        self._failures[shift.id] = count
        threshold = self.settings.traffic.unhealthy_threshold
        if count < threshold:
            return False
        await self._reverse(shift, new, "nelson", f"health checks failed {count} times: {detail}")
        return True

    # -- reading -------------------------------------------------------------------------------

    async def weights_of(self, stacks: Sequence[Stack]) -> dict[str, int]:
        """Per mille of its route's traffic for each of `stacks` that is routed."""
        found: dict[str, int] = {}
        seen: set[tuple[str, str]] = set()
        for stack in stacks:
            router = self.routers.get(stack.datacenter)
            route = route_of(stack)
            if router is None or (stack.datacenter, route.key) in seen:
                continue
            seen.add((stack.datacenter, route.key))
            try:
                found.update(await router.weights(route))
            except RouterError as exc:
                log.warning("router of %s unavailable: %s", stack.datacenter, exc)
        return found

    def progress(self, shift: TrafficShift) -> str:
        """Where a shift stands, in words: `running: 42% (linear, 3 min of 10 left)`."""
        share = f"{shift.current_new_weight / 10:g}%"
        towards = "back to the old stack" if shift.direction is traffic.Direction.REVERSE else ""
        if shift.state is ShiftState.AWAITING_APPROVAL:
            return f"awaiting approval ({shift.policy} over {_human(shift.duration_seconds)})"
        if shift.state is ShiftState.PAUSED:
            return f"paused at {share}" + (f", moving {towards}" if towards else "")
        if shift.state is ShiftState.RUNNING:
            left = self._remaining(shift)
            delayed = (
                f"; delayed {_human(shift.delayed_seconds)}" if shift.delayed_seconds >= 1 else ""
            )
            moving = f" moving {towards}" if towards else ""
            return (
                f"running{moving}: {share} ({shift.policy}, {_human(left)} of "
                f"{_human(shift.duration_seconds)} left{delayed})"
            )
        return f"{shift.state} at {share}"

    # -- people --------------------------------------------------------------------------------

    async def find_active(self, stack: Stack) -> TrafficShift:
        """The newest shift towards `stack` that is running, paused or done."""
        for shift in reversed(
            await self.store.shifts((*ACTIVE, ShiftState.DONE), stack_id=stack.id)
        ):
            if shift.to_stack_id == stack.id:
                return shift
        raise UserError(
            f"no traffic shift is running for {stack.name}.",
            "A shift starts when a newer stack of the same major version is approved.",
        )

    async def _allowed(self, who: Principal, stack: Stack, action: str) -> None:
        decision = authorize(self.settings.access, who, Role.DEPLOY, stack.namespace)
        await self.store.audit(
            AuditEvent(
                who.user_id, action, stack.name, decision.allowed, decision.reason, self.clock.now()
            )
        )
        if not decision.allowed:
            raise AccessDenied(
                f"{who.label} may not {action} traffic in namespace '{stack.namespace}': "
                f"{decision.reason}.",
                "Nothing was changed.",
            )

    async def _shift_and_stack(self, shift_id: int) -> tuple[TrafficShift, Stack]:
        shift = await self.store.shift(shift_id)
        stack = await self.store.stack_by_id(shift.to_stack_id) if shift else None
        if shift is None or stack is None:
            raise UserError(f"there is no traffic shift #{shift_id}.")
        return shift, stack

    async def pause(self, shift_id: int, who: Principal) -> str:
        shift, stack = await self._shift_and_stack(shift_id)
        await self._allowed(who, stack, "pause")
        if shift.state is ShiftState.RUNNING and shift.started_at is not None:
            shift = await self._count_absence(shift, stack)  # undriven time before the pause
        paused = await self.store.update_shift(
            shift.id,
            ShiftState.RUNNING,
            state=ShiftState.PAUSED,
            paused_since=self.clock.now(),
        )
        if paused is None:
            raise UserError(f"the shift to {stack.name} is {shift.state}, not running.")
        await self._say(
            stack, f"traffic: paused by {who.label} at {paused.current_new_weight / 10:g}%"
        )
        return f"Paused the shift to {stack.name}."

    async def resume(self, shift_id: int, who: Principal) -> str:
        shift, stack = await self._shift_and_stack(shift_id)
        await self._allowed(who, stack, "resume")
        if shift.state is not ShiftState.PAUSED or shift.paused_since is None:
            raise UserError(f"the shift to {stack.name} is {shift.state}, not paused.")
        extra = (self.clock.now() - shift.paused_since).total_seconds()
        resumed = await self.store.update_shift(
            shift.id,
            ShiftState.PAUSED,
            state=ShiftState.RUNNING,
            paused_since=None,
            paused_seconds=shift.paused_seconds + int(extra),
            # whole seconds are stored as paused; the fraction must not count either
            delayed_seconds=shift.delayed_seconds + (extra - int(extra)),
            last_step_at=self.clock.now(),
        )
        if resumed is None:
            raise UserError(f"the shift to {stack.name} changed meanwhile; try again.")
        await self._say(stack, f"traffic: resumed by {who.label}; {await self.drivers()}")
        await self.tick_one(resumed)
        return f"Resumed the shift to {stack.name}."

    async def reverse(self, shift_id: int, who: Principal) -> str:
        shift, stack = await self._shift_and_stack(shift_id)
        await self._allowed(who, stack, "reverse")
        if shift.state not in (*ACTIVE, ShiftState.DONE):
            raise UserError(f"the shift to {stack.name} is {shift.state}; nothing to reverse.")
        if shift.direction is traffic.Direction.REVERSE:
            raise UserError(f"traffic is already moving back from {stack.name}.")
        back_to = await self.store.stack_by_id(shift.from_stack_id)
        if back_to is None or back_to.status not in ROUTABLE:
            state = back_to.status.value if back_to is not None else "gone"
            raise UserError(
                f"the stack traffic came from is {state}: there is nothing to move back to."
            )
        if shift.state is ShiftState.DONE:
            for other in await self.store.shifts(OPEN):
                if other.route == shift.route and other.id != shift.id:
                    newer = await self.store.stack_by_id(other.to_stack_id)
                    raise UserError(
                        f"a newer shift (to {newer.name if newer else '?'}) runs on this route; "
                        "reverse that one instead."
                    )
        await self._reverse(shift, stack, who.label, f"asked by {who.label}")
        return f"Reversing traffic from {stack.name}."

    async def _reverse(self, shift: TrafficShift, stack: Stack, actor: str, why: str) -> None:
        current = traffic.Weights.of_new(shift.current_new_weight / 1000)
        duration = traffic.reverse_duration(current, timedelta(seconds=shift.duration_seconds))
        reversed_ = await self.store.update_shift(
            shift.id,
            shift.state,
            state=ShiftState.RUNNING,
            direction=traffic.Direction.REVERSE,
            started_at=self.clock.now(),
            last_step_at=self.clock.now(),
            paused_since=None,
            paused_seconds=0,
            delayed_seconds=0.0,
            start_new_weight=shift.current_new_weight,
            duration_seconds=int(duration.total_seconds()),
        )
        if reversed_ is None:
            return
        self._failures.pop(shift.id, None)
        await self._audit(actor, stack, f"shift #{shift.id} reversed: {why}")
        await self.desk.void_for_stack(
            stack.id, f"traffic is moving back from {stack.name} ({why})"
        )
        await self._say(
            stack,
            f"traffic: reversing from {shift.current_new_weight / 10:g}% ({why})",
            failed=actor == "nelson",
        )
        await self.tick_one(reversed_)

    # -- telling ---------------------------------------------------------------------------------

    async def _say(self, stack: Stack, message: str, failed: bool = False) -> None:
        at = self.clock.now()
        await self.store.append_log(stack.id, message, step="traffic", at=at)
        await self.events.publish(StackProgress(stack.id, message, at, failed))

    async def _audit(self, actor: str, stack: Stack, detail: str) -> None:
        await self.store.audit(
            AuditEvent(actor, "traffic", stack.name, True, detail, self.clock.now())
        )
