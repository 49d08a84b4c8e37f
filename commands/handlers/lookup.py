"""Finding what a command names, with specific messages and did-you-mean suggestions."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from datetime import datetime

from commands.access import Role, authorize
from commands.context import Context
from commands.replies import AccessDenied, NotFound, UserError
from domain.manifest import Manifest, ManifestInvalid
from domain.records import AuditEvent, Stack, UnitRecord


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""


async def require(ctx: Context, role: Role, namespace: str, action: str, target: str) -> None:
    """Check an access rule, audit the attempt either way, and refuse with the rule's name."""
    decision = authorize(ctx.settings.access, ctx.principal, role, namespace)
    await ctx.store.audit(
        AuditEvent(
            actor=ctx.principal.user_id,
            action=action,
            target=target,
            allowed=decision.allowed,
            detail=decision.reason,
            at=ctx.clock.now(),
        )
    )
    if not decision.allowed:
        raise AccessDenied(
            f"{ctx.principal.label} may not {role} in namespace '{namespace}': {decision.reason}.",
            "Ask an admin of this bot to add you to the rule if you need to.",
        )


def check_namespace(ctx: Context, namespace: str) -> str:
    if namespace not in ctx.settings.namespaces:
        raise UserError(
            f"there is no namespace '{namespace}'.",
            did_you_mean(namespace, ctx.settings.namespaces)
            or f"Namespaces: {', '.join(ctx.settings.namespaces)}.",
        )
    return namespace


def check_datacenter(ctx: Context, name: str) -> str:
    if name not in ctx.settings.datacenters:
        known = sorted(ctx.settings.datacenters)
        raise UserError(
            f"there is no datacenter '{name}'.",
            did_you_mean(name, known)
            or (f"Datacenters: {', '.join(known)}." if known else "No datacenter is configured."),
        )
    return name


async def find_unit(ctx: Context, name: str) -> UnitRecord:
    unit = await ctx.store.unit(name)
    if unit is None:
        names = [u.name for u in await ctx.store.units()]
        hint = did_you_mean(name, names) or (
            "Register the manifest that declares it with `manifest <repository>`."
            if names
            else "No manifest is registered yet: register one with `manifest <repository>`."
        )
        raise NotFound(f"there is no unit '{name}' in any registered manifest.", hint)
    return unit


async def unit_manifest(ctx: Context, unit: UnitRecord) -> tuple[Manifest, int]:
    record = await ctx.store.latest_manifest(unit.repository)
    if record is None:  # a unit row always comes with its manifest; say so if not
        raise UserError(f"the manifest of repository '{unit.repository}' is missing.")
    try:
        manifest = ctx.manifests.of_record(record)
    except ManifestInvalid as exc:
        # A manifest valid when registered can turn invalid under a changed configuration.
        raise UserError(
            f"the registered manifest of '{unit.repository}' (revision {record.revision}) "
            "is no longer valid.",
            "Fix it and register it again.",
            details=tuple(str(e) for e in exc.errors),
        ) from None
    return manifest, record.id


async def find_stack(ctx: Context, ref: str) -> Stack:
    stack = await ctx.store.stack(ref)
    if stack is None:
        raise NotFound(
            f"there is no stack '{ref}'.",
            "Give a stack name like `howdy-http--1-2-3--k3x9q0ab` or its guid; "
            "`stacks` lists them.",
        )
    return stack


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    seconds = int((now - moment).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            text = f"{seconds // size}{unit}"
            break
    else:
        text = f"{seconds}s"
    return f"in {text}" if future else f"{text} ago"
