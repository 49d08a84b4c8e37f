"""The periodic cleanup pass: judge every ready and deprecated stack by its expiration policy
(`domain.expiration`), extend the expiry of those retained, turn the expired into garbage,
and reap garbage after its grace: remove it from the scheduler and the router, then mark it
terminated. A reap that fails (scheduler down) is retried on the next pass and reported; a
stack is never marked terminated while its containers may still run.

Several bot processes may share one database: a pass runs only while its process holds the
`lifecycle` lease, so no cleanup runs twice."""

from __future__ import annotations

import logging
import secrets
import socket
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from commands.events import EventHub, StackProgress
from commands.ports import Clock, Route, Router, Scheduler, Store
from commands.settings import Settings
from domain import expiration
from domain.expiration import ExpirationPolicy, StackView, Verdict
from domain.manifest import ManifestInvalid, parse_manifest
from domain.records import AuditEvent, Stack
from domain.states import StackStatus

log = logging.getLogger("nelson.lifecycle")

LEASE = "lifecycle"
EXTENSION = timedelta(minutes=30)


@dataclass
class PassReport:
    ran: bool = True  # False: another process holds the lease
    judged: int = 0
    extended: int = 0
    garbage: list[Stack] = field(default_factory=list)
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
    ) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.clock = clock
        self.schedulers = dict(schedulers)
        self.routers = dict(routers)
        self.holder = f"{socket.gethostname()}:{secrets.token_hex(4)}"
        self._policies: dict[str, dict[tuple[str, str], ExpirationPolicy]] = {}  # by digest

    async def run_once(self) -> PassReport:
        now = self.clock.now()
        interval = self.settings.lifecycle.interval
        if not await self.store.acquire_lease(LEASE, self.holder, now + interval * 2, now):
            return PassReport(ran=False)
        report = PassReport()
        stacks, depended = await self.store.lifecycle_view()
        serving: set[str] = set()
        for router in self.routers.values():
            try:
                serving |= await router.serving()
            except Exception as exc:  # without knowing who serves, expire nothing
                log.warning("router unavailable (%s): no stack expires this pass", exc)
                return report
        policies = await self._policy_table()
        by_policy: dict[ExpirationPolicy, list[StackView]] = defaultdict(list)
        by_id = {s.id: s for s in stacks}
        for stack in stacks:
            if stack.status is StackStatus.GARBAGE:
                continue
            policy = policies.get((stack.unit, stack.plan), ExpirationPolicy.RETAIN_ACTIVE)
            by_policy[policy].append(
                StackView(
                    id=stack.id,
                    unit=stack.unit,
                    version=stack.version,
                    namespace=stack.namespace,
                    datacenter=stack.datacenter,
                    status=stack.status,
                    receiving_traffic=stack.name in serving,
                    created_at=stack.created_at,
                    expires_at=stack.expires_at,
                    plan=stack.plan,
                )
            )
        extend: dict[int, datetime] = {}
        expire: dict[int, str] = {}
        for policy, views in by_policy.items():
            decisions = expiration.review(
                policy,
                views,
                depended,
                now,
                grace_new=self.settings.lifecycle.new_stack_grace,
                extend_by=max(EXTENSION, interval * 3),
            )
            report.judged += len(views)
            for stack_id, decision in decisions.items():
                if decision.verdict is Verdict.EXTEND and decision.expires_at is not None:
                    extend[stack_id] = decision.expires_at
                elif decision.verdict is Verdict.EXPIRE:
                    expire[stack_id] = decision.reason
        await self.store.extend_expiries(extend)
        report.extended = len(extend)
        marked = await self.store.mark_garbage(expire, now)
        report.garbage = [by_id[stack_id] for stack_id in marked]
        await self.store.audit_many(
            [AuditEvent("nelson", "garbage", by_id[i].name, True, expire[i], now) for i in marked]
        )
        for stack in stacks:
            if stack.status is StackStatus.GARBAGE and expiration.reap_due(
                stack.updated_at, now, self.settings.lifecycle.garbage_grace
            ):
                await self._reap(stack, report)
        return report

    async def _reap(self, stack: Stack, report: PassReport) -> None:
        scheduler = self.schedulers.get(stack.datacenter)
        try:
            if scheduler is not None:
                await scheduler.delete(stack.name)
                if await scheduler.instances(stack.name):
                    raise RuntimeError("instances are still there after deleting them")
            router = self.routers.get(stack.datacenter)
            if router is not None:
                await router.remove(
                    Route(stack.namespace, stack.unit, stack.version.major), stack.name
                )
        except Exception as exc:
            reason = str(exc) or exc.__class__.__name__
            report.failed.append((stack, reason))
            await self._audit("reap-failed", stack.name, f"will try again: {reason}", allowed=False)
            return
        await self.store.change_status(
            stack.id, StackStatus.TERMINATED, "reaped: removed from the datacenter", "nelson"
        )
        report.reaped.append(stack)
        await self._audit("reaped", stack.name, "removed from the scheduler and the router")
        await self.events.publish(
            StackProgress(stack.id, "reaped", self.clock.now(), status=StackStatus.TERMINATED)
        )

    async def _policy_table(self) -> dict[tuple[str, str], ExpirationPolicy]:
        """(unit, plan) -> policy, from the latest manifests (parsed once per revision)."""
        table: dict[tuple[str, str], ExpirationPolicy] = {}
        for record in await self.store.manifests():
            cached = self._policies.get(record.digest)
            if cached is None:
                cached = {}
                try:
                    manifest = parse_manifest(record.text)
                except ManifestInvalid:
                    self._policies[record.digest] = cached  # judged by the defaults
                    continue
                kinds = {
                    u.name: "job" if u.workflow == "job" else "service" for u in manifest.units
                }
                for unit in manifest.units:
                    for plan in manifest.plans:
                        text = plan.expiration_policy
                        if text:
                            cached[(unit.name, plan.name)] = expiration.parse_policy(text)
                        else:
                            kind = "job" if plan.schedule is not None else kinds[unit.name]
                            cached[(unit.name, plan.name)] = expiration.default_policy(kind)
                self._policies[record.digest] = cached
            table.update(cached)
        return table

    async def _audit(self, action: str, target: str, detail: str, allowed: bool = True) -> None:
        await self.store.audit(
            AuditEvent("nelson", action, target, allowed, detail, self.clock.now())
        )
