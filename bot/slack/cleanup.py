"""Cleanup in Slack: the daily digest of what will be removed (per channel, grouped by unit,
with "Keep <lifecycle.keep_for> more" and "Remove now" buttons; a click updates the count and
the unit's rows), the summary of what was removed, and the
clicks on those buttons. The lifecycle (`commands.lifecycle`) decides; this only tells."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import timedelta
from typing import Any

from bot.slack.blocks import MAX_BLOCKS, Block, clip, context, escape, section
from bot.slack.directory import Directory
from bot.slack.guard import first_action, text_at
from bot.slack.messages import button, record_id, when, who
from bot.slack.outbox import Outbox, PostFailed
from commands.events import CleanupAnnounced, CleanupDone, Event, Removal
from commands.lifecycle import Lifecycle
from domain.records import Stack

log = logging.getLogger("nelson.slack.cleanup")

KEEP_ACTION = "cleanup.keep"
REMOVE_ACTION = "cleanup.remove"
BUTTON_VALUE = 2000  # Slack's limit for a button's value
STACKS_PER_UNIT = 12  # lines per unit; the buttons still act on all of the unit's stacks
_HEAD_BLOCKS, _TAIL_BLOCKS = 2, 1


def stack_ids(value: str) -> list[int] | None:
    """The stack ids a cleanup button carries ("12,13"); [] when it carries none, None when
    it names one no stack can have (not a positive 64-bit number)."""
    parts = [part for part in value.split(",") if part.strip()]
    ids = [record_id(part) for part in parts]
    if any(i is None for i in ids):
        return None if all(p.strip().isascii() and p.strip().isdigit() for p in parts) else []
    return [i for i in ids if i is not None]


def _ids_value(stacks: list[Stack]) -> str:
    value = ""
    for stack in stacks:
        more = f"{value},{stack.id}" if value else str(stack.id)
        if len(more) > BUTTON_VALUE:
            break
        value = more
    return value


def _removal_line(removal: Removal) -> str:
    stack = removal.stack
    return (
        f"• `{escape(stack.name)}` {escape(stack.datacenter)}/{escape(stack.namespace)}: "
        f"{escape(removal.reason)}; removal {when(removal.remove_at)}"
    )


def keep_label(keep_for: timedelta) -> str:
    """The Keep button says what it gives: `Keep 24h more`, `Keep 2d more`, `Keep 90m more`."""
    seconds = int(keep_for.total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size and seconds % size == 0 and not (unit == "d" and seconds < 172800):
            return f"Keep {seconds // size}{unit} more"
    return f"Keep {seconds}s more"


def _title(count: int) -> str:
    return f"Cleanup: {count} stack{'s' if count != 1 else ''} will be removed"


def digest_message(
    removals: tuple[Removal, ...], keep_for: timedelta = timedelta(hours=24)
) -> tuple[str, list[Block]]:
    """One channel's digest: a section and the two buttons per unit."""
    by_unit: dict[str, list[Removal]] = defaultdict(list)
    for removal in removals:
        by_unit[removal.stack.unit].append(removal)
    count = len(removals)
    title = _title(count)
    label = keep_label(keep_for)
    blocks: list[Block] = [
        section(f":broom: *{title}*"),
        context(
            f"Each goes at the time shown unless someone presses *{label}* (deployers). "
            "*Remove now* is for admins. `stacks status garbage` lists them all."
        ),
    ]
    room = (MAX_BLOCKS - _HEAD_BLOCKS - _TAIL_BLOCKS) // 2
    units = sorted(by_unit)
    for unit in units[:room]:
        items = by_unit[unit]
        lines = [f"*{escape(unit)}*: {len(items)} stack{'s' if len(items) != 1 else ''}"]
        lines += [_removal_line(r) for r in items[:STACKS_PER_UNIT]]
        if len(items) > STACKS_PER_UNIT:
            lines.append(f"…and {len(items) - STACKS_PER_UNIT} more of {escape(unit)}")
        blocks.append(section("\n".join(lines)))
        value = _ids_value([r.stack for r in items])
        blocks.append(
            {
                "type": "actions",
                "block_id": clip(f"cleanup:{unit}", 255),
                "elements": [
                    button(KEEP_ACTION, label, value, "primary"),
                    button(REMOVE_ACTION, "Remove now", value, "danger")
                    | {
                        "confirm": {
                            "title": {"type": "plain_text", "text": "Remove now?"},
                            "text": {
                                "type": "mrkdwn",
                                "text": clip(
                                    f"Removes {len(items)} stack(s) of {escape(unit)} from "
                                    "their datacenters now. This cannot be undone.",
                                    300,
                                ),
                            },
                            "confirm": {"type": "plain_text", "text": "Remove"},
                            "deny": {"type": "plain_text", "text": "Cancel"},
                        },
                    },
                ],
            }
        )
    hidden = units[room:]
    if hidden:
        rest = sum(len(by_unit[u]) for u in hidden)
        blocks.append(
            context(
                f"…and {len(hidden)} more units ({rest} stacks): `stacks status garbage` lists "
                "them; `keep <stack>` keeps one."
            )
        )
    lines = [title] + [f"{r.stack.name}: {r.reason}" for r in removals[:20]]
    return clip("\n".join(lines), 3000), blocks


