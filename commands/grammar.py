"""The chat language. One table, COMMANDS, drives parsing, `help` and did-you-mean suggestions.

`parse_command` turns text into a typed command (commands.model) or raises ParseError with a
specific message, the command's usage and, where it can, a did-you-mean suggestion. It raises
nothing else, whatever the text.

Each CommandSpec lists its positional arguments (`Arg`s: a unit name, a version, an id, ...)
and the clauses that may follow them in any order (`to <dc>`, `in <namespace>`, ...); one
generic reader applies them and hands the values to the command's dataclass. The two commands
that take a manifest (`lint`, `manifest`) have a small parse function of their own. Usage lines
are generated from the same table unless a spec spells them out.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, assert_never

from commands import model
from commands.help import render_overview, render_topic
from commands.model import Command
from commands.replies import ParseError
from commands.text import FENCE, Token, clip, normalise, tokenize, unwrap
from domain.durations import DurationError, parse_duration, whole_seconds
from domain.locks import UNTIL_FORMS, UntilError, parse_until
from domain.states import StackStatus
from domain.versions import InvalidVersion, Version

__all__ = [
    "COMMANDS",
    "CommandSpec",
    "canonical",
    "find_spec",
    "help_for",
    "help_overview",
    "normalise",
    "parse_command",
    "suggest",
]

MAX_TEXT = 200_000
_MAX_NAME = 200
_FINAL_PUNCTUATION = ".,;!?"

_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_NAMESPACE = re.compile(r"[a-z0-9][a-z0-9-]*(?:/[a-z0-9][a-z0-9-]*)*")
_REPOSITORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")
_LOOKS_LIKE_VERSION = re.compile(r"[vV]?\d+(?:\.\d+)*")
_NAME_RULE = "lowercase letters, digits and dashes"


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to `word` (difflib, case-insensitive), or None if none is close."""
    word = word.strip().lower()
    if not word or len(word) > 40:
        return None
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def _did_you_mean(word: str | None) -> str | None:
    return f"did you mean `{word}`?" if word else None


# -- reading words ------------------------------------------------------------------------------


class Words:
    """The words of one command, consumed left to right by the command's spec."""

    def __init__(self, spec: CommandSpec, text: str, tokens: list[Token]) -> None:
        self.spec = spec
        self.text = text  # the normalised message: raw text is cut from it by position
        self.tokens = tokens  # tokens[0] is the command's name
        self.at = 1
        self.keywords = spec.keywords

    def error(self, message: str, suggestion: str | None = None) -> ParseError:
        return ParseError(
            message,
            f"`help {self.spec.name}` explains it, with examples.",
            suggestion=_did_you_mean(suggestion),
            usage=self.spec.usage,
        )

    def more(self) -> bool:
        return self.at < len(self.tokens)

    def peek(self) -> str | None:
        """The next word, lowercased; None at the end."""
        return self.tokens[self.at].text.lower() if self.more() else None

    def next_token(self) -> Token | None:
        return self.tokens[self.at] if self.more() else None

    def skip(self, *words: str) -> str | None:
        """Consume the next word if it is one of `words`; return it (lowercased) if so."""
        word = self.peek()
        if word is not None and word in words:
            self.at += 1
            return word
        return None

    def skip_on_first_line(self, *words: str) -> str | None:
        """`skip`, for a keyword that must stand on the command's line (what follows the line
        may be a pasted manifest)."""
        token = self.next_token()
        if token is None or "\n" in self.text[: token.start]:
            return None
        return self.skip(*words)

    def take(self, what: str) -> str:
        """The next word as typed; `what` ("a unit name (like x)") names it when it is missing."""
        if not self.more():
            raise self.error(f"`{self.spec.name}` needs {what}.")
        word = self.tokens[self.at].text
        self.at += 1
        return word

    def invalid(self, word: str, what: str, message: str) -> ParseError:
        """A word that does not fit where it stands. When it is one of the command's keywords,
        the argument was most likely left out: say that instead."""
        if word.lower() in self.keywords:
            return self.error(f"`{self.spec.name}` needs {what} before `{word.lower()}`.")
        return self.error(message)

    def split_comma(self) -> None:
        """Make a trailing comma of the next word a word of its own."""
        token = self.tokens[self.at]
        self.tokens[self.at : self.at + 1] = [
            Token(token.text.rstrip(","), token.start, token.end - 1, token.quoted),
            Token(",", token.end - 1, token.end),
        ]

    def remaining(self) -> list[Token]:
        return self.tokens[self.at :]

    def remainder(self) -> str:
        """The text after the last word consumed, exactly as sent (after normalising)."""
        return self.text[self.tokens[self.at - 1].end :]

    def finish(self) -> None:
        self.at = len(self.tokens)

    def done(self) -> None:
        if self.more():
            extra = " ".join(t.text for t in self.remaining())
            said = " ".join(t.text for t in self.tokens[: self.at])
            raise self.error(f"I did not expect '{clip(extra)}' after `{clip(said)}`.")


# -- positional arguments -----------------------------------------------------------------------


class Arg(Protocol):
    """One positional argument: how usage shows it, and how to read it."""

    @property
    def placeholder(self) -> str: ...

    def read(self, w: Words) -> Any: ...


@dataclass(frozen=True, slots=True)
class Name:
    """A name: a unit, datacenter, namespace, plan, stack, repository or image."""

    placeholder: str
    what: str  # "unit name"
    example: str
    pattern: re.Pattern[str] = _NAME
    rule: str = _NAME_RULE
    lowercase: bool = True
    article: str = "a"

    @property
    def wanted(self) -> str:
        return f"{self.article} {self.what} (like {self.example})"

    def check(self, w: Words, word: str) -> str:
        if not word:  # `deploy "" 1.2.3`
            raise w.error(f"`{w.spec.name}` needs {self.wanted}.")
        value = word.lower() if self.lowercase else word
        if word.isascii() and len(value) <= _MAX_NAME and self.pattern.fullmatch(value):
            return value
        message = f"'{clip(word)}' is not a valid {self.what}: {self.rule}."
        raise w.invalid(word, self.wanted, message)

    def read(self, w: Words) -> str:
        word = w.take(self.wanted)
        if (
            _LOOKS_LIKE_VERSION.fullmatch(word)
            and not self.pattern.fullmatch(word.lower() if self.lowercase else word)
            and any(isinstance(arg, VersionArg) for arg in w.spec.args)
        ):  # `deploy 1.2.3 to dc-east`: the unit was left out
            raise w.error(f"`{w.spec.name}` needs {self.wanted} before the version.")
        return self.check(w, word)


