"""`graph <unit>`: who depends on a unit and what it depends on, as declared in the manifests
and as deployed (stack to stack), with a picture of the deployed graph."""

from __future__ import annotations

import logging

from commands.access import Role
from commands.context import Context
from commands.graph_picture import Node, RenderError, describe, dot_source, render_png
from commands.handlers.lookup import ago, find_unit, require
from commands.model import Graph
from commands.replies import Attachment, Fields, Reply, Table, Text
from domain.manifest import ManifestInvalid
from domain.records import Stack, StackQuery
from domain.states import LIVE_STATUSES, StackStatus

log = logging.getLogger("nelson.graph")

DRAWN = (*sorted(LIVE_STATUSES), StackStatus.GARBAGE)
MAX_STACKS = 50


async def graph(command: Graph, ctx: Context) -> Reply:
    unit = await find_unit(ctx, command.unit)
    await require(ctx, Role.VIEW, ctx.settings.default_namespace, "graph", f"unit:{unit.name}")
    depends_on: list[str] = []
    used_by: list[str] = []
    for record in await ctx.store.manifests():
        try:
            manifest = ctx.manifests.of_record(record)
        except ManifestInvalid:
            continue  # an outdated manifest says nothing reliable about dependencies
        for declared in manifest.units:
            for dep in declared.dependencies:
                if declared.name == unit.name:
                    depends_on.append(f"{dep.unit}@{dep.major}.{dep.minor}")
                elif dep.unit == unit.name:
                    used_by.append(f"{declared.name} (needs {dep.major}.{dep.minor})")
    blocks: list[Fields | Table | Text] = [
        Fields(
            (
                ("depends on", ", ".join(sorted(depends_on)) or "nothing"),
                ("used by", ", ".join(sorted(used_by)) or "nothing"),
            )
        )
    ]
    page = await ctx.store.list_stacks(StackQuery(unit=unit.name, statuses=DRAWN, limit=MAX_STACKS))
    if not page.stacks:
        blocks.append(Text(f"No stack of {unit.name} is deployed, so there is nothing to draw."))
        return Reply(title=f"Dependencies of {unit.name}", blocks=tuple(blocks))
    nodes: dict[int, Stack] = {s.id: s for s in page.stacks}
    edges: set[tuple[int, int]] = set()
    rows: list[tuple[str, ...]] = []
    for stack in page.stacks:
        uses = [s for s in await ctx.store.dependencies(stack.id) if s.status in DRAWN]
        users = [s for s in await ctx.store.dependents(stack.id) if s.status in DRAWN]
        for other in uses:
            nodes.setdefault(other.id, other)
            edges.add((stack.id, other.id))
        for other in users:
            nodes.setdefault(other.id, other)
            edges.add((other.id, stack.id))
        rows.append(
            (
                stack.name,
                f"{stack.datacenter}/{stack.namespace}",
                stack.status.value,
                ", ".join(s.name for s in uses) or "-",
                ", ".join(s.name for s in users) or "-",
            )
        )
    blocks.append(
        Table(
            ("stack", "where", "status", "depends on", "used by"),
            tuple(rows),
            total=page.total if page.total > len(rows) else None,
        )
    )
    drawn = [Node(s, _note(ctx, s)) for s in nodes.values()]
    attachments: tuple[Attachment, ...] = ()
    try:
        picture = await render_png(dot_source(unit.name, drawn, edges, ctx.clock.now()))
    except RenderError as exc:
        log.warning("no picture for graph %s: %s", unit.name, exc)
        blocks.append(Text(f"No picture this time: {exc}."))
    else:
        attachments = (
            Attachment(
                filename=f"{unit.name}-dependencies.png",
                content=picture,
                title=f"Dependency graph of {unit.name}",
                alt_text=describe(unit.name, drawn, edges),
            ),
        )
    return Reply(
        title=f"Dependencies of {unit.name}", blocks=tuple(blocks), attachments=attachments
    )


def _note(ctx: Context, stack: Stack) -> str:
    now = ctx.clock.now()
    if stack.status is StackStatus.GARBAGE:
        due = ctx.settings.lifecycle.removal_at(stack.updated_at, stack.announced_at)
        return f"removal {ago(due, now)}" if due else "removal after its announcement"
    if stack.status in (StackStatus.READY, StackStatus.DEPRECATED) and stack.expires_at:
        return f"retained, expires {ago(stack.expires_at, now)}"
    return ""
