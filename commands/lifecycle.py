"""The periodic cleanup pass: judge every ready and deprecated stack by its expiration policy
(`domain.expiration`), extend the expiry of those retained, turn the expired into garbage,
and reap garbage after its grace: remove it from the scheduler and the router, then mark it
terminated. A reap that fails (scheduler down) is retried on the next pass and reported; a
stack is never marked terminated while its containers may still run.

Nothing is reaped before its removal was announced: `announce` (the daily digest) tells each
unit's notification channels and the operations channel what will be removed, why and when;
`keep` ("Keep 24h more") returns a stack to where it was, `remove_now` reaps at once, and
`CleanupDone` reports what went, once per channel.

Several bot processes may share one database: a pass runs only while its process holds the
`lifecycle` lease, and a digest only while it holds `cleanup-announcement`, so no cleanup or
announcement runs twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from commands.access import Principal, Role, authorize
from commands.events import CleanupAnnounced, CleanupDone, EventHub, Removal, StackProgress
from commands.manifests import Manifests, Policies
from commands.ports import Clock, Conflict, Route, Router, Scheduler, Store
from commands.replies import AccessDenied, UserError
from commands.settings import Settings
from commands.stack_secrets import StackSecrets
from domain import expiration
from domain.expiration import ExpirationPolicy, StackView, Verdict
from domain.records import AuditEvent, Stack
from domain.states import IllegalTransition, StackStatus
from domain.traffic import OPEN_SHIFT_STATES

log = logging.getLogger("nelson.lifecycle")

LEASE = "lifecycle"
ANNOUNCE_LEASE = "cleanup-announcement"
ANNOUNCE_HOLD = timedelta(minutes=10)  # other replicas firing at the same moment stay quiet
DAILY = "cleanup-digest"  # + ":YYYY-MM-DD": the day's digest was posted (or is being)
OPEN_SHIFTS = OPEN_SHIFT_STATES
BATCH = 2000  # stacks judged at a time


@dataclass(frozen=True, slots=True)
class Collected:
    """A stack a pass turned into garbage: small, since a pass may collect many."""

    id: int
    name: str


@dataclass
class PassReport:
    ran: bool = True  # False: another process holds the lease
    judged: int = 0
    extended: int = 0
    garbage: list[Collected] = field(default_factory=list)
    reaped: list[Stack] = field(default_factory=list)
    failed: list[tuple[Stack, str]] = field(default_factory=list)


class Lifecycle:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        events: EventHub,
        clock: Clock,
        schedulers: Mapping[str, Scheduler],
        routers: Mapping[str, Router],
        batch: int = BATCH,
        *,
        manifests: Manifests | None = None,
        stack_secrets: StackSecrets | None = None,
    ) -> None:
        self.settings = settings
        self.batch = batch
        self.store = store
        self.events = events
        self.clock = clock
        self.schedulers = dict(schedulers)
        self.routers = dict(routers)
        self.holder = f"{socket.gethostname()}:{secrets.token_hex(4)}"
        self.manifests = manifests or Manifests(store, settings)
        self._failing: set[int] = set()  # stacks whose failed reap was already reported
        self._announced_days: set[str] = set()
        # where datacenters have Vault: reaping revokes and deletes there
        self.secrets = stack_secrets

    async def run_once(self) -> PassReport:
        now = self.clock.now()
        interval = self.settings.lifecycle.interval
        if not await self.store.acquire_lease(LEASE, self.holder, now + interval * 2, now):
            return PassReport(ran=False)
        try:
            return await self._pass(now)
        finally:
            # the lease only keeps two passes from running at once; the next may start now
            await self.store.release_lease(LEASE, self.holder)

    async def _pass(self, now: datetime) -> PassReport:
        report = PassReport()
        # the stacks of an open traffic shift are about to receive traffic (or do)
        shifting = {
            stack_id
            for shift in await self.store.shifts(OPEN_SHIFTS)
            for stack_id in (shift.from_stack_id, shift.to_stack_id)
        }
        serving: set[str] = set()
        for router in self.routers.values():
            try:
                serving |= await router.serving()
            except Exception as exc:  # without knowing who serves, expire nothing
                log.warning("router unavailable (%s): no stack expires this pass", exc)
                return report
        # batch by batch, so memory holds one batch however many stacks there are; a policy
        # compares a stack only with its group, and a batch holds whole groups. What this
        # pass collects still counts as a live dependant until the pass ends, as it did when
        # the pass began.
        # Decisions are written while the next batches are read and judged: the database
        # works on one core while this process judges on the other. Each write is a
        # transaction of its own, at most `cleanup_writers` at once. An id counts as
        # collected from the moment it is judged expired, before its write lands (a stack
        # that moved on meanwhile just counts once more as a live dependant: the pass
        # keeps more, never less).
        collected: set[int] = set()
        extend: dict[int, datetime] = {}
        expired: dict[int, tuple[str, str]] = {}  # id -> (name, reason)
        writing: list[asyncio.Task[None]] = []
        # a database writing side by side gets a write per batch's worth of decisions; one
        # writer at a time gets fewer, larger transactions (each commit waits for the disk)
        writers = self.store.cleanup_writers
        per_write = 1 if writers > 1 else 5
        try:
            async for stacks, depended in self.store.lifecycle_batches(self.batch, collected):
                policies = await self._policies_of(stacks)
                self._judge(
                    stacks, depended, policies, (serving, shifting), now, report, extend, expired
                )
                if len(extend) + len(expired) >= self.batch * per_write:
                    await self._write_behind(writing, extend, expired, collected, now, report)
            await self._write_behind(writing, extend, expired, collected, now, report)
            while writing:
                await writing.pop(0)
        finally:
            for task in writing:  # the pass failed: their transactions roll back
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        lifecycle = self.settings.lifecycle
        for stack in await self.store.garbage_due(
            now - lifecycle.garbage_grace, now - lifecycle.notice
        ):
            due = lifecycle.removal_at(stack.updated_at, stack.announced_at)
            if due is not None and now >= due:
                await self._reap(stack, report)
        await self._tell(report, "nelson")
        return report

    def _judge(
        self,
        stacks: Sequence[tuple[str, StackView]],
        depended: Mapping[int, int],
        policies: Mapping[int, ExpirationPolicy],
        receiving: tuple[set[str], set[int]],
        now: datetime,
        report: PassReport,
        extend: dict[int, datetime],
        expired: dict[int, tuple[str, str]],
    ) -> None:
        """Judge one batch (`receiving`: what gets traffic, or is about to): add what is kept
        to `extend` (id -> new expiry) and what expired to `expired` (id -> name and why)."""
        by_policy: dict[ExpirationPolicy, list[StackView]] = defaultdict(list)
        names: dict[int, str] = {}
        serving, shifting = receiving  # names the routers weigh; ids in an open shift
        for name, view in stacks:
            if name in serving or view.id in shifting:
                view = replace(view, receiving_traffic=True)
            policy = policies.get(view.id, ExpirationPolicy.RETAIN_ACTIVE)
            by_policy[policy].append(view)
            names[view.id] = name
        for policy, views in by_policy.items():
            decisions = expiration.review(
                policy,
                views,
                depended,
                now,
                grace_new=self.settings.lifecycle.new_stack_grace,
                extend_by=self.settings.lifecycle.extension_step,
            )
            report.judged += len(views)
            for stack_id, decision in decisions.items():
                if decision.verdict is Verdict.EXTEND and decision.expires_at is not None:
                    extend[stack_id] = decision.expires_at
                elif decision.verdict is Verdict.EXPIRE:
                    expired[stack_id] = (names[stack_id], decision.reason)

    async def _write_behind(
        self,
        writing: list[asyncio.Task[None]],
        extend: dict[int, datetime],
        expired: dict[int, tuple[str, str]],
        collected: set[int],
        now: datetime,
        report: PassReport,
    ) -> None:
        """Start writing these decisions in the background (added to `writing`) and empty
        them for the next batches; first wait for the oldest write while as many run as
        the store takes at once (raising its failure)."""
        while len(writing) >= self.store.cleanup_writers:
            await writing.pop(0)
        if not extend and not expired:
            return
        collected.update(expired)
        writing.append(asyncio.create_task(self._write(dict(extend), dict(expired), now, report)))
        extend.clear()
        expired.clear()

    async def _write(
        self,
        extend: dict[int, datetime],
        expired: dict[int, tuple[str, str]],
        now: datetime,
        report: PassReport,
    ) -> None:
        """Write the later expiries, then mark what expired as garbage, each audited with
        its reason."""
        await self.store.extend_expiries(extend)
        report.extended += len(extend)
        marked = await self.store.mark_garbage({i: why for i, (_, why) in expired.items()}, now)
        report.garbage.extend(Collected(i, expired[i][0]) for i in marked)

    async def announce_daily(self) -> CleanupAnnounced | None:
        """The day's digest, once per day across processes: at `announce_at`, or at the start
        of a daemon that was not running then. None before `announce_at` or when it was
        posted already today."""
        now = self.clock.now()
        if (now.hour, now.minute) < self.settings.lifecycle.announce_time:
            return None
        if not await self._claim_day(now):
            return None
        return await self.announce()

    async def _claim_day(self, now: datetime) -> bool:
        name = f"{DAILY}:{now.date().isoformat()}"
        if name in self._announced_days:
            return False
        if not await self.store.acquire_lease(name, self.holder, now + timedelta(days=2), now):
            return False
        self._announced_days.add(name)
        return True

    async def announce_now(self) -> CleanupAnnounced | None:
        """A person's `nelson announce`: the digest now; it counts as the day's digest."""
        now = self.clock.now()
        if (now.hour, now.minute) >= self.settings.lifecycle.announce_time:
            await self._claim_day(now)
        return await self.announce()

    async def announce(self) -> CleanupAnnounced | None:
        """The digest of what will be removed, per channel; marks every listed stack announced
        (its removal time counts from now). None when another process is announcing."""
        now = self.clock.now()
        if not await self.store.acquire_lease(
            ANNOUNCE_LEASE, self.holder, now + ANNOUNCE_HOLD, now
        ):
            return None
        pending = await self.store.pending_removals()
        await self.store.mark_announced(
            [p.stack.id for p in pending if p.stack.announced_at is None], now
        )
        removals: list[Removal] = []
        for item in pending:
            due = self.settings.lifecycle.removal_at(item.since, item.stack.announced_at or now)
            assert due is not None
            removals.append(Removal(item.stack, item.reason, max(due, now)))
        await self.store.release_lease(ANNOUNCE_LEASE, self.holder)
        removals.sort(key=lambda r: (r.stack.unit, r.stack.version, r.stack.name))
        channels = await self._channels_by_unit()
        per_channel: dict[str, list[Removal]] = defaultdict(list)
        for removal in removals:
            for channel in self._channels(channels, removal.stack.unit):
                per_channel[channel].append(removal)
        event = CleanupAnnounced(
            at=now,
            digests=tuple((c, tuple(r)) for c, r in per_channel.items()),
            removals=tuple(removals),
        )
        if removals:
            await self._audit(
                "cleanup-announced",
                f"{len(removals)} stacks",
                f"told {len(per_channel)} channels: " + ", ".join(per_channel),
            )
            await self.events.publish(event)
        return event

    async def keep(self, stack_ids: Sequence[int], who: Principal) -> str:
        """ "Keep 24h more": garbage goes back to where it was (ready or deprecated) and
        expires `keep_for` from now; a stack not collected yet just gets the later expiry.
        Needs the deploy role in each stack's namespace."""
        now = self.clock.now()
        until = now + self.settings.lifecycle.keep_for
        kept: list[str] = []
        skipped: list[str] = []
        stacks = await self._stacks(stack_ids)
        for stack in stacks:
            await self._allow(who, Role.DEPLOY, stack, "keep")
        for stack in stacks:
            if stack.status not in (StackStatus.GARBAGE, StackStatus.READY, StackStatus.DEPRECATED):
                skipped.append(f"{stack.name} (it is {stack.status.value})")
                continue
            back = (
                await self._status_before_garbage(stack.id)
                if stack.status is StackStatus.GARBAGE
                else None
            )
            try:
                # status, expiry and audit together: never back from garbage with the old expiry
                async with self.store.unit_of_work() as uow:
                    if back is not None:
                        await uow.change_status(
                            stack.id, back, f"kept until {_at(until)} by {who.label}", who.user_id
                        )
                    if stack.expires_at is None or stack.expires_at < until:
                        await uow.set_expiry(stack.id, until)
                    await uow.audit(
                        AuditEvent(
                            who.user_id, "keep", stack.name, True, f"until {_at(until)}", now
                        )
                    )
            except (IllegalTransition, Conflict):
                skipped.append(f"{stack.name} (it changed meanwhile)")
                continue
            kept.append(stack.name)
            await self.events.publish(
                StackProgress(stack.id, f"kept until {_at(until)} by {who.label}", now)
            )
        parts = []
        if kept:
            parts.append(f"Kept until {_at(until)}: {', '.join(kept)}.")
        if skipped:
            parts.append(f"Not kept: {', '.join(skipped)}.")
        return " ".join(parts) or "Nothing to keep."

    async def remove_now(self, stack_ids: Sequence[int], who: Principal) -> str:
        """ "Remove now": reap these garbage stacks at once (admins of their namespaces)."""
        stacks = await self._stacks(stack_ids)
        for stack in stacks:
            await self._allow(who, Role.ADMIN, stack, "remove")
        report = PassReport()
        skipped: list[str] = []
        for stack in stacks:
            if stack.status is not StackStatus.GARBAGE:
                skipped.append(f"{stack.name} (it is {stack.status.value})")
                continue
            await self.store.audit(
                AuditEvent(who.user_id, "remove", stack.name, True, "remove now", self.clock.now())
            )
            await self._reap(stack, report)
        await self._tell(report, who.label)
        parts = []
        if report.reaped:
            parts.append(f"Removed {', '.join(s.name for s in report.reaped)}.")
        if report.failed:
            parts.append(
                "Could not remove "
                + "; ".join(f"{s.name}: {why}" for s, why in report.failed)
                + ". The cleanup pass tries again."
            )
        if skipped:
            parts.append(f"Left alone: {', '.join(skipped)}.")
        return " ".join(parts) or "Nothing to remove."

    async def _stacks(self, stack_ids: Sequence[int]) -> list[Stack]:
        stacks = await self.store.stacks_by_ids(list(dict.fromkeys(stack_ids)))
        if not stacks:
            raise UserError("those stacks are gone.", "`stacks status garbage` lists what waits.")
        return stacks

    async def _allow(self, who: Principal, role: Role, stack: Stack, action: str) -> None:
        decision = authorize(self.settings.access, who, role, stack.namespace)
        if not decision.allowed:
            await self.store.audit(
                AuditEvent(
                    who.user_id, action, stack.name, False, decision.reason, self.clock.now()
                )
            )
            raise AccessDenied(
                f"{who.label} may not {action} {stack.name}: {decision.reason}.",
                "Ask an admin of this bot if you need to.",
            )

    async def _status_before_garbage(self, stack_id: int) -> StackStatus:
        for change in reversed(await self.store.status_history(stack_id)):
            if change.status is StackStatus.DEPRECATED:
                return StackStatus.DEPRECATED
            if change.status is StackStatus.READY:
                return StackStatus.READY
        return StackStatus.READY

    def _channels(self, channels: Mapping[str, list[str]], unit: str) -> list[str]:
        found = [c.lstrip("#") for c in channels.get(unit, [])]
        if self.settings.slack.operations_channel:
            found.append(self.settings.slack.operations_channel.lstrip("#"))
        return list(dict.fromkeys(found))

    async def _tell(self, report: PassReport, by: str) -> None:
        """One CleanupDone for what was reaped and for failures not reported before."""
        failed = [(s, why) for s, why in report.failed if s.id not in self._failing]
        self._failing |= {s.id for s, _ in report.failed}
        self._failing -= {s.id for s in report.reaped}
        if not report.reaped and not failed:
            return
        channels = await self._channels_by_unit()
        per_channel: dict[str, tuple[list[Stack], list[tuple[Stack, str]]]] = defaultdict(
            lambda: ([], [])
        )
        for stack in report.reaped:
            for channel in self._channels(channels, stack.unit):
                per_channel[channel][0].append(stack)
        for stack, why in failed:
            for channel in self._channels(channels, stack.unit):
                per_channel[channel][1].append((stack, why))
        await self.events.publish(
            CleanupDone(
                by=by,
                summaries=tuple((c, tuple(r), tuple(f)) for c, (r, f) in per_channel.items()),
                reaped=tuple(report.reaped),
                failed=tuple(failed),
            )
        )

    async def _reap(self, stack: Stack, report: PassReport) -> None:
        """Out of the route first (no request may reach what is going away), then off the
        scheduler; a stack that still has weight is left alone."""
        scheduler = self.schedulers.get(stack.datacenter)
        route = Route(stack.namespace, stack.unit, stack.version.major)
        try:
            if scheduler is None:  # what runs there cannot be removed, so it is not reaped
                raise RuntimeError(
                    f"datacenter '{stack.datacenter}' has no scheduler this bot drives"
                )
            router = self.routers.get(stack.datacenter)
            if router is not None:
                weight = (await router.weights(route)).get(stack.name, 0)
                if weight > 0:
                    raise RuntimeError(f"it still receives {weight / 10:g}% of the traffic")
                await router.remove(route, stack.name)
            await scheduler.delete(stack.name)
            if await scheduler.instances(stack.name):
                raise RuntimeError("instances are still there after deleting them")
            if self.secrets is not None:  # the token first, then its policy
                await self.secrets.release(stack)
        except Exception as exc:
            reason = str(exc) or exc.__class__.__name__
            report.failed.append((stack, reason))
            await self._audit("reap-failed", stack.name, f"will try again: {reason}", allowed=False)
            return
        try:
            await self.store.change_status(
                stack.id, StackStatus.TERMINATED, "reaped: removed from the datacenter", "nelson"
            )
        except (IllegalTransition, Conflict):
            return  # reaped by someone else at the same moment ("Remove now", another pass)
        report.reaped.append(stack)
        await self._audit("reaped", stack.name, "removed from the scheduler and the router")
        await self.events.publish(
            StackProgress(stack.id, "reaped", self.clock.now(), status=StackStatus.TERMINATED)
        )

    async def _channels_by_unit(self) -> dict[str, list[str]]:
        """Where to tell about each unit: the channels its latest manifest names."""
        channels: dict[str, list[str]] = {}
        for record in await self.store.manifests():
            channels.update((await self.manifests.policies(record.id)).channels)
        return channels

    async def _policies_of(
        self, stacks: Sequence[tuple[str, StackView]]
    ) -> dict[int, ExpirationPolicy]:
        """The policy of each stack, read from the manifest revision it was deployed with:
        running stacks keep the manifest they were deployed with, a later revision changes
        only what is deployed after it."""
        # read per batch, not kept: memory holds one batch however many releases there are
        revisions = await self.store.release_revisions(sorted({v.unit for _, v in stacks}))
        read: dict[int, Policies] = {}
        found: dict[int, ExpirationPolicy] = {}
        for _, view in stacks:
            manifest_id = revisions.get((view.unit, view.version))
            if manifest_id is None:
                continue
            policies = read.get(manifest_id)
            if policies is None:
                policies = read[manifest_id] = await self.manifests.policies(manifest_id)
            policy = policies.expiration.get((view.unit, view.plan))
            if policy is not None:
                found[view.id] = policy
        return found

    async def _audit(self, action: str, target: str, detail: str, allowed: bool = True) -> None:
        await self.store.audit(
            AuditEvent("nelson", action, target, allowed, detail, self.clock.now())
        )


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
