"""Periodic work of a running bot (APScheduler on the asyncio loop): expiring approvals whose
deadline passed, moving traffic shifts, the cleanup pass and its daily announcement,
renewing stacks' Vault tokens, sweeping stale Lighthouse keys, forgetting old delivery ids.
Each job is idempotent, so several replicas running it at once do no harm: the Store lets one
of them win each change, and leases in the database let one replica run each cleanup pass
and each announcement."""

from __future__ import annotations

import logging
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from adapters.router.lighthouse import LighthouseRouter
from bot.bootstrap import Application
from commands.settings import Settings
from domain.records import StackQuery
from domain.states import LIVE_STATUSES, StackStatus

log = logging.getLogger("nelson.jobs")

DELIVERY_MEMORY = timedelta(days=1)  # Slack retries within minutes; a day is ample


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

    async def clean_up(self) -> None:
        if self.application.lifecycle is None:
            return
        try:
            report = await self.application.lifecycle.run_once()
        except Exception:
            log.exception("the cleanup pass failed; the next one tries again")
            return
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
        try:
            await self.application.lifecycle.announce()
        except Exception:
            log.exception("the cleanup announcement failed; it is made again tomorrow")

    async def tend_secrets(self) -> None:
        """Renew live stacks' Vault tokens; revoke what failed and terminated stacks left."""
        if self.application.secrets is None:
            return
        try:
            report = await self.application.secrets.tend()
        except Exception:
            log.exception("tending Vault tokens failed; will try again")
            return
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
        try:
            await self.application.store.forget_deliveries(before)
        except Exception:
            log.exception("forgetting old deliveries failed; will try again")