@dataclass(frozen=True, slots=True)
class VersionArg:
    placeholder: str = "<version>"
    wanted: str = "a version (like 1.2.3)"

    def read(self, w: Words) -> Version:
        word = w.take(self.wanted)
        expected = (
            f"'{clip(word)}' is not a semantic version (expected MAJOR.MINOR.PATCH, like 1.2.3)."
        )
        if not word.isascii():
            raise w.invalid(word, self.wanted, expected)
        try:
            return Version.parse(word)
        except InvalidVersion as exc:
            message = f"{exc}." if len(word) <= 60 else expected
            raise w.invalid(word, self.wanted, message) from None


@dataclass(frozen=True, slots=True)
class IdArg:
    placeholder: str = "<id>"
    what: str = "an approval id"

    def read(self, w: Words) -> int:
        word = w.take(f"{self.what} (like 12)")
        digits = word.removeprefix("#")
        if not (digits.isascii() and digits.isdigit()):
            raise w.error(f"'{clip(word)}' is not {self.what}: ids are numbers, like 12 or #12.")
        if len(digits) > 18:
            raise w.error(f"'{clip(word)}' is too large for {self.what}.")
        return int(digits)


@dataclass(frozen=True, slots=True)
class Reason:
    """Free text to the end of the message, as typed (one "quoted" phrase loses its quotes)."""

    placeholder: str = "[reason...]"

    def read(self, w: Words) -> str:
        rest = w.remaining()
        if not rest:
            return ""
        if len(rest) == 1 and rest[0].quoted:
            text = rest[0].text
        else:
            text = " ".join(w.remainder().split())
        w.finish()
        return text


@dataclass(frozen=True, slots=True)
class Topic:
    """`help [command]`: a command name or alias, checked against the table."""

    placeholder: str = "[command]"

    def read(self, w: Words) -> str | None:
        if not w.more():
            return None
        word = w.take("a command")
        spec = find_spec(word)
        if spec is None:
            raise unknown_command(word)
        return spec.name


@dataclass(frozen=True, slots=True)
class OptionalName:
    """A name that may be left out (`traffic` or `traffic howdy-http in qa`)."""

    name: Name

    @property
    def placeholder(self) -> str:
        return f"[{self.name.placeholder}]"

    def read(self, w: Words) -> str | None:
        following = w.peek()
        if following is None or following in w.keywords:
            return None
        return self.name.read(w)


UNIT = Name("<unit>", "unit name", "howdy-http")
DATACENTER = Name("<dc>", "datacenter name", "dc-east")
NAMESPACE = Name(
    "<namespace>",
    "namespace",
    "qa or dev/sandbox",
    _NAMESPACE,
    _NAME_RULE + ", nested with /",
)
PLAN = Name("<plan>", "plan name", "default")
STACK = Name("<stack>", "stack name or guid", "howdy-http--1-2-3--k3x9q0ab")
IMAGE = Name(
    "<ref>",
    "image reference",
    "registry.example.com/howdy-http:1.2.3",
    _IMAGE,
    "a registry path with a tag or digest, without spaces",
    lowercase=False,
    article="an",
)
REPOSITORY = Name(
    "<repository>",
    "repository name",
    "acme/howdy",
    _REPOSITORY,
    "letters, digits, dots, dashes and underscores, like org/repo",
    lowercase=False,
)
BLUEPRINT = Name("<name>", "blueprint name", "web-service")
VERSION = VersionArg()
APPROVAL_ID = IdArg()

# -- clauses ------------------------------------------------------------------------------------

