"""Reading stacks: stacks, inspect, logs, runtime."""

from __future__ import annotations

from datetime import datetime

from commands.access import Role
from commands.approval_desk import describe as describe_approval
from commands.context import Context
from commands.handlers import outside
from commands.handlers.lookup import (
    ago,
    check_datacenter,
    check_namespace,
    find_stack,
    find_unit,
    require,
    when,
)
from commands.model import Inspect, ListStacks, Logs, Runtime
from commands.ports import SchedulerError
from commands.replies import Fields, NotAvailable, Reply, Table, Text
from domain.records import Stack, StackPage, StackQuery
from domain.states import StackStatus

PAGE = 50
HISTORY = 30  # traffic changes shown by `inspect`, the newest


async def list_stacks(command: ListStacks, ctx: Context) -> Reply:
    namespace = check_namespace(ctx, command.namespace or ctx.settings.default_namespace)
    if command.datacenter:
        check_datacenter(ctx, command.datacenter)
    if command.unit:
        await find_unit(ctx, command.unit)
    await require(ctx, Role.VIEW, namespace, "stacks", f"namespace:{namespace}")
    page = await ctx.store.list_stacks(
        StackQuery(
            namespace=namespace,
            datacenter=command.datacenter,
            statuses=command.statuses,
            unit=command.unit,
            limit=PAGE,
        )
    )
    where = f"{command.datacenter}/{namespace}" if command.datacenter else namespace
    filters = f" with status {', '.join(command.statuses)}" if command.statuses else ""
    if not page.stacks:
        return Reply(title=f"Stacks in {where}", blocks=(Text(f"No stacks in {where}{filters}."),))
    now = ctx.clock.now()
    if command.statuses == (StackStatus.GARBAGE,):
        return await _garbage(ctx, page, f"Garbage in {where}", now)
    weights = await ctx.traffic.weights_of(page.stacks) if ctx.traffic is not None else {}
    rows = tuple(
        (
            s.name,
            s.datacenter,
            s.plan,
            s.status.value,
            _serving(weights.get(s.name)),
            ago(s.updated_at, now),
        )
        for s in page.stacks
    )
    return Reply(
        title=f"Stacks in {where}{filters} ({page.total})",
        blocks=(
            Table(
                ("stack", "datacenter", "plan", "status", "traffic", "changed"),
                rows,
                total=page.total if page.total > len(rows) else None,
            ),
        ),
    )


def _serving(per_mille: int | None) -> str:
    """`serving 60%` for a stack that gets traffic, `-` otherwise."""
    return f"serving {per_mille / 10:g}%" if per_mille else "-"


def removal_text(ctx: Context, stack: Stack, now: datetime) -> str:
    """When a garbage stack may be removed, in words."""
    due = ctx.settings.lifecycle.removal_at(stack.updated_at, stack.announced_at)
    if due is None:
        return "after the next cleanup announcement"
    return f"after {when(due)} ({ago(due, now)})"


async def _garbage(ctx: Context, page: StackPage, title: str, now: datetime) -> Reply:
    """What waits for removal: why it was collected and when it may go."""
    rows: list[tuple[str, ...]] = []
    for stack in page.stacks:
        history = await ctx.store.status_history(stack.id)
        reason = next((h.message for h in reversed(history) if h.status is StackStatus.GARBAGE), "")
        rows.append((stack.name, stack.datacenter, reason, removal_text(ctx, stack, now)))
    return Reply(
        title=f"{title} ({page.total})",
        blocks=(
            Table(
                ("stack", "datacenter", "why", "removal"),
                tuple(rows),
                total=page.total if page.total > len(rows) else None,
            ),
            Text("`keep <stack>` keeps one for another day; `inspect <stack>` tells more."),
        ),
    )


