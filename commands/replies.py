"""What handlers answer: a small structured document each front end renders its own way
(Block Kit in Slack, aligned text in the terminal)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Text:
    text: str  # plain text with light emphasis: *bold*, `code`


@dataclass(frozen=True, slots=True)
class Fields:
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    total: int | None = None  # when rows were cut: how many there are in all

    @property
    def truncated(self) -> bool:
        return self.total is not None and self.total > len(self.rows)


@dataclass(frozen=True, slots=True)
class Code:
    text: str


Block = Text | Fields | Table | Code


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file that goes with a reply (a rendered picture); front ends share or save it."""

    filename: str
    content: bytes
    title: str
    alt_text: str  # what the picture shows, for screen readers and text-only front ends


@dataclass(frozen=True, slots=True)
class Reply:
    title: str
    blocks: tuple[Block, ...] = ()
    ok: bool = True
    private: bool = False  # meant for the asker only (ephemeral in Slack)
    stack_ids: tuple[int, ...] = field(default=())  # stacks this reply started work on
    operation_id: int | None = None  # the long work it started, followed in its own messages
    attachments: tuple[Attachment, ...] = ()


class UserError(Exception):
    """A request the user can fix: bad words, unknown unit, invalid manifest, refused access.

    `message` says what is wrong; `hint` says what to do instead (usage, did-you-mean)."""

    def __init__(self, message: str, hint: str = "", *, details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details


class AccessDenied(UserError):
    """Refused by an access rule; the message names the rule."""


class ParseError(UserError):
    """The text is not a command the grammar knows."""

    def __init__(
        self, message: str, hint: str = "", *, suggestion: str | None = None, usage: str = ""
    ) -> None:
        super().__init__(message, hint)
        self.suggestion = suggestion
        self.usage = usage


class NotAvailable(UserError):
    """The command exists but this datacenter (or this build) cannot do it yet."""


class NotFound(UserError):
    """What the command names does not exist (a unit, a stack)."""
