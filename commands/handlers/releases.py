"""Announcing a deployable: a release (unit, version, image) recorded before any deploy, as CI
hands it over. Deploys of that version then use exactly this image."""

from __future__ import annotations

from commands.access import Role, authorize
from commands.context import Context
from commands.handlers.lookup import find_unit, require, unit_manifest
from commands.model import Announce
from commands.ports import Conflict
from commands.replies import Fields, Reply, Text, UserError
from domain.images import BadImageReference, parse_image


async def announce(command: Announce, ctx: Context) -> Reply:
    unit = await find_unit(ctx, command.unit)
    manifest, manifest_id = await unit_manifest(ctx, unit)
    # Whoever may deploy the unit somewhere may announce its releases.
    namespaces = manifest.namespaces_of(unit.name) or (ctx.settings.default_namespace,)
    where = next(
        (
            ns
            for ns in namespaces
            if authorize(ctx.settings.access, ctx.principal, Role.DEPLOY, ns).allowed
        ),
        namespaces[0],
    )
    subject = f"{unit.name} {command.version}"
    await require(ctx, Role.DEPLOY, where, "announce", subject)
    try:
        image = parse_image(command.image)
    except BadImageReference as exc:
        raise UserError(f"{exc}.", "Give the image as registry/repository:tag@sha256:…") from None
    existing = await ctx.store.release(unit.name, command.version)
    if existing is not None:
        same = existing.image == command.image or (
            image.digest is not None and existing.digest == image.digest
        )
        if not same:
            raise UserError(
                f"{subject} was released with image {existing.image}; a release never changes "
                "its image.",
                "Release a new version for a new image.",
            )
        return _reply(f"{subject} is already released", existing.image, existing.digest)
    try:
        release, _ = await ctx.store.create_deployment(
            None, unit.name, command.version, command.image, manifest_id, [], ctx.principal.user_id
        )
    except Conflict:  # announced a moment ago by someone else
        raced = await ctx.store.release(unit.name, command.version)
        if raced is None or raced.image != command.image:
            raise UserError(f"{subject} was just released with another image.") from None
        return _reply(f"{subject} is already released", raced.image, raced.digest)
    if image.digest is not None:
        await ctx.store.set_release_digest(release.id, image.digest)
    return _reply(f"Released {subject}", release.image, image.digest)


def _reply(title: str, image: str, digest: str | None) -> Reply:
    return Reply(
        title=title,
        blocks=(
            Fields((("image", image), ("digest", digest or "resolved at the first deploy"))),
            Text("`deploy <unit> <version>` deploys it; `commit` promotes it later."),
        ),
    )