Reader = Callable[[Words, str], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Clause:
    """An optional part after the positional arguments, introduced by a keyword.

    Clauses that set the same `slot` exclude each other (`to ...` and `everywhere`)."""

    slot: str
    keywords: tuple[str, ...]  # the first one is the canonical keyword
    read: Reader
    usage: str = ""  # "" for a second clause of the same slot; its usage is the first's
    required: bool = False
    twice: str = ""  # the complaint when the slot is given twice
    after: str = ""  # a hint when an unknown word follows this clause


def _value(slot: str, arg: Name) -> Reader:
    def read(w: Words, keyword: str) -> dict[str, Any]:
        following = w.peek()
        if following is not None and following in w.keywords:  # `in plan big`
            raise w.error(f"`{keyword}` needs {arg.wanted} before `{following}`.")
        return {slot: arg.read(w)}

    return read


_AND = ("and", "&", "+")


def _listed(
    w: Words, what: str, allowed: Sequence[str] = (), first: str | None = None
) -> list[str]:
    """Words in a list: `a,b`, `a, b`, `a , b`, `a and b`, `a, b, and c`. The list ends at a
    word that is not joined to the previous one by a comma or `and`, or at one of the command's
    keywords where an item is expected (unless that keyword is `allowed` as an item)."""
    items = [first] if first is not None else []
    expecting = first is None
    while w.more():
        word = w.peek() or ""
        joined = word.startswith(",") or word in _AND
        if not expecting and not joined:
            break
        if expecting and not joined and word in w.keywords and word not in allowed:
            break
        w.take(what)
        expecting = False
        for part in word.split(","):
            if part in ("", *_AND):
                expecting = True
            else:
                items.append(part)
                expecting = False
    return items


_EVERYWHERE = ("everywhere", "all")
_ALL_DATACENTERS = ("datacenters", "dcs", "dc", "datacenter")


def _datacenters(w: Words, keyword: str) -> dict[str, Any]:
    if w.skip(*_EVERYWHERE):
        w.skip(*_ALL_DATACENTERS)
        return {"datacenters": (), "everywhere": True}
    names = _listed(w, f"a datacenter after `{keyword}`", allowed=_EVERYWHERE)
    if any(name in _EVERYWHERE for name in names):
        raise w.error("say either `everywhere` or a list of datacenters, not both.")
    if not names:
        raise w.error(f"`{keyword}` needs at least one datacenter (like dc-east), or `everywhere`.")
    checked = tuple(DATACENTER.check(w, name) for name in names)
    return {"datacenters": tuple(dict.fromkeys(checked)), "everywhere": False}


def _everywhere(w: Words, keyword: str) -> dict[str, Any]:
    w.skip(*_ALL_DATACENTERS)
    return {"datacenters": (), "everywhere": True}


_STATUSES = tuple(status.value for status in StackStatus)


def _statuses(w: Words, keyword: str) -> dict[str, Any]:
    first = keyword if keyword in _STATUSES else None  # `stacks failed, warming`
    words = _listed(w, f"a status after `{keyword}`", allowed=_STATUSES, first=first)
    if not words:
        raise w.error(f"`{keyword}` needs at least one status: {', '.join(_STATUSES)}.")
    statuses: list[StackStatus] = []
    for word in words:
        if word not in _STATUSES:
            raise w.error(
                f"'{clip(word)}' is not a stack status; the statuses are {', '.join(_STATUSES)}.",
                suggest(word, _STATUSES),
            )
        statuses.append(StackStatus(word))
    return {"statuses": tuple(dict.fromkeys(statuses))}


_IN_NAMESPACE = Clause(
    "namespace",
    ("in",),
    _value("namespace", NAMESPACE),
    "in <namespace>",
    twice="`in` is given twice.",
)
_AT_DATACENTER = Clause(
    "datacenter",
    ("at", "on"),
    _value("datacenter", DATACENTER),
    "at <dc>",
    twice="the datacenter is given twice.",
)


def _because(w: Words, keyword: str) -> dict[str, Any]:
    reason = Reason().read(w)
    if not reason.strip():
        raise w.error(f"`{keyword}` needs a reason after it, like `because the database is down`.")
    return {"reason": reason}


# Free text to the end of the message: it comes last.
_BECAUSE = Clause("reason", ("because",), _because, "because <reason>")
_EMERGENCY = Clause(
    "emergency",
    ("emergency",),
    lambda w, keyword: {"emergency": True},
    "emergency because <reason>",
    twice="`emergency` is given twice.",
)

_DEPLOY_CLAUSES = (
    Clause(
        "where",
        ("to", "on", "at"),
        _datacenters,
        "to <dc>[,<dc>...] | everywhere",
        twice="say either `everywhere` or `to <datacenters>`, once.",
        after="to name several datacenters, separate them with commas: `to dc-east, dc-west`",
    ),
    Clause(
        "where",
        ("everywhere",),
        _everywhere,
        twice="say either `everywhere` or `to <datacenters>`, once.",
    ),
    _IN_NAMESPACE,
    Clause("plan", ("plan",), _value("plan", PLAN), "plan <plan>", twice="`plan` is given twice."),
    Clause(
        "image", ("image",), _value("image", IMAGE), "image <ref>", twice="`image` is given twice."
    ),
    _EMERGENCY,
    Clause("reason", ("because",), _because),  # shown with `emergency`
)

_IMAGE_REQUIRED = Clause(
    "image",
    ("image",),
    _value("image", IMAGE),
    "image <ref>",
    required=True,
    twice="`image` is given twice.",
)

_COMMIT_CLAUSES = (
    Clause(
        "namespace",
        ("to", "into", "in"),
        _value("namespace", NAMESPACE),
        "to <namespace>",
        required=True,
        twice="the namespace is given twice.",
    ),
)

MAX_PAGE = 1_000_000
_ONE_PAGE = "say which page once: `page <n>` or `after <unit>`."


def _page(w: Words, keyword: str) -> dict[str, Any]:
    word = w.take("a page number (like 2)")
    if not (word.isascii() and word.isdigit() and len(word) <= 7 and 1 <= int(word) <= MAX_PAGE):
        raise w.error(f"'{clip(word)}' is not a page number: pages are numbered from 1, like 2.")
    return {"page": int(word)}


_UNITS_CLAUSES = (
    _IN_NAMESPACE,
    _AT_DATACENTER,
    Clause("page", ("page",), _page, "page <n> | after <unit>", twice=_ONE_PAGE),
    Clause("page", ("after",), _value("after", UNIT), twice=_ONE_PAGE),
)

_STACKS_CLAUSES = (
    _IN_NAMESPACE,
    _AT_DATACENTER,
    Clause(
        "statuses",
        ("status", "statuses"),
        _statuses,
        "status <status>[,<status>...]",
        twice="list several statuses with commas: `status ready, failed`.",
    ),
    # A bare status works too: `stacks failed in qa`.
    Clause(
        "statuses",
        _STATUSES,
        _statuses,
        twice="list several statuses with commas: `status ready, failed`.",
    ),
    Clause(
        "unit", ("unit", "for"), _value("unit", UNIT), "unit <unit>", twice="`unit` is given twice."
    ),
)


def _read_clauses(w: Words) -> dict[str, Any]:
    spec = w.spec
    given: set[str] = set()
    values: dict[str, Any] = {}
    last: Clause | None = None
    while w.more():
        word = w.peek() or ""
        token = w.tokens[w.at]
        if not token.quoted and word.endswith(",") and spec.clause_for(word.rstrip(",")):
            w.split_comma()  # `stacks failed, ready`: the comma joins a list
            word = word.rstrip(",")
        clause = spec.clause_for(word)
        if clause is None:
            close = suggest(word, spec.keywords)
            message = f"I don't understand '{clip(w.tokens[w.at].text)}' in `{spec.name}`"
            missing = [c for c in spec.clauses if c.required and c.slot not in given]
            if close is None and last is not None and last.after:
                message += f"; {last.after}"
            elif close is None and missing:
                message += f"; it needs `{missing[0].usage}`"
            raise w.error(message + ".", close)
        w.take(word)
        if clause.slot in given:
            raise w.error(clause.twice or f"`{word}` is given twice.")
        given.add(clause.slot)
        values.update(clause.read(w, word))
        last = clause
    for clause in spec.clauses:
        if clause.required and clause.slot not in given:
            raise w.error(f"`{spec.name}` needs `{clause.usage}`.")
    return values


# -- manifests: a path, pasted text, or an attached file ----------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    path: str | None = None
    text: str | None = None

    @property
    def attachment(self) -> bool:
        return self.path is None and self.text is None


def _source(w: Words) -> Source:
    """What follows `lint [manifest]` or `manifest <repository>`: nothing (the front end supplies
    the attached file), one path, or a manifest, in a ``` block or on the following lines, kept
    exactly as sent."""
    rest = w.remainder()
    if not rest.strip():
        return Source()
    w.finish()
    fence = FENCE.search(rest)
    if fence is not None:
        before, after = rest[: fence.start()].strip(), rest[fence.end() :].strip()
        if before:
            raise w.error(
                f"I did not expect '{clip(before)}' before the code block: give either a path "
                "or the manifest, not both."
            )
        if after:
            raise w.error(f"I did not expect '{clip(after)}' after the code block.")
        return Source(text=fence.group("body"))
    first, newline, following = rest.partition("\n")
    if newline and following.strip():
        if first.strip():  # the manifest starts on the command's line
            return Source(text=first.lstrip() + newline + following)
        return Source(text=re.sub(r"\A(?:[ \t]*\n)+", "", following))
    words = tokenize(first)
    if len(words) == 1:
        return Source(path=_final(words)[0].text or words[0].text)
    if ":" in first:  # a one-line manifest: `lint units: []`
        return Source(text=first.strip())
    raise w.error(
        f"I expected one path, not '{clip(first.strip())}': put a path with spaces in quotes, "
        "or paste the manifest in a code block."
    )


def _lint(w: Words) -> Command:
    w.skip_on_first_line("manifest")
    source = _source(w)
    return model.Lint(path=source.path, text=source.text, attachment=source.attachment)


def _manifest(w: Words) -> Command:
    w.skip_on_first_line("add", "register")
    token = w.next_token()
    if token is None or token.text == "```" or "\n" in w.text[: token.start]:
        raise w.error(f"`{w.spec.name}` needs {REPOSITORY.wanted}.", "manifests")
    repository = REPOSITORY.read(w)
    source = _source(w)
    return model.RegisterManifest(
        repository, path=source.path, text=source.text, attachment=source.attachment
    )


def _blueprint(w: Words) -> Command:
    w.skip_on_first_line("add", "register")
    token = w.next_token()
    if token is None or token.text == "```" or "\n" in w.text[: token.start]:
        raise w.error(f"`{w.spec.name}` needs {BLUEPRINT.wanted}.", "blueprints")
    name = BLUEPRINT.read(w)
    source = _source(w)
    return model.RegisterBlueprint(
        name, path=source.path, text=source.text, attachment=source.attachment
    )


TOKEN = Name("<name>", "token name", "github-ci")
_RIGHTS = ("deploy", "view")


def _token(w: Words) -> Command:
    action = w.take("`create` or `revoke`").lower()
    if action == "revoke":
        name = TOKEN.read(w)
        w.done()
        return model.RevokeToken(name)
    if action != "create":
        raise w.error(
            f"'{clip(action)}' is not something `token` does: it can `create` or `revoke`.",
            suggest(action, ("create", "revoke")),
        )
    name = TOKEN.read(w)
    if len(name) > 63:
        raise w.error(f"'{clip(name)}' is too long for a token name (63 characters at most).")
    if not w.skip("for"):
        raise w.error("`token create` needs `for <namespace>[,<namespace>...]` after the name.")
    listed = _listed(w, "a namespace after `for`")
    if not listed:
        raise w.error("`for` needs at least one namespace (like dev or qa).")
    namespaces = tuple(dict.fromkeys(NAMESPACE.check(w, ns) for ns in listed))
    right = "deploy"
    if w.skip("can", "may"):
        word = w.take("`deploy` or `view` after `can`").lower()
        if word not in _RIGHTS:
            raise w.error(
                f"'{clip(word)}' is not a right a token can have: `deploy` or `view`.",
                suggest(word, _RIGHTS),
            )
        right = word
    w.done()
    return model.CreateToken(name, namespaces, right)


_RENDER_CLAUSES = (
    Clause(
        "datacenter",
        ("at", "to", "on"),
        _value("datacenter", DATACENTER),
        "at <dc>",
        required=True,
        twice="the datacenter is given twice.",
    ),
    _IN_NAMESPACE,
    Clause("plan", ("plan",), _value("plan", PLAN), "plan <plan>", twice="`plan` is given twice."),
)


# -- locks and freezes -------------------------------------------------------------------------

_DURATION_WORDS = frozenset(
    {"d", "day", "days", "h", "hour", "hours", "hr", "hrs", "m", "min", "mins", "minute"}
    | {"minutes", "s", "sec", "secs", "second", "seconds"}
)


def _duration(w: Words, keyword: str) -> dict[str, Any]:
    """`for 2h`, `for 90m`, `for 2 hours`: whole seconds, at least one."""
    word = w.take(f"a duration after `{keyword}` (like 2h or 30m)")
    if w.peek() in _DURATION_WORDS:  # `for 2 hours`
        word = f"{word} {w.take('a unit of time')}"
    try:
        duration = parse_duration(word)
    except DurationError as exc:
        raise w.error(f"{exc}.") from None
    seconds = whole_seconds(duration)
    if seconds < 1:
        raise w.error(f"'{clip(word)}' is too short for a lock; give at least a second.")
    return {"duration": timedelta(seconds=seconds)}


def _until(w: Words, keyword: str) -> dict[str, Any]:
    word = w.take(f"a moment after `{keyword}` ({UNTIL_FORMS})")
    following = w.peek()
    if following is not None and ":" in following and "-" in word:  # `until 2026-12-01 08:00`
        word = f"{word} {w.take('a time')}"
    try:
        return {"until": parse_until(word)}
    except UntilError as exc:
        raise w.error(f"{exc}.") from None


_LOCK_CLAUSES = (
    _IN_NAMESPACE,
    Clause("duration", ("for",), _duration, "for <duration>", twice="`for` is given twice."),
    _BECAUSE,
)
_FREEZE_CLAUSES = (
    _AT_DATACENTER,
    Clause(
        "until",
        ("until", "till"),
        _until,
        "until <time>",
        required=True,
        twice="`until` is given twice.",
    ),
    _BECAUSE,
)

# -- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    summary: str  # one line, lowercase, no full stop
    category: str
    build: Callable[..., Command]  # the command's dataclass, given args then clause values
    args: tuple[Arg, ...] = ()
    clauses: tuple[Clause, ...] = ()
    aliases: tuple[str, ...] = ()
    description: str = ""
    examples: tuple[str, ...] = ()
    custom: Callable[[Words], Command] | None = None  # a parser of its own (lint, manifest)
    usage_lines: tuple[str, ...] = ()  # generated from args and clauses if empty
    also_builds: tuple[type, ...] = ()  # other commands its custom parser makes (`token revoke`)

    @property
    def usages(self) -> tuple[str, ...]:
        if self.usage_lines:
            return self.usage_lines
        parts = [self.name, *(arg.placeholder for arg in self.args)]
        for clause in self.clauses:
            if clause.usage:
                parts.append(clause.usage if clause.required else f"[{clause.usage}]")
        return (" ".join(parts),)

    @property
    def usage(self) -> str:
        """All usage lines, one per line (what ParseError.usage carries)."""
        return "\n".join(self.usages)

    @property
    def keywords(self) -> frozenset[str]:
        return frozenset(k for clause in self.clauses for k in clause.keywords)

    def clause_for(self, word: str) -> Clause | None:
        return next((c for c in self.clauses if word in c.keywords), None)

    def parse(self, w: Words) -> Command:
        if self.custom is not None:
            return self.custom(w)
        values = [arg.read(w) for arg in self.args]
        options = _read_clauses(w) if self.clauses else {}
        w.done()
        return self.build(*values, **options)


DEPLOYING = "Deploying"
LOOKING = "Looking around"
APPROVALS = "Approvals and traffic"
MANIFESTS = "Manifests"
LOCKS = "Locks and freezes"
ABOUT = "About the bot"
CI = "CI and API tokens"
_STACK_EXAMPLE = "howdy-http--1-2-3--k3x9q0ab"

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "deploy",
        "release a version of a unit and deploy it",
        DEPLOYING,
        model.Deploy,
        args=(UNIT, VERSION),
        clauses=_DEPLOY_CLAUSES,
        description="Creates the release on first use (its image comes from the configured "
        "template unless `image` names one) and one stack per datacenter and plan. The clauses "
        "after the version come in any order. Without `to`, every datacenter the manifest "
        "allows; without `in`, the default namespace; without `plan`, every plan the namespace "
        "gives the unit. Several datacenters: `to dc-east, dc-west` or `to dc-east and "
        "dc-west`; `everywhere` (or `to all`) means every datacenter.",
        examples=(
            "deploy howdy-http 1.2.3 to dc-east",
            "deploy howdy-http v1.2 to dc-east, dc-west in qa",
            "deploy accounts 2.0.0 everywhere plan big",
            "deploy accounts 2.0.1 in dev/sandbox image registry.example.com/accounts:2.0.1",
        ),
    ),
    CommandSpec(
        "render",
        "show what a deploy would submit to a datacenter, without deploying",
        DEPLOYING,
        model.Render,
        args=(UNIT, VERSION),
        clauses=_RENDER_CLAUSES,
        description="Shows the exact spec a deploy would submit (the Nomad job from the plan's "
        "blueprint, or the Docker container options), checked by the datacenter when it is "
        "reachable: Nomad validates the job and shows its plan's changes. Nothing is recorded "
        "or run. Without `in`, the default namespace; without `plan`, the unit's first plan "
        "there.",
        examples=(
            "render howdy-http 1.2.3 at dc-west",
            "render accounts 2.0.0 at dc-east in qa plan big",
        ),
    ),
    CommandSpec(
        "commit",
        "deploy an existing release into another namespace",
        DEPLOYING,
        model.Commit,
        args=(UNIT, VERSION),
        clauses=_COMMIT_CLAUSES,
        description="Deploys a version that was already released into a namespace, with that "
        "namespace's plans.",
        examples=("commit howdy-http 1.2.3 to qa",),
    ),
    CommandSpec(
        "redeploy",
        "make a fresh stack of the same release at the same place",
        DEPLOYING,
        model.Redeploy,
        args=(STACK,),
        examples=(f"redeploy {_STACK_EXAMPLE}",),
    ),
    CommandSpec(
        "deprecate",
        "stop new deploys from depending on a version",
        DEPLOYING,
        model.Deprecate,
        args=(UNIT, VERSION),
        description="Existing dependants keep working; once nothing depends on it, it is "
        "cleaned up.",
        examples=("deprecate accounts 1.4.0",),
    ),
    CommandSpec(
        "keep",
        "keep a stack the cleanup would remove, for another day",
        DEPLOYING,
        model.Keep,
        args=(STACK,),
        description="A garbage stack goes back to where it was and expires in "
        "`lifecycle.keep_for` (24h); the same as the Keep button of a cleanup announcement. "
        "Needs the deploy role in the stack's namespace.",
        examples=(f"keep {_STACK_EXAMPLE}",),
    ),
    CommandSpec(
        "remove",
        "remove a garbage stack now instead of waiting for the cleanup",
        DEPLOYING,
        model.Remove,
        args=(STACK,),
        description="Only garbage stacks (`stacks status garbage`), and only for admins of the "
        "stack's namespace; the same as the Remove-now button of a cleanup announcement.",
        examples=(f"remove {_STACK_EXAMPLE}",),
    ),
    CommandSpec(
        "stacks",
        "list stacks, newest first",
        LOOKING,
        model.ListStacks,
        clauses=_STACKS_CLAUSES,
        description=f"Filters come in any order; `on <dc>` works as `at <dc>`, and a status "
        f"alone (`stacks failed`) filters by it. Statuses: {', '.join(_STATUSES)}.",
        examples=(
            "stacks",
            "stacks in qa at dc-east",
            "stacks status warming, ready",
            "stacks failed unit howdy-http",
        ),
    ),
    CommandSpec(
        "units",
        "list units and their live stacks",
        LOOKING,
        model.ListUnits,
        clauses=_UNITS_CLAUSES,
        description="Units sorted by name, a page at a time; the reply says how to get the next.",
        examples=(
            "units",
            "units in prod at dc-west",
            "units in prod page 2",
            "units after howdy-http",
        ),
    ),
    CommandSpec(
        "inspect",
        "everything about one stack: release, status history, dependencies",
        LOOKING,
        model.Inspect,
        args=(Name("<stack|guid>", STACK.what, STACK.example),),
        examples=(f"inspect {_STACK_EXAMPLE}", "inspect 4f2a9c1b7e"),
    ),
    CommandSpec(
        "logs",
        "the workflow log of a stack",
        LOOKING,
        model.Logs,
        args=(STACK,),
        examples=(f"logs {_STACK_EXAMPLE}",),
    ),
    CommandSpec(
        "runtime",
        "what the scheduler says about a stack's instances and health",
        LOOKING,
        model.Runtime,
        args=(STACK,),
        examples=(f"runtime {_STACK_EXAMPLE}",),
    ),
    CommandSpec(
        "graph",
        "who depends on a unit, and what it depends on",
        LOOKING,
        model.Graph,
        args=(UNIT,),
        examples=("graph accounts",),
    ),
    CommandSpec(
        "approvals",
        "what is waiting for approval",
        APPROVALS,
        model.ListApprovals,
    ),
    CommandSpec(
        "approve",
        "approve a waiting request",
        APPROVALS,
        model.Approve,
        args=(APPROVAL_ID,),
        description="The id is the number `approvals` shows.",
        examples=("approve 12", "approve #12"),
    ),
    CommandSpec(
        "reject",
        "reject a waiting request, saying why",
        APPROVALS,
        model.Reject,
        args=(APPROVAL_ID, Reason()),
        description="Everything after the id is the reason.",
        examples=("reject 12 error rate too high",),
    ),
    CommandSpec(
        "reverse",
        "move traffic back from a new stack to the old one",
        APPROVALS,
        model.Reverse,
        args=(STACK,),
        examples=(f"reverse {_STACK_EXAMPLE}",),
    ),
    CommandSpec(
        "pause",
        "hold a traffic shift where it is",
        APPROVALS,
        model.Pause,
        args=(STACK,),
        description="The stack is the new one of the shift; weights stay until `resume`. The "
        "same as the Pause button. Needs the deploy role in the stack's namespace.",
        examples=(f"pause {_STACK_EXAMPLE}",),
    ),
    CommandSpec(
        "resume",
        "let a paused traffic shift continue",
        APPROVALS,
        model.Resume,
        args=(STACK,),
        description="The shift continues from its weights over the rest of its duration. The "
        "same as the Resume button.",
        examples=(f"resume {_STACK_EXAMPLE}",),
    ),
    CommandSpec(
        "traffic",
        "each route: its stacks, their weights, and the shift under way",
        APPROVALS,
        model.Traffic,
        args=(OptionalName(UNIT),),
        clauses=(_IN_NAMESPACE, _AT_DATACENTER),
        description="A route is one unit's major version in one namespace of a datacenter. "
        "Without `in`, every namespace you may see.",
        examples=("traffic", "traffic howdy-http in prod at dc-east"),
    ),
    CommandSpec(
        "manifest",
        "register a repository's manifest (attached, pasted, or a path in the console)",
        MANIFESTS,
        model.RegisterManifest,
        aliases=("register",),
        description="Paste the manifest after the repository (in a code block, or on the "
        "following lines), give a path (read only in the local console), or send the command "
        "with nothing after the repository and the file attached. It is validated first; a new "
        "revision applies to future deploys and never changes running stacks. "
        "`manifest add <repository> ...` works too.",
        examples=(
            "manifest acme/howdy examples/howdy-service.nelson.yml",
            "manifest add acme/howdy",
        ),
        custom=_manifest,
        usage_lines=(
            "manifest <repository> <path>",
            "manifest <repository> <manifest pasted after it>",
            "manifest <repository>",
        ),
    ),
    CommandSpec(
        "manifests",
        "list registered manifests",
        MANIFESTS,
        model.ListManifests,
    ),
    CommandSpec(
        "blueprint",
        "register a scheduler blueprint (attached, pasted, or a path in the console)",
        MANIFESTS,
        model.RegisterBlueprint,
        description="A blueprint is the template a Nomad job is made from (YAML in Nomad's "
        "JSON job shape with Jinja2 tags; docs/nomad.md lists its variables). Plans pick one "
        "with `blueprint: name` or `blueprint: name@revision` in the manifest; without it, "
        "the default blueprint of the datacenter's kind is used. Paste it after the name, "
        "give a path (only in the local console), or attach the file. Each new text is a new "
        "revision; running stacks keep theirs.",
        examples=("blueprint web-service blueprints/web.yml", "blueprint web-service"),
        custom=_blueprint,
        usage_lines=(
            "blueprint <name> <path>",
            "blueprint <name> <blueprint pasted after it>",
            "blueprint <name>",
        ),
    ),
    CommandSpec(
        "blueprints",
        "list registered blueprints and the built-in ones",
        MANIFESTS,
        model.ListBlueprints,
    ),
    CommandSpec(
        "lint",
        "check a manifest and list every problem",
        MANIFESTS,
        model.Lint,
        description="Reads the manifest pasted after the command (in a code block, or on the "
        "following lines), a path (only in the local console), or, with nothing after the "
        "command, the attached file. Nothing is registered.",
        examples=("lint manifest examples/howdy-service.nelson.yml", "lint"),
        custom=_lint,
        usage_lines=(
            "lint [manifest] <path>",
            "lint <manifest pasted after it>",
            "lint",
        ),
    ),
    # -- CI: deployables announced ahead of deploys, and the API tokens CI systems use ------
    CommandSpec(
        "announce",
        "record a release (unit, version, image) without deploying it",
        CI,
        model.Announce,
        args=(UNIT, VERSION),
        clauses=(_IMAGE_REQUIRED,),
        description="What CI does when a build is published (the HTTP API and GitHub releases "
        "do the same): later deploys and commits of that version use exactly this image. An "
        "image with a digest (`@sha256:…`) pins it; otherwise the first deploy resolves it.",
        examples=("announce howdy-http 1.2.3 image registry.example.com/howdy-http:1.2.3",),
    ),
    CommandSpec(
        "token",
        "create or revoke an API token for CI (admins)",
        CI,
        model.CreateToken,
        description="A token lets a CI system use the HTTP API (docs/api.md) with one right, "
        "`view` or `deploy` (which includes view), in the namespaces listed, and nothing else. "
        "It is shown once, privately, to the admin who creates it; only its hash is kept. "
        "Everything done with it is audited under `token:<name>`.",
        examples=(
            "token create github-ci for dev, qa can deploy",
            "token create dashboards for prod can view",
            "token revoke github-ci",
        ),
        custom=_token,
        also_builds=(model.RevokeToken,),
        usage_lines=(
            "token create <name> for <namespace>[,<namespace>...] [can deploy|view]",
            "token revoke <name>",
        ),
    ),
    CommandSpec(
        "tokens",
        "list the API tokens of the namespaces you administer",
        CI,
        model.ListTokens,
    ),
    # -- locks, freezes and rollback --
    CommandSpec(
        "rollback",
        "send a unit's traffic back at once to the stack before",
        APPROVALS,
        model.Rollback,
        args=(UNIT,),
        clauses=(
            _IN_NAMESPACE,
            _AT_DATACENTER,
            Clause("stack", ("from",), _value("stack", STACK), "from <stack>"),
        ),
        description="The previous stack of the same major version that still runs gets all "
        "the traffic at once, without a policy; the answer names it. The stack rolled back "
        "from gets none and is left for cleanup (garbage, with the reason). No approval unless "
        "the namespace's rule sets `rollbacks = true`. Locks and freezes do not hold it. "
        "Without `in`, the default namespace; without `at`, every datacenter where the unit "
        "has something to roll back; it rolls back the newest stack getting traffic, or, with "
        "`from`, only that stack (what the Roll back button of a deploy's thread does). "
        "Needs the deploy role in the namespace.",
        examples=("rollback howdy-http in prod", "rollback howdy-http in prod at dc-east"),
    ),
    CommandSpec(
        "lock",
        "stop deploys and traffic shifts of a unit for a while",
        LOCKS,
        model.Lock,
        args=(UNIT,),
        clauses=_LOCK_CLAUSES,
        description="While a unit is locked, `deploy`, `commit`, `redeploy` and the start of a "
        "traffic shift there are refused, saying who locked it, why and until when. Without "
        "`in`, every namespace; without `for`, until `unlock`. `because` comes last. Locking "
        "again replaces the lock. Needs the deploy role in the namespace (in every namespace "
        "without `in`).",
        examples=(
            "lock howdy-http in prod for 2h because the database migrates",
            "lock accounts because of incident 42",
        ),
    ),
    CommandSpec(
        "unlock",
        "lift a unit's lock",
        LOCKS,
        model.Unlock,
        args=(UNIT,),
        clauses=(_IN_NAMESPACE,),
        description="Without `in`, every lock of the unit. Needs the deploy role where the "
        "lock holds.",
        examples=("unlock howdy-http in prod", "unlock accounts"),
    ),
    CommandSpec(
        "freeze",
        "stop every deploy and traffic shift into a namespace until a moment",
        LOCKS,
        model.Freeze,
        args=(NAMESPACE,),
        clauses=_FREEZE_CLAUSES,
        description="Times are UTC: a date (midnight), a date and a time, or a time of day "
        "(its next occurrence). Covers the namespaces nested in it; without `at`, every "
        "datacenter. Scheduled windows (weekends in prod) come from the `freezes` setting and "
        "are listed by `locks`. Admins of the namespace only. An admin may still deploy with "
        "`deploy ... emergency because <reason>`, which is announced.",
        examples=(
            "freeze prod until 2026-12-28 because of the holidays",
            "freeze prod at dc-east until 18:00 because the network is being moved",
        ),
    ),
    CommandSpec(
        "unfreeze",
        "lift a namespace's freeze",
        LOCKS,
        model.Unfreeze,
        args=(NAMESPACE,),
        clauses=(_AT_DATACENTER,),
        description="Without `at`, every freeze of the namespace. Scheduled windows cannot be "
        "lifted from chat: they are in the configuration.",
        examples=("unfreeze prod", "unfreeze prod at dc-east"),
    ),
    CommandSpec(
        "locks",
        "the locks and freezes in force, and the scheduled windows",
        LOCKS,
        model.ListLocks,
        aliases=("freezes",),
    ),
    CommandSpec(
        "datacenters",
        "the datacenters, their scheduler and registries, and the processes alive (each replica's "
        "host, pid, start, last heartbeat and the deploys it holds)",
        ABOUT,
        model.ListDatacenters,
        aliases=("dcs",),
    ),
    CommandSpec(
        "cleanup-policies",
        "the expiration policies and what each keeps",
        ABOUT,
        model.CleanupPolicies,
        aliases=("policies",),
    ),
    CommandSpec(
        "whoami",
        "who you are to me and what you may do",
        ABOUT,
        model.Whoami,
    ),
    CommandSpec(
        "help",
        "this list, or the details of one command",
        ABOUT,
        model.Help,
        args=(Topic(),),
        aliases=("?", "commands"),
        examples=("help", "help deploy"),
    ),
)

