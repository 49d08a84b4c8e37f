"""Locks and freezes: lock, unlock, freeze, unfreeze, locks. What they hold is refused by
`commands.gate`; these only record and lift them."""

from __future__ import annotations

from datetime import datetime

from commands.access import Role, authorize
from commands.context import Context
from commands.gate import Gate
from commands.handlers.lookup import check_datacenter, check_namespace, find_unit, require
from commands.model import Freeze, ListLocks, Lock, Unfreeze, Unlock
from commands.replies import Reply, Table, Text, UserError
from domain.locks import FREEZE, LOCK, NewLock, stamp, within
from domain.locks import Lock as LockRecord

MAX_REASON = 500  # characters kept: a reason, not an essay


def _gate(ctx: Context) -> Gate:
    return Gate(ctx.settings, ctx.store, ctx.clock, ctx.events)


def _reason(text: str) -> str:
    return " ".join(text.split())[:MAX_REASON]


async def _stored(ctx: Context, now: datetime) -> list[LockRecord]:
    return [lock for lock in await ctx.store.locks() if lock.active(now)]


async def _still(ctx: Context, unit: str | None, namespace: str | None) -> tuple[Text, ...]:
    """What else still holds after a lift, so nobody believes the way is clear when it isn't:
    for a unit, its locks and what covers it in `namespace`; for a namespace, its freezes."""
    now = ctx.clock.now()

    def relevant(lock: LockRecord) -> bool:
        if unit is not None and namespace is None:
            return lock.kind == LOCK and lock.unit == unit
        if unit is not None and namespace is not None:
            return lock.covers(unit, namespace, None)
        return (
            lock.kind != LOCK
            and lock.namespace is not None
            and namespace is not None
            and within(namespace, lock.namespace)
        )

    return tuple(
        Text(f"Still in force: {lock.describe(now)}.")
        for lock in await _gate(ctx).in_force()
        if relevant(lock)
    )


async def lock(command: Lock, ctx: Context) -> Reply:
    namespace = check_namespace(ctx, command.namespace) if command.namespace else None
    unit = await find_unit(ctx, command.unit)
    scope = f"{unit.name} in {namespace or 'every namespace'}"
    for ns in [namespace] if namespace else list(ctx.settings.namespaces):
        await require(ctx, Role.DEPLOY, ns, "lock", scope)
    now = ctx.clock.now()
    replaced = [
        old
        for old in await _stored(ctx, now)
        if old.kind == LOCK and old.unit == unit.name and old.namespace == namespace
    ]
    until = now + command.duration if command.duration is not None else None
    created = await ctx.store.add_lock(
        NewLock(
            kind=LOCK,
            unit=unit.name,
            namespace=namespace,
            datacenter=None,
            reason=_reason(command.reason),
            created_by=ctx.principal.user_id,
            created_at=now,
            until=until,
        )
    )
    await ctx.store.remove_locks([old.id for old in replaced])
    return Reply(
        title=f"Locked {scope}" + (f" until {stamp(until)}" if until else " until `unlock`"),
        blocks=(
            Text(
                f"Deploys, commits, redeploys and traffic shifts of {unit.name} there are "
                f"refused meanwhile, naming you{' and your reason' if created.reason else ''}."
                + (" It replaces the lock set before." if replaced else "")
            ),
        ),
    )


async def unlock(command: Unlock, ctx: Context) -> Reply:
    namespace = check_namespace(ctx, command.namespace) if command.namespace else None
    unit = await find_unit(ctx, command.unit)
    now = ctx.clock.now()
    found = [
        old
        for old in await _stored(ctx, now)
        if old.kind == LOCK
        and old.unit == unit.name
        and (namespace is None or old.namespace == namespace)
    ]
    scope = f"{unit.name} in {namespace}" if namespace else unit.name
    if not found:
        await require(ctx, Role.VIEW, namespace or ctx.settings.default_namespace, "unlock", scope)
        raise UserError(
            f"{scope} has no lock to lift.",
            "`locks` lists the locks and freezes in force.",
            details=tuple(b.text for b in await _still(ctx, unit.name, namespace)),
        )
    for old in found:
        for ns in [old.namespace] if old.namespace else list(ctx.settings.namespaces):
            await require(ctx, Role.DEPLOY, ns, "unlock", old.scope)
    lifted = await ctx.store.remove_locks([old.id for old in found])
    return Reply(
        title=f"Unlocked {', '.join(old.scope for old in lifted) or scope}",
        blocks=await _still(ctx, unit.name, namespace),
    )


