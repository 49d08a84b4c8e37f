"""Locks and freezes through the conversation, on a real SQLite store: what they refuse, what
they name, when they end, and the emergency way through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.storage import open_store
from bot.conversation import Answer, Conversation, Outcome
from bot.terminal import render
from commands.access import Principal
from commands.context import Services
from commands.events import EmergencyDeploy, Event, EventHub
from commands.settings import Settings
from domain.approvals import ApprovalKind
from domain.records import StackQuery
from tests.fakes.clock import FakeClock
from tests.unit.test_handlers import ACCOUNTS, ADMIN, DEV, GUEST, RecordingWorkflow

BASE: dict[str, Any] = {
    "namespaces": ["dev", "qa", "prod"],
    "datacenters": {
        "dc-east": {"staging_registry": "stage:5000", "runtime_registry": "east:5000"},
        "dc-west": {"staging_registry": "stage:5000", "runtime_registry": "west:5000"},
    },
    "access": {
        "admins": ["UADMIN"],
        "rules": [
            {"namespace": "*", "view": ["*"]},
            {"namespace": "dev", "deploy": ["UDEV"]},
            {"namespace": "qa", "deploy": ["UDEV"], "admin": ["UQAADMIN"]},
        ],
    },
}
QA_ADMIN = Principal("UQAADMIN", "qa admin")
# Scheduled windows: qa at the weekend (the fake clock starts on a Wednesday)
WEEKENDS = {"freezes": [{"namespace": "qa", "days": ["sat", "sun"], "reason": "weekend"}]}


class Bench:
    def __init__(self, tmp: Path, clock: FakeClock, **extra: Any) -> None:
        self.tmp, self.clock = tmp, clock
        self.settings = Settings.model_validate({**BASE, **extra})
        self.workflow = RecordingWorkflow()
        self.events = EventHub()
        self.heard: list[Event] = []

        async def hear(event: Event) -> None:
            self.heard.append(event)

        self.events.subscribe(hear)

    async def open(self) -> None:
        self.store = await open_store(f"sqlite:///{self.tmp / 'nelson.db'}", clock=self.clock)
        self.conversation = Conversation(
            Services(self.settings, self.store, self.workflow, self.clock, self.events)
        )

    async def say(self, text: str, who: Principal = ADMIN) -> Answer:
        return await self.conversation.answer(text, who)

    async def ok(self, text: str, who: Principal = ADMIN) -> str:
        answer = await self.say(text, who)
        assert answer.outcome is Outcome.OK, render(answer.reply)
        return render(answer.reply, width=300)

    async def fails(self, text: str, who: Principal = ADMIN) -> str:
        answer = await self.say(text, who)
        assert answer.outcome is Outcome.USER_ERROR, render(answer.reply)
        return render(answer.reply, width=300)


@pytest.fixture
async def b(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Bench]:
    bench = Bench(tmp_path, clock)
    await bench.open()
    await bench.ok(f"manifest acme/accounts\n```\n{ACCOUNTS}\n```")
    yield bench
    await bench.store.close()


async def stack_count(b: Bench) -> int:
    return len((await b.store.list_stacks(StackQuery(limit=100))).stacks)


async def test_a_lock_refuses_deploy_commit_and_redeploy_naming_who_why_and_until(
    b: Bench,
) -> None:
    await b.ok("deploy accounts 1.0.0 to dc-east in dev", DEV)
    stack = (await b.store.list_stacks(StackQuery(limit=5))).stacks[0]
    said = await b.ok("lock accounts in dev for 2h because the database migrates", DEV)
    assert "Locked accounts in dev until 2026-11-25 14:00 UTC" in said
    before = await stack_count(b)
    for text in (
        "deploy accounts 1.0.1 to dc-east in dev",
        f"redeploy {stack.name}",
    ):
        refused = await b.fails(text, DEV)
        assert "accounts in dev is locked by UDEV because the database migrates" in refused
        assert "until 2026-11-25 14:00 UTC" in refused
    assert "emergency because" in await b.fails("deploy accounts 1.0.1 in dev", DEV)
    assert await stack_count(b) == before
    audit = [e for e in await b.store.audit_events() if not e.allowed]
    assert {e.action for e in audit} >= {"deploy", "redeploy"}
    assert all("held: accounts in dev is locked" in e.detail for e in audit)
    # elsewhere nothing is held
    await b.ok("deploy accounts 1.0.1 to dc-east in qa", DEV)
    # the clock ends it
    b.clock.advance(timedelta(hours=2, seconds=1))
    await b.ok("deploy accounts 1.0.2 to dc-east in dev", DEV)


async def test_commit_is_held_and_unlock_lifts_and_says_what_still_holds(b: Bench) -> None:
    await b.ok("deploy accounts 1.0.0 to dc-east in dev", DEV)
    await b.ok("lock accounts because of incident 42")  # every namespace, until unlocked
    await b.ok("lock accounts in qa because qa is being rebuilt", DEV)
    refused = await b.fails("commit accounts 1.0.0 to qa", DEV)
    assert "Cannot commit accounts 1.0.0 now" in refused and "(and 1 more)" in refused
    lifted = await b.ok("unlock accounts in qa", DEV)
    assert "Unlocked accounts in qa" in lifted
    assert "Still in force: accounts in every namespace is locked by UADMIN" in lifted
    # a lock of every namespace needs the deploy role in every namespace to lift
    assert "may not deploy in namespace 'prod'" in await b.fails("unlock accounts", DEV)
    await b.ok("unlock accounts")
    await b.ok("commit accounts 1.0.0 to qa", DEV)
    assert "has no lock to lift" in await b.fails("unlock accounts", DEV)


async def test_locking_needs_the_deploy_role_and_relocking_replaces(b: Bench) -> None:
    assert "may not deploy in namespace 'prod'" in await b.fails("lock accounts in prod", DEV)
    assert "may not deploy" in await b.fails("lock accounts in dev", GUEST)
    await b.ok("lock accounts in dev for 1h", DEV)
    said = await b.ok("lock accounts in dev for 3h because longer", DEV)
    assert "replaces the lock" in said
    listed = await b.ok("locks", GUEST)
    assert listed.count("accounts in dev") == 1 and "longer" in listed
    assert "no unit 'acounts'" in await b.fails("lock acounts", DEV)


async def test_freeze_is_for_admins_and_emergency_deploys_go_through_announced(
    b: Bench,
) -> None:
    assert "may not admin in namespace 'qa'" in await b.fails("freeze qa until 18:00", DEV)
    said = await b.ok("freeze qa until 18:00 because release day", QA_ADMIN)
    assert "Froze qa until 2026-11-25 18:00 UTC" in said
    refused = await b.fails("deploy accounts 1.0.0 to dc-east in qa", DEV)
    assert "qa is frozen by UQAADMIN because release day, until 2026-11-25 18:00 UTC" in refused
    # only admins may go through, and only with a reason
    assert "only admins may" in await b.fails(
        "deploy accounts 1.0.0 to dc-east in qa emergency because it is down", DEV
    )
    assert "needs a reason" in await b.fails("deploy accounts 1.0.0 in qa emergency", QA_ADMIN)
    assert "because goes with emergency" in await b.fails(
        "deploy accounts 1.0.0 in qa because I say so", QA_ADMIN
    )
    assert not [e for e in b.heard if isinstance(e, EmergencyDeploy)]
    await b.ok("deploy accounts 1.0.0 to dc-east in qa emergency because it is down", QA_ADMIN)
    told = [e for e in b.heard if isinstance(e, EmergencyDeploy)]
    assert len(told) == 1 and told[0].reason == "it is down" and told[0].actor == "UQAADMIN"
    assert "qa is frozen by UQAADMIN" in told[0].overridden[0]
    audit = [e for e in await b.store.audit_events() if e.action == "emergency-deploy"]
    assert [(e.actor, e.allowed) for e in audit][:2] == [("UQAADMIN", True), ("UDEV", False)]
    # the freeze covers nested namespaces only under it, and only its datacenter when named
    await b.ok("unfreeze qa", QA_ADMIN)
    await b.ok("freeze qa at dc-west until 2026-11-26T06:00", QA_ADMIN)
    await b.ok("deploy accounts 1.0.1 to dc-east in qa", DEV)
    assert "qa at dc-west is frozen" in await b.fails("deploy accounts 1.0.1 in qa", DEV)
    assert "has passed" in await b.fails("freeze qa until 2026-11-20", QA_ADMIN)
    assert "not a date on the calendar" in await b.fails("freeze qa until 2026-02-30")


async def test_scheduled_windows_hold_on_their_days_and_cannot_be_lifted_from_chat(
    tmp_path: Path,
) -> None:
    saturday = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
    clock = FakeClock(saturday)
    bench = Bench(tmp_path, clock, **WEEKENDS)
    await bench.open()
    try:
        await bench.ok(f"manifest acme/accounts\n```\n{ACCOUNTS}\n```")
        refused = await bench.fails("deploy accounts 1.0.0 to dc-east in qa", DEV)
        assert "qa is frozen (scheduled window)" in refused
        assert "because weekend, until 2026-11-30 00:00 UTC" in refused  # Sunday included
        listed = await bench.ok("locks", GUEST)
        assert "scheduled" in listed and "every sat, sun 00:00-24:00 UTC" in listed
        assert "lifted only in the configuration" in await bench.fails("unfreeze qa")
        await bench.ok("deploy accounts 1.0.0 to dc-east in dev", DEV)
        clock.set(datetime(2026, 11, 30, 0, 0, tzinfo=UTC))  # Monday
        await bench.ok("deploy accounts 1.0.0 to dc-east in qa", DEV)
    finally:
        await bench.store.close()


async def test_locks_survive_a_restart(b: Bench) -> None:
    await b.ok("lock accounts in dev for 1h because kept", DEV)
    await b.ok("freeze prod until 2026-12-01")
    await b.store.close()
    await b.open()
    assert "locked by UDEV because kept" in await b.fails("deploy accounts 1.0.0 in dev", DEV)
    listed = await b.ok("locks", GUEST)
    assert "accounts in dev" in listed and "prod" in listed


async def test_locks_lists_only_what_the_asker_may_see(tmp_path: Path, clock: FakeClock) -> None:
    bench = Bench(
        tmp_path,
        clock,
        access={
            "admins": ["UADMIN"],
            "rules": [{"namespace": "dev", "view": ["UDEV"], "deploy": ["UDEV"]}],
        },
    )
    await bench.open()
    try:
        await bench.ok(f"manifest acme/accounts\n```\n{ACCOUNTS}\n```")
        await bench.ok("lock accounts in dev", DEV)
        await bench.ok("freeze prod until 2026-12-01 because secret")
        listed = await bench.ok("locks", DEV)
        assert "accounts in dev" in listed and "secret" not in listed
        assert "may not view" in await bench.fails("locks", GUEST)
    finally:
        await bench.store.close()


async def test_approvals_lists_only_what_the_asker_may_see_and_says_who_may_decide(
    tmp_path: Path, clock: FakeClock
) -> None:
    from commands.approval_desk import ApprovalDesk

    bench = Bench(
        tmp_path,
        clock,
        access={
            "admins": ["UADMIN"],
            "rules": [{"namespace": "dev", "view": ["UDEV"], "approve": ["UDEV"]}],
        },
        approvals={"dev": {"needed": True}, "prod": {"needed": True}},
    )
    await bench.open()
    try:
        desk = ApprovalDesk(bench.settings, bench.store, bench.events, clock)
        for namespace in ("dev", "prod"):
            await desk.request(
                ApprovalKind.TRAFFIC_SHIFT,
                namespace=namespace,
                datacenter="dc-east",
                summary=f"shift accounts in {namespace}",
                requested_by="UOTHER",
            )
        listed = await bench.ok("approvals", DEV)
        assert "shift accounts in dev" in listed and "in prod" not in listed
        assert "Waiting for approval (1)" in listed and "YOU MAY" in listed
        assert "yes" in listed.split("shift accounts in dev", 1)[1].splitlines()[0]
        everything = await bench.ok("approvals", ADMIN)
        assert "Waiting for approval (2)" in everything
    finally:
        await bench.store.close()
