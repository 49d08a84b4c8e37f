"""Commands that describe the bot itself: help, datacenters, whoami, cleanup-policies."""

from __future__ import annotations

from datetime import timedelta

from commands import daemons, grammar
from commands.access import roles_in
from commands.context import Context
from commands.handlers import outside
from commands.model import CleanupPolicies, Help, ListDatacenters, Whoami
from commands.replies import Code, Fields, Reply, Table, Text
from commands.settings import DatacenterSettings
from domain.expiration import ExpirationPolicy, default_policy
from domain.redaction import redact


async def help_(command: Help, ctx: Context) -> Reply:
    if command.topic:
        return Reply(
            title=f"help: {command.topic}", blocks=(Text(grammar.help_for(command.topic)),)
        )
    return Reply(title="What I can do", blocks=(Text(grammar.help_overview()),))


def _services(dc: DatacenterSettings) -> str:
    parts = []
    if dc.vault:
        parts.append("vault")
    if dc.consul:
        parts.append("consul")
    if dc.router:
        parts.append(f"router:{dc.router.kind}")
    return ", ".join(parts) or "-"


async def datacenters(command: ListDatacenters, ctx: Context) -> Reply:
    dcs = ctx.settings.datacenters
    if not dcs:
        return Reply(
            title="Datacenters",
            blocks=(Text("No datacenter is configured. Add one under [datacenters.NAME]."),),
        )
    rows = []
    reasons = {name: await ctx.workflow.available_for(name) for name in sorted(dcs)}
    for name in sorted(dcs):
        dc = dcs[name]
        reason = reasons[name]
        rows.append(
            (
                name,
                f"{dc.scheduler.kind} {redact(dc.scheduler.address)}",
                redact(dc.staging_registry),
                redact(dc.runtime_registry),
                _services(dc),
                "yes" if reason is None else "no",
            )
        )
    blocks: list[Text | Table] = [
        Table(("datacenter", "scheduler", "staging", "runtime", "services", "deploys"), tuple(rows))
    ]
    notes = [f"{n}: {r}" for n, r in reasons.items() if r]
    for name in sorted(dcs):
        notes.extend(await outside.datacenter_services(ctx, name))
    if notes:
        blocks.append(Text("\n".join(notes)))
    blocks.extend(await replica_blocks(ctx))
    blocks.append(
        Text(
            f"Namespaces: {', '.join(ctx.settings.namespaces)} "
            f"(default `{ctx.settings.default_namespace}`)."
        )
    )
    return Reply(title=f"Datacenters ({len(dcs)})", blocks=tuple(blocks))


async def replica_blocks(ctx: Context) -> list[Text | Table]:
    """The processes alive (replicas of `nelson serve`, a console), by their heartbeats."""
    alive = await daemons.replicas(ctx.store, ctx.clock)
    if not alive:
        return [
            Text("Processes: none is running (`nelson serve` drives deploys, shifts and cleanups).")
        ]
    now = ctx.clock.now()
    rows = tuple(
        (
            r.kind,
            r.host,
            r.pid,
            r.started_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            daemons.since(r.seen_at, now),
            str(r.deploys_held),
        )
        for r in alive
    )
    return [
        Text(f"Processes alive ({len(alive)}):"),
        Table(("process", "host", "pid", "started", "last heartbeat", "deploys held"), rows),
        Text(daemons.takeover_note(ctx.settings.workflow.claim_ttl)),
    ]


async def whoami(command: Whoami, ctx: Context) -> Reply:
    who = ctx.principal
    rows = tuple(
        (ns, ", ".join(r.value for r in roles_in(ctx.settings.access, who, ns)) or "none")
        for ns in ctx.settings.namespaces
    )
    pairs = [("user", who.label)]
    if who.groups:
        pairs.append(("groups", ", ".join(sorted(who.groups))))
    return Reply(
        title="Who you are to me",
        blocks=(Fields(tuple(pairs)), Table(("namespace", "roles"), rows)),
        private=True,
    )


_DESCRIPTIONS = {
    ExpirationPolicy.RETAIN_ACTIVE: "keeps stacks something live depends on, and the stack "
    "receiving traffic for its unit and major version",
    ExpirationPolicy.RETAIN_LATEST: "keeps only the latest version of the unit",
    ExpirationPolicy.RETAIN_LATEST_TWO_MAJOR: "keeps the latest of each of the two newest major "
    "versions (say 2.x.x and 1.x.x)",
    ExpirationPolicy.RETAIN_LATEST_TWO_FEATURE: "keeps the latest of each of the two newest "
    "minor versions of the newest major (say 2.3.x and 2.2.x)",
    ExpirationPolicy.RETAIN_ALWAYS: "keeps everything",
    ExpirationPolicy.RETAIN_UNTIL_DEPRECATED: "keeps everything until it is deprecated",
}


async def cleanup_policies(command: CleanupPolicies, ctx: Context) -> Reply:
    rows = []
    for policy in ExpirationPolicy:
        defaults = [k for k in ("service", "job") if default_policy(k) is policy]
        rows.append(
            (
                policy.value,
                _DESCRIPTIONS.get(policy, ""),
                f"default for {' and '.join(defaults)}s" if defaults else "",
            )
        )
    life = ctx.settings.lifecycle
    return Reply(
        title="Cleanup policies",
        blocks=(
            Table(("policy", "what it keeps", ""), tuple(rows)),
            Text(
                f"Every {_span(life.interval)} a cleanup pass judges each ready and deprecated "
                f"stack. New stacks are left alone for {_span(life.new_stack_grace)}; the "
                "stacks receiving traffic (or about to, in a traffic shift) and anything a live "
                "stack depends on are never collected. Stacks no policy keeps become garbage. "
                f"Each day at {life.announce_at} UTC a digest announces what will be removed, "
                "in each unit's channels and the operations channel (`nelson announce` posts "
                "it now). Garbage is removed only once it was announced, "
                f"{_span(life.garbage_grace)} after it became garbage and "
                f"{_span(life.notice)} after the announcement: out of the route first, then "
                f"off the scheduler. `keep <stack>` (the Keep button) keeps it "
                f"{_span(life.keep_for)} more; `remove <stack>` (Remove now, admins) removes it "
                "at once. Choose a policy per plan with `expiration_policy:` in the manifest."
            ),
            Code("plans:\n  - name: default\n    expiration_policy: retain-latest-two-major"),
        ),
    )


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for size, word in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {word}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"
