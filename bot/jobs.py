"""Periodic work of a running bot (APScheduler on the asyncio loop): expiring approvals whose
deadline passed, moving traffic shifts, the cleanup pass and its daily announcement,
forgetting old delivery ids. Each job is idempotent, so several replicas running it at once
do no harm: the Store lets one of them win each change, and leases in the database let one
replica run each cleanup pass and each announcement."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.bootstrap import Application
from bot.outage import OutageWatch, is_outage

log = logging.getLogger("nelson.jobs")

DELIVERY_MEMORY = timedelta(days=1)  # Slack retries within minutes; a day is ample


class Jobs:
    def __init__(self, application: Application) -> None:
        self.application = application
        self.scheduler = AsyncIOScheduler(timezone="UTC")
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
        self.scheduler.add_job(
            self.forget_deliveries,
            "interval",
            hours=1,
            coalesce=True,
            max_instances=1,
            id="forget-deliveries",
        )

    def start(self) -> None:
        self.outage = OutageWatch(self.application.clock, log)
        for job in self.scheduler.get_jobs():
            # a daily announcement is not skipped for a backoff that may end a second later
            daily = isinstance(job.trigger, CronTrigger)
            job.modify(func=self._guarded(job.id, job.func, backoff=not daily))
        self.scheduler.start()

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

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    async def expire_approvals(self) -> None:
        expired = await self.application.desk.expire_overdue()
        for approval in expired:
            log.info("approval #%s expired: %s", approval.id, approval.summary)

    async def move_traffic(self) -> None:
        if self.application.traffic is not None:
            await self.application.traffic.tick()

    async def clean_up(self) -> None:
        if self.application.lifecycle is None:
            return
        report = await self.application.lifecycle.run_once()
        if report.ran and (report.garbage or report.reaped or report.failed):
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
        await self.application.lifecycle.announce()  # if it fails, it is made again tomorrow

    async def forget_deliveries(self) -> None:
        before = self.application.clock.now() - DELIVERY_MEMORY
        await self.application.store.forget_deliveries(before)
