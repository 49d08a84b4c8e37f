"""The messages the bot keeps up to date: a long operation's parent, approval requests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.slack.blocks import Block, clip, context, escape, progress_bar, section
from domain.approvals import ApprovalStatus
from domain.records import Approval, Operation, Stack, TrafficShift
from domain.states import StackStatus
from domain.steps import finished, progress
from domain.traffic import ACTIVE_SHIFT_STATES, Direction, ShiftState

APPROVE_ACTION = "approval.approve"
REJECT_ACTION = "approval.reject"
PAUSE_ACTION = "traffic.pause"
RESUME_ACTION = "traffic.resume"
REVERSE_ACTION = "traffic.reverse"

_STATUS_MARK = {
    StackStatus.PENDING: ":hourglass:",
    StackStatus.DEPLOYING: ":gear:",
    StackStatus.WARMING: ":thermometer:",
    StackStatus.READY: ":white_check_mark:",
    StackStatus.FAILED: ":x:",
}


def who(user: str) -> str:
    """A mention for Slack user ids, the plain name otherwise (console users, `nelson`)."""
    if user[:1] in ("U", "W") and user[1:].isalnum() and user.isupper():
        return f"<@{user}>"
    return escape(user)


def when(at: datetime) -> str:
    # Slack shows <!date^…> in each reader's own time zone.
    epoch = int(at.timestamp())
    fallback = at.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{epoch}^{{date_short_pretty}} {{time}}|{fallback}>"


def button(action: str, label: str, value: str, style: str | None = None) -> Block:
    """A Block Kit button; its value is all a click carries back."""
    button: Block = {
        "type": "button",
        "action_id": action,
        "text": {"type": "plain_text", "text": label},
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def shift_lines(
    shifts: dict[int, TrafficShift], stacks: list[Stack]
) -> tuple[list[str], Block | None]:
    """A progress bar per traffic shift, and the buttons for the newest active one."""
    lines: list[str] = []
    buttons: Block | None = None
    by_id = {s.id: s for s in stacks}
    for stack_id, shift in shifts.items():
        stack = by_id.get(stack_id)
        if stack is None:
            continue
        share = shift.current_new_weight / 1000
        arrow = "→" if shift.direction is Direction.FORWARD else "←"
        lines.append(
            f":twisted_rightwards_arrows: traffic {arrow} `{escape(stack.name)}` "
            f"{progress_bar(share)} to {stack.version} · *{shift.state}*"
            + (
                " (reversing)"
                if shift.direction is Direction.REVERSE and shift.state is ShiftState.RUNNING
                else ""
            )
        )
        if shift.state in ACTIVE_SHIFT_STATES:
            value = str(shift.id)
            elements = [
                button(PAUSE_ACTION, "Pause", value)
                if shift.state is ShiftState.RUNNING
                else button(RESUME_ACTION, "Resume", value, "primary")
            ]
            if shift.direction is Direction.FORWARD:
                elements.append(button(REVERSE_ACTION, "Reverse", value, "danger"))
            buttons = {"type": "actions", "block_id": f"shift-{shift.id}", "elements": elements}
    return lines, buttons


def operation_message(
    operation: Operation, stacks: list[Stack], shifts: dict[int, TrafficShift] | None = None
) -> tuple[str, list[Block]]:
    total = sum(progress(s.status, s.workflow_step) for s in stacks)
    fraction = total / len(stacks) if stacks else 0.0
    failed = [s for s in stacks if s.status is StackStatus.FAILED]
    done = bool(stacks) and all(finished(s.status) for s in stacks)
    if done and failed:
        state = f":x: *failed* ({len(failed)} of {len(stacks)} stacks)"
    elif done:
        state = ":white_check_mark: *done*"
    else:
        state = f":arrows_counterclockwise: {progress_bar(fraction)}"
    head = f"{who(operation.requested_by)} asked to *{escape(operation.title)}*"
    lines = []
    for stack in stacks:
        mark = _STATUS_MARK.get(stack.status, ":white_circle:")
        step = f" · {escape(stack.workflow_step)}" if stack.workflow_step and not done else ""
        reason = (
            f" — {escape(clip(stack.status_message, 300))}"
            if stack.status is StackStatus.FAILED and stack.status_message
            else ""
        )
        lines.append(
            f"{mark} `{escape(stack.datacenter)}/{escape(stack.namespace)}` "
            f"`{escape(stack.name)}` ({escape(stack.plan)}) *{stack.status.value}*{step}{reason}"
        )
    blocks: list[Block] = [section(head), section(state)]
    # one line per stack; a matrix deploy to many datacenters stays within the block limit
    for start in range(0, len(lines), 20):
        blocks.append(section("\n".join(lines[start : start + 20])))
    traffic_lines, buttons = shift_lines(shifts or {}, stacks)
    if traffic_lines:
        blocks.append(section("\n".join(traffic_lines[:20])))
    blocks = blocks[:47]
    if buttons is not None:
        blocks.append(buttons)
    blocks.append(context(f"Started {when(operation.created_at)} · details in the thread"))
    text = f"{operation.title}: " + (
        "failed" if done and failed else "done" if done else f"{round(fraction * 100)}%"
    )
    return text, blocks


def approval_message(approval: Approval) -> tuple[str, list[Block]]:
    text = f"Approval #{approval.id}: {approval.summary}"
    blocks: list[Block] = [
        section(f":raised_hand: *Approval #{approval.id}* — {escape(approval.summary)}"),
    ]
    if approval.details:
        blocks.append(section("\n".join(f"• {escape(d)}" for d in approval.details)))
    facts = [
        f"{approval.datacenter}/{approval.namespace}",
        f"asked by {who(approval.requested_by)}",
        f"{len(approval.approvers)} of {approval.required} approvals",
    ]
    if approval.deadline:
        facts.append(f"expires {when(approval.deadline)}")
    blocks.append(context(" · ".join(escape(f) if "<" not in f else f for f in facts)))
    if approval.status is ApprovalStatus.PENDING:
        blocks.append(_buttons(approval))
    else:
        blocks.append(section(decided_line(approval)))
    return text, blocks


def _buttons(approval: Approval) -> Block:
    value = str(approval.id)
    return {
        "type": "actions",
        "block_id": f"approval-{approval.id}",
        "elements": [
            button(APPROVE_ACTION, "Approve", value, "primary"),
            button(REJECT_ACTION, "Reject", value, "danger"),
        ],
    }


def decided_line(approval: Approval) -> str:
    at = f" {when(approval.decided_at)}" if approval.decided_at else ""
    if approval.status is ApprovalStatus.APPROVED:
        voters = ", ".join(who(u) for u in approval.approvers) or who(approval.decided_by or "")
        return f":white_check_mark: *Approved* by {voters}{at}"
    if approval.status is ApprovalStatus.REJECTED:
        because = f": {escape(approval.reason)}" if approval.reason else ""
        return f":no_entry: *Rejected* by {who(approval.decided_by or '')}{at}{because}"
    if approval.status is ApprovalStatus.EXPIRED:
        return f":alarm_clock: *Expired*{at}: nobody decided in time; nothing was changed."
    if approval.status in (ApprovalStatus.SUPERSEDED, ApprovalStatus.VOID):
        because = escape(approval.reason) if approval.reason else "what it asked about changed"
        return f":wastebasket: *No longer needed*{at}: {because}; there is nothing to decide."
    return f"*{escape(approval.status)}*{at}"


def button_value(payload: dict[str, Any]) -> int | None:
    """The id a button click carries (an approval, a traffic shift), or None when it carries
    none a record could have (ids are positive and fit in 64 bits)."""
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        return None
    return record_id(actions[0].get("value"))


def record_id(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    digits = value.strip()
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 18):
        return None
    number = int(digits)
    return number if number > 0 else None
