"""The running bot, driven exactly as Slack drives it (signed HTTP requests, Socket Mode
envelopes), talking to the fake Slack workspace. Assertions are about what people would see."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.slack.messages import APPROVE_ACTION, REJECT_ACTION
from domain.approvals import ApprovalKind
from tests.e2e.slack_harness import RunningBot, Scripted, settings_for, start_bot
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_requests import (
    app_home_opened,
    app_mention,
    block_action,
    direct_message,
    encode_event,
    encode_form,
    encode_interactive,
    event_callback,
    retry_headers,
    slash_command,
    view_submission,
)

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
async def bot(fake: FakeSlack, tmp_path: Path) -> AsyncIterator[RunningBot]:
    running = await start_bot(settings_for(fake, tmp_path))
    yield running
    await running.shutdown()


async def slash(bot: RunningBot, fake: FakeSlack, text: str, user: str = "U1", **kw: str):
    url = fake.new_response_url()
    fields = slash_command(text, user_id=user, response_url=url, **kw)
    status, _ = await bot.post(encode_form(fields), FORM)
    assert status == 200
    return url.rsplit("/", 1)[1]


def response_text(response: dict) -> str:
    return FakeSlack.all_text(response)


async def test_slash_command_answers_through_response_url(bot: RunningBot, fake: FakeSlack) -> None:
    rid = await slash(bot, fake, "datacenters")
    await fake.wait_for(lambda: fake.responses.get(rid))
    answer = fake.responses[rid][0]
    assert answer["response_type"] == "in_channel"
    assert "dc-east" in response_text(answer) and "dc-west" in response_text(answer)


async def test_mistakes_are_ephemeral_with_usage_and_a_suggestion(
    bot: RunningBot, fake: FakeSlack
) -> None:
    rid = await slash(bot, fake, "deplyo howdy 1.0.0")
    await fake.wait_for(lambda: fake.responses.get(rid))
    answer = fake.responses[rid][0]
    assert answer["response_type"] == "ephemeral"
    assert "deploy" in response_text(answer)


async def test_refusals_name_the_rule_and_are_audited_with_the_slack_user(
    bot: RunningBot, fake: FakeSlack
) -> None:
    rid = await slash(bot, fake, "deploy howdy 1.0.0 to dc-east", user="U4")
    await fake.wait_for(lambda: fake.responses.get(rid))
    answer = fake.responses[rid][0]
    assert answer["response_type"] == "ephemeral"
    assert "access.rules[0]" in response_text(answer)
    events = await bot.application.store.audit_events()
    assert (events[0].actor, events[0].action, events[0].allowed) == ("U4", "deploy", False)
    assert not fake.messages("C1")


async def test_forged_and_stale_requests_are_refused_without_effect(
    bot: RunningBot, fake: FakeSlack
) -> None:
    url = fake.new_response_url()
    body = encode_form(slash_command("deploy howdy 1.0.0 to dc-east", response_url=url))
    assert (await bot.post(body, FORM, secret="f" * 32))[0] == 401
    stale = int(time.time()) - 6 * 60
    assert (await bot.post(body, FORM, timestamp=stale))[0] == 401
    status, _ = await bot.post(body, FORM, headers={"X-Slack-Signature": "v0=00"})
    assert status == 401
    # a genuine request after them is answered: had a forged one been taken, it would be too
    later = fake.new_response_url()
    assert (await bot.post(encode_form(slash_command("whoami", response_url=later)), FORM))[
        0
    ] == 200
    await fake.wait_for(lambda: fake.responses.get(later.rsplit("/", 1)[1]))
    assert not fake.responses.get(url.rsplit("/", 1)[1])
    assert [e for e in await bot.application.store.audit_events() if e.actor != "nelson"] == []
    assert not fake.messages("C1")


async def test_deploy_follows_progress_in_one_parent_and_its_thread(
    bot: RunningBot, fake: FakeSlack
) -> None:
    await slash(bot, fake, "deploy howdy 1.0.0 to dc-east,dc-west")
    # the parent goes to the asking channel and to the manifest's notification channel
    for channel in ("C1", "C3"):
        await fake.wait_for(lambda c=channel: fake.messages(c))  # type: ignore[misc]
    parent = fake.messages("C1")[0]
    await fake.wait_for(lambda: "done" in fake.messages("C1")[0].text)
    final = fake.all_text(fake.messages("C1")[0])
    assert "<@U1> asked to *deploy howdy 1.0.0 to dc-east/dev, dc-west/dev*" in final
    assert "`dc-east/dev`" in final and "`dc-west/dev`" in final and "*ready*" in final
    assert fake.messages("C1")[0].edits >= 1
    await fake.wait_for(
        lambda: "is done" in "\n".join(m.text for m in fake.thread("C1", parent.ts))
    )
    thread = "\n".join(m.text for m in fake.thread("C1", parent.ts))
    for step in ("resolve done", "replicate done", "launch done", "warming up", "ready"):
        assert f"`dc-east/dev` {step}" in thread and f"`dc-west/dev` {step}" in thread
    assert len(fake.messages("C1")) == 1  # nothing else was posted in the channel
    operation = (await bot.application.store.recent_operations("U1"))[0]
    assert operation.outcome == "succeeded"


async def test_graph_answers_in_a_thread_with_a_picture(bot: RunningBot, fake: FakeSlack) -> None:
    await slash(bot, fake, "deploy howdy 1.0.0 to dc-east")
    await fake.wait_for(lambda: fake.messages("C1") and "done" in fake.messages("C1")[0].text)
    await slash(bot, fake, "graph howdy")
    await fake.wait_for(lambda: fake.uploaded_files("C1"))
    [picture] = fake.uploaded_files("C1")
    assert picture.content is not None and picture.content.startswith(b"\x89PNG")
    assert picture.filename == "howdy-dependencies.png" and "howdy" in picture.alt_txt
    parent = next(m for m in fake.messages("C1") if m.text.startswith("Dependencies of howdy"))
    assert picture.thread_ts == parent.ts
    thread = fake.thread("C1", parent.ts)
    assert "howdy--1-0-0" in fake.all_text(thread[0])  # the details, then the picture
    assert thread[-1].files == [picture]
    # where the bot may not post, the answer still comes, through the response_url
    rid = await slash(bot, fake, "graph howdy", channel_id="C9", channel_name="elsewhere")
    await fake.wait_for(lambda: fake.responses.get(rid))
    assert "Dependencies of howdy" in response_text(fake.responses[rid][0])
    assert len(fake.uploaded_files()) == 1


async def test_a_failed_step_marks_the_parent_failed_with_the_reason(
    fake: FakeSlack, tmp_path: Path
) -> None:
    running = await start_bot(settings_for(fake, tmp_path), Scripted(fail_in=("dc-west",)))
    try:
        await slash(running, fake, "deploy howdy 1.0.0 to dc-east,dc-west")
        await fake.wait_for(lambda: fake.messages("C1") and "failed" in fake.messages("C1")[0].text)
        text = fake.all_text(fake.messages("C1")[0])
        assert "image not found in staging" in text and "1 of 2" in text
        parent = fake.messages("C1")[0]
        await fake.wait_for(
            lambda: "failed:" in "\n".join(m.text for m in fake.thread("C1", parent.ts))
        )
    finally:
        await running.shutdown()


async def test_rate_limits_are_honoured_and_nothing_is_lost(
    bot: RunningBot, fake: FakeSlack
) -> None:
    fake.force_ratelimit("chat.update", times=2, retry_after=1)
    await slash(bot, fake, "deploy howdy 1.0.0 to dc-east")
    await fake.wait_for(lambda: fake.messages("C1") and "done" in fake.messages("C1")[0].text)
    assert fake.ratelimited["chat.update"] == 2


async def test_mentions_answer_in_a_thread_and_retries_are_ignored(
    bot: RunningBot, fake: FakeSlack
) -> None:
    envelope = event_callback(app_mention("<@UBOT> datacenters", ts="1700000000.000100"))
    body = encode_event(envelope)
    assert (await bot.post(body, "application/json"))[0] == 200
    await fake.wait_for(lambda: fake.calls_to("chat.postMessage"))
    for attempt in (1, 2):
        status, _ = await bot.post(body, "application/json", headers=retry_headers(attempt))
        assert status == 200
    # a new mention after the retries is answered: the retries were handled by then
    later = event_callback(app_mention("<@UBOT> datacenters", ts="1700000000.000200"))
    assert (await bot.post(encode_event(later), "application/json"))[0] == 200
    await fake.wait_for(lambda: len(fake.calls_to("chat.postMessage")) >= 2)
    posts = fake.calls_to("chat.postMessage")
    assert [p.params["thread_ts"] for p in posts] == ["1700000000.000100", "1700000000.000200"]
    assert "dc-east" in FakeSlack.all_text(posts[0].params)


async def test_direct_messages_get_answers(bot: RunningBot, fake: FakeSlack) -> None:
    body = encode_event(event_callback(direct_message("whoami", user="U2", channel="D1")))
    assert (await bot.post(body, "application/json"))[0] == 200
    await fake.wait_for(lambda: fake.calls_to("chat.postMessage"))
    post = fake.calls_to("chat.postMessage")[0]
    assert post.params["channel"] == "D1" and "U2" in FakeSlack.all_text(post.params)


async def deployed_stack(bot: RunningBot, fake: FakeSlack) -> int:
    await slash(bot, fake, "deploy howdy 1.0.0 to dc-east in prod")
    await fake.wait_for(lambda: fake.messages("C1") and "done" in fake.messages("C1")[0].text)
    operation = (await bot.application.store.recent_operations("U1"))[0]
    return operation.stack_ids[0]


async def ask_approval(bot: RunningBot, stack_id: int) -> int:
    approval = await bot.application.desk.request(
        ApprovalKind.TRAFFIC_SHIFT,
        namespace="prod",
        datacenter="dc-east",
        summary="shift howdy 1.x in dc-east/prod to 1.0.0, linear over 10 minutes",
        requested_by="U1",
        stack_id=stack_id,
    )
    assert approval is not None
    return approval.id


def approval_message(fake: FakeSlack, approval_id: int):
    parent = fake.messages("C1")[0]
    found = [
        m for m in fake.thread("C1", parent.ts) if f"Approval #{approval_id}" in fake.all_text(m)
    ]
    return found[0] if found else None


async def click(
    bot: RunningBot, fake: FakeSlack, action: str, approval_id: int, user: str, ts: str
) -> None:
    payload = block_action(
        action,
        str(approval_id),
        user_id=user,
        message_ts=ts,
        response_url=fake.new_response_url(),
        trigger_id=fake.issue_trigger(user),
    )
    status, _ = await bot.post(encode_interactive(payload), FORM)
    assert status == 200


async def confirm(
    bot: RunningBot, fake: FakeSlack, user: str, opened: int, reason: str = ""
) -> dict:  # type: ignore[type-arg]
    """Submit the confirmation modal opened for `user` after `opened` modals, as Slack does
    when they press its button (typing `reason` for a rejection); returns the modal."""
    await fake.wait_for(lambda: len(fake.views) > opened and fake.modal(user) is not None)
    modal = fake.modal(user)
    assert modal is not None
    values = {"reason": {"text": reason}} if reason else {}
    payload = view_submission(modal, user_id=user, values=values)
    status, body = await bot.post(encode_interactive(payload), FORM)
    assert status == 200 and not body.strip()  # an empty ack closes the modal
    return modal


async def decide(
    bot: RunningBot,
    fake: FakeSlack,
    action: str,
    approval_id: int,
    user: str,
    ts: str,
    reason: str = "",
) -> dict:  # type: ignore[type-arg]
    """Click Approve or Reject and confirm in the modal."""
    opened = len(fake.views)
    await click(bot, fake, action, approval_id, user, ts)
    return await confirm(bot, fake, user, opened, reason)


def has_buttons(message) -> bool:  # type: ignore[no-untyped-def]
    return any(b.get("type") == "actions" for b in message.blocks or [])


async def test_approval_buttons(bot: RunningBot, fake: FakeSlack) -> None:
    stack_id = await deployed_stack(bot, fake)
    approval_id = await ask_approval(bot, stack_id)
    await fake.wait_for(lambda: approval_message(fake, approval_id))
    message = approval_message(fake, approval_id)
    assert has_buttons(message)
    # someone who may not approve: an ephemeral refusal, nothing changes
    await click(bot, fake, APPROVE_ACTION, approval_id, "U4", message.ts)
    await fake.wait_for(lambda: fake.ephemerals)
    assert fake.ephemerals[-1].user == "U4" and "may not approve" in fake.ephemerals[-1].text
    # the requester may not approve their own request
    await click(bot, fake, APPROVE_ACTION, approval_id, "U1", message.ts)
    await fake.wait_for(lambda: len(fake.ephemerals) == 2)
    assert "allow_self_approval" in fake.ephemerals[-1].text
    approval = await bot.application.store.approval(approval_id)
    assert approval is not None and approval.status == "pending"
    assert not fake.views  # nobody who may not decide gets a confirmation
    # an allowed approver: the confirmation restates what they approve, nothing is decided
    # until they confirm
    opened = len(fake.views)
    await click(bot, fake, APPROVE_ACTION, approval_id, "U2", message.ts)
    await fake.wait_for(lambda: fake.modal("U2"))
    modal = fake.modal("U2")
    assert modal is not None
    restated = fake.all_text({"blocks": modal["blocks"]})
    assert "shift howdy 1.x" in restated and "howdy--1-0-0" in restated
    assert "howdy 1.0.0" in restated and "`dc-east`" in restated and "`prod`" in restated
    approval = await bot.application.store.approval(approval_id)
    assert approval is not None and approval.status == "pending" and not approval.approvers
    await confirm(bot, fake, "U2", opened)
    await fake.wait_for(lambda: not has_buttons(approval_message(fake, approval_id)))
    # a second click on a stale message: told how it ended, no modal
    opened = len(fake.views)
    await click(bot, fake, APPROVE_ACTION, approval_id, "U2", message.ts)
    await fake.wait_for(lambda: any("is approved by U2" in e.text for e in fake.ephemerals))
    assert len(fake.views) == opened
    decided = fake.all_text(approval_message(fake, approval_id))
    assert "*Approved* by <@U2>" in decided
    approval = await bot.application.store.approval(approval_id)
    assert approval is not None and approval.approvers == ("U2",)
    assert approval.status == "approved"
    audit = await bot.application.store.audit_events(target=f"approval:{approval_id}")
    assert {(e.actor, e.allowed) for e in audit} >= {("U4", False), ("U1", False), ("U2", True)}


async def test_buttons_keep_working_after_a_restart(fake: FakeSlack, tmp_path: Path) -> None:
    settings = settings_for(fake, tmp_path)
    first = await start_bot(settings)
    stack_id = await deployed_stack(first, fake)
    approval_id = await ask_approval(first, stack_id)
    await fake.wait_for(lambda: approval_message(fake, approval_id))
    await first.shutdown()
    second = await start_bot(settings, clock=first.clock)
    try:
        message = approval_message(fake, approval_id)
        modal = await decide(
            second, fake, REJECT_ACTION, approval_id, "U3", message.ts, "error rate too high"
        )
        assert any(b.get("type") == "input" for b in modal["blocks"])  # the reason field
        await fake.wait_for(lambda: not has_buttons(approval_message(fake, approval_id)))
        decided = fake.all_text(approval_message(fake, approval_id))
        assert "*Rejected* by <@U3>" in decided and "error rate too high" in decided
    finally:
        await second.shutdown()


async def test_text_approvals_and_expiry(fake: FakeSlack, tmp_path: Path) -> None:
    settings = settings_for(fake, tmp_path, approvals={"prod": {"required": 1, "deadline": "2s"}})
    running = await start_bot(settings)
    try:
        stack_id = await deployed_stack(running, fake)
        kept = await ask_approval(running, stack_id)
        rid = await slash(running, fake, "approvals", user="U2")
        await fake.wait_for(lambda: fake.responses.get(rid))
        assert f"#{kept}" in response_text(fake.responses[rid][0])
        running.clock.advance(2.1)  # past the deadline; the sweep runs on its own schedule
        # nobody decides: the sweep expires it and says so in place of the buttons
        await fake.wait_for(
            lambda: (m := approval_message(fake, kept)) is not None and not has_buttons(m),
            timeout=15,
        )
        assert "Expired" in fake.all_text(approval_message(fake, kept))
        rid = await slash(running, fake, f"approve {kept}", user="U2")
        await fake.wait_for(lambda: fake.responses.get(rid))
        assert "already expired" in response_text(fake.responses[rid][0])
    finally:
        await running.shutdown()


async def test_a_vote_shows_its_count_and_the_decision_replaces_it(
    fake: FakeSlack, tmp_path: Path
) -> None:
    """Two approvals needed: the first vote's count reaches the request (through the outbox,
    in order), the second decides and the buttons go."""
    settings = settings_for(fake, tmp_path, approvals={"prod": {"required": 2, "deadline": "1h"}})
    running = await start_bot(settings)
    try:
        stack_id = await deployed_stack(running, fake)
        approval_id = await ask_approval(running, stack_id)
        await fake.wait_for(lambda: approval_message(fake, approval_id))
        rid = await slash(running, fake, f"approve {approval_id}", user="U2")
        await fake.wait_for(lambda: fake.responses.get(rid))
        assert "1 of 2" in response_text(fake.responses[rid][0])
        await fake.wait_for(lambda: "1 of 2" in fake.all_text(approval_message(fake, approval_id)))
        assert has_buttons(approval_message(fake, approval_id))
        rid = await slash(running, fake, f"approve {approval_id}", user="U3")
        await fake.wait_for(lambda: fake.responses.get(rid))
        await fake.wait_for(lambda: not has_buttons(approval_message(fake, approval_id)))
        assert "*Approved* by <@U2>, <@U3>" in fake.all_text(approval_message(fake, approval_id))
    finally:
        await running.shutdown()


async def test_approve_as_text(bot: RunningBot, fake: FakeSlack) -> None:
    stack_id = await deployed_stack(bot, fake)
    approval_id = await ask_approval(bot, stack_id)
    rid = await slash(bot, fake, f"approve {approval_id}", user="U3")
    await fake.wait_for(lambda: fake.responses.get(rid))
    assert "Approved" in response_text(fake.responses[rid][0])
    await fake.wait_for(
        lambda: (m := approval_message(fake, approval_id)) is not None and not has_buttons(m)
    )


async def test_home_tab(bot: RunningBot, fake: FakeSlack) -> None:
    stack_id = await deployed_stack(bot, fake)
    await ask_approval(bot, stack_id)
    body = encode_event(event_callback(app_home_opened("U2")))
    assert (await bot.post(body, "application/json"))[0] == 200
    await fake.wait_for(lambda: fake.home("U2"))
    home = json.dumps(fake.home("U2"))
    assert "shift howdy 1.x" in home and APPROVE_ACTION in home
    assert "dc-east" in home and "howdy--1-0-0" in home
    # the replicas alive: this process, by its heartbeat
    assert "Processes alive (1)" in home and f"pid {os.getpid()} " in home
    assert "nelson serve" in home and "taken over by another within" in home
    # U1 asked for it: no buttons for them, but their deployment is listed
    body = encode_event(event_callback(app_home_opened("U1")))
    await bot.post(body, "application/json")
    await fake.wait_for(lambda: fake.home("U1"))
    home = json.dumps(fake.home("U1"))
    assert APPROVE_ACTION not in home and "deploy howdy 1.0.0 to dc-east/prod" in home


async def test_socket_mode(fake: FakeSlack, tmp_path: Path) -> None:
    running = await start_bot(settings_for(fake, tmp_path, socket_mode=True))
    try:
        await fake.wait_socket_connected()
        url = fake.new_response_url()
        ack = await fake.socket_send(
            "slash_commands", slash_command("datacenters", response_url=url)
        )
        assert ack["envelope_id"]
        rid = url.rsplit("/", 1)[1]
        await fake.wait_for(lambda: fake.responses.get(rid))
        assert "dc-east" in response_text(fake.responses[rid][0])
        envelope = event_callback(app_mention("<@UBOT> datacenters", ts="1700000001.000100"))
        await fake.socket_send("events_api", envelope)
        await fake.socket_send("events_api", envelope, retry_attempt=1, retry_reason="timeout")
        await fake.wait_for(lambda: fake.calls_to("chat.postMessage"))
        later = event_callback(app_mention("<@UBOT> datacenters", ts="1700000001.000200"))
        await fake.socket_send("events_api", later)
        await fake.wait_for(lambda: len(fake.calls_to("chat.postMessage")) >= 2)
        posts = fake.calls_to("chat.postMessage")
        assert [p.params["thread_ts"] for p in posts] == ["1700000001.000100", "1700000001.000200"]
        # no public endpoint in Socket Mode, health still answers
        status, _ = await running.post(b"{}", "application/json")
        assert status == 404
    finally:
        await running.shutdown()
