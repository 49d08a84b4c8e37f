"""One handler per command; `handle` picks it. Handlers raise UserError for what a user can fix."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from commands import model
from commands.context import Context
from commands.handlers import (
    about,
    approvals,
    blueprints,
    catalogue,
    cleanup,
    deploy,
    graph,
    locks,
    releases,
    rollback,
    stacks,
    tokens,
    traffic,
)
from commands.replies import Reply

Handler = Callable[[Any, Context], Awaitable[Reply]]

HANDLERS: dict[type, Handler] = {
    model.Help: about.help_,
    model.ListDatacenters: about.datacenters,
    model.Whoami: about.whoami,
    model.CleanupPolicies: about.cleanup_policies,
    model.ListStacks: stacks.list_stacks,
    model.Inspect: stacks.inspect,
    model.Logs: stacks.logs,
    model.Runtime: stacks.runtime,
    model.Lint: catalogue.lint,
    model.RegisterManifest: catalogue.register_manifest,
    model.ListManifests: catalogue.manifests,
    model.RegisterBlueprint: blueprints.register_blueprint,
    model.ListBlueprints: blueprints.list_blueprints,
    model.Render: blueprints.render,
    model.ListUnits: catalogue.list_units,
    model.Graph: graph.graph,
    model.Deploy: deploy.deploy,
    model.Commit: deploy.commit,
    model.Redeploy: deploy.redeploy,
    model.ListApprovals: approvals.list_approvals,
    model.Approve: approvals.approve,
    model.Reject: approvals.reject,
    model.Reverse: approvals.reverse,
    model.Pause: traffic.pause,
    model.Resume: traffic.resume,
    model.Traffic: traffic.traffic,
    model.Deprecate: cleanup.deprecate,
    model.Keep: cleanup.keep,
    model.Remove: cleanup.remove,
    model.Announce: releases.announce,
    model.CreateToken: tokens.create_token,
    model.ListTokens: tokens.list_tokens,
    model.RevokeToken: tokens.revoke_token,
    model.Lock: locks.lock,
    model.Unlock: locks.unlock,
    model.Freeze: locks.freeze,
    model.Unfreeze: locks.unfreeze,
    model.ListLocks: locks.list_locks,
    model.Rollback: rollback.rollback,
}


async def handle(command: model.Command, ctx: Context) -> Reply:
    return await HANDLERS[type(command)](command, ctx)
