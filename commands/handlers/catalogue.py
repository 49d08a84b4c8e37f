"""Manifests and units: manifest, manifests, units, lint."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from commands.access import Role
from commands.context import Context
from commands.grammar import canonical
from commands.handlers.lookup import (
    check_datacenter,
    check_namespace,
    require,
    when,
)
from commands.manifests import ParserUnavailable
from commands.model import Lint, ListManifests, ListUnits, RegisterManifest
from commands.replies import Block, Code, Reply, Table, Text, UserError
from domain.manifest import Manifest, ManifestError, ManifestInvalid
from domain.records import UnitRecord

MAX_MANIFEST_BYTES = 512 * 1024  # a file read by path in the console
# Pasted or attached in chat: a manifest of this size already lists hundreds of units, and
# checking it takes about a second of CPU.
MAX_PASTED_BYTES = 64 * 1024


# Checked in a separate process, one at a time (commands.manifests): a big paste then delays
# neither its own acknowledgement nor anyone else's request.
async def _parse(text: str, ctx: Context) -> Manifest:
    try:
        return await ctx.manifests.check(text)
    except ParserUnavailable:
        raise UserError("I could not check that manifest; try again.") from None


def _read_source(
    ctx: Context, path: str | None, text: str | None, attachment: bool
) -> tuple[str, str]:
    """Return (text, where it came from)."""
    if text is not None:
        return _bounded(text, "the pasted text"), "the pasted text"
    if path is not None:
        if not ctx.local:
            raise UserError(
                "I only read manifests by path in the local console.",
                "Attach the .nelson.yml file to your message, or paste it in a ``` block.",
            )
        file = Path(path).expanduser()
        try:
            if file.is_dir():
                file = file / ".nelson.yml"
            if file.stat().st_size > MAX_MANIFEST_BYTES:
                raise UserError(f"{file} is larger than {MAX_MANIFEST_BYTES // 1024} KiB.")
            return file.read_text(encoding="utf-8"), str(file)
        except FileNotFoundError:
            raise UserError(f"there is no file {file}.") from None
        except UnicodeDecodeError:
            raise UserError(f"{file} is not UTF-8 text.") from None
        except OSError as exc:
            raise UserError(f"cannot read {file}: {exc.strerror}.") from None
    if attachment and ctx.attachment is not None:
        return _bounded(ctx.attachment, "the attached file"), "the attached file"
    raise UserError(
        "there is no manifest to read.",
        "Attach a .nelson.yml file, paste it after the command in a ``` block"
        + (", or give a path." if ctx.local else "."),
    )


def _bounded(text: str, source: str) -> str:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_PASTED_BYTES:
        raise UserError(
            f"{source} is {size // 1024} KiB; I check manifests up to "
            f"{MAX_PASTED_BYTES // 1024} KiB sent in chat.",
            "Split the manifest, or check it from a file with `nelson lint manifest PATH`.",
        )
    return text


def _summary(manifest: Manifest) -> str:
    units = ", ".join(f"{u.name} ({manifest.unit_kind(u.name)})" for u in manifest.units)
    namespaces = ", ".join(ns.name for ns in manifest.namespaces)
    return (
        f"{len(manifest.units)} unit(s): {units}\n"
        f"{len(manifest.plans)} plan(s); namespaces: {namespaces}"
    )


async def lint(command: Lint, ctx: Context) -> Reply:
    await require(ctx, Role.VIEW, ctx.settings.default_namespace, "lint", "manifest")
    text, source = _read_source(ctx, command.path, command.text, command.attachment)
    try:
        manifest = await _parse(text, ctx)
    except ManifestInvalid as exc:
        errors = exc.errors
        return Reply(
            title=f"The manifest in {source} is not valid: {len(errors)} "
            f"error{'s' if len(errors) != 1 else ''}",
            blocks=(Code("\n".join(str(e) for e in errors)), *_warnings(exc.warnings)),
            ok=False,
        )
    return Reply(
        title=f"The manifest in {source} is valid",
        blocks=(Text(_summary(manifest)), *_warnings(manifest.warnings)),
    )


def _warnings(warnings: tuple[ManifestError, ...]) -> tuple[Text | Code, ...]:
    """Accepted, but listed: keys that are ignored, stanzas Nelson would judge differently."""
    if not warnings:
        return ()
    count = f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}"
    return (Text(f"{count}:"), Code("\n".join(str(w) for w in warnings)))


def unit_records(manifest: Manifest, repository: str) -> list[UnitRecord]:
    return [
        UnitRecord(
            name=unit.name,
            repository=repository,
            kind=manifest.unit_kind(unit.name),
            description=unit.description,
            manifest_revision=0,  # the store assigns the revision
        )
        for unit in manifest.units
    ]


async def register_manifest(command: RegisterManifest, ctx: Context) -> Reply:
    namespace = ctx.settings.default_namespace
    await require(ctx, Role.DEPLOY, namespace, "manifest", f"repository:{command.repository}")
    text, source = _read_source(ctx, command.path, command.text, command.attachment)
    try:
        manifest = await _parse(text, ctx)
    except ManifestInvalid as exc:
        raise UserError(
            f"the manifest in {source} is not valid, so nothing was registered.",
            "Fix these and send it again (`lint` checks without registering):",
            details=tuple(str(e) for e in exc.errors),
        ) from None
    previous = await ctx.store.latest_manifest(command.repository)
    record = await ctx.store.register_manifest(
        command.repository, text, unit_records(manifest, command.repository), ctx.principal.user_id
    )
    if previous is not None and previous.id == record.id:
        title = f"{command.repository} already has this manifest (revision {record.revision})"
    else:
        title = f"Registered revision {record.revision} of {command.repository}'s manifest"
    return Reply(
        title=title,
        blocks=(
            Text(_summary(manifest)),
            Text("Running stacks keep the manifest they were deployed with."),
            *_warnings(manifest.warnings),
        ),
    )


async def manifests(command: ListManifests, ctx: Context) -> Reply:
    await require(ctx, Role.VIEW, ctx.settings.default_namespace, "manifests", "manifests")
    records = await ctx.store.manifests()
    if not records:
        return Reply(
            title="Manifests",
            blocks=(
                Text("No manifest is registered yet. Register one with `manifest <repository>`."),
            ),
        )
    units = await ctx.store.units()
    rows = tuple(
        (
            r.repository,
            str(r.revision),
            ", ".join(sorted(u.name for u in units if u.repository == r.repository)),
            r.registered_by,
            when(r.registered_at),
        )
        for r in records
    )
    return Reply(
        title=f"Manifests ({len(records)})",
        blocks=(Table(("repository", "revision", "units", "by", "when"), rows),),
    )


UNITS_PER_PAGE = 50  # a Slack message holds 50 blocks of 3,000 characters: 50 rows fit


async def list_units(command: ListUnits, ctx: Context) -> Reply:
    namespace = check_namespace(ctx, command.namespace or ctx.settings.default_namespace)
    if command.datacenter:
        check_datacenter(ctx, command.datacenter)
    await require(ctx, Role.VIEW, namespace, "units", f"namespace:{namespace}")
    number = command.page or 1
    page = await ctx.store.unit_page(
        namespace,
        command.datacenter,
        limit=UNITS_PER_PAGE,
        after=command.after,
        offset=(number - 1) * UNITS_PER_PAGE,
    )
    if not page.total:
        return Reply(
            title="Units",
            blocks=(Text("No units yet: register a manifest with `manifest <repository>`."),),
        )
    where = f"{command.datacenter}/{namespace}" if command.datacenter else namespace
    pages = -(-page.total // UNITS_PER_PAGE)
    first = replace(command, page=None, after=None)
    if not page.units:
        past = f"after {command.after}" if command.after else f"on page {number}"
        return Reply(
            title=f"Units in {where}",
            blocks=(
                Text(
                    f"No units {past}: there are {page.total}, {pages} page(s) of "
                    f"{UNITS_PER_PAGE}. The first: `{canonical(first)}`."
                ),
            ),
        )
    rows = []
    for unit, found in page.units:
        if found is None:
            rows.append((unit.name, unit.kind, unit.repository, "0", "-"))
            continue
        shown = ", ".join(str(v) for v in found.newest) + (" …" if found.versions > 3 else "")
        rows.append((unit.name, unit.kind, unit.repository, str(found.stacks), shown))
    last = page.before + len(page.units)
    blocks: list[Block] = [
        Table(("unit", "kind", "repository", "live stacks", "versions"), tuple(rows))
    ]
    if last < page.total:
        following = (
            replace(first, after=page.units[-1][0].name)
            if command.after
            else replace(first, page=number + 1)
        )
        blocks.append(
            Text(f"{page.total - last} more, sorted by name. Next: `{canonical(following)}`")
        )
    return Reply(
        title=f"Units {page.before + 1} to {last} of {page.total}, live stacks in {where}",
        blocks=tuple(blocks),
    )