_BY_WORD = {word: spec for spec in COMMANDS for word in (spec.name, *spec.aliases)}
_COMMON = tuple(dict.fromkeys(spec.category for spec in COMMANDS))


def find_spec(word: str) -> CommandSpec | None:
    """The command a name or alias stands for (any case, a leading `/` or trailing `:` ignored)."""
    word = word.strip().lower()
    return _BY_WORD.get(word) or _BY_WORD.get(word.strip("/:,") or word)


def unknown_command(word: str) -> ParseError:
    common = [next(s.name for s in COMMANDS if s.category == c) for c in _COMMON]
    return ParseError(
        f"I don't know the command '{clip(word)}'.",
        "`help` lists them all; the usual ones are "
        + ", ".join(f"`{name}`" for name in common)
        + ".",
        suggestion=_did_you_mean(suggest(word, _BY_WORD)),
    )


def _no_command() -> ParseError:
    return ParseError(
        "there is no command in that message; `help` lists what I can do.",
        "Try `help`, or `help deploy`.",
    )


def _final(tokens: list[Token]) -> list[Token]:
    """A sentence's final full stop (`deploy x 1.2 to dc-east.`) is not part of the last word."""
    if not tokens or tokens[-1].quoted:
        return tokens
    last = tokens[-1]
    trimmed = last.text.rstrip(_FINAL_PUNCTUATION)
    if trimmed == last.text:
        return tokens
    if not trimmed:
        return tokens if len(tokens) == 1 else tokens[:-1]
    return [*tokens[:-1], Token(trimmed, last.start, last.end)]


