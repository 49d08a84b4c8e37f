"""Help text and the command reference, rendered from the grammar's table of commands.

Chat help is plain text with light emphasis (*bold*, `code`) that Slack and the terminal both
render; the reference is Markdown for docs/commands.md. `python -m commands.help` prints the
reference section of that page.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commands.grammar import CommandSpec


def categories(specs: Iterable[CommandSpec]) -> dict[str, list[CommandSpec]]:
    """The commands by category, in the order the table first names each category."""
    grouped: dict[str, list[CommandSpec]] = {}
    for spec in specs:
        grouped.setdefault(spec.category, []).append(spec)
    return grouped


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


def render_overview(specs: Iterable[CommandSpec]) -> str:
    """Every command, grouped, one line each: its first usage line and what it does."""
    lines: list[str] = []
    for category, members in categories(specs).items():
        lines.append(f"*{category}*")
        lines.extend(f"• `{spec.usages[0]}` — {spec.summary}" for spec in members)
        lines.append("")
    lines.append("`help <command>` shows the details and examples of one command.")
    return "\n".join(lines)


def render_topic(spec: CommandSpec) -> str:
    """One command: its usage, what it does, its other names and examples."""
    lines = [f"*{spec.name}* — {spec.summary}"]
    lines.extend(f"`{usage}`" for usage in spec.usages)
    if spec.description:
        lines.append(spec.description)
    if spec.aliases:
        lines.append("Also: " + ", ".join(f"`{alias}`" for alias in spec.aliases))
    if spec.examples:
        lines.append("Examples:")
        lines.extend(f"• `{example}`" for example in spec.examples)
    return "\n".join(lines)


def render_reference(specs: Iterable[CommandSpec]) -> str:
    """The per-command part of docs/commands.md, in Markdown."""
    out: list[str] = []
    for category, members in categories(specs).items():
        out += [f"## {category}", ""]
        for spec in members:
            out += [f"### `{spec.name}`", "", "```", *spec.usages, "```", ""]
            about = _sentence(spec.summary)
            if spec.description:
                about += " " + spec.description
            out += [about, ""]
            if spec.aliases:
                out += ["Also: " + ", ".join(f"`{alias}`" for alias in spec.aliases) + ".", ""]
            if spec.examples:
                out += ["Examples:", ""]
                out += [f"- `{example}`" for example in spec.examples]
                out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def main() -> None:
    from commands.grammar import COMMANDS

    print(render_reference(COMMANDS), end="")


if __name__ == "__main__":
    main()
