"""A picture of a unit's dependency graph: its stacks, what they depend on and who depends on
them, each coloured by status (retained, deprecated, garbage with its removal time). The
graph is written in graphviz's DOT language and drawn by graphviz's `dot` program."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from domain.records import Stack
from domain.states import StackStatus

RENDER_TIMEOUT = 15.0  # seconds; a graph of a few hundred nodes takes well under one

_STYLE = {
    StackStatus.READY: ('"filled"', "#c8f7c5", "#2e7d32"),
    StackStatus.DEPRECATED: ('"filled"', "#ffe0b2", "#e65100"),
    StackStatus.GARBAGE: ('"filled,dashed"', "#eeeeee", "#757575"),
    StackStatus.FAILED: ('"filled"', "#ffcdd2", "#c62828"),
    StackStatus.TERMINATED: ('"dashed"', "#ffffff", "#bdbdbd"),
}
_DEPLOYING = ('"filled"', "#fff9c4", "#f9a825")


class RenderError(Exception):
    """The picture could not be drawn; the message says why (graphviz missing, timeout)."""


@dataclass(frozen=True, slots=True)
class Node:
    stack: Stack
    note: str = ""  # a second line: "kept until …", "removal after …"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot_source(
    unit: str, nodes: Iterable[Node], edges: Iterable[tuple[int, int]], drawn_at: datetime
) -> str:
    """DOT text: one cluster per datacenter/namespace, an arrow from each stack to what it
    depends on; `unit`'s own stacks drawn bold."""
    clusters: dict[str, list[Node]] = {}
    for node in nodes:
        clusters.setdefault(f"{node.stack.datacenter}/{node.stack.namespace}", []).append(node)
    lines = [
        "digraph dependencies {",
        "  rankdir=LR;",
        f"  label={_quote(f'{unit}: dependencies, {drawn_at:%Y-%m-%d %H:%M} UTC')};",
        '  labelloc="t"; fontname="Helvetica";',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [color="#555555"];',
    ]
    for index, (where, members) in enumerate(sorted(clusters.items())):
        lines.append(f"  subgraph cluster_{index} {{")
        lines.append(f'    label={_quote(where)}; color="#9e9e9e"; style="rounded";')
        for node in sorted(members, key=lambda n: (n.stack.unit, n.stack.version, n.stack.id)):
            stack = node.stack
            style, fill, border = _STYLE.get(stack.status, _DEPLOYING)
            label = f"{stack.unit} {stack.version}\n{stack.status.value}"
            if node.note:
                label += f"\n{node.note}"
            width = "2.5" if stack.unit == unit else "1"
            lines.append(
                f"    s{stack.id} [label={_quote(label)}, style={style}, fillcolor={_quote(fill)},"
                f" color={_quote(border)}, penwidth={width}, tooltip={_quote(stack.name)}];"
            )
        lines.append("  }")
    for dependant, dependency in sorted(set(edges)):
        lines.append(f"  s{dependant} -> s{dependency};")
    lines.append("}")
    return "\n".join(lines) + "\n"


async def render_png(source: str, *, program: str = "dot") -> bytes:
    """Draw DOT text as PNG with graphviz; RenderError when it cannot."""
    path = shutil.which(program)
    if path is None:
        raise RenderError("graphviz is not installed here (the `dot` program is missing)")
    process = await asyncio.create_subprocess_exec(
        path,
        "-Tpng",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            process.communicate(source.encode("utf-8")), RENDER_TIMEOUT
        )
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RenderError(f"graphviz took longer than {RENDER_TIMEOUT:.0f}s") from None
    if process.returncode != 0 or not out.startswith(b"\x89PNG"):
        detail = err.decode("utf-8", "replace").strip().splitlines()[:1]
        raise RenderError(f"graphviz failed: {detail[0] if detail else process.returncode}")
    return out


def describe(unit: str, nodes: Sequence[Node], edges: Iterable[tuple[int, int]]) -> str:
    """The picture in words (alt text)."""
    by_id = {n.stack.id: n.stack for n in nodes}
    arrows = [
        f"{by_id[a].name} depends on {by_id[b].name}"
        for a, b in sorted(set(edges))
        if a in by_id and b in by_id
    ]
    own = [n.stack for n in nodes if n.stack.unit == unit]
    head = f"{len(own)} stacks of {unit}: " + ", ".join(f"{s.name} ({s.status.value})" for s in own)
    return ". ".join([head, *arrows])[:1000]
