"""Turning what Slack (or a phone keyboard, or a terminal) delivers into text the grammar reads.

`normalise` undoes Slack's markup and escapes and straightens smart quotes; `tokenize` cuts a
command into words (quoted words stay whole) while remembering where each word sits, so a
manifest pasted after `lint` or `manifest` can be taken from the text exactly as it was sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SMART = str.maketrans(
    {
        "\r": "\n",
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u00a0": " ",
        "\u2007": " ",
        "\u2009": " ",
        "\u202f": " ",
        "\u200b": None,
        "\u200c": None,
        "\u200d": None,
        "\u2060": None,
        "\ufeff": None,
    }
)

# Phones and desktop editors turn `--` into an em dash; stack names are full of `--`.
_DASHES = str.maketrans(
    {
        "\u2014": "--",
        "\u2015": "--",
        "\u2013": "-",
        "\u2012": "-",
        "\u2010": "-",
        "\u2011": "-",
        "\u2212": "-",
    }
)

# Slack markup: <@U0123>, <#C0123|name>, <!here>, <https://x|label>, <mailto:a@b|a@b>. Anything
# else between < and > (`<unit>`, typed in the terminal) is left alone.
_MARKUP = re.compile(r"<((?:[@#!]|[A-Za-z][A-Za-z0-9+.-]*:)[^<>\s|]*(?:\|[^<>\n]*)?)>")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# What may precede the command: a mention of the bot (`<@U0BOT>` has become `@U0BOT` by then),
# `/nelson`, `nelson` or `@nelson`, each optionally followed by `:` or `,`.
_PREFIX = re.compile(r"\s*(?:@[UW][A-Z0-9]{2,}|(?i:/nelson|@?nelson))(?:[:,]|(?=\s)|\Z)")
_MAX_PREFIXES = 3

_TOKEN = re.compile(
    r'"(?P<dq>[^"]*)"'  # "double quoted"
    r"|'(?P<sq>[^'\n]*)'"  # 'single quoted'
    r"|(?P<fence>```)"  # a code fence is a word of its own
    r"|`(?P<bq>[^`\n]+)`"  # `inline code`
    r"|(?P<word>(?:(?!```)\S)+)"
)

FENCE = re.compile(
    r"```(?:[ \t]*[A-Za-z0-9_+.-]*[ \t]*\n)?(?P<body>.*?)\n?(?:```|\Z)",
    re.DOTALL,
)
"""A ``` block: an optional language line (```yaml), then the text up to the closing fence (or
the end of the message when it was never closed). The newline before the closing fence belongs
to the fence, not to the text."""


def _markup(match: re.Match[str]) -> str:
    target, _, label = match.group(1).partition("|")
    if target.startswith("@"):  # a user: <@U0123> or <@U0123|name>
        return target
    if target.startswith("#"):  # a channel: <#C0123|general>
        return f"#{label}" if label else target
    if target.startswith("!subteam^"):  # a user group: <!subteam^S0123|@ops>
        return label or "@" + target[len("!subteam^") :]
    if target.startswith("!"):  # <!here>, <!channel>, <!date^...|fallback>
        return label or "@" + target[1:]
    if target.startswith("mailto:"):
        return target[len("mailto:") :]
    # A link keeps its address, not its label; but when Slack linked a bare word the user typed
    # (`reg.example.com/svc` arrives as <http://reg.example.com/svc|reg.example.com/svc>),
    # the label is what was typed.
    if label and _SCHEME.sub("", target, count=1) == label:
        return label
    return target


def normalise(text: str) -> str:
    """Plain text from what Slack delivers.

    Links, mentions and channels lose their markup (`<#C1|ops>` -> `#ops`, `<https://x|label>`
    -> `https://x`, `<mailto:a@b|a@b>` -> `a@b`), `&amp; &lt; &gt;` are unescaped, smart quotes
    become ASCII quotes, non-breaking and thin spaces become spaces, zero-width characters go,
    and a leading `/nelson`, `nelson` or mention of the bot is dropped. Newlines and
    indentation are kept (an inline manifest needs them); the ends are trimmed.
    """
    text = text.replace("\r\n", "\n").translate(_SMART)
    text = _MARKUP.sub(_markup, text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    start = 0
    for _ in range(_MAX_PREFIXES):
        prefix = _PREFIX.match(text, start)
        if prefix is None:
            break
        start = prefix.end()
    return text[start:].strip()


@dataclass(frozen=True, slots=True)
class Token:
    """One word of a command and where it sits in the normalised text."""

    text: str
    start: int
    end: int
    quoted: bool = False


def tokenize(text: str) -> list[Token]:
    """Words separated by whitespace; "double", 'single' and `backtick` quotes keep a phrase
    whole (and are dropped), and a ``` fence is always a word of its own. Dashes that editors
    made typographic are made plain again in unquoted words."""
    tokens: list[Token] = []
    for match in _TOKEN.finditer(text):
        word = match.group("word")
        if word is not None:
            tokens.append(Token(word.translate(_DASHES), match.start(), match.end()))
        elif match.group("fence") is not None:
            tokens.append(Token("```", match.start(), match.end()))
        else:
            quoted = next(g for g in match.group("dq", "sq", "bq") if g is not None)
            tokens.append(Token(quoted.strip(), match.start(), match.end(), quoted=True))
    return tokens


def unwrap(text: str) -> str:
    """A whole command wrapped in `backticks`, a ```code block``` or "quotes" (copied from the
    help) loses them."""
    if len(text) > 6 and text.startswith("```") and text.endswith("```"):
        inner = text[3:-3]
        if "`" not in inner:
            return inner.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "`\"'":
        inner = text[1:-1]
        if text[0] not in inner:
            return inner.strip()
    return text


# Characters that start or end formatting in chat markup (Slack's *bold*, _italic_, ~strike~,
# `code` and ``` blocks). A zero-width space on each side keeps them from pairing up, so quoted
# input shows as typed; `normalise` drops zero-width spaces, so a quote pasted back reads the
# same.
# Between two letters or digits (`my_app`) `*_~` cannot open or close anything; backticks can.
_FORMATTING = re.compile(r"(`|(?<![^\W_])[*_~]|[*_~](?![^\W_]))")


def clip(text: str, limit: int = 60) -> str:
    """A piece of user input fit to quote back in a message: one line, printable, short, and
    unable to change the formatting of the message around it."""
    text = " ".join(text[: limit * 4].split())
    text = "".join(c if c.isprintable() else "\ufffd" for c in text)
    text = text if len(text) <= limit else text[: limit - 1] + "\u2026"
    return _FORMATTING.sub("\u200b\\1\u200b", text)
