"""Turning what Slack (or a phone keyboard) delivers into plain text the grammar can read."""

from __future__ import annotations

import re

_SMART = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u00a0": " ",
        "\u2007": " ",
        "\u202f": " ",
        "\u2009": " ",
        "\u200b": "",
        "\u2013": "-",
        "\u2014": "-",
    }
)
_MARKUP = re.compile(r"<([^<>\n]*)>")
_LEADING = re.compile(r"^\s*(?:/nelson\b|nelson\b[:,]?|@nelson\b[:,]?)", re.IGNORECASE)


def _markup(match: re.Match[str]) -> str:
    body = match.group(1)
    target, _, label = body.partition("|")
    if target.startswith("@"):  # user mention
        return target
    if target.startswith("#"):  # channel
        return f"#{label}" if label else target
    if target.startswith("!subteam^"):  # user group
        return label or "@" + target[len("!subteam^") :]
    if target.startswith("!"):  # @here, @channel, dates
        return label or "@" + target[1:]
    if target.startswith("mailto:"):
        return target[len("mailto:") :]
    return target  # a link: keep the address, not its label


def normalise(text: str) -> str:
    """Undo Slack's markup and escapes, straighten smart quotes, drop a leading `/nelson`,
    `nelson` or bot mention. Newlines and indentation are kept (inline manifests need them)."""
    text = text.translate(_SMART)
    text = _MARKUP.sub(_markup, text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    text = re.sub(r"^\s*@[UW][A-Z0-9]+\b[:,]?", "", text)  # a mention of the bot itself
    text = _LEADING.sub("", text, count=1)
    return text.strip("\r\n\t ")
