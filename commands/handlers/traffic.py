"""Traffic as text, for what the buttons do and what the parent message shows: pause,
resume, and `traffic` (each route: its stacks, weights and the shift under way)."""

from __future__ import annotations

from collections import defaultdict

from commands.access import Role, authorize
from commands.context import Context
from commands.handlers.lookup import (
    check_datacenter,
    check_namespace,
    find_stack,
    find_unit,
    require,
)
from commands.model import Pause, Resume, Reverse, Traffic
from commands.replies import NotAvailable, Reply, Table, Text
from commands.shifting import OPEN, TrafficControl, route_key
from domain.records import Stack, StackQuery, TrafficShift
from domain.states import StackStatus
from domain.traffic import ShiftState

LIVE = (StackStatus.READY, StackStatus.DEPRECATED, StackStatus.GARBAGE)
LIMIT = 2000


def traffic_control(ctx: Context) -> TrafficControl:
    if ctx.traffic is None:
        raise NotAvailable("no datacenter routes traffic in this setup.")
    return ctx.traffic


async def shift_of(ctx: Context, command: Pause | Resume | Reverse) -> int:
    """The shift a command names: by its id (a button), else the active one of its stack."""
    if command.shift_id is not None:
        traffic_control(ctx)
        return command.shift_id
    stack = await find_stack(ctx, command.stack)
    return (await traffic_control(ctx).find_active(stack)).id


async def pause(command: Pause, ctx: Context) -> Reply:
    shift_id = await shift_of(ctx, command)
    return Reply(title=await traffic_control(ctx).pause(shift_id, ctx.principal))


async def resume(command: Resume, ctx: Context) -> Reply:
    shift_id = await shift_of(ctx, command)
    return Reply(title=await traffic_control(ctx).resume(shift_id, ctx.principal))


async def traffic(command: Traffic, ctx: Context) -> Reply:
    control = traffic_control(ctx)
    if command.namespace:
        namespaces = [check_namespace(ctx, command.namespace)]
        await require(ctx, Role.VIEW, namespaces[0], "traffic", f"namespace:{namespaces[0]}")
    else:  # every namespace this person may see
        namespaces = [
            ns
            for ns in ctx.settings.namespaces
            if authorize(ctx.settings.access, ctx.principal, Role.VIEW, ns).allowed
        ]
        if not namespaces:
            await require(ctx, Role.VIEW, ctx.settings.default_namespace, "traffic", "traffic")
    if command.datacenter:
        check_datacenter(ctx, command.datacenter)
    if command.unit:
        await find_unit(ctx, command.unit)
    stacks: list[Stack] = []
    for namespace in namespaces:
        page = await ctx.store.list_stacks(
            StackQuery(
                namespace=namespace,
                datacenter=command.datacenter,
                statuses=LIVE,
                unit=command.unit,
                limit=LIMIT,
            )
        )
        stacks.extend(page.stacks)
    routes: dict[str, list[Stack]] = defaultdict(list)
    for stack in stacks:
        routes[route_key(stack)].append(stack)
    weights = await control.weights_of(stacks)
    shifts: dict[str, TrafficShift] = {}
    for shift in await ctx.store.shifts():  # oldest first: the newest of each route wins
        if shift.route in routes and (shift.state in OPEN or shift.route not in shifts):
            shifts[shift.route] = shift
    now = ctx.clock.now()
    driving = {
        lease.route: lease.holder
        for lease in await ctx.store.route_leases()
        if lease.expires_at > now
    }
    rows: list[tuple[str, ...]] = []
    for key in sorted(routes):
        members = sorted(routes[key], key=lambda s: (-weights.get(s.name, 0), s.version))
        if not any(weights.get(s.name, 0) for s in members) and key not in shifts:
            continue  # nothing routed here
        current = shifts.get(key)
        shown = control.progress(current) if current is not None else "-"
        if current is not None and current.state is ShiftState.RUNNING and key in driving:
            shown += f"; driven by {driving[key]}"  # the replica holding the route's lease
        target = current.to_stack_id if current is not None else None
        for n, stack in enumerate(members):
            weight = weights.get(stack.name)
            rows.append(
                (
                    key if n == 0 else "",
                    stack.name,
                    stack.status.value,
                    f"{weight / 10:g}%" if weight is not None else "-",
                    shown if stack.id == target else "",
                )
            )
    where = " ".join(
        part
        for part in (
            command.unit or "",
            f"in {command.namespace}" if command.namespace else "",
            f"at {command.datacenter}" if command.datacenter else "",
        )
        if part
    )
    title = f"Traffic {where}".strip()
    if not rows:
        return Reply(title=title, blocks=(Text("No route carries traffic here yet."),))
    return Reply(
        title=f"{title} ({len({r[0] for r in rows if r[0]})} routes)",
        blocks=(
            Table(("route", "stack", "status", "weight", "shift"), tuple(rows)),
            Text(f"Traffic shifts: {await control.drivers()}."),
        ),
    )
