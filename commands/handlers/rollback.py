"""`rollback <unit> [in <ns>] [at <dc>]`, and the Roll back button, which builds the same
command."""

from __future__ import annotations

from commands.access import Role
from commands.context import Context
from commands.handlers.lookup import (
    check_datacenter,
    check_namespace,
    find_stack,
    find_unit,
    require,
)
from commands.model import Rollback
from commands.replies import NotAvailable, Reply, Text, UserError
from commands.rollback import Plan, Rollbacks


async def rollback(command: Rollback, ctx: Context) -> Reply:
    namespace = check_namespace(ctx, command.namespace or ctx.settings.default_namespace)
    datacenter = check_datacenter(ctx, command.datacenter) if command.datacenter else None
    unit = await find_unit(ctx, command.unit)
    if command.stack is not None and datacenter is None:  # where that stack runs
        datacenter = (await find_stack(ctx, command.stack)).datacenter
    await require(ctx, Role.DEPLOY, namespace, "rollback", f"{unit.name} in {namespace}")
    if ctx.traffic is None:
        raise NotAvailable("no datacenter routes traffic in this setup, so nothing rolls back.")
    rollbacks = Rollbacks(ctx.traffic)
    if datacenter is not None:
        plans = [await rollbacks.plan(unit.name, namespace, datacenter, command.stack)]
        problems: list[str] = []
    else:
        plans, problems = [], []
        for dc in sorted(ctx.traffic.routers):
            try:
                plans.append(await rollbacks.plan(unit.name, namespace, dc, command.stack))
            except UserError as exc:
                problems.append(f"{dc}: {exc.message}")
        if not plans:
            raise UserError(
                f"{unit.name} has nothing to roll back to in {namespace}.",
                "`traffic " + unit.name + f" in {namespace}` shows what serves.",
                details=tuple(problems),
            )
    said = [await _one(rollbacks, plan, ctx) for plan in plans]
    return Reply(
        title=said[0] if len(said) == 1 else f"Rolled back {unit.name} in {namespace}",
        blocks=tuple(Text(line) for line in (said[1:] if len(said) == 1 else said))
        + tuple(Text(f"Not rolled back at {line}") for line in problems),
    )


async def _one(rollbacks: Rollbacks, plan: Plan, ctx: Context) -> str:
    asked = await rollbacks.request(plan, ctx.principal)
    if asked is not None:
        return asked
    return await rollbacks.roll_back(plan, ctx.principal.user_id, ctx.principal.label)