async def inspect(command: Inspect, ctx: Context) -> Reply:
    stack = await find_stack(ctx, command.stack)
    await require(ctx, Role.VIEW, stack.namespace, "inspect", stack.name)
    release = await ctx.store.release(stack.unit, stack.version)
    history = await ctx.store.status_history(stack.id)
    dependencies = await ctx.store.dependencies(stack.id)
    dependents = await ctx.store.dependents(stack.id)
    now = ctx.clock.now()
    pairs = [
        ("stack", stack.name),
        ("guid", stack.guid),
        ("unit", f"{stack.unit} {stack.version}"),
        ("where", f"{stack.datacenter} / {stack.namespace} / plan {stack.plan}"),
        (
            "status",
            f"{stack.status.value}: {stack.status_message}"
            if stack.status_message
            else stack.status.value,
        ),
        ("deployed by", f"{stack.created_by}, {when(stack.created_at)}"),
        (
            "expires",
            f"{when(stack.expires_at)} ({ago(stack.expires_at, now)})" if stack.expires_at else "-",
        ),
    ]
    if release is not None:
        pairs.append(("image", release.image))
        pairs.append(("digest", release.digest or "not resolved yet"))
    if stack.workflow_step:
        pairs.append(("workflow step", stack.workflow_step))
    approvals = [a for a in await ctx.store.approvals(None) if a.stack_id == stack.id]
    if approvals:
        pairs.append(("approval", f"#{approvals[-1].id} {describe_approval(approvals[-1])}"))
    if stack.status is StackStatus.GARBAGE:
        pairs.append(("removal", f"{removal_text(ctx, stack, now)}; `keep {stack.name}` keeps it"))
    if ctx.traffic is not None and stack.status in (StackStatus.READY, StackStatus.DEPRECATED):
        weight = (await ctx.traffic.weights_of([stack])).get(stack.name)
        pairs.append(("traffic", _serving(weight) if weight else "none"))
    pairs.extend(await outside.stack_secrets(ctx, stack))
    pairs.extend(await outside.stack_routes(ctx, stack))
    blocks: list[Fields | Table | Text] = [Fields(tuple(pairs))]
    blocks.append(
        Table(
            ("when", "status", "by", "message"),
            tuple((when(h.at), h.status.value, h.actor, h.message) for h in history),
        )
    )
    shifts = await ctx.store.shifts(stack_id=stack.id)
    moves = [e for e in await ctx.store.audit_events(target=stack.name) if e.action == "traffic"]
    if shifts and ctx.traffic is not None:
        lines = []
        for shift in shifts:
            side = "to" if shift.to_stack_id == stack.id else "from"
            lines.append(f"shift #{shift.id} ({side} this stack): {ctx.traffic.progress(shift)}")
        blocks.append(Text("\n".join(lines)))
    if moves:
        recent = list(reversed(moves[:HISTORY]))  # audit_events is newest first
        blocks.append(
            Table(
                ("when", "traffic", "by"),
                tuple((when(e.at), e.detail, e.actor) for e in recent),
                total=len(moves) if len(moves) > HISTORY else None,
            )
        )
    if dependencies or dependents:
        blocks.append(
            Text(
                "depends on: "
                + (", ".join(s.name for s in dependencies) or "nothing")
                + "\nused by: "
                + (", ".join(s.name for s in dependents) or "nothing")
            )
        )
    return Reply(title=f"Stack {stack.name}", blocks=tuple(blocks))


async def logs(command: Logs, ctx: Context) -> Reply:
    stack = await find_stack(ctx, command.stack)
    await require(ctx, Role.VIEW, stack.namespace, "logs", stack.name)
    lines = await ctx.store.logs(stack.id, limit=200)
    if not lines:
        return Reply(title=f"Log of {stack.name}", blocks=(Text("No workflow log lines yet."),))
    rows = tuple((when(line.at), line.step or "", line.message) for line in lines)
    return Reply(title=f"Log of {stack.name}", blocks=(Table(("when", "step", "message"), rows),))


async def runtime(command: Runtime, ctx: Context) -> Reply:
    stack = await find_stack(ctx, command.stack)
    await require(ctx, Role.VIEW, stack.namespace, "runtime", stack.name)
    try:
        report = await ctx.workflow.runtime(stack)
    except SchedulerError as exc:
        raise NotAvailable(
            f"datacenter '{stack.datacenter}' cannot say what runs for {stack.name}: {exc}",
            f"`inspect {stack.name}` shows what the bot recorded.",
        ) from None
    instances = report.instances
    if not instances:
        return Reply(
            title=f"{stack.name}: nothing runs in {stack.datacenter}",
            blocks=(Text(f"The bot records it as *{stack.status.value}*."),),
        )
    rows = tuple(
        (
            i.name,
            i.state,
            ", ".join(
                f"{label} {port}" if i.host == "127.0.0.1" else f"{label} {i.host}:{port}"
                for label, port in i.ports
            )
            or "-",
            i.detail or "-",
        )
        for i in instances
    )
    running = sum(1 for i in instances if i.state == "running")
    blocks: list[Table | Text] = [Table(("instance", "state", "ports", "detail"), rows)]
    if report.health is not None:
        verdict = "healthy" if report.health.healthy else "unhealthy"
        blocks.append(Text(f"Health: *{verdict}*: {report.health.detail}"))
    return Reply(
        title=f"{stack.name} in {stack.datacenter}: {running} of {len(instances)} running",
        blocks=tuple(blocks),
    )
