"""Approvals and the operations that follow a ready stack: approvals, approve, reject,
reverse, deprecate."""

from __future__ import annotations

from commands.access import Role
from commands.approval_desk import APPROVE, REJECT, ApprovalDesk
from commands.context import Context
from commands.handlers.lookup import ago, find_stack, require
from commands.model import Approve, ListApprovals, Reject, Reverse
from commands.replies import NotAvailable, Reply, Table, Text


async def list_approvals(command: ListApprovals, ctx: Context) -> Reply:
    await require(ctx, Role.VIEW, ctx.settings.default_namespace, "approvals", "approvals")
    pending = await ctx.store.approvals("pending")
    if not pending:
        return Reply(title="Approvals", blocks=(Text("Nothing is waiting for approval."),))
    now = ctx.clock.now()
    rows = tuple(
        (
            f"#{a.id}",
            a.summary,
            f"{a.datacenter}/{a.namespace}",
            a.requested_by,
            f"{len(a.approvers)}/{a.required}",
            ago(a.deadline, now) if a.deadline else "-",
        )
        for a in pending
    )
    return Reply(
        title=f"Waiting for approval ({len(pending)})",
        blocks=(Table(("id", "what", "where", "asked by", "approvals", "expires"), rows),),
    )


def _desk(ctx: Context) -> ApprovalDesk:
    return ApprovalDesk(ctx.settings, ctx.store, ctx.events, ctx.clock)


async def approve(command: Approve, ctx: Context) -> Reply:
    outcome = await _desk(ctx).decide(command.approval_id, ctx.principal, APPROVE)
    return Reply(title=outcome.message, ok=True)


async def reject(command: Reject, ctx: Context) -> Reply:
    outcome = await _desk(ctx).decide(command.approval_id, ctx.principal, REJECT)
    return Reply(title=outcome.message, ok=True)


async def reverse(command: Reverse, ctx: Context) -> Reply:
    stack = await find_stack(ctx, command.stack)
    if ctx.traffic is None:
        await require(ctx, Role.DEPLOY, stack.namespace, "reverse", stack.name)
        raise NotAvailable(
            f"no datacenter routes traffic in this setup, so there is no migration of "
            f"{stack.name} to reverse."
        )
    shift = await ctx.traffic.find_active(stack)
    message = await ctx.traffic.reverse(shift.id, ctx.principal)
    return Reply(title=message)
