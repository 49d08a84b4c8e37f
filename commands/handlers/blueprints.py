"""Blueprints and dry runs: blueprint, blueprints, render."""

from __future__ import annotations

import json
from pathlib import Path

from commands.access import Role
from commands.context import Context
from commands.handlers.deploy import _image_for, _plans
from commands.handlers.lookup import (
    check_datacenter,
    check_namespace,
    find_unit,
    require,
    unit_manifest,
    when,
)
from commands.model import ListBlueprints, RegisterBlueprint, Render
from commands.ports import SchedulerError
from commands.replies import Code, NotAvailable, Reply, Table, Text, UserError
from domain import blueprints

MAX_CHANGES = 40  # lines of a plan's diff shown; the rest is counted


def _read(ctx: Context, command: RegisterBlueprint) -> tuple[str, str]:
    if command.text is not None:
        return command.text, "the pasted text"
    if command.path is not None:
        if not ctx.local:
            raise UserError(
                "I only read blueprints by path in the local console.",
                "Attach the blueprint file to your message, or paste it in a ``` block.",
            )
        file = Path(command.path).expanduser()
        try:
            if file.stat().st_size > blueprints.MAX_BYTES:
                raise UserError(f"{file} is larger than {blueprints.MAX_BYTES // 1024} KiB.")
            return file.read_text(encoding="utf-8"), str(file)
        except FileNotFoundError:
            raise UserError(f"there is no file {file}.") from None
        except UnicodeDecodeError:
            raise UserError(f"{file} is not UTF-8 text.") from None
        except OSError as exc:
            raise UserError(f"cannot read {file}: {exc.strerror}.") from None
    if command.attachment and ctx.attachment is not None:
        return ctx.attachment, "the attached file"
    raise UserError(
        "there is no blueprint to read.",
        "Attach the blueprint file, paste it after the name in a ``` block"
        + (", or give a path." if ctx.local else "."),
    )


async def register_blueprint(command: RegisterBlueprint, ctx: Context) -> Reply:
    namespace = ctx.settings.default_namespace
    await require(ctx, Role.DEPLOY, namespace, "blueprint", f"blueprint:{command.name}")
    text, source = _read(ctx, command)
    try:
        blueprints.check(text)
    except blueprints.BlueprintError as exc:
        raise UserError(
            f"the blueprint in {source} is not a valid template, so nothing was registered: {exc}.",
            "Fix it and send it again; `render` shows what a blueprint makes of a release.",
        ) from None
    previous = await ctx.store.blueprint(command.name)
    record = await ctx.store.register_blueprint(command.name, "nomad", text, ctx.principal.user_id)
    if previous is not None and previous.id == record.id:
        title = f"Blueprint {record.name} already has this text (revision {record.revision})"
    else:
        title = f"Registered revision {record.revision} of blueprint {record.name}"
    return Reply(
        title=title,
        blocks=(
            Text(
                f"Plans use it with `blueprint: {record.name}` (the latest revision) or "
                f"`blueprint: {record.name}@{record.revision}` in the manifest. Running stacks "
                f"keep the blueprint they were deployed with; `render <unit> <version> at <dc>` "
                "shows the job it makes."
            ),
        ),
    )


async def list_blueprints(command: ListBlueprints, ctx: Context) -> Reply:
    await require(ctx, Role.VIEW, ctx.settings.default_namespace, "blueprints", "blueprints")
    rows = [("(default)", "nomad", "built in", "-", "plans without `blueprint:`")]
    for record in await ctx.store.blueprints():
        rows.append(
            (
                record.name,
                record.kind,
                str(record.revision),
                record.registered_by,
                when(record.registered_at),
            )
        )
    return Reply(
        title=f"Blueprints ({len(rows) - 1} registered)",
        blocks=(Table(("name", "kind", "revision", "by", "when"), tuple(rows)),),
    )


async def render(command: Render, ctx: Context) -> Reply:
    namespace = check_namespace(ctx, command.namespace or ctx.settings.default_namespace)
    datacenter = check_datacenter(ctx, command.datacenter)
    unit = await find_unit(ctx, command.unit)
    await require(ctx, Role.VIEW, namespace, "render", f"{unit.name} {command.version}")
    manifest, manifest_id = await unit_manifest(ctx, unit)
    plan = _plans(command.plan, manifest, unit.name, namespace)[0]
    release = await ctx.store.release(unit.name, command.version)
    if release is not None:
        manifest_id = release.manifest_id  # a release deploys with the manifest it was cut from
    image = (
        release.image if release else _image_for(ctx, unit.name, command.version, datacenter, None)
    )
    if getattr(ctx.workflow, "render", None) is None:  # an embedder's own workflow
        raise NotAvailable("this bot's deploy workflow cannot show what it would submit.")
    try:
        rendering = await ctx.workflow.render(
            unit.name, command.version, datacenter, namespace, plan, manifest_id, image
        )
    except SchedulerError as exc:
        raise NotAvailable(
            f"cannot render {unit.name} {command.version} for {datacenter}: {exc}",
            "Nothing was deployed. `blueprints` lists the blueprints plans may name.",
        ) from None
    blocks: list[Text | Code] = [
        Text(f"The {rendering.kind.lower()} from {rendering.source}, exactly as it would be sent:"),
        Code(json.dumps(rendering.spec, indent=2, sort_keys=True)),
    ]
    if rendering.problems:
        blocks.append(Text(f"*{datacenter} would refuse it:*"))
        blocks.append(Code("\n".join(rendering.problems)))
    if rendering.changes:
        shown = list(rendering.changes[:MAX_CHANGES])
        if len(rendering.changes) > MAX_CHANGES:
            shown.append(f"… and {len(rendering.changes) - MAX_CHANGES} more")
        blocks.append(Text(f"What {datacenter} would change:"))
        blocks.append(Code("\n".join(shown)))
    if rendering.notes:
        blocks.append(Text("\n".join(f"• {note}" for note in rendering.notes)))
    return Reply(
        title=f"Dry run: {unit.name} {command.version} at {datacenter} ({namespace}, plan {plan})"
        + (" — refused" if rendering.problems else ""),
        blocks=tuple(blocks),
        ok=not rendering.problems,
    )
