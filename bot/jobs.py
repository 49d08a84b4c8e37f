"""Periodic work of a running bot (APScheduler on the asyncio loop): expiring approvals whose
deadline passed, forgetting old delivery ids. Each job is idempotent, so several replicas
running it at once do no harm: the Store lets one of them win each change."""

from __future__ import annotations

import logging
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.bootstrap import Application

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
        self.scheduler.add_job(
            self.forget_deliveries,
            "interval",
            hours=1,
            coalesce=True,
            max_instances=1,
            id="forget-deliveries",
        )

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    async def expire_approvals(self) -> None:
        try:
            expired = await self.application.desk.expire_overdue()
        except Exception:
            log.exception("expiring approvals failed; will try again")
            return
        for approval in expired:
            log.info("approval #%s expired: %s", approval.id, approval.summary)

    async def move_traffic(self) -> None:
        if self.application.traffic is not None:
            await self.application.traffic.tick()

    async def forget_deliveries(self) -> None:
        before = self.application.desk.clock.now() - DELIVERY_MEMORY
        try:
            await self.application.store.forget_deliveries(before)
        except Exception:
            log.exception("forgetting old deliveries failed; will try again")
