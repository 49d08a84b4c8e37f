"""Starting deployments: deploy, commit, redeploy.

A handler here decides *what* to deploy (release, targets, plans, dependencies), records the
release and one pending stack per target and plan, and hands the stacks to the workflow port.
Driving them to ready is the deploy workflow's job (commands.deploy_workflow).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from commands.access import Role
from commands.context import Context
from commands.events import OperationStarted
from commands.gate import Gate
from commands.handlers.lookup import (
    check_datacenter,
    check_namespace,
    did_you_mean,
    find_stack,
    find_unit,
    require,
    unit_manifest,
)
from commands.model import Commit, Deploy, Redeploy
from commands.ports import Conflict
from commands.replies import NotAvailable, Reply, Table, Text, UserError
from domain.manifest import Manifest
from domain.records import NewStack, Operation, Release, Stack, StackQuery, UnitRecord
from domain.stack_names import new_hash, stack_name
from domain.states import StackStatus
from domain.versions import Version


@dataclass(frozen=True, slots=True)
class Target:
    datacenter: str
    namespace: str
    plan: str


def _datacenters(command: Deploy, manifest: Manifest, ctx: Context) -> list[str]:
    configured = sorted(ctx.settings.datacenters)
    if not configured:
        raise UserError(
            "no datacenter is configured, so there is nowhere to deploy.",
            "Add one under [datacenters.NAME] in the configuration.",
        )
    if command.datacenters and not command.everywhere:
        chosen = [check_datacenter(ctx, dc) for dc in dict.fromkeys(command.datacenters)]
        refused = [dc for dc in chosen if not manifest.datacenters.allows(dc)]
        allowed = [dc for dc in configured if manifest.datacenters.allows(dc)]
        if refused:
            raise UserError(
                f"the manifest does not deploy to {', '.join(refused)} "
                "(its `datacenters:` stanza excludes it).",
                f"Allowed here: {', '.join(allowed) or 'none'}.",
            )
        return chosen
    # Nelson's default: every datacenter the manifest allows.
    allowed = [dc for dc in configured if manifest.datacenters.allows(dc)]
    if not allowed:
        raise UserError(
            "the manifest's `datacenters:` stanza excludes every configured datacenter."
        )
    return allowed


def _plans(command_plan: str | None, manifest: Manifest, unit: str, namespace: str) -> list[str]:
    plans = [p.name for p in manifest.plans_for(unit, namespace)]
    if not plans:
        listed = ", ".join(manifest.namespaces_of(unit)) or "none"
        raise UserError(
            f"the manifest does not deploy {unit} into namespace '{namespace}'.",
            f"Namespaces it names for {unit}: {listed}.",
        )
    if command_plan is None:
        return plans
    if command_plan not in plans:
        raise UserError(
            f"{unit} has no plan '{command_plan}' in namespace '{namespace}'.",
            did_you_mean(command_plan, plans) or f"Plans there: {', '.join(plans)}.",
        )
    return [command_plan]


async def _dependency_stacks(
    ctx: Context, manifest: Manifest, unit: str, target: Target
) -> list[Stack]:
    """The stacks this unit will call at the target: the newest ready stack of each dependency
    with the same major version and at least the minor version asked for."""
    declared = manifest.unit(unit)
    found: list[Stack] = []
    problems: list[str] = []
    for dep in declared.dependencies if declared else ():
        page = await ctx.store.list_stacks(
            StackQuery(
                unit=dep.unit,
                namespace=target.namespace,
                datacenter=target.datacenter,
                statuses=(StackStatus.READY, StackStatus.DEPRECATED),
                limit=500,
            )
        )
        fitting = [
            s for s in page.stacks if s.version.major == dep.major and s.version.minor >= dep.minor
        ]
        ready = [s for s in fitting if s.status is StackStatus.READY]
        where = f"{target.datacenter}/{target.namespace}"
        if ready:
            found.append(max(ready, key=lambda s: s.version))
        elif fitting:
            problems.append(
                f"{dep.unit}@{dep.major}.{dep.minor} in {where} is deprecated "
                f"({', '.join(s.name for s in fitting)}); new deploys may not depend on it"
            )
        else:
            problems.append(f"{dep.unit}@{dep.major}.{dep.minor} has no ready stack in {where}")
    if problems:
        raise UserError(
            f"{unit} cannot be deployed yet: its dependencies are not there.",
            "Deploy the dependencies first.",
            details=tuple(problems),
        )
    return found


@dataclass(frozen=True, slots=True)
class _Writes:
    """What one deploy writes, apart from the release it may find already recorded."""

    unit: str
    version: Version
    image: str
    manifest_id: int
    stacks: list[NewStack]
    edges: list[list[Stack]]  # per new stack, the stacks it depends on
    kind: str  # deploy, commit, redeploy
    at: datetime
    notify: tuple[str, ...] = ()  # the manifest's notification channels


async def _record(
    ctx: Context, release: Release | None, w: _Writes
) -> tuple[Release, list[Stack], Operation]:
    """The release (when new), its stacks, their dependency edges, the operation that
    follows them and its `OperationStarted` in the outbox, in one transaction: a failure
    anywhere leaves none of it behind."""
    async with ctx.store.unit_of_work() as uow:
        release, stacks = await uow.create_deployment(
            release, w.unit, w.version, w.image, w.manifest_id, w.stacks, ctx.principal.user_id
        )
        for stack, depended in zip(stacks, w.edges, strict=True):
            for dependency in depended:
                await uow.add_dependency(stack.id, dependency.id)
        where = ", ".join(dict.fromkeys(f"{s.datacenter}/{s.namespace}" for s in stacks))
        operation = await uow.create_operation(
            w.kind,
            f"{w.kind} {w.unit} {w.version} to {where}",
            ctx.principal.user_id,
            ctx.channel,
            [s.id for s in stacks],
            at=w.at,
        )
        await ctx.events.record(OperationStarted(operation, w.notify), uow)
    return release, stacks, operation


async def _start(
    ctx: Context,
    unit: UnitRecord,
    manifest: Manifest,
    manifest_id: int,
    version: Version,
    targets: list[Target],
    release: Release | None,
    image: str,
    verb: str,
    emergency: str | None = None,  # an emergency deploy's reason
) -> Reply:
    kind = {"Deploying": "deploy", "Committing": "commit"}.get(verb, "redeploy")
    check_live = kind != "redeploy"  # a redeploy makes a fresh stack beside the live one
    emergency_deploy = await gate(ctx).check(
        ctx.principal,
        kind,
        f"{unit.name} {version}",
        unit.name,
        [(t.datacenter, t.namespace) for t in targets],
        emergency=emergency is not None,
        reason=emergency or "",
        channels=manifest.notifications.slack_channels,
        asked_in=ctx.channel,
    )
    for dc in sorted({t.datacenter for t in targets}):
        closed = await ctx.workflow.available_for(dc)
        if closed is not None:
            raise NotAvailable(
                f"cannot deploy to datacenter '{dc}' now: {closed}",
                "Nothing was recorded. `datacenters` shows which datacenters accept deploys.",
            )
    if check_live:
        busy = []
        for dc, ns in sorted({(t.datacenter, t.namespace) for t in targets}):
            for stack in await ctx.store.live_stacks(unit.name, version, dc, ns):
                if any(t.plan == stack.plan and t.datacenter == dc for t in targets):
                    busy.append(
                        f"{stack.name} ({stack.datacenter}/{stack.namespace}, "
                        f"plan {stack.plan}, {stack.status.value})"
                    )
        if busy:
            raise UserError(
                f"{unit.name} {version} is already deployed there: {'; '.join(busy)}.",
                "`redeploy <stack>` makes a fresh stack of the same release.",
            )
    dependencies = {t: await _dependency_stacks(ctx, manifest, unit.name, t) for t in targets}
    now = ctx.clock.now()
    expires = now + ctx.settings.lifecycle.new_stack_grace
    new = [
        NewStack(
            release_id=release.id if release else 0,
            name=stack_name(unit.name, version, new_hash()),
            guid=uuid.uuid4().hex[:12],
            unit=unit.name,
            version=version,
            datacenter=t.datacenter,
            namespace=t.namespace,
            plan=t.plan,
            expires_at=expires,
            created_by=ctx.principal.user_id,
        )
        for t in targets
    ]
    writes = _Writes(
        unit=unit.name,
        version=version,
        image=image,
        manifest_id=manifest_id,
        stacks=new,
        edges=[dependencies[t] for t in targets],
        kind=kind,
        at=now,
        notify=tuple(manifest.notifications.slack_channels),
    )
    try:
        release, stacks, operation = await _record(ctx, release, writes)
    except Conflict:
        # Someone created this release a moment ago; deploy it as it now stands.
        existing = await ctx.store.release(unit.name, version)
        if existing is None or existing.image != image:
            raise
        release, stacks, operation = await _record(ctx, existing, writes)
    await ctx.events.publish(OperationStarted(operation, writes.notify), recorded=True)
    if emergency_deploy is not None:
        await gate(ctx).mark_emergency(emergency_deploy, stacks)
    await gate(ctx).announce(emergency_deploy)
    await ctx.workflow.submit([s.id for s in stacks])
    rows = tuple((s.name, s.datacenter, s.namespace, s.plan, s.status.value) for s in stacks)
    return Reply(
        title=f"{verb} {unit.name} {version} to {len(stacks)} target"
        f"{'s' if len(stacks) != 1 else ''}",
        blocks=(
            Table(("stack", "datacenter", "namespace", "plan", "status"), rows),
            Text(
                f"image `{release.image}`; follow along with `inspect <stack>` or `logs <stack>`."
            ),
        ),
        stack_ids=tuple(s.id for s in stacks),
        operation_id=operation.id,
    )


def _image_for(
    ctx: Context, unit: str, version: Version, datacenter: str, asked: str | None
) -> str:
    if asked:
        return asked
    staging = ctx.settings.datacenters[datacenter].staging_registry
    return ctx.settings.workflow.image_template.format(
        staging_registry=staging.rstrip("/"), unit=unit, version=version
    )


def gate(ctx: Context) -> Gate:
    return Gate(ctx.settings, ctx.store, ctx.clock, ctx.events)


async def deploy(command: Deploy, ctx: Context) -> Reply:
    if command.reason and not command.emergency:
        raise UserError(
            "`because` goes with `emergency`: a deploy needs no reason otherwise.",
            "`deploy <unit> <version> ... emergency because <reason>` deploys through locks "
            "and freezes (admins only).",
        )
    namespace = check_namespace(ctx, command.namespace or ctx.settings.default_namespace)
    unit = await find_unit(ctx, command.unit)
    await require(ctx, Role.DEPLOY, namespace, "deploy", f"{unit.name} {command.version}")
    manifest, manifest_id = await unit_manifest(ctx, unit)
    datacenters = _datacenters(command, manifest, ctx)
    plans = _plans(command.plan, manifest, unit.name, namespace)
    targets = [Target(dc, namespace, plan) for dc in datacenters for plan in plans]
    release = await ctx.store.release(unit.name, command.version)
    image = _image_for(ctx, unit.name, command.version, datacenters[0], command.image)
    if release is not None:
        if command.image and command.image != release.image:
            raise UserError(
                f"{unit.name} {command.version} was released with image {release.image}; "
                "a release never changes its image.",
                "Release a new version for a new image.",
            )
        image = release.image
    return await _start(
        ctx,
        unit,
        manifest,
        manifest_id,
        command.version,
        targets,
        release,
        image,
        "Deploying",
        emergency=command.reason if command.emergency else None,
    )


async def commit(command: Commit, ctx: Context) -> Reply:
    namespace = check_namespace(ctx, command.namespace)
    unit = await find_unit(ctx, command.unit)
    await require(ctx, Role.DEPLOY, namespace, "commit", f"{unit.name} {command.version}")
    release = await ctx.store.release(unit.name, command.version)
    if release is None:
        raise UserError(
            f"{unit.name} {command.version} has not been released yet, so there is nothing to "
            "commit.",
            f"`deploy {unit.name} {command.version}` releases it first.",
        )
    manifest, manifest_id = await unit_manifest(ctx, unit)
    datacenters = _datacenters(Deploy(unit.name, command.version), manifest, ctx)
    plans = _plans(None, manifest, unit.name, namespace)
    targets = [Target(dc, namespace, plan) for dc in datacenters for plan in plans]
    return await _start(
        ctx,
        unit,
        manifest,
        manifest_id,
        command.version,
        targets,
        release,
        release.image,
        "Committing",
    )


async def redeploy(command: Redeploy, ctx: Context) -> Reply:
    stack = await find_stack(ctx, command.stack)
    await require(ctx, Role.DEPLOY, stack.namespace, "redeploy", stack.name)
    unit = await find_unit(ctx, stack.unit)
    release = await ctx.store.release(stack.unit, stack.version)
    if release is None:  # stacks always have a release; say so plainly if the data is broken
        raise UserError(f"the release of {stack.name} is missing.")
    manifest, manifest_id = await unit_manifest(ctx, unit)
    targets = [Target(stack.datacenter, stack.namespace, stack.plan)]
    return await _start(
        ctx,
        unit,
        manifest,
        manifest_id,
        stack.version,
        targets,
        release,
        release.image,
        "Redeploying",
    )
