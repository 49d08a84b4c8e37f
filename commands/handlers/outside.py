"""What `inspect` and `datacenters` show of the services beside the scheduler: each stack's
Vault policy and token and its Lighthouse keys in Consul, and whether each datacenter's Vault
is reachable and unsealed and its Consul has a leader.
Nothing here shows a secret: the token never leaves the containers, and addresses are shown
without any credentials they carry."""

from __future__ import annotations

import re

from commands.context import Context
from commands.handlers.lookup import when
from commands.ports import PublishedRoutes, RouterError, SecretsError
from domain.records import Stack

_READ_RULE = re.compile(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\["read"\]\s*\}')


async def stack_secrets(ctx: Context, stack: Stack) -> list[tuple[str, str]]:
    """`inspect` fields: the stack's Vault policy (what it grants) and its token."""
    if ctx.secrets is None or not ctx.secrets.configured(stack.datacenter):
        return []
    try:
        found = await ctx.secrets.policy(stack)
    except SecretsError as exc:
        return [("vault policy", f"cannot be read now: {exc}")]
    if found is None:
        return []
    name, text = found
    if text is None:
        return [("vault policy", f"{name} (not in Vault)")]
    reads = [p for p in _READ_RULE.findall(text) if not p.startswith("auth/token/")]
    fields = [("vault policy", f"{name}: read on {', '.join(reads) or 'nothing'}")]
    tokens = await ctx.store.vault_tokens(stack.id)
    if tokens:
        fields.append(
            ("vault token", f"issued {when(tokens[0].issued_at)}, periodic, renewed by the bot")
        )
    elif ctx.settings.datacenters[stack.datacenter].scheduler.kind == "nomad":
        fields.append(("vault token", "derived by Nomad from the job's vault block"))
    return fields


async def stack_routes(ctx: Context, stack: Stack) -> list[tuple[str, str]]:
    """`inspect` fields: the Consul keys a Lighthouse router publishes for the stack."""
    router = ctx.traffic.routers.get(stack.datacenter) if ctx.traffic is not None else None
    if not isinstance(router, PublishedRoutes):
        return []
    try:
        keys = await router.keys_for(stack.name)
    except RouterError as exc:
        return [("consul keys", f"cannot be read now: {exc}")]
    return [("consul keys", ", ".join(keys) or "none")]


async def datacenter_services(ctx: Context, datacenter: str) -> list[str]:
    """One line per outside service of the datacenter, with its state now."""
    lines: list[str] = []
    if ctx.secrets is not None and ctx.secrets.configured(datacenter):
        status = await ctx.secrets.status(datacenter)
        if status is not None:
            state = status.detail if status.reachable else f"unreachable: {status.detail}"
            if status.sealed:
                state = f"SEALED: {status.detail}; deploys here fail until it is unsealed"
            lines.append(f"{datacenter}: Vault {state}")
    consul = ctx.consuls.get(datacenter)
    if consul is not None:
        lines.append(f"{datacenter}: Consul {await consul.status()}")
    return lines