def summary_message(
    by: str, reaped: tuple[Stack, ...], failed: tuple[tuple[Stack, str], ...]
) -> tuple[str, list[Block]]:
    parts: list[str] = []
    title = (
        f"Cleanup removed {len(reaped)} stack{'s' if len(reaped) != 1 else ''}"
        if reaped
        else "Cleanup could not remove everything"
    )
    if by != "nelson":
        title += f" (Remove now by {by})"
    by_unit: dict[str, list[Stack]] = defaultdict(list)
    for stack in reaped:
        by_unit[stack.unit].append(stack)
    for unit in sorted(by_unit):
        names = ", ".join(f"`{escape(s.name)}`" for s in by_unit[unit])
        parts.append(f"*{escape(unit)}*: {names}")
    for stack, why in failed:
        parts.append(
            f":warning: could not remove `{escape(stack.name)}` yet: {escape(why)}. "
            "The cleanup tries again on every pass."
        )
    blocks = [section(f":wastebasket: *{escape(title)}*")]
    body = "\n".join(parts)
    while body:
        blocks.append(section(body[:2900]))
        body = body[2900:]
        if len(blocks) >= MAX_BLOCKS:
            break
    text = "\n".join([title] + [s.name for s in reaped[:30]])
    return clip(text, 3000), blocks


class CleanupNotices:
    """Posts digests and summaries, and answers the buttons on them."""

    def __init__(self, lifecycle: Lifecycle, outbox: Outbox, directory: Directory) -> None:
        self.lifecycle = lifecycle
        self.outbox = outbox
        self.directory = directory

    async def on_event(self, event: Event) -> None:
        if isinstance(event, CleanupAnnounced):
            for channel, removals in event.digests:
                keep_for = self.lifecycle.settings.lifecycle.keep_for
                text, blocks = digest_message(removals, keep_for)
                await self._post(channel, text, blocks)
        elif isinstance(event, CleanupDone):
            for channel, reaped, failed in event.summaries:
                text, blocks = summary_message(event.by, reaped, failed)
                await self._post(channel, text, blocks)

    async def _post(self, channel: str, text: str, blocks: list[Block]) -> None:
        try:
            await self.outbox.post(channel, text, blocks)
        except PostFailed as exc:
            log.warning("could not post the cleanup notice in %s: %s", channel, exc.error)

    def mark(self, body: dict[str, Any], kept: bool, outcome: str) -> None:
        """After a Keep or Remove-now click went through (bot.slack.app runs it as the
        `keep`/`remove` command): the message's buttons for that unit become who did what."""
        user = text_at(body, "user", "id")
        now = when(self.lifecycle.clock.now())
        done = (
            f":pushpin: Kept by {who(user)} {now}"
            if kept
            else f":wastebasket: Removed by {who(user)} {now}"
        )
        block_id = text_at(first_action(body), "block_id")
        self._mark(body, block_id, f"{done}: {escape(outcome)}")

    def _mark(self, body: dict[str, Any], block_id: str, line: str) -> None:
        """The unit's rows and buttons become who did what; the count covers what is left."""
        message = body.get("message")
        if not isinstance(message, dict):
            return
        channel = text_at(body, "container", "channel_id")
        ts = text_at(body, "container", "message_ts") or text_at(message, "ts")
        blocks = message.get("blocks")
        if not (channel and ts and isinstance(blocks, list)):
            return
        blocks = [block for block in blocks if isinstance(block, dict)]
        at = next((i for i, b in enumerate(blocks) if b.get("block_id") == block_id), None)
        if at is None:
            return
        replaced: list[Block] = []
        for i, block in enumerate(blocks):
            if i == at:
                replaced.append(context(line))
            elif i == at - 1 and block.get("type") == "section" and i >= _HEAD_BLOCKS:
                unit = block_id.removeprefix("cleanup:")
                replaced.append(section(f"*{escape(unit)}*: ~{_rows_of(block)}~"))
            else:
                replaced.append(block)
        left = sum(
            len(stack_ids(str(b["elements"][0].get("value", ""))) or [])
            for b in replaced
            if b.get("type") == "actions"
            and isinstance(b.get("elements"), list)
            and b["elements"]
            and isinstance(b["elements"][0], dict)
        )
        title = _title(left) if left else "Cleanup: nothing left to remove here"
        if replaced and replaced[0].get("type") == "section":
            replaced[0] = section(f":broom: *{title}*")
        self.outbox.update(channel, ts, title, replaced)


def _rows_of(block: Block) -> str:
    """The unit's stack names from its section, for the struck-through line."""
    text = block.get("text")
    text = str(text.get("text", "")) if isinstance(text, dict) else ""
    names = [part.split("`")[1] for part in text.split("\n") if part.count("`") >= 2]
    return ", ".join(names) or "its stacks"
