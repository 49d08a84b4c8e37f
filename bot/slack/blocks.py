"""Replies as Block Kit, within Slack's limits, with a plain-text fallback.

Limits (Slack's): 50 blocks per message (100 in the Home tab), section text 3,000 characters,
10 fields per section of 2,000 characters each, header text 150. Every piece of text is
escaped (`& < >`) because it may quote what a user typed; only the light emphasis handlers
use (`*bold*`, `` `code` ``) is left for Slack to format."""

from __future__ import annotations

from typing import Any

from commands.replies import Code, Fields, Reply, Table, Text

MAX_BLOCKS = 50
MAX_HOME_BLOCKS = 100
SECTION_TEXT = 3000
FIELD_TEXT = 2000
FIELDS_PER_SECTION = 10
FALLBACK_TEXT = 3000

Block = dict[str, Any]


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def section(text: str) -> Block:
    """A mrkdwn section of already-escaped text, clipped to the limit."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_TEXT)}}


def context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(text, 3000)}]}


def progress_bar(fraction: float, width: int = 20) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return f"`{'█' * filled}{'░' * (width - filled)}` {round(fraction * 100)}%"


def _code_sections(lines: list[str], budget: int) -> tuple[list[Block], int]:
    """Lines in monospace sections (``` fences), as many as fit in `budget` blocks.
    Returns the blocks and how many lines they hold."""
    blocks: list[Block] = []
    chunk: list[str] = []
    size = 0
    used = 0
    room = SECTION_TEXT - 8  # the fences and newlines
    for line in lines:
        line = clip(escape(line), room)
        if chunk and size + len(line) + 1 > room:
            if len(blocks) == budget:
                break
            blocks.append(section("```" + "\n".join(chunk) + "```"))
            used += len(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk and len(blocks) < budget:
        blocks.append(section("```" + "\n".join(chunk) + "```"))
        used += len(chunk)
    return blocks, used


def table_lines(table: Table) -> list[str]:
    """Aligned columns; cells are clipped so one wide value cannot push the rest away, except
    in the last column (a message, a reason), which nothing follows: it is shown whole."""
    last = len(table.columns) - 1
    rows = [tuple(c.upper() for c in table.columns)] + [
        tuple(
            cell.replace("\n", " ") if i == last else clip(cell.replace("\n", " "), 60)
            for i, cell in enumerate(row)
        )
        for row in table.rows
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(table.columns))]
    return ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]


def _fields(block: Fields) -> list[Block]:
    out: list[Block] = []
    pairs = list(block.pairs)
    for start in range(0, len(pairs), FIELDS_PER_SECTION):
        out.append(
            {
                "type": "section",
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": clip(f"*{escape(key)}*\n{escape(value)}", FIELD_TEXT),
                    }
                    for key, value in pairs[start : start + FIELDS_PER_SECTION]
                ],
            }
        )
    return out


def reply_blocks(reply: Reply, max_blocks: int = MAX_BLOCKS) -> list[Block]:
    mark = "" if reply.ok else ":warning: "
    blocks: list[Block] = [section(f"{mark}*{escape(reply.title)}*")]
    for index, block in enumerate(reply.blocks):
        # keep one block spare for a "… cut" note
        budget = max_blocks - len(blocks) - 1
        if budget <= 0:
            remaining = len(reply.blocks) - index
            blocks.append(context(f"… {remaining} more part(s) not shown."))
            break
        if isinstance(block, Text):
            blocks.append(section(escape(block.text)))
        elif isinstance(block, Fields):
            blocks.extend(_fields(block)[:budget])
        elif isinstance(block, Code):
            code, _ = _code_sections(block.text.splitlines() or [""], budget)
            blocks.extend(code)
        elif isinstance(block, Table):
            lines = table_lines(block)
            shown_blocks, shown = _code_sections(lines, budget)
            blocks.extend(shown_blocks)
            rows_shown = max(shown - 1, 0)  # the header line is not a row
            total = block.total if block.total is not None else len(block.rows)
            if rows_shown < total:
                blocks.append(context(f"Showing {rows_shown} of {total}."))
    return blocks[:max_blocks]


def fallback(reply: Reply) -> str:
    """The notification and screen-reader text: the title and the first plain lines."""
    parts = [reply.title]
    for block in reply.blocks:
        if isinstance(block, Text):
            parts.append(block.text)
        elif isinstance(block, Table):
            total = block.total if block.total is not None else len(block.rows)
            parts.append(f"({total} row{'s' if total != 1 else ''})")
    return clip(escape("\n".join(parts)), FALLBACK_TEXT)


def said(reply: Reply, *, refused: bool) -> str:
    """A reply in one short line, as a click is answered: the title, and for a refusal (a
    user error: not a fault, not the database being down) its hints, marked as such."""
    if not refused:
        return reply.title
    hints = " ".join(b.text for b in reply.blocks if isinstance(b, Text))
    return f":no_entry: {reply.title} {hints}".strip()
