"""The front end's defences, piece by piece: signature and body checks, ids in buttons,
identities by id only, quoting user text, redacting addresses, telling an outage apart,
rejection reasons kept."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from adapters.storage import SqlStore, open_store
from adapters.storage.urls import async_url, safe
from bot.outage import OutageWatch, describe, is_outage
from bot.slack.cleanup import stack_ids
from bot.slack.guard import Refusal, check_signature, parse_body, text_at
from bot.slack.messages import approval_message, button_value
from commands.access import Principal, Role, authorize
from commands.approval_desk import REJECT, ApprovalDesk
from commands.approval_desk import describe as describe_approval
from commands.context import Services
from commands.events import EventHub
from commands.ports import StoreError
from commands.settings import AccessRule, AccessSettings, Settings
from commands.text import clip, normalise
from domain.approvals import ApprovalKind
from domain.redaction import redact, redacted
from tests.fakes.clock import FakeClock

SECRET = "0123456789abcdef0123456789abcdef"


def signed(body: bytes, timestamp: str = "1700000000") -> dict[str, str]:
    digest = hmac.new(
        SECRET.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256
    ).hexdigest()
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={digest}"}


# -- signatures ------------------------------------------------------------------------------


def test_a_good_signature_passes() -> None:
    assert check_signature(SECRET, signed(b"a=b"), b"a=b") is None


@pytest.mark.parametrize(
    "timestamp", ["abc", "", "1e9", "1700000000.5", "9" * 5000, " 1700000000", "\uff11\uff17"]
)
def test_malformed_timestamps_are_401(timestamp: str) -> None:
    headers = {**signed(b"a=b"), "X-Slack-Request-Timestamp": timestamp}
    refusal = check_signature(SECRET, headers, b"a=b")
    assert refusal == Refusal(401, "missing or malformed X-Slack-Request-Timestamp")


@pytest.mark.parametrize("signature", ["", "v0=00", "v1=" + "0" * 64, "v0=\udcff" * 10, "V0=ab"])
def test_malformed_signatures_are_401(signature: str) -> None:
    headers = {**signed(b"a=b"), "X-Slack-Signature": signature}
    refusal = check_signature(SECRET, headers, b"a=b")
    assert refusal is not None and refusal.status == 401


def test_a_changed_body_or_timestamp_fails() -> None:
    headers = signed(b"a=b")
    assert check_signature(SECRET, headers, b"a=c") is not None
    assert check_signature(SECRET, {**headers, "X-Slack-Request-Timestamp": "1700000001"}, b"a=b")
    assert check_signature("f" * 32, headers, b"a=b") is not None


# -- bodies ----------------------------------------------------------------------------------

FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    "raw,content_type",
    [
        (b"text=\xff", FORM),
        (b"text=%ff", FORM),
        (b"text=x", FORM + "; charset=bogus"),
        (b"{not json", "application/json"),
        (b"[1,2]", "application/json"),
        (b"payload=null", FORM),
        (b"payload=1", FORM),
        (b"payload=%22x%22", FORM),
        (b"payload=[]", FORM),
        (b"payload=" + b"[" * 100_000, FORM),
        (b"payload=%7B%7D&payload=%7B%7D", FORM),
        (b'{"type": "event_callback", "event": "x"}', "application/json"),
        (b'{"type": "event_callback", "event": [1]}', "application/json"),
        (b'{"type": 3}', "application/json"),
        (b"", FORM),
    ],
)
def test_malformed_bodies_are_400(raw: bytes, content_type: str) -> None:
    refusal = parse_body(raw, content_type)
    assert isinstance(refusal, Refusal) and refusal.status == 400


def click(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": "U1"},
        "container": {"channel_id": "C1"},
        "actions": [{"action_id": "approval.approve", "value": "1"}],
    }
    payload.update(changes)
    return payload


@pytest.mark.parametrize(
    "changes",
    [
        {"actions": []},
        {"actions": "approve"},
        {"actions": [{"value": "1"}]},
        {"actions": [{"action_id": 5}]},
        {"actions": [{"action_id": "a", "value": {"x": 1}}]},
        {"user": "U1"},
        {"user": {"id": ["U1"]}},
        {"container": "C1"},
        {"message": [1]},
    ],
)
def test_clicks_of_the_wrong_shape_are_400(changes: dict[str, Any]) -> None:
    import json
    from urllib.parse import quote

    raw = b"payload=" + quote(json.dumps(click(**changes))).encode()
    assert isinstance(parse_body(raw, FORM), Refusal)


def test_well_formed_bodies_parse_as_listeners_see_them() -> None:
    assert parse_body(b"command=%2Fnelson&text=lint+payload", FORM) == {
        "command": "/nelson",
        "text": "lint payload",
    }
    assert parse_body(b'{"type": "url_verification", "challenge": "c"}', FORM) == {
        "type": "url_verification",
        "challenge": "c",
    }


def test_text_at_never_trusts_the_shape() -> None:
    assert text_at({"user": {"id": "U1"}}, "user", "id") == "U1"
    assert text_at({"user": "U1"}, "user", "id") == ""
    assert text_at({"user": {"id": 7}}, "user", "id") == ""
    assert text_at(["x"], "user") == ""


# -- ids in buttons --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,expected",
    [
        ("12", 12),
        ("99999999999999999999", None),
        ("9223372036854775807", None),  # 19 digits: more than any id the bot hands out
        ("999999999999999999", 999999999999999999),
        ("0", None),
        ("-3", None),
        ("\uff11\uff12", None),
        ("x", None),
        ("", None),
    ],
)
def test_button_values_are_bounded_ids(value: str, expected: int | None) -> None:
    assert button_value({"actions": [{"value": value}]}) == expected


def test_button_values_of_other_kinds_are_none() -> None:
    assert button_value({"actions": [{"value": 12}]}) is None
    assert button_value({"actions": "x"}) is None
    assert button_value({}) is None


def test_cleanup_buttons() -> None:
    assert stack_ids("12,13") == [12, 13]
    assert stack_ids("12,99999999999999999999") is None  # names a stack no one can have
    assert stack_ids("x") == []
    assert stack_ids("") == []


# -- identities ------------------------------------------------------------------------------

BUILT_IN = AccessSettings(admins=("local",), rules=(AccessRule(namespace="*", view=("*",)),))


def test_a_slack_user_named_like_the_console_is_not_the_console() -> None:
    impostor = Principal("U0IMPOSTOR", "local")
    assert not authorize(BUILT_IN, impostor, Role.ADMIN, "prod").allowed
    console = Principal("local", "local", local=True)
    assert authorize(BUILT_IN, console, Role.ADMIN, "prod").allowed


def test_a_slack_id_that_is_not_slack_shaped_claims_nothing() -> None:
    assert not authorize(BUILT_IN, Principal("local"), Role.ADMIN, "prod").allowed


def test_names_never_match_access_entries() -> None:
    access = AccessSettings(
        admins=("U0ADMIN", "probe"),
        rules=(AccessRule(namespace="*", view=("*",), approve=("alice",)),),
    )
    stranger = Principal("U0STRANGER", "probe")
    assert not authorize(access, stranger, Role.APPROVE, "prod").allowed
    assert not authorize(access, Principal("U0ALICE", "alice"), Role.APPROVE, "prod").allowed
    assert authorize(access, Principal("U0ADMIN", "whoever"), Role.APPROVE, "prod").allowed


def test_groups_match_by_id_and_handle_from_slack_only() -> None:
    access = AccessSettings(rules=(AccessRule(namespace="*", deploy=("S0OPS", "@release")),))
    assert authorize(access, Principal("U1", groups=frozenset({"S0OPS"})), Role.DEPLOY, "x").allowed
    member = Principal("U2", groups=frozenset({"@release"}))
    assert authorize(access, member, Role.DEPLOY, "x").allowed
    assert not authorize(access, Principal("U3", "@release"), Role.DEPLOY, "x").allowed
    assert not authorize(access, Principal("S0OPS"), Role.DEPLOY, "x").allowed


# -- quoting and redacting -------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["```", "*bold*", "_it_", "~gone~", "`code`", "a ``` b"])
def test_quoted_input_cannot_pair_up_with_formatting(typed: str) -> None:
    quoted = clip(typed)
    for mark in "`*_~":
        assert mark + mark not in quoted
        for index, char in enumerate(quoted):
            if char == mark:
                assert quoted[index - 1 : index] in ("\u200b", "")
                assert quoted[index + 1 : index + 2] in ("\u200b", "")
    assert normalise(quoted) == typed  # pasted back, it reads as typed


def test_plain_names_are_quoted_as_they_are() -> None:
    assert clip("Bad_Name") == "Bad_Name"
    assert clip("howdy--1-0-0") == "howdy--1-0-0"


@pytest.mark.parametrize(
    "address,shown",
    [
        ("http://user:pw@nomad:4646", "http://user:***@nomad:4646"),
        ("https://s3cr3t@nomad:4646/v1", "https://***@nomad:4646/v1"),
        ("ci:hunter2@registry:5000", "ci:***@registry:5000"),
        ("http://consul:8500/?token=abc&dc=x", "http://consul:8500/?token=***&dc=x"),
        ("http://vault:8200?X-Vault-Token=abc", "http://vault:8200?X-Vault-Token=***"),
        ("unix:///var/run/docker.sock", "unix:///var/run/docker.sock"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
    ],
)
def test_addresses_are_redacted(address: str, shown: str) -> None:
    assert redact(address) == shown


def test_settings_are_redacted_all_the_way_down() -> None:
    data = {"a": ["http://u:p@h"], "b": {"c": "http://h?token=t"}, "d": 3}
    assert redacted(data) == {"a": ["http://u:***@h"], "b": {"c": "http://h?token=***"}, "d": 3}


def test_a_database_url_with_a_bad_port_is_a_one_line_error() -> None:
    with pytest.raises(StoreError, match="is the port a number"):
        async_url("postgresql://nelson:pw@db:abc/nelson")
    assert safe("postgresql://nelson:pw@db:abc/nelson") == "(unparseable database URL)"


# -- outages ---------------------------------------------------------------------------------


def test_outages_are_told_apart_from_faults() -> None:
    refused = OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))
    assert is_outage(refused)
    assert "refused" in describe(refused) and "SELECT" not in describe(refused)
    assert not is_outage(IntegrityError("INSERT", {}, ValueError("duplicate")))
    assert not is_outage(KeyError("x"))
    try:
        try:
            raise refused
        except OperationalError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as wrapped:
        assert is_outage(wrapped)


def test_the_watch_warns_once_backs_off_and_says_when_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    log = logging.getLogger("test.outage")
    watch = OutageWatch(clock, log)
    refused = OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))
    with caplog.at_level(logging.INFO, logger="test.outage"):
        assert watch.due()
        for _ in range(6):
            watch.failed("sweeping", refused)
            assert not watch.due()
            clock.advance(timedelta(seconds=30))
            assert watch.due()
        watch.failed("sweeping", refused)
        clock.advance(timedelta(seconds=9))
        assert not watch.due()  # the pause grew to its longest
        clock.advance(timedelta(seconds=1))
        watch.succeeded()
        watch.succeeded()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "unreachable" in messages[0] and "reachable again" in messages[1]


# -- rejection reasons -----------------------------------------------------------------------


@pytest.fixture
async def sqlite_store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqlStore]:
    store = await open_store(f"sqlite:///{tmp_path / 'desk.db'}", clock=clock)
    yield store
    await store.close()


async def test_a_rejection_keeps_its_reason(sqlite_store: SqlStore, clock: FakeClock) -> None:
    settings = Settings(
        access=AccessSettings(rules=(AccessRule(namespace="*", view=("*",), approve=("U2",)),))
    )
    desk = ApprovalDesk(settings, sqlite_store, EventHub(), clock)
    approval = await desk.request(
        ApprovalKind.TRAFFIC_SHIFT,
        namespace="prod",
        datacenter="dc",
        summary="shift",
        requested_by="U1",
    )
    assert approval is not None
    outcome = await desk.decide(approval.id, Principal("U2"), REJECT, "error rate too high")
    assert "error rate too high" in outcome.message
    stored = await sqlite_store.approval(approval.id)
    assert stored is not None and stored.reason == "error rate too high"
    assert describe_approval(stored) == "rejected by U2 (error rate too high)"
    _, blocks = approval_message(stored)
    assert "error rate too high" in str(blocks[-1])
    audit = await sqlite_store.audit_events()
    assert any(e.action == "rejected" and "error rate too high" in e.detail for e in audit)


# -- pasted manifests ------------------------------------------------------------------------

NO_VIEW = Settings.model_validate(
    {"access": {"rules": [{"namespace": "*", "view": ["U0VIEWER"]}]}, "namespaces": ["dev"]}
)
MANIFEST_UNIT = (
    "  - name: u{i}\n    description: unit {i}\n    ports:\n      - default->8080/http\n"
)


def big_manifest(units: int) -> str:
    return "units:\n" + "".join(MANIFEST_UNIT.format(i=i) for i in range(units))


@pytest.fixture
def conversation(sqlite_store: SqlStore, clock: FakeClock) -> Any:
    from bot.conversation import Conversation
    from tests.unit.test_handlers import RecordingWorkflow

    return Conversation(Services(NO_VIEW, sqlite_store, RecordingWorkflow(), clock))


async def test_lint_needs_view_access(conversation: Any) -> None:
    refused = await conversation.answer("lint\n```\nunits: []\n```", Principal("U0STRANGER"))
    assert not refused.reply.ok and "may not view" in refused.reply.title
    allowed = await conversation.answer("lint\n```\nunits: []\n```", Principal("U0VIEWER"))
    assert "may not" not in allowed.reply.title


async def test_a_paste_over_the_limit_is_refused_clearly(conversation: Any) -> None:
    from commands.handlers.catalogue import MAX_PASTED_BYTES

    text = big_manifest(MAX_PASTED_BYTES // 60)
    assert len(text) > MAX_PASTED_BYTES
    answer = await conversation.answer(f"lint\n```\n{text}\n```", Principal("U0VIEWER"))
    assert not answer.reply.ok
    assert "64 KiB" in answer.reply.title and "nelson lint manifest" in str(answer.reply.blocks)


async def test_a_big_paste_is_read_off_the_event_loop(conversation: Any) -> None:
    """While a large manifest is being checked, another request is answered first."""
    import asyncio

    text = big_manifest(600)  # under the limit, and a good part of a second to check
    order: list[str] = []

    async def say(what: str) -> None:
        await conversation.answer(what, Principal("U0VIEWER"))
        order.append(what.split()[0])

    lint = asyncio.create_task(say(f"lint\n```\n{text}\n```"))
    await asyncio.sleep(0)  # the lint has started
    await say("whoami")
    await lint
    assert order == ["whoami", "lint"]


# -- anything at all -------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.binary(max_size=300),
    content_type=st.sampled_from([FORM, "application/json", "", "text/plain; charset=latin-1"]),
    timestamp=st.text(max_size=20),
    signature=st.text(max_size=80),
)
def test_any_bytes_and_headers_are_refused_or_parsed_never_raised(
    raw: bytes, content_type: str, timestamp: str, signature: str
) -> None:
    headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}
    assert check_signature(SECRET, headers, raw) is not None  # no valid signature by chance
    parsed = parse_body(raw, content_type)
    assert isinstance(parsed, dict | Refusal)


@settings(max_examples=300, deadline=None)
@given(
    payload=st.dictionaries(
        st.sampled_from(
            ["type", "user", "actions", "container", "channel", "message", "event", "view"]
        ),
        JSONISH,
        max_size=6,
    )
)
def test_any_payload_shape_is_refused_or_safe_to_read(payload: dict[str, Any]) -> None:
    import json
    from urllib.parse import quote

    raw = b"payload=" + quote(json.dumps(payload)).encode()
    parsed = parse_body(raw, FORM)
    if isinstance(parsed, Refusal):
        return
    # what the listeners read, read without surprise
    for path in (("user", "id"), ("container", "channel_id"), ("message", "thread_ts")):
        assert isinstance(text_at(parsed, *path), str)
    if parsed.get("type") == "block_actions":
        assert isinstance(parsed["actions"][0]["action_id"], str)
        button_value(parsed)
    if "event" in parsed:
        assert isinstance(parsed["event"], dict)


async def test_datacenters_shows_no_credentials(sqlite_store: SqlStore, clock: FakeClock) -> None:
    from bot.conversation import Conversation
    from bot.terminal import render
    from tests.unit.test_handlers import RecordingWorkflow

    settings = Settings.model_validate(
        {
            "datacenters": {
                "dc-east": {
                    "scheduler": {"kind": "docker", "address": "tcp://ops:hunter2@engine:2376"},
                    "staging_registry": "ci:s3cret@stage:5000",
                    "runtime_registry": "east:5000",
                }
            }
        }
    )
    conversation = Conversation(Services(settings, sqlite_store, RecordingWorkflow(), clock))
    answer = await conversation.answer("datacenters", Principal("U1"))
    shown = render(answer.reply, width=300)
    assert "hunter2" not in shown and "s3cret" not in shown
    assert "tcp://ops:***@engine:2376" in shown and "ci:***@stage:5000" in shown


def test_nelson_config_and_a_bad_database_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.cli import main

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "nelson.toml"
    config.write_text(
        'database_url = "postgresql://nelson:dbpw@db:5432/nelson"\n'
        "[datacenters.local]\n"
        'staging_registry = "ci:s3cret@127.0.0.1:5000"\n'
        'runtime_registry = "127.0.0.1:5001"\n'
        'scheduler = { kind = "docker", address = "tcp://ops:hunter2@engine:2376?token=t0k" }\n',
        encoding="utf-8",
    )
    assert main(["--config", str(config), "config"]) == 0
    shown = capsys.readouterr().out
    for secret in ("dbpw", "s3cret", "hunter2", "t0k"):
        assert secret not in shown
    assert "tcp://ops:***@engine:2376?token=***" in shown

    config.write_text('database_url = "postgresql://nelson@db:abc/nelson"\n', encoding="utf-8")
    assert main(["--config", str(config), "run", "stacks"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is the port a number" in err
    assert "Traceback" not in err


async def test_jobs_warn_once_during_an_outage_and_keep_tracebacks_for_faults(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    from bot.bootstrap import build
    from bot.jobs import Jobs
    from tests.unit.test_handlers import RecordingWorkflow

    settings = Settings.model_validate({"database_url": f"sqlite:///{tmp_path / 'j.db'}"})
    app = await build(settings, workflow=RecordingWorkflow(), clock=clock)
    jobs = Jobs(app)
    await jobs.start()
    try:
        sweep = jobs.scheduler.get_job("expire-approvals").func
        failure: list[BaseException] = [
            OperationalError("SELECT", {}, ConnectionRefusedError("refused"))
        ]

        async def failing() -> list[Any]:
            raise failure[0]

        app.desk.expire_overdue = failing  # type: ignore[method-assign]
        with caplog.at_level(logging.INFO, logger="nelson.jobs"):
            for _ in range(5):
                await sweep()
                clock.advance(timedelta(seconds=11))
            failure[0] = KeyError("a fault")
            await sweep()
        records = [r for r in caplog.records if r.name == "nelson.jobs"]
        assert [r.levelname for r in records] == ["WARNING", "ERROR"]
        assert "unreachable" in records[0].getMessage() and records[0].exc_info is None
        assert records[1].exc_info is not None  # a fault keeps its traceback
    finally:
        await jobs.stop()
        await app.close()
