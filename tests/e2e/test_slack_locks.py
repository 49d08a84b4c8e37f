"""Locks, freezes and emergency deploys, driven through the fake Slack workspace exactly as
people would: slash commands, clicks on approval buttons, and what they see in return."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.slack.lock_buttons import UNLOCK_ACTION
from bot.slack.messages import APPROVE_ACTION
from tests.e2e.slack_harness import RunningBot, settings_for, start_bot
from tests.e2e.test_slack import (
    approval_message,
    ask_approval,
    decide,
    deployed_stack,
    has_buttons,
    response_text,
    slash,
)
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_requests import (
    app_home_opened,
    block_action,
    encode_event,
    encode_interactive,
    event_callback,
)

OPERATIONS = "C2"


@pytest.fixture
async def bot(fake: FakeSlack, tmp_path: Path) -> AsyncIterator[RunningBot]:
    settings = settings_for(
        fake,
        tmp_path,
        access={
            "admins": ["U9"],
            "rules": [
                {
                    "namespace": "*",
                    "view": ["*"],
                    "deploy": ["U1", "U2"],
                    "approve": ["U1", "U2", "U3"],
                }
            ],
        },
        slack={"operations_channel": OPERATIONS},
    )
    running = await start_bot(settings)
    yield running
    await running.shutdown()


async def answer(bot: RunningBot, fake: FakeSlack, text: str, user: str) -> dict:  # type: ignore[type-arg]
    rid = await slash(bot, fake, text, user=user)
    await fake.wait_for(lambda: fake.responses.get(rid))
    return fake.responses[rid][0]


async def test_a_locked_unit_refuses_deploys_in_chat_naming_who_and_why(
    bot: RunningBot, fake: FakeSlack
) -> None:
    said = await answer(bot, fake, "lock howdy in prod for 2h because the database migrates", "U1")
    assert said["response_type"] == "in_channel" and "Locked howdy in prod" in response_text(said)
    refused = await answer(bot, fake, "deploy howdy 1.0.0 to dc-east in prod", "U2")
    assert refused["response_type"] == "ephemeral"
    text = response_text(refused)
    assert "howdy in prod is locked by U1 because the database migrates" in text
    assert "emergency because" in text
    assert not await bot.application.store.recent_operations("U2")
    listed = response_text(await answer(bot, fake, "locks", "U3"))
    assert "howdy in prod" in listed and "the database migrates" in listed
    await answer(bot, fake, "unlock howdy in prod", "U1")
    await slash(bot, fake, "deploy howdy 1.0.0 to dc-east in prod", user="U2")
    await fake.wait_for(lambda: fake.messages("C1") and "done" in fake.messages("C1")[0].text)


async def test_an_emergency_deploy_goes_through_a_freeze_and_is_announced(
    bot: RunningBot, fake: FakeSlack
) -> None:
    await answer(bot, fake, "freeze prod until 2999-01-01 because of the audit", "U9")
    refused = await answer(
        bot, fake, "deploy howdy 1.0.0 to dc-east in prod emergency because it is down", "U2"
    )
    assert refused["response_type"] == "ephemeral" and "only admins may" in response_text(refused)
    await slash(
        bot, fake, "deploy howdy 1.0.0 to dc-east in prod emergency because it is down", user="U9"
    )
    # announced in the operations channel and in the unit's channel (C3), besides the deploy
    for channel in (OPERATIONS, "C3"):

        def announced(c: str = channel) -> bool:
            return any("Emergency deploy" in m.text for m in fake.messages(c))

        await fake.wait_for(announced)
    told = next(m for m in fake.messages(OPERATIONS) if "Emergency deploy" in m.text)
    whole = fake.all_text(told)
    assert "<@U9>" in whole and "it is down" in whole and "prod is frozen by U9" in whole
    audit = [e for e in await bot.application.store.audit_events() if e.action.startswith("emer")]
    assert {(e.actor, e.allowed) for e in audit} == {("U9", True), ("U2", False)}
    await fake.wait_for(
        lambda: any(
            m.text.startswith("deploy howdy") and "done" in m.text for m in fake.messages("C1")
        )
    )


async def test_approving_a_shift_is_refused_while_frozen_and_works_after(
    bot: RunningBot, fake: FakeSlack
) -> None:
    stack_id = await deployed_stack(bot, fake)
    approval_id = await ask_approval(bot, stack_id)
    await fake.wait_for(lambda: approval_message(fake, approval_id))
    await answer(bot, fake, "freeze prod at dc-east until 23:59 because change freeze", "U9")
    message = approval_message(fake, approval_id)
    await decide(bot, fake, APPROVE_ACTION, approval_id, "U2", message.ts)
    await fake.wait_for(lambda: fake.ephemerals)
    assert fake.ephemerals[-1].user == "U2"
    assert "would start a traffic shift" in fake.ephemerals[-1].text
    assert "prod at dc-east is frozen by U9 because change freeze" in fake.ephemerals[-1].text
    approval = await bot.application.store.approval(approval_id)
    assert approval is not None and approval.status == "pending" and not approval.approvers
    await answer(bot, fake, "unfreeze prod", "U9")
    await decide(bot, fake, APPROVE_ACTION, approval_id, "U2", message.ts)
    await fake.wait_for(lambda: not has_buttons(approval_message(fake, approval_id)))


async def test_approvers_are_reminded_once_before_the_deadline(
    fake: FakeSlack, tmp_path: Path
) -> None:
    settings = settings_for(
        fake,
        tmp_path,
        approvals={
            "prod": {"required": 1, "deadline": "1h", "remind_before": "10m", "approvers": ["U3"]}
        },
    )
    running = await start_bot(settings)
    try:
        stack_id = await deployed_stack(running, fake)
        approval_id = await ask_approval(running, stack_id)
        await fake.wait_for(lambda: approval_message(fake, approval_id))
        parent = fake.messages("C1")[0]

        def reminders() -> list[str]:
            return [m.text for m in fake.thread("C1", parent.ts) if ":alarm_clock:" in m.text]

        running.clock.advance(40 * 60)  # 20 minutes before the deadline: not yet
        await asyncio.sleep(0.6)  # three sweeps
        assert not reminders()
        running.clock.advance(11 * 60)
        await fake.wait_for(reminders)
        assert f"<@U3>: approval #{approval_id} (0 of 1) expires" in reminders()[0]
        await asyncio.sleep(0.6)
        assert len(reminders()) == 1
    finally:
        await running.shutdown()


async def test_the_home_tab_lists_locks_and_freezes_with_buttons_for_who_may_lift(
    bot: RunningBot, fake: FakeSlack
) -> None:
    fake.users["U9"] = {"name": "erin", "real_name": "Erin"}  # the admin
    await answer(bot, fake, "lock howdy in prod for 1h because migrating", "U1")
    await answer(bot, fake, "freeze dev until 23:59 because demo day", "U9")

    async def home_of(user: str) -> dict:  # type: ignore[type-arg]
        before = fake.home(user)
        body = encode_event(event_callback(app_home_opened(user)))
        assert (await bot.post(body, "application/json"))[0] == 200
        await fake.wait_for(lambda: fake.home(user) is not None and fake.home(user) != before)
        home = fake.home(user)
        assert home is not None
        return home

    def lifts(home: dict) -> dict[str, str]:  # type: ignore[type-arg]
        return {
            b["accessory"]["text"]["text"]: b["accessory"]["value"]
            for b in home["blocks"]
            if b.get("accessory", {}).get("action_id") == UNLOCK_ACTION
        }

    home = await home_of("U2")
    text = fake.all_text(home)
    assert "howdy in prod is locked by U1 because migrating" in text
    assert "dev is frozen by U9 because demo day" in text
    assert set(lifts(home)) == {"Unlock"}  # U2 may deploy, not unfreeze
    assert set(lifts(await home_of("U9"))) == {"Unlock", "Unfreeze"}
    assert lifts(await home_of("U4")) == {}  # U4 may only look
    # U2 lifts the lock from the tab; the tab is published again without it
    click = block_action(
        UNLOCK_ACTION,
        lifts(home)["Unlock"],
        user_id="U2",
        message_ts="",
        response_url=fake.new_response_url(),
        channel_id="",
    )
    click["container"] = {"type": "view", "view_id": "VU2"}
    click.pop("channel")
    click.pop("message")
    assert (await bot.post(encode_interactive(click), "application/x-www-form-urlencoded"))[
        0
    ] == 200
    await fake.wait_for(lambda: "howdy in prod is locked" not in fake.all_text(fake.home("U2")))
    assert "dev is frozen" in fake.all_text(fake.home("U2"))
    assert not [lock for lock in await bot.application.store.locks() if lock.kind == "lock"]
    audit = [e for e in await bot.application.store.audit_events() if e.action == "unlock"]
    assert [(e.actor, e.allowed) for e in audit] == [("U2", True)]
