"""Rollback: send a route's traffic back at once to the previous stack of the same major
version that still runs, without a policy; the rolled-back stack becomes garbage (with the
reason), so the cleanup treats it as not wanted while the previous one is the newest wanted.

No approval, unless the namespace's rule asks for one for rollbacks
(`approvals.<ns>.rollbacks = true`): then a `rollback` request is opened and the rollback
happens when it is approved, as long as nothing changed meanwhile: at once by the replica
that recorded the decision (`on_event`), or else by whichever replica's traffic tick finds it
approved and not acted on (`carry_out_approved`: the deciding replica died first, or another
one drives the route). It is carried out once, under the route's lease, and remembered as
acted on. Locks and freezes do not hold a rollback: it undoes a change."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from commands.access import Principal
from commands.events import ApprovalDecided, Event, StackProgress
from commands.ports import RouterError
from commands.replies import NotAvailable, UserError
from commands.shifting import OPEN, ROUTABLE, TrafficControl, route_key, route_of
from domain.approvals import ApprovalKind, ApprovalStatus
from domain.records import Approval, AuditEvent, Stack, StackQuery
from domain.traffic import ShiftState

log = logging.getLogger("nelson.traffic")

KIND = ApprovalKind.ROLLBACK


@dataclass(frozen=True, slots=True)
class Plan:
    """One route's rollback: from the stack serving most of it to the one before."""

    current: Stack
    previous: Stack


