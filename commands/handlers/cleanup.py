"""Deprecating releases and steering the cleanup by hand: deprecate, keep, remove."""

from __future__ import annotations

from commands.access import Role
from commands.context import Context
from commands.handlers.lookup import find_stack, find_unit, require
from commands.lifecycle import Lifecycle
from commands.model import Deprecate, Keep, Remove
from commands.ports import Conflict
from commands.replies import NotAvailable, Reply, Table, Text, UserError
from domain.records import AuditEvent, Stack
from domain.states import IllegalTransition, StackStatus

_STILL_DEPLOYING = (StackStatus.PENDING, StackStatus.DEPLOYING, StackStatus.WARMING)


async def deprecate(command: Deprecate, ctx: Context) -> Reply:
    """Every ready stack of the release, in every namespace and datacenter, becomes
    deprecated: new deploys may no longer depend on it, its dependants keep working, and the
    cleanup collects it once nothing depends on it."""
    unit = await find_unit(ctx, command.unit)
    release = await ctx.store.release(unit.name, command.version)
    if release is None:
        raise UserError(
            f"{unit.name} {command.version} has never been released.",
            f"`stacks unit {unit.name}` lists its stacks.",
        )
    stacks = await ctx.store.release_stacks(unit.name, command.version)
    ready = [s for s in stacks if s.status is StackStatus.READY]
    label = f"{unit.name} {command.version}"
    for namespace in sorted({s.namespace for s in ready}) or [ctx.settings.default_namespace]:
        await require(ctx, Role.DEPLOY, namespace, "deprecate", label)
    deploying = [s.name for s in stacks if s.status in _STILL_DEPLOYING]
    if not ready:
        already = [s for s in stacks if s.status is StackStatus.DEPRECATED]
        if already:
            return Reply(
                title=f"{label} is already deprecated",
                blocks=(Text(", ".join(s.name for s in already)),),
            )
        hint = (
            f"{', '.join(deploying)} {'is' if len(deploying) == 1 else 'are'} still deploying; "
            "deprecate again once ready."
            if deploying
            else "No stack of it is ready anywhere."
        )
        raise UserError(f"{label} has no ready stack to deprecate.", hint)
    rows: list[tuple[str, str, str, str]] = []
    for stack in ready:
        try:
            await ctx.store.change_status(
                stack.id,
                StackStatus.DEPRECATED,
                f"deprecated by {ctx.principal.label}",
                ctx.principal.user_id,
            )
        except (IllegalTransition, Conflict):
            continue  # it moved on (collected, deprecated) at the same moment
        users = [d for d in await ctx.store.dependents(stack.id) if d.status.is_live]
        rows.append(
            (
                stack.name,
                stack.datacenter,
                stack.namespace,
                ", ".join(d.name for d in users) or "nobody: the cleanup collects it",
            )
        )
    blocks: list[Table | Text] = [
        Table(("stack", "datacenter", "namespace", "used by (keeps working)"), tuple(rows)),
        Text("New deploys may no longer depend on it."),
    ]
    if deploying:
        blocks.append(Text(f"Still deploying, not deprecated: {', '.join(deploying)}."))
    return Reply(title=f"Deprecated {label}: {len(rows)} stacks", blocks=tuple(blocks))


async def keep(command: Keep, ctx: Context) -> Reply:
    if command.stack_ids:  # a button: the lifecycle checks each stack and who may keep it
        return Reply(title=await _running(ctx).keep(command.stack_ids, ctx.principal))
    stack = await find_stack(ctx, command.stack)
    # the lifecycle checks the deploy role and audits the attempt, allowed or refused
    message = await _lifecycle(ctx, stack).keep([stack.id], ctx.principal)
    return Reply(title=message)


async def remove(command: Remove, ctx: Context) -> Reply:
    if command.stack_ids:  # a button: the lifecycle removes those still garbage
        return Reply(title=await _running(ctx).remove_now(command.stack_ids, ctx.principal))
    stack = await find_stack(ctx, command.stack)
    lifecycle = _lifecycle(ctx, stack)
    if stack.status is not StackStatus.GARBAGE:
        await ctx.store.audit(
            AuditEvent(
                ctx.principal.user_id, "remove", stack.name, False, "not garbage", ctx.clock.now()
            )
        )
        raise UserError(
            f"{stack.name} is {stack.status.value}, not garbage: only garbage is removed by hand.",
            "`stacks status garbage` lists what the cleanup will remove.",
        )
    message = await lifecycle.remove_now([stack.id], ctx.principal)
    return Reply(title=message)


def _running(ctx: Context) -> Lifecycle:
    if ctx.lifecycle is None:
        raise NotAvailable("the cleanup does not run in this bot.")
    return ctx.lifecycle


def _lifecycle(ctx: Context, stack: Stack) -> Lifecycle:
    if ctx.lifecycle is None:
        raise NotAvailable(f"the cleanup does not run in this bot: {stack.name} was left as it is.")
    return ctx.lifecycle