def parse_command(text: str) -> Command:
    """The typed command `text` asks for; ParseError (and nothing else) when there is none."""
    if not isinstance(text, str):
        raise ParseError("I can only read text.")
    if len(text) > MAX_TEXT:
        raise ParseError(
            f"that message is too long for me (over {MAX_TEXT // 1000:,} thousand characters).",
            "Attach a large manifest as a file instead of pasting it.",
        )
    cleaned = unwrap(normalise(text))
    tokens = _final(tokenize(cleaned))
    if not tokens or not any(c.isalnum() or c == "?" for c in tokens[0].text):
        raise _no_command()
    spec = find_spec(tokens[0].text)
    if spec is None:
        raise unknown_command(tokens[0].text)
    return spec.parse(Words(spec, cleaned, tokens))


# -- back to text -------------------------------------------------------------------------------


def _quoted(word: str) -> str:
    return f'"{word}"' if not word or any(c.isspace() or c in "\"'`" for c in word) else word


def canonical(command: Command) -> str:  # noqa: C901  (one flat arm per command)
    """The shortest text in the grammar's own words that parses back to `command`."""
    match command:
        case model.Help(topic=topic):
            return f"help {topic}" if topic else "help"
        case model.Deploy():
            parts = ["deploy", command.unit, str(command.version)]
            if command.everywhere:
                parts.append("everywhere")
            elif command.datacenters:
                parts.append("to " + ", ".join(command.datacenters))
            if command.namespace:
                parts.append(f"in {command.namespace}")
            if command.plan:
                parts.append(f"plan {command.plan}")
            if command.image:
                parts.append(f"image {command.image}")
            if command.emergency:
                parts.append("emergency")
            if command.reason:
                parts.append(f"because {command.reason}")
            return " ".join(parts)
        case model.Commit(unit=unit, version=version, namespace=namespace):
            return f"commit {unit} {version} to {namespace}"
        case model.ListStacks():
            parts = ["stacks"]
            if command.namespace:
                parts.append(f"in {command.namespace}")
            if command.datacenter:
                parts.append(f"at {command.datacenter}")
            if command.statuses:
                parts.append("status " + ", ".join(s.value for s in command.statuses))
            if command.unit:
                parts.append(f"unit {command.unit}")
            return " ".join(parts)
        case model.ListUnits(namespace=namespace, datacenter=datacenter, page=page, after=after):
            parts = ["units"]
            if namespace:
                parts.append(f"in {namespace}")
            if datacenter:
                parts.append(f"at {datacenter}")
            if page is not None:
                parts.append(f"page {page}")
            if after is not None:
                parts.append(f"after {after}")
            return " ".join(parts)
        case model.Inspect(stack=stack):
            return f"inspect {stack}"
        case model.Logs(stack=stack):
            return f"logs {stack}"
        case model.Runtime(stack=stack):
            return f"runtime {stack}"
        case model.Redeploy(stack=stack):
            return f"redeploy {stack}"
        case model.Reverse(stack=stack):
            return f"reverse {stack}"
        case model.Pause(stack=stack):
            return f"pause {stack}"
        case model.Resume(stack=stack):
            return f"resume {stack}"
        case model.Traffic(unit=unit, namespace=namespace, datacenter=datacenter):
            parts = ["traffic"]
            if unit:
                parts.append(unit)
            if namespace:
                parts.append(f"in {namespace}")
            if datacenter:
                parts.append(f"at {datacenter}")
            return " ".join(parts)
        case model.Deprecate(unit=unit, version=version):
            return f"deprecate {unit} {version}"
        case model.Keep(stack=stack):
            return f"keep {stack}"
        case model.Remove(stack=stack):
            return f"remove {stack}"
        case model.ListApprovals():
            return "approvals"
        case model.Approve(approval_id=approval_id):
            return f"approve {approval_id}"
        case model.Reject(approval_id=approval_id, reason=reason):
            return f"reject {approval_id} {reason}".rstrip()
        case model.ListDatacenters():
            return "datacenters"
        case model.CleanupPolicies():
            return "cleanup-policies"
        case model.Lint(path=path, text=text):
            if text is not None:
                return f"lint\n```\n{text}\n```"
            return f"lint {_quoted(path)}" if path is not None else "lint"
        case model.RegisterManifest(repository=repository, path=path, text=text):
            if text is not None:
                return f"manifest {repository}\n```\n{text}\n```"
            if path is not None:
                return f"manifest {repository} {_quoted(path)}"
            return f"manifest {repository}"
        case model.ListManifests():
            return "manifests"
        case model.RegisterBlueprint(name=name, path=path, text=text):
            if text is not None:
                return f"blueprint {name}\n```\n{text}\n```"
            if path is not None:
                return f"blueprint {name} {_quoted(path)}"
            return f"blueprint {name}"
        case model.ListBlueprints():
            return "blueprints"
        case model.Render(
            unit=unit, version=version, datacenter=datacenter, namespace=namespace, plan=plan
        ):
            parts = [f"render {unit} {version} at {datacenter}"]
            if namespace:
                parts.append(f"in {namespace}")
            if plan:
                parts.append(f"plan {plan}")
            return " ".join(parts)
        case model.Whoami():
            return "whoami"
        case model.Graph(unit=unit):
            return f"graph {unit}"
        case model.Announce(unit=unit, version=version, image=image):
            return f"announce {unit} {version} image {image}"
        case model.CreateToken(name=name, namespaces=namespaces, right=right):
            return f"token create {name} for {', '.join(namespaces)} can {right}"
        case model.ListTokens():
            return "tokens"
        case model.RevokeToken(name=name):
            return f"token revoke {name}"
        case model.Lock(unit=unit, namespace=namespace, duration=duration, reason=reason):
            parts = [f"lock {unit}"]
            if namespace:
                parts.append(f"in {namespace}")
            if duration is not None:
                parts.append(f"for {whole_seconds(duration)}s")
            if reason:
                parts.append(f"because {reason}")
            return " ".join(parts)
        case model.Unlock(unit=unit, namespace=namespace):
            return f"unlock {unit} in {namespace}" if namespace else f"unlock {unit}"
        case model.Freeze(namespace=namespace, until=until, datacenter=datacenter, reason=reason):
            parts = [f"freeze {namespace}"]
            if datacenter:
                parts.append(f"at {datacenter}")
            parts.append(f"until {until.text}")
            if reason:
                parts.append(f"because {reason}")
            return " ".join(parts)
        case model.Unfreeze(namespace=namespace, datacenter=datacenter):
            where = f" at {datacenter}" if datacenter else ""
            return f"unfreeze {namespace}{where}"
        case model.ListLocks():
            return "locks"
        case model.Rollback(unit=unit, namespace=namespace, datacenter=datacenter, stack=stack):
            parts = [f"rollback {unit}"]
            if namespace:
                parts.append(f"in {namespace}")
            if datacenter:
                parts.append(f"at {datacenter}")
            if stack:
                parts.append(f"from {stack}")
            return " ".join(parts)
        case _:
            assert_never(command)


# -- help ---------------------------------------------------------------------------------------


def help_overview() -> str:
    """Every command, grouped, one line each (plain text with *bold* and `code`)."""
    return render_overview(COMMANDS)


def help_for(topic: str) -> str:
    """Usage, description and examples of one command, by name or alias; ParseError (with a
    did-you-mean) when there is no such command."""
    word = unwrap(normalise(topic))
    spec = find_spec(word)
    if spec is None:
        raise unknown_command(word or topic)
    return render_topic(spec)
