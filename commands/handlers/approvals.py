"""Approvals and the operations that follow a ready stack: approvals, approve, reject,
reverse, deprecate."""

from __future__ import annotations

from datetime import timedelta

from commands.access import Role, authorize
from commands.approval_desk import APPROVE, REJECT, describe
from commands.context import Context
from commands.handlers.lookup import ago, find_stack, require
from commands.handlers.traffic import shift_of, traffic_control
from commands.model import Approve, ListApprovals, Reject, Reverse
from commands.replies import NotAvailable, Reply, Table, Text
from domain.approvals import ApprovalStatus


async def list_approvals(command: ListApprovals, ctx: Context) -> Reply:
    """What waits, in the namespaces the asker may see, and whether they may decide each."""
    visible = {
        ns
        for ns in ctx.settings.namespaces
        if authorize(ctx.settings.access, ctx.principal, Role.VIEW, ns).allowed
    }
    if not visible:
        await require(ctx, Role.VIEW, ctx.settings.default_namespace, "approvals", "approvals")
    desk = ctx.desk
    pending = [
        a for a in await ctx.store.approvals(ApprovalStatus.PENDING) if a.namespace in visible
    ]
    now = ctx.clock.now()
    recent = [
        a
        for a in await ctx.store.approvals(ApprovalStatus.REJECTED)
        if a.namespace in visible and a.decided_at is not None and now - a.decided_at <= RECENT
    ][-RECENT_SHOWN:]
    rejected = tuple(Text(f"#{a.id} {a.summary}: {describe(a)}") for a in recent)
    if not pending:
        return Reply(
            title="Approvals", blocks=(Text("Nothing is waiting for approval."), *rejected)
        )
    rows = tuple(
        (
            f"#{a.id}",
            a.summary,
            f"{a.datacenter}/{a.namespace}",
            a.requested_by,
            f"{len(a.approvers)}/{a.required}",
            ago(a.deadline, now) if a.deadline else "-",
            "yes" if desk.refusal(a, ctx.principal) is None else "no",
        )
        for a in pending
    )
    return Reply(
        title=f"Waiting for approval ({len(pending)})",
        blocks=(
            Table(("id", "what", "where", "asked by", "approvals", "expires", "you may"), rows),
            *rejected,
        ),
    )


RECENT = timedelta(days=1)  # rejections `approvals` still mentions, with their reasons
RECENT_SHOWN = 5
MAX_REASON = 500  # characters of a rejection's reason kept; a reason, not an essay


async def approve(command: Approve, ctx: Context) -> Reply:
    outcome = await ctx.desk.decide(command.approval_id, ctx.principal, APPROVE)
    return Reply(title=outcome.message, ok=True)


async def reject(command: Reject, ctx: Context) -> Reply:
    reason = " ".join(command.reason.split())[:MAX_REASON]
    outcome = await ctx.desk.decide(command.approval_id, ctx.principal, REJECT, reason)
    return Reply(title=outcome.message, ok=True)


async def reverse(command: Reverse, ctx: Context) -> Reply:
    if command.shift_id is not None:  # a button: the shift it was posted for
        shift_id = await shift_of(ctx, command)
        return Reply(title=await traffic_control(ctx).reverse(shift_id, ctx.principal))
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
