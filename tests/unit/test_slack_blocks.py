"""Replies and live messages as Block Kit: escaping, Slack's limits, truncation with counts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bot.slack.blocks import (
    FIELD_TEXT,
    MAX_BLOCKS,
    SECTION_TEXT,
    escape,
    fallback,
    progress_bar,
    reply_blocks,
)
from bot.slack.messages import APPROVE_ACTION, approval_message, operation_message
from commands.replies import Code, Fields, Reply, Table, Text
from domain.approvals import ApprovalKind, ApprovalStatus
from domain.records import Approval, Operation, Stack
from domain.states import StackStatus
from domain.versions import Version

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def texts(blocks: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(blocks)
    return found


def check_limits(blocks: list[dict[str, Any]]) -> None:
    assert len(blocks) <= MAX_BLOCKS
    for block in blocks:
        if block["type"] == "section":
            if "text" in block:
                assert len(block["text"]["text"]) <= SECTION_TEXT
            assert len(block.get("fields", [])) <= 10
            for f in block.get("fields", []):
                assert len(f["text"]) <= FIELD_TEXT


def test_user_text_is_escaped() -> None:
    reply = Reply(
        title="there is no unit 'a<b>&c'",
        blocks=(Text("<!channel> hi"), Table(("unit",), (("<@U1>",),)), Fields((("k<", "v>"),))),
    )
    joined = "\n".join(texts(reply_blocks(reply)))
    assert "<" not in joined.replace("&lt;", "") and ">" not in joined.replace("&gt;", "")
    assert "a&lt;b&gt;&amp;c" in joined and "&lt;!channel&gt;" in joined
    assert "&lt;" in fallback(reply) and "<" not in fallback(reply)


def test_huge_tables_are_cut_with_a_count() -> None:
    rows = tuple((f"stack-{i:06d}", "dc-east", "ready" * 3) for i in range(20_000))
    blocks = reply_blocks(Reply(title="Stacks", blocks=(Table(("stack", "dc", "status"), rows),)))
    check_limits(blocks)
    note = blocks[-1]["elements"][0]["text"]
    assert note.startswith("Showing ") and note.endswith(" of 20000.")
    shown = int(note.split()[1])
    body = "\n".join(texts(blocks[1:-1]))
    assert body.count("stack-") == shown and shown > 1000


def test_tables_that_fit_have_no_note_and_a_header_row() -> None:
    blocks = reply_blocks(Reply(title="t", blocks=(Table(("a", "b"), (("1", "2"),)),)))
    assert len(blocks) == 2 and blocks[1]["text"]["text"].startswith("```A  B\n1  2")


def test_a_table_cut_by_its_handler_reports_the_full_total() -> None:
    table = Table(("a",), (("1",), ("2",)), total=500)
    blocks = reply_blocks(Reply(title="t", blocks=(table,)))
    assert blocks[-1]["elements"][0]["text"] == "Showing 2 of 500."


def test_many_fields_are_split_into_sections() -> None:
    pairs = tuple((f"k{i}", "v" * 5000) for i in range(25))
    blocks = reply_blocks(Reply(title="t", blocks=(Fields(pairs),)))
    check_limits(blocks)
    assert len(blocks) == 4


def test_too_many_parts_end_with_a_note() -> None:
    blocks = reply_blocks(Reply(title="t", blocks=tuple(Text(f"p{i}") for i in range(80))))
    check_limits(blocks)
    assert "more part(s) not shown" in blocks[-1]["elements"][0]["text"]


cells = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)
parts = st.one_of(
    st.builds(Text, cells),
    st.builds(Code, st.text(max_size=8000)),
    st.builds(lambda p: Fields(tuple(p)), st.lists(st.tuples(cells, cells), max_size=30)),
    st.builds(
        lambda rows: Table(("a", "b"), tuple(rows)),
        st.lists(st.tuples(cells, cells), max_size=200),
    ),
)


@given(
    st.builds(
        lambda title, b: Reply(title=title, blocks=tuple(b)), cells, st.lists(parts, max_size=60)
    )
)
def test_every_reply_fits_slacks_limits(reply: Reply) -> None:
    check_limits(reply_blocks(reply))
    assert len(fallback(reply)) <= 3000


def test_progress_bar() -> None:
    assert progress_bar(0) == "`" + "░" * 20 + "` 0%"
    assert progress_bar(0.5).endswith("` 50%")
    assert progress_bar(2) == "`" + "█" * 20 + "` 100%"


def stack(n: int, status: StackStatus, step: str | None = None, message: str = "") -> Stack:
    return Stack(
        id=n,
        guid=f"g{n}",
        name=f"howdy--1-2-3--{n:08x}",
        release_id=1,
        unit="howdy",
        version=Version(1, 2, 3),
        datacenter=f"dc-{n}",
        namespace="prod",
        plan="default",
        status=status,
        status_message=message,
        created_by="U1",
        created_at=T0,
        updated_at=T0,
        expires_at=None,
        workflow_step=step,
    )


OPERATION = Operation(
    1, "deploy", "deploy howdy 1.2.3 to dc-1/prod, dc-2/prod", "U1", "C1", (1, 2), T0
)


def test_operation_parent_shows_every_datacenter_and_the_end() -> None:
    text, blocks = operation_message(
        OPERATION, [stack(1, StackStatus.DEPLOYING, "replicate"), stack(2, StackStatus.PENDING)]
    )
    body = "\n".join(texts(blocks))
    assert "<@U1> asked to *deploy howdy 1.2.3" in body
    assert "`dc-1/prod`" in body and "`dc-2/prod`" in body and "replicate" in body
    assert "%" in text and "░" in body
    text, blocks = operation_message(
        OPERATION,
        [stack(1, StackStatus.READY), stack(2, StackStatus.FAILED, message="image not found")],
    )
    body = "\n".join(texts(blocks))
    assert text.endswith("failed") and "image not found" in body and "1 of 2" in body
    text, _ = operation_message(OPERATION, [stack(1, StackStatus.READY)])
    assert text.endswith("done")


APPROVAL = Approval(
    id=7,
    kind=ApprovalKind.TRAFFIC_SHIFT,
    stack_id=2,
    namespace="prod",
    datacenter="dc-east",
    summary="shift howdy 1.x from 1.2.2 to 1.2.3 <now>",
    requested_by="U1",
    status=ApprovalStatus.PENDING,
    required=2,
    approvers=("U2",),
    created_at=T0,
    deadline=T0 + timedelta(hours=4),
    details=("linear over 10 minutes",),
)


def test_pending_approvals_have_buttons_naming_only_the_id() -> None:
    _, blocks = approval_message(APPROVAL)
    actions = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert next((a["action_id"], a["value"]) for a in actions) == (APPROVE_ACTION, "7")
    body = "\n".join(texts(blocks))
    assert "1 of 2 approvals" in body and "&lt;now&gt;" in body and "linear" in body


def test_decided_approvals_show_who_and_when_instead_of_buttons() -> None:
    decided = replace(
        APPROVAL,
        status=ApprovalStatus.APPROVED,
        approvers=("U2", "U3"),
        decided_by="U3",
        decided_at=T0,
    )
    _, blocks = approval_message(decided)
    assert not [b for b in blocks if b["type"] == "actions"]
    body = "\n".join(texts(blocks))
    assert "*Approved* by <@U2>, <@U3> <!date^" in body
    rejected = replace(APPROVAL, status=ApprovalStatus.REJECTED, decided_by="U4", decided_at=T0)
    assert "*Rejected* by <@U4>" in "\n".join(texts(approval_message(rejected)[1]))
    expired = replace(APPROVAL, status=ApprovalStatus.EXPIRED, decided_by="nelson", decided_at=T0)
    assert "nothing was changed" in "\n".join(texts(approval_message(expired)[1]))


def test_escape() -> None:
    assert escape("a & <b>") == "a &amp; &lt;b&gt;"
