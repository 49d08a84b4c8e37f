"""Periodic work of a running bot (APScheduler on the asyncio loop): a heartbeat in the Store
(so `nelson run` knows something drives shifts), expiring approvals whose deadline passed,
moving traffic shifts, the cleanup pass and its daily announcement (posted at start when the
process was not running at `announce_at` and nobody posted it that day), renewing stacks'
Vault tokens, sweeping stale Lighthouse keys, forgetting old delivery ids, taking over the
deploys whose workflow claim expired (a replica died), bringing routers to the route table.
Each job is idempotent, so several replicas running it at once do no harm: the Store lets one
of them win each change, and leases in the database let one replica run each cleanup pass and
each announcement, and drive each route's traffic shift."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from adapters.router.lighthouse import LighthouseRouter
from bot.bootstrap import Application
from bot.outage import OutageWatch, is_outage
from commands import daemons
from commands.rollback import Rollbacks
from commands.settings import Settings
from domain.records import StackQuery
from domain.states import LIVE_STATUSES, StackStatus

log = logging.getLogger("nelson.jobs")

DELIVERY_MEMORY = timedelta(days=1)  # Slack retries within minutes; a day is ample
STOP_WAIT = 20.0  # seconds a job under way may take to finish when the process stops


def renewal_interval(settings: Settings) -> float:
    """Seconds between renewals of stacks' Vault tokens: a third of the shortest period, so
    two renewals in a row may fail before a token expires."""
    periods = [
        dc.vault.token_period.total_seconds()
        for dc in settings.datacenters.values()
        if dc.vault is not None
    ]
    return min(periods, default=3600.0) / 3


class Jobs:
    def __init__(self, application: Application, kind: str = "nelson serve") -> None:
        self.application = application
        self.kind = kind  # what `nelson run` reports as driving shifts: "nelson serve", …
        # the heartbeat's name is the workflow claims' holder, so `datacenters` can tell
        # which replica holds which deploys
        deploys = application.deploys
        self.holder = (
            deploys.holder
            if deploys is not None
            else f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
        )
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self._running: set[asyncio.Task[Any]] = set()
        self.scheduler.add_job(
            self.heartbeat,
            "interval",
            seconds=daemons.HEARTBEAT.total_seconds(),
            coalesce=True,
            max_instances=1,
            id="heartbeat",
        )
        if application.deploys is not None:
            self.scheduler.add_job(
                self.take_over_workflows,
                "interval",
                seconds=application.deploys.claim_ttl / 3,
                coalesce=True,
                max_instances=1,
                id="take-over-workflows",
            )
        self.scheduler.add_job(
            self.expire_approvals,
            "interval",
            seconds=application.settings.slack.approvals_sweep,
            coalesce=True,
            max_instances=1,
            id="expire-approvals",
        )
        if application.traffic is not None:
            self.scheduler.add_job(
                self.move_traffic,
                "interval",
                seconds=application.settings.traffic.step_interval.total_seconds(),
                coalesce=True,  # a run missed while busy or down is caught up, not replayed
                max_instances=1,
                id="move-traffic",
            )
        if application.routers:
            self.scheduler.add_job(
                self.converge_routes,
                "interval",
                seconds=application.settings.traffic.step_interval.total_seconds(),
                coalesce=True,
                max_instances=1,
                id="converge-routes",
            )
        if application.lifecycle is not None:
            lifecycle = application.settings.lifecycle
            self.scheduler.add_job(
                self.clean_up,
                "interval",
                seconds=lifecycle.interval.total_seconds(),
                coalesce=True,
                max_instances=1,
                id="clean-up",
            )
            hour, minute = lifecycle.announce_time
            self.scheduler.add_job(
                self.announce_cleanup,
                "cron",
                hour=hour,
                minute=minute,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=3600,  # a bot busy or restarting at that minute still tells
                id="announce-cleanup",
            )
        if any(isinstance(r, LighthouseRouter) for r in application.routers.values()):
            self.scheduler.add_job(
                self.sweep_lighthouse,
                "interval",
                seconds=application.settings.lifecycle.interval.total_seconds(),
                coalesce=True,
                max_instances=1,
                id="sweep-lighthouse",
            )
        if application.secrets is not None:
            self.scheduler.add_job(
                self.tend_secrets,
                "interval",
                seconds=renewal_interval(application.settings),
                coalesce=True,
                max_instances=1,
                id="tend-secrets",
            )
        self.scheduler.add_job(
            self.forget_deliveries,
            "interval",
            hours=1,
            coalesce=True,
            max_instances=1,
            id="forget-deliveries",
        )

    async def start(self) -> None:
        self.outage = OutageWatch(self.application.clock, log)
        for job in self.scheduler.get_jobs():
            # a daily announcement is not skipped for a backoff that may end a second later
            daily = isinstance(job.trigger, CronTrigger)
            job.modify(func=self._tracked(self._guarded(job.id, job.func, backoff=not daily)))
        await self._guarded("heartbeat", self.heartbeat)()
        if self.application.routers:  # a replica that starts brings its routers to the table
            await self._guarded("converge-routes", self.converge_routes, backoff=False)()
        self.scheduler.start()
        if self.application.lifecycle is not None:
            # not running at `announce_at` today: post the day's digest if nobody did
            missed = self._guarded("announce-missed", self.announce_cleanup, backoff=False)
            self.scheduler.add_job(self._tracked(missed), id="announce-missed")

    def _guarded(
        self, name: str, run: Callable[[], Awaitable[None]], *, backoff: bool = True
    ) -> Callable[[], Awaitable[None]]:
        """Each job's failures end here: an unreachable database is one warning and growing
        pauses until it answers again; anything else is logged with its traceback, and the
        next run tries again."""

        @functools.wraps(run)
        async def guarded() -> None:
            if backoff and not self.outage.due():
                return
            try:
                await run()
            except Exception as exc:
                if is_outage(exc):
                    self.outage.failed(name, exc)
                else:
                    log.exception("%s failed; the next run tries again", name)
                return
            self.outage.succeeded()

        return guarded

    def _tracked(self, job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """The job, remembered while it runs so that `stop` can let it finish."""

        @functools.wraps(job)
        async def run() -> None:
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                await job()
            finally:
                if task is not None:
                    self._running.discard(task)

        return run

    async def stop(self) -> None:
        if self.scheduler.running:
            # No new runs; shutting the scheduler down now would cancel the runs under way.
            self.scheduler.pause()
        if self._running:  # a step or a pass under way ends before the store closes
            await asyncio.wait(set(self._running), timeout=STOP_WAIT)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.application.traffic is not None:  # another replica drives its routes at once
            await self.application.traffic.release_leases()
        try:
            await self.application.store.forget_daemon(self.holder)
        except Exception as exc:  # stale after a while anyway
            log.warning("could not remove this process's heartbeat (%s)", type(exc).__name__)

    async def heartbeat(self) -> None:
        await self.application.store.heartbeat(self.holder, self.kind, self.application.clock.now())

    async def take_over_workflows(self) -> None:
        """Drive the unfinished deploys nobody holds: those of a replica that died (its claims
        expired) and those an earlier run of this process left."""
        if self.application.deploys is not None:
            started = await self.application.deploys.take_over()
            if started:
                log.info("workflows: took over %d unfinished deploy(s)", started)

    async def expire_approvals(self) -> None:
        for approval in await self.application.desk.close_counted():
            log.info("approval #%s: its votes approve it; closed", approval.id)
        await self.application.desk.remind_due()
        expired = await self.application.desk.expire_overdue()
        for approval in expired:
            log.info("approval #%s expired: %s", approval.id, approval.summary)

    async def move_traffic(self) -> None:
        traffic = self.application.traffic
        if traffic is not None:
            await traffic.tick()
            await Rollbacks(traffic).carry_out_approved()

    async def converge_routes(self) -> None:
        """Bring each router to the route table: changes other replicas made, a router that
        was restarted or changed by hand."""
        for datacenter, router in self.application.routers.items():
            try:
                await router.converge(wait=False)
            except Exception as exc:
                if is_outage(exc):
                    raise
                log.warning("router of %s did not converge: %s; will try again", datacenter, exc)

    async def clean_up(self) -> None:
        if self.application.lifecycle is None:
            return
        report = await self.application.lifecycle.run_once()
        if not report.ran:
            log.info("cleanup: another process is running a pass; skipped")
        else:
            log.info(
                "cleanup: judged %d, extended %d, garbage %d, reaped %d, failed %d",
                report.judged,
                report.extended,
                len(report.garbage),
                len(report.reaped),
                len(report.failed),
            )

    async def announce_cleanup(self) -> None:
        if self.application.lifecycle is None:
            return
        event = await self.application.lifecycle.announce_daily()  # else made again tomorrow
        if event is not None and not event.removals:
            log.info("cleanup digest: nothing waits for removal")
        elif event is not None:
            log.info(
                "cleanup digest: %d stack(s) will be removed; told %s",
                len(event.removals),
                ", ".join(channel for channel, _ in event.digests) or "no channel",
            )
            for removal in event.removals:
                log.info(
                    "  %s: %s; after %s",
                    removal.stack.name,
                    removal.reason,
                    removal.remove_at.strftime("%Y-%m-%d %H:%M UTC"),
                )

    async def tend_secrets(self) -> None:
        """Renew live stacks' Vault tokens; revoke what failed and terminated stacks left."""
        if self.application.secrets is None:
            return
        report = await self.application.secrets.tend()
        for stack in report.expired:
            log.warning("the Vault token of %s had expired before it was renewed", stack)
        for what, why in report.failed:
            log.warning("Vault: %s: %s (will try again)", what, why)
        if report.revoked:
            log.info("Vault: removed the tokens and policies of %s", ", ".join(report.revoked))

    async def sweep_lighthouse(self) -> None:
        """Delete Lighthouse keys of stacks the bot no longer knows (terminated, failed or
        never its own): a reap that ran while Consul was down leaves them behind."""
        for datacenter, router in self.application.routers.items():
            if not isinstance(router, LighthouseRouter):
                continue
            statuses = (*LIVE_STATUSES, StackStatus.GARBAGE)  # garbage is still routed
            query = StackQuery(datacenter=datacenter, statuses=statuses, limit=100_000)
            try:
                page = await self.application.store.list_stacks(query)
                removed = await router.sweep({s.name for s in page.stacks})
            except Exception:
                log.exception("sweeping Lighthouse keys in %s failed; will try again", datacenter)
                continue
            if removed:
                log.info("Lighthouse in %s: removed the keys of %s", datacenter, ", ".join(removed))

    async def forget_deliveries(self) -> None:
        before = self.application.clock.now() - DELIVERY_MEMORY
        await self.application.store.forget_deliveries(before)