async def freeze(command: Freeze, ctx: Context) -> Reply:
    namespace = check_namespace(ctx, command.namespace)
    datacenter = check_datacenter(ctx, command.datacenter) if command.datacenter else None
    scope = f"{namespace} at {datacenter}" if datacenter else namespace
    await require(ctx, Role.ADMIN, namespace, "freeze", scope)
    now = ctx.clock.now()
    until = command.until.resolve(now)
    if until <= now:
        raise UserError(
            f"{command.until.text} ({stamp(until)}) has passed; a freeze must end later.",
            "Times are UTC.",
        )
    replaced = [
        old
        for old in await _stored(ctx, now)
        if old.kind == FREEZE and old.namespace == namespace and old.datacenter == datacenter
    ]
    await ctx.store.add_lock(
        NewLock(
            kind=FREEZE,
            unit=None,
            namespace=namespace,
            datacenter=datacenter,
            reason=_reason(command.reason),
            created_by=ctx.principal.user_id,
            created_at=now,
            until=until,
        )
    )
    await ctx.store.remove_locks([old.id for old in replaced])
    everywhere = "" if datacenter else " at every datacenter"
    return Reply(
        title=f"Froze {scope} until {stamp(until)}",
        blocks=(
            Text(
                f"Deploys, commits, redeploys and traffic shifts into {namespace} (and the "
                f"namespaces nested in it){everywhere} are refused until then; an admin may "
                "still deploy with `deploy ... emergency because <reason>`."
                + (" It replaces the freeze set before." if replaced else "")
            ),
        ),
    )


async def unfreeze(command: Unfreeze, ctx: Context) -> Reply:
    namespace = check_namespace(ctx, command.namespace)
    datacenter = check_datacenter(ctx, command.datacenter) if command.datacenter else None
    scope = f"{namespace} at {datacenter}" if datacenter else namespace
    await require(ctx, Role.ADMIN, namespace, "unfreeze", scope)
    now = ctx.clock.now()
    found = [
        old
        for old in await _stored(ctx, now)
        if old.kind == FREEZE
        and old.namespace == namespace
        and (datacenter is None or old.datacenter == datacenter)
    ]
    still = await _still(ctx, None, namespace)
    if not found:
        raise UserError(
            f"{scope} has no freeze to lift.",
            "Scheduled windows are lifted only in the configuration (`freezes`).",
            details=tuple(b.text for b in still),
        )
    lifted = await ctx.store.remove_locks([old.id for old in found])
    return Reply(
        title=f"Unfroze {', '.join(old.scope for old in lifted) or scope}",
        blocks=await _still(ctx, None, namespace),
    )


async def list_locks(command: ListLocks, ctx: Context) -> Reply:
    visible = [
        ns
        for ns in ctx.settings.namespaces
        if authorize(ctx.settings.access, ctx.principal, Role.VIEW, ns).allowed
    ]
    if not visible:
        await require(ctx, Role.VIEW, ctx.settings.default_namespace, "locks", "locks")
    shown = [
        lock
        for lock in await _gate(ctx).in_force()
        if lock.namespace is None or any(lock.covers(lock.unit or "", ns, None) for ns in visible)
    ]
    rows = tuple(
        (
            f"#{lock.id}" if lock.id else "-",
            {LOCK: "lock", FREEZE: "freeze"}.get(lock.kind, "scheduled"),
            lock.scope,
            lock.created_by,
            lock.reason or "-",
            stamp(lock.until) if lock.until else "until lifted",
        )
        for lock in shown
    )
    windows = tuple(
        Text(
            f"Scheduled: {w.namespace}"
            + (f" at {', '.join(w.datacenters)}" if w.datacenters else "")
            + f" every {', '.join(w.days)} {w.start}-{w.end} UTC ({w.reason})."
        )
        for w in ctx.settings.freezes
        if w.namespace in visible
    )
    if not rows:
        return Reply(title="Nothing is locked or frozen", blocks=windows)
    return Reply(
        title=f"Locks and freezes in force ({len(rows)})",
        blocks=(Table(("id", "kind", "what", "by", "why", "until"), rows), *windows),
    )