class Rollbacks:
    def __init__(self, control: TrafficControl) -> None:
        self.control = control
        self.store = control.store
        self.clock = control.clock

    # -- finding what to roll back -----------------------------------------------------------

    async def plan(
        self, unit: str, namespace: str, datacenter: str, from_stack: str | None = None
    ) -> Plan:
        """From the newest stack getting traffic (or `from_stack`) to the one before."""
        router = self.control.routers.get(datacenter)
        if router is None:
            raise NotAvailable(
                f"datacenter '{datacenter}' routes no traffic, so nothing rolls back."
            )
        page = await self.store.list_stacks(
            StackQuery(
                unit=unit,
                namespace=namespace,
                datacenter=datacenter,
                statuses=ROUTABLE,
                limit=500,
            )
        )
        if not page.stacks:
            raise UserError(f"{unit} has no ready stack in {datacenter}/{namespace}.")
        weights = await self.control.weights_of(page.stacks)
        serving = [s for s in page.stacks if weights.get(s.name, 0) > 0]
        if not serving:
            raise UserError(f"no stack of {unit} gets traffic in {datacenter}/{namespace}.")
        if from_stack is not None:
            chosen = [s for s in page.stacks if from_stack in (s.name, s.guid)]
            if not chosen:
                raise UserError(
                    f"{from_stack} is not a ready stack of {unit} in {datacenter}/{namespace}."
                )
            if chosen[0] not in serving:
                raise UserError(
                    f"{chosen[0].name} gets no traffic in {datacenter}/{namespace}, so there is "
                    "nothing to roll back from it.",
                    "A shift waiting for approval is stopped with Reject instead.",
                )
            current = chosen[0]
        else:
            current = max(serving, key=lambda s: (s.version, s.id))
        return Plan(current, await self.previous(current, page.stacks))

    async def previous(self, current: Stack, stacks: Sequence[Stack] | None = None) -> Stack:
        """The newest stack before `current` on its route that still runs."""
        if stacks is None:
            stacks = (
                await self.store.list_stacks(
                    StackQuery(
                        unit=current.unit,
                        namespace=current.namespace,
                        datacenter=current.datacenter,
                        statuses=ROUTABLE,
                        limit=500,
                    )
                )
            ).stacks
        older = sorted(
            (
                s
                for s in stacks
                if s.version.major == current.version.major
                and s.status in ROUTABLE
                and (s.version, s.id) < (current.version, current.id)
            ),
            key=lambda s: (s.version, s.id),
            reverse=True,
        )
        for candidate in older:
            if await self.control.addresses(candidate):
                return candidate
        where = f"{current.datacenter}/{current.namespace}"
        raise UserError(
            f"there is no earlier stack of {current.unit} {current.version.major}.x running in "
            f"{where} to roll back to.",
            "`stacks unit " + current.unit + "` lists them; `deploy` an earlier version instead.",
        )

    async def previous_or_none(self, current: Stack) -> Stack | None:
        try:
            return await self.previous(current)
        except UserError:
            return None

    # -- doing it ---------------------------------------------------------------------------

    async def roll_back(self, plan: Plan, actor: str, label: str) -> str:
        async with self.control.route_lock(route_key(plan.current)):
            return await self._roll_back(plan, actor, label)

    async def _roll_back(self, plan: Plan, actor: str, label: str) -> str:
        current, previous = plan.current, plan.previous
        await self._take_back(current, previous, actor, label)
        now = self.clock.now()
        where = f"{current.datacenter}/{current.namespace}"
        message = (
            f"Rolled back {current.unit} in {where}: {previous.name} ({previous.version}) gets "
            f"all traffic; {current.name} ({current.version}) gets none and is left for cleanup."
        )
        for stack in (current, previous):
            await self.store.append_log(stack.id, message, step="traffic", at=now)
            await self.control.events.publish(StackProgress(stack.id, f"traffic: {message}", now))
        return message

    async def _take_back(self, current: Stack, previous: Stack, actor: str, label: str) -> None:
        """Cancel the route's open shifts, weights all to `previous`, `current` to garbage."""
        router = self.control.routers[current.datacenter]
        route = route_of(current)
        key = route_key(current)
        for shift in await self.store.shifts(OPEN):
            if shift.route == key:
                cancelled = await self.store.update_shift(
                    shift.id, shift.state, state=ShiftState.CANCELLED
                )
                if cancelled is not None:
                    await self.control.desk.void_for_stack(
                        shift.to_stack_id, f"{current.unit} was rolled back by {label}"
                    )
        try:
            weights = await router.weights(route)
            backends: dict[str, tuple[list[str], int]] = {}
            for name, weight in weights.items():
                if weight > 0 and name not in (current.name, previous.name):
                    stack = await self.store.stack(name)
                    addresses = await self.control.addresses(stack) if stack else []
                    backends[name] = (addresses, 0)
            backends[current.name] = (await self.control.addresses(current), 0)
            backends[previous.name] = (await self.control.addresses(previous), 1000)
            await router.set_weights(route, backends)
        except RouterError as exc:
            raise NotAvailable(
                f"the router of {current.datacenter} failed ({exc}); traffic is unchanged."
            ) from None
        now = self.clock.now()
        why = f"rolled back by {label} to {previous.name} ({previous.version})"
        await self.store.mark_garbage({current.id: why}, now, actor=actor)
        await self.control.desk.void_for_stack(current.id, why)
        await self.store.audit(
            AuditEvent(actor, "rollback", current.name, True, f"to {previous.name}", now)
        )

    async def request(self, plan: Plan, who: Principal) -> str | None:
        """Ask for approval where the namespace wants one for rollbacks; None: go ahead."""
        _, rule = self.control.settings.approval_rule(plan.current.namespace)
        if not (rule.needed and rule.rollbacks):
            return None
        current, previous = plan.current, plan.previous
        where = f"{current.datacenter}/{current.namespace}"
        approval = await self.control.desk.request(
            KIND,
            namespace=current.namespace,
            datacenter=current.datacenter,
            summary=f"Roll back {current.unit} in {where} from {current.version} to "
            f"{previous.version}?",
            requested_by=who.user_id,
            stack_id=current.id,
            details=(
                f"from {current.name} ({current.version}) to {previous.name} ({previous.version})",
                "at once, without a traffic policy",
            ),
        )
        if approval is None:
            return None
        return (
            f"Asked for approval #{approval.id} to roll back {current.unit} in {where} to "
            f"{previous.name} ({previous.version}); it happens once approved."
        )

    async def on_event(self, event: Event) -> None:
        """The replica that recorded an approval carries out the rollback at once."""
        if not isinstance(event, ApprovalDecided) or event.approval.kind != KIND:
            return
        if event.approval.status is ApprovalStatus.APPROVED:
            await self.carry_out(event.approval)

    async def carry_out_approved(self) -> None:
        """Carry out the approved rollbacks nobody acted on yet: the replica that recorded the
        decision died first, or another replica drives the route (every tick calls this)."""
        for approval in await self.store.approved_not_acted_on(KIND):
            try:
                await self.carry_out(approval)
            except Exception:
                log.exception("approved rollback #%s not carried out yet", approval.id)

    async def carry_out(self, approval: Approval) -> None:
        """Roll back as an approved request asks, once across replicas: only the replica
        holding the route's lease acts (another leaves it to that one's tick), and the
        approval is remembered as acted on, whether the rollback was done or found impossible.
        A replica dying in between leaves it to the next: what was done already is not done
        again (a stack rolled back from is garbage, no longer routable)."""
        now = self.clock.now()
        found = (
            None if approval.stack_id is None else await self.store.stack_by_id(approval.stack_id)
        )
        if found is None:
            await self.store.mark_acted_on(approval.id, now)
            return
        key = route_key(found)
        if await self.control.lease(key) is None:
            return  # another replica drives this route: its tick carries it out
        async with self.control.route_lock(key):
            fresh = await self.store.approval(approval.id)
            if fresh is None or fresh.acted_at is not None:
                return
            current = await self.store.stack_by_id(found.id)
            if current is not None and current.status in ROUTABLE:
                await self._approved(fresh, current)
            await self.store.mark_acted_on(approval.id, self.clock.now())

    async def _approved(self, approval: Approval, current: Stack) -> None:
        try:
            plan = await self._moved_already(current) or await self.plan(
                current.unit, current.namespace, current.datacenter
            )
            if plan.current.id != current.id:
                raise UserError(f"{current.name} no longer serves most of the traffic")
            await self._roll_back(plan, approval.decided_by or "nelson", approval.decided_by or "")
        except UserError as exc:
            now = self.clock.now()
            note = f"traffic: approved rollback #{approval.id} not done: {exc.message}"
            await self.store.append_log(current.id, note, step="traffic", at=now)
            await self.control.events.publish(StackProgress(current.id, note, now, failed=True))

    async def _moved_already(self, current: Stack) -> Plan | None:
        """The rollback from `current` when its traffic already went back to the stack before
        it (a replica died after moving the weights, before marking `current` garbage): it is
        finished, not refused. None when `current` still gets traffic."""
        previous = await self.previous_or_none(current)
        if previous is None:
            return None
        weights = await self.control.weights_of([current, previous])
        if weights.get(current.name, 0) or not weights.get(previous.name, 0):
            return None
        return Plan(current, previous)
