"""API tokens for CI: created and revoked by admins; each acts only within its scope.

The token is shown once, to its creator, in a private reply; only its SHA-256 is stored."""

from __future__ import annotations

from commands.access import Role, authorize
from commands.context import Context
from commands.handlers.lookup import check_namespace, require
from commands.model import CreateToken, ListTokens, RevokeToken
from commands.ports import Conflict
from commands.replies import Code, Reply, Table, Text, UserError
from domain.api_tokens import ApiToken, digest, new_token


def _administers(ctx: Context, namespaces: tuple[str, ...]) -> bool:
    return all(
        authorize(ctx.settings.access, ctx.principal, Role.ADMIN, ns).allowed for ns in namespaces
    )


async def create_token(command: CreateToken, ctx: Context) -> Reply:
    namespaces = tuple(check_namespace(ctx, ns) for ns in command.namespaces)
    for namespace in namespaces:
        await require(ctx, Role.ADMIN, namespace, "token create", f"token:{command.name}")
    token = new_token(ctx.random_bytes)
    record = ApiToken(
        name=command.name,
        digest=digest(token),
        namespaces=namespaces,
        right=command.right,
        created_by=ctx.principal.user_id,
        created_at=ctx.clock.now(),
    )
    try:
        await ctx.store.create_api_token(record)
    except Conflict:
        raise UserError(
            f"there is already a token named '{command.name}'.",
            f"`token revoke {command.name}` first, or choose another name.",
        ) from None
    return Reply(
        title=f"Token {command.name} created: it may {command.right} in {', '.join(namespaces)}",
        blocks=(
            Code(token),
            Text(
                "This is the only time it is shown: store it in your CI's secrets now. "
                "Send it as `Authorization: Bearer <token>` (docs/api.md)."
            ),
        ),
        private=True,
    )


async def list_tokens(command: ListTokens, ctx: Context) -> Reply:
    # Admins of some namespace see the tokens of the namespaces they administer.
    somewhere = next(
        (
            ns
            for ns in ctx.settings.namespaces
            if authorize(ctx.settings.access, ctx.principal, Role.ADMIN, ns).allowed
        ),
        ctx.settings.default_namespace,
    )
    await require(ctx, Role.ADMIN, somewhere, "tokens", "tokens")
    tokens = [t for t in await ctx.store.api_tokens() if _administers(ctx, t.namespaces)]
    if not tokens:
        return Reply(title="API tokens", blocks=(Text("No API token you administer."),))
    rows = tuple(
        (
            t.name,
            ", ".join(t.namespaces),
            t.right,
            t.created_by,
            t.created_at.strftime("%Y-%m-%d %H:%M UTC"),
        )
        for t in tokens
    )
    return Reply(
        title=f"API tokens ({len(rows)})",
        blocks=(Table(("token", "namespaces", "may", "created by", "created"), rows),),
    )


async def revoke_token(command: RevokeToken, ctx: Context) -> Reply:
    found = next((t for t in await ctx.store.api_tokens() if t.name == command.name), None)
    if found is None:
        raise UserError(f"there is no token '{command.name}'.", "`tokens` lists them.")
    for namespace in found.namespaces:
        await require(ctx, Role.ADMIN, namespace, "token revoke", f"token:{command.name}")
    await ctx.store.revoke_api_token(command.name)
    return Reply(title=f"Token {command.name} revoked: CI using it is refused from now on")
