"""Traffic migration: when a new stack is ready and an older stack of the same unit and major
version serves traffic at the same target, ask for approval, then move traffic by the plan's
policy (`domain.traffic`) in steps through the datacenter's Router; pause, resume, reverse,
and reverse on its own when the new stack's health checks keep failing.

Shifts live in the Store (policy, duration, start, paused time, weights), so after a restart
`tick()` puts the weights where the policy says they should be now: a step missed while the
bot was down is caught up, not replayed."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta

from commands.access import Principal, Role, authorize
from commands.approval_desk import ApprovalDesk
from commands.events import ApprovalDecided, Event, EventHub, StackProgress
from commands.ports import Clock, Route, Router, RouterError, Scheduler, Store
from commands.replies import AccessDenied, UserError
from commands.settings import Settings
from domain import traffic
from domain.manifest import parse_manifest
from domain.records import AuditEvent, Stack, TrafficShift
from domain.runtime import RuntimeReport

log = logging.getLogger("nelson.traffic")

KIND = "traffic-shift"
ACTIVE = ("running", "paused")

HealthCheck = Callable[[Stack], Awaitable[RuntimeReport]]


def _human(seconds: int) -> str:
    if seconds % 60 == 0 and seconds >= 60:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} seconds"


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
    ) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.clock = clock
        self.desk = desk
        self.routers = dict(routers)
        self.schedulers = dict(schedulers)
        self.health = health
        self._failures: dict[int, int] = {}  # shift id -> consecutive failed health probes
        events.subscribe(self.on_event)

    # -- a stack became ready ----------------------------------------------------------------

    async def on_ready(self, stack: Stack) -> None:
        router = self.routers.get(stack.datacenter)
        if router is None:
            await self._say(stack, f"traffic: {stack.datacenter} has no router; not routed")
            return
        route = Route(stack.namespace, stack.unit, stack.version.major)
        addresses = await self._addresses(stack)
        try:
            entry = await router.address(route)
            serving = {
                name: w
                for name, w in (await router.weights(route)).items()
                if w > 0 and name != stack.name
            }
            if not serving:
                await router.set_weights(route, {stack.name: (addresses, 1000)})
                await self._audit("nelson", stack, "first stack of its major version: 100%")
                await self._say(
                    stack,
                    f"traffic: first stack of {stack.unit} {stack.version.major}.x in "
                    f"{stack.datacenter}/{stack.namespace}: it gets all traffic at {entry}",
                )
                return
            await router.set_weights(route, {stack.name: (addresses, 0)})
        except RouterError as exc:
            await self._say(stack, f"traffic: the router failed ({exc}); not routed", failed=True)
            return
        old = await self.store.stack(max(serving, key=lambda n: serving[n]))
        if old is None:
            return
        policy, duration = await self._policy(stack)
        rule_name, rule = self.settings.approval_rule(stack.namespace)
        now = self.clock.now()
        shift = await self.store.create_shift(
            old.id,
            stack.id,
            policy,
            duration,
            "awaiting-approval" if rule.needed else "running",
            now,
        )
        summary = (
            f"Shift traffic for {stack.unit} {stack.version.major}.x in "
            f"{stack.datacenter}/{stack.namespace} from {old.version} to {stack.version}, "
            f"{policy} over {_human(duration)}?"
        )
        if not rule.needed:
            await self._say(
                stack,
                f"traffic: {rule_name} needs no approval; shifting from {old.version} now "
                f"({policy} over {_human(duration)})",
            )
            await self._audit("nelson", stack, f"shift #{shift.id} started without approval")
            await self.tick_one(shift)
            return
        await self._say(stack, f"traffic: asking for approval to shift from {old.version}")
        await self.desk.request(
            KIND,
            namespace=stack.namespace,
            datacenter=stack.datacenter,
            summary=summary,
            requested_by=stack.created_by,
            stack_id=stack.id,
            details=(
                f"from {old.name} ({old.version}) to {stack.name} ({stack.version})",
                f"{policy} over {_human(duration)}; Pause, Resume and Reverse stay available",
            ),
        )

    async def _policy(self, stack: Stack) -> tuple[str, int]:
        release = await self.store.release(stack.unit, stack.version)
        record = await self.store.manifest_by_id(release.manifest_id) if release else None
        if record is not None:
            plan = next(
                (p for p in parse_manifest(record.text).plans if p.name == stack.plan), None
            )
            if plan is not None and plan.traffic_shift is not None:
                return plan.traffic_shift.policy, plan.traffic_shift.duration_seconds
        return traffic.DEFAULT_POLICY.value, int(traffic.DEFAULT_DURATION.total_seconds())

    async def _addresses(self, stack: Stack) -> list[str]:
        scheduler = self.schedulers.get(stack.datacenter)
        if scheduler is None:
            return []
        return [
            f"127.0.0.1:{i.ports[0][1]}"
            for i in await scheduler.instances(stack.name)
            if i.state == "running" and i.ports
        ]

    # -- decisions ----------------------------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        if not isinstance(event, ApprovalDecided) or event.approval.kind != KIND:
            return
        approval = event.approval
        if approval.stack_id is None:
            return
        for shift in await self.store.shifts(("awaiting-approval",), stack_id=approval.stack_id):
            if shift.to_stack_id != approval.stack_id:
                continue
            stack = await self.store.stack_by_id(shift.to_stack_id)
            old = await self.store.stack_by_id(shift.from_stack_id)
            if stack is None or old is None:
                continue
            if approval.status == "approved":
                started = await self.store.update_shift(
                    shift.id, "awaiting-approval", state="running", started_at=self.clock.now()
                )
                if started is not None:
                    await self._say(
                        stack, f"traffic: approved; shifting from {old.version} to {stack.version}"
                    )
                    await self.tick_one(started)
            else:
                cancelled = await self.store.update_shift(
                    shift.id, "awaiting-approval", state="cancelled"
                )
                if cancelled is not None:
                    await self._say(
                        stack,
                        f"traffic: {approval.status}; traffic stays with {old.name} "
                        f"({old.version})",
                    )

    # -- moving weights ------------------------------------------------------------------------

    async def tick(self) -> None:
        """Put every running shift's weights where its policy says they are now."""
        for shift in await self.store.shifts(("running",)):
            try:
                await self.tick_one(shift)
            except Exception:
                log.exception("traffic shift #%s failed to advance; will try again", shift.id)

    def _weights(self, shift: TrafficShift) -> traffic.Weights:
        assert shift.started_at is not None
        return traffic.weights_at(
            traffic.ShiftPolicy(shift.policy),
            shift.started_at,
            timedelta(seconds=shift.duration_seconds),
            self.clock.now(),
            timedelta(seconds=shift.paused_seconds),
            shift.paused_since,
            traffic.Weights.of_new(shift.start_new_weight / 1000),
            traffic.Direction(shift.direction),
        )

    async def tick_one(self, shift: TrafficShift) -> None:
        if shift.state != "running" or shift.started_at is None:
            return
        new = await self.store.stack_by_id(shift.to_stack_id)
        old = await self.store.stack_by_id(shift.from_stack_id)
        if new is None or old is None:
            return
        if shift.direction == "forward" and await self._unhealthy(shift, new):
            return
        weights = self._weights(shift)
        per_mille = round(weights.new * 1000)
        if per_mille != shift.current_new_weight:
            await self._apply(shift, old, new, per_mille)
        done = traffic.is_complete(
            traffic.ShiftPolicy(shift.policy),
            shift.started_at,
            timedelta(seconds=shift.duration_seconds),
            self.clock.now(),
            timedelta(seconds=shift.paused_seconds),
            shift.paused_since,
        )
        if done:
            final = "done" if shift.direction == "forward" else "reversed"
            # the weights above were read a moment before completion: end exactly there
            target = 1000 if final == "done" else 0
            if per_mille != target:
                await self._apply(shift, old, new, target)
            if await self.store.update_shift(shift.id, "running", state=final):
                self._failures.pop(shift.id, None)
                winner, loser = (new, old) if final == "done" else (old, new)
                await self._say(
                    new,
                    f"traffic: {final}; {winner.name} ({winner.version}) gets all traffic, "
                    f"{loser.name} gets none and is left for cleanup",
                )

    async def _apply(self, shift: TrafficShift, old: Stack, new: Stack, per_mille: int) -> None:
        router = self.routers.get(new.datacenter)
        if router is None:
            return
        route = Route(new.namespace, new.unit, new.version.major)
        await router.set_weights(
            route,
            {
                old.name: (await self._addresses(old), 1000 - per_mille),
                new.name: (await self._addresses(new), per_mille),
            },
        )
        before = shift.current_new_weight
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

    # -- people --------------------------------------------------------------------------------

    async def find_active(self, stack: Stack) -> TrafficShift:
        """The newest shift towards `stack` that is running, paused or done."""
        for shift in reversed(await self.store.shifts((*ACTIVE, "done"), stack_id=stack.id)):
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
        paused = await self.store.update_shift(
            shift.id, "running", state="paused", paused_since=self.clock.now()
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
        if shift.state != "paused" or shift.paused_since is None:
            raise UserError(f"the shift to {stack.name} is {shift.state}, not paused.")
        extra = int((self.clock.now() - shift.paused_since).total_seconds())
        resumed = await self.store.update_shift(
            shift.id,
            "paused",
            state="running",
            paused_since=None,
            paused_seconds=shift.paused_seconds + extra,
        )
        if resumed is None:
            raise UserError(f"the shift to {stack.name} changed meanwhile; try again.")
        await self._say(stack, f"traffic: resumed by {who.label}")
        await self.tick_one(resumed)
        return f"Resumed the shift to {stack.name}."

    async def reverse(self, shift_id: int, who: Principal) -> str:
        shift, stack = await self._shift_and_stack(shift_id)
        await self._allowed(who, stack, "reverse")
        if shift.state not in ACTIVE and shift.state != "done":
            raise UserError(f"the shift to {stack.name} is {shift.state}; nothing to reverse.")
        if shift.direction == "reverse":
            raise UserError(f"traffic is already moving back from {stack.name}.")
        await self._reverse(shift, stack, who.label, f"asked by {who.label}")
        return f"Reversing traffic from {stack.name}."

    async def _reverse(self, shift: TrafficShift, stack: Stack, actor: str, why: str) -> None:
        current = traffic.Weights.of_new(shift.current_new_weight / 1000)
        duration = traffic.reverse_duration(current, timedelta(seconds=shift.duration_seconds))
        reversed_ = await self.store.update_shift(
            shift.id,
            shift.state,
            state="running",
            direction="reverse",
            started_at=self.clock.now(),
            paused_since=None,
            paused_seconds=0,
            start_new_weight=shift.current_new_weight,
            duration_seconds=int(duration.total_seconds()),
        )
        if reversed_ is None:
            return
        self._failures.pop(shift.id, None)
        await self._audit(actor, stack, f"shift #{shift.id} reversed: {why}")
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
