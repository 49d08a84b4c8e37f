"""Rendering replies for a terminal: aligned tables, plain text."""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

from commands.replies import Code, Fields, Reply, Table, Text

_BOLD = re.compile(r"\*([^*\n]+)\*")
_CODE = re.compile(r"`([^`\n]+)`")


def _plain(text: str) -> str:
    return _CODE.sub(r"\1", _BOLD.sub(r"\1", text))


def _clip(cell: str, width: int) -> str:
    cell = cell.replace("\n", " ")
    return cell if len(cell) <= width else cell[: max(width - 1, 1)] + "…"


def render_table(table: Table, width: int) -> list[str]:
    columns = [c.upper() for c in table.columns]
    widths = [len(c) for c in columns]
    for row in table.rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell.replace("\n", " ")))
    # The last column wraps: narrow it first (to 24), then clip the widest of the others.
    excess = sum(widths) + 2 * (len(widths) - 1) - width
    if excess > 0 and len(widths) > 1:
        widths[-1] = max(widths[-1] - excess, min(widths[-1], 24))
    while sum(widths) + 2 * (len(widths) - 1) > width and max(widths) > 12:
        widest = widths.index(max(widths))
        widths[widest] -= 1
    lines = []
    last = len(widths) - 1
    indent = " " * (sum(widths[:last]) + 2 * last)
    for row in (tuple(columns), *table.rows):
        cells = [_clip(cell, widths[i]).ljust(widths[i]) for i, cell in enumerate(row[:last])]
        # the last column (a message, a reason) wraps instead: nothing in it is cut
        wrapped = textwrap.wrap(
            row[last].replace("\n", " "),
            max(widths[last], 12),
            break_long_words=True,  # only a word longer than the column: addresses fit
            break_on_hyphens=False,
        ) or [""]
        lines.append("  ".join([*cells, wrapped[0]]).rstrip())
        lines.extend(indent + more for more in wrapped[1:])
    if table.truncated:
        lines.append(f"… showing {len(table.rows)} of {table.total}")
    return lines


def render(reply: Reply, width: int | None = None) -> str:
    width = width or shutil.get_terminal_size((120, 24)).columns
    lines = [_plain(reply.title)]
    for block in reply.blocks:
        lines.append("")
        if isinstance(block, Text):
            lines.append(_plain(block.text))
        elif isinstance(block, Fields):
            label = max(len(k) for k, _ in block.pairs) if block.pairs else 0
            lines.extend(f"{k.ljust(label)}  {v}" for k, v in block.pairs)
        elif isinstance(block, Table):
            lines.extend(render_table(block, width))
        elif isinstance(block, Code):
            lines.extend("  " + line for line in block.text.splitlines())
    return "\n".join(lines)


PICTURES = Path(".nelson") / "pictures"


def save_attachments(reply: Reply, directory: Path = PICTURES) -> str:
    """Write a reply's files (pictures) under `directory`; lines saying where, or ''."""
    lines = []
    for attachment in reply.attachments:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / Path(attachment.filename).name
        path.write_bytes(attachment.content)
        lines.append(f"{attachment.title}: saved to {path}")
    return "\n".join(lines)
