"""Locks and freezes: what stops deploys and traffic shifts for a while, and when it ends.

A *lock* holds one unit (in one namespace, or in all of them); a *freeze* holds a whole
namespace (at one datacenter, or at all of them). Both cover nested namespaces (`prod` covers
`prod/eu`). A scheduled freeze window from the configuration (weekends in `prod`) holds the
same way while it is open. Time is always a parameter here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

LOCK = "lock"
FREEZE = "freeze"
WINDOW = "window"  # a scheduled freeze from the configuration

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class NewLock:
    kind: str  # LOCK | FREEZE
    unit: str | None  # a lock's unit; None for a freeze
    namespace: str | None  # None: a lock in every namespace
    datacenter: str | None  # a freeze's datacenter; None: every datacenter
    reason: str
    created_by: str
    created_at: datetime
    until: datetime | None  # None: until someone lifts it


@dataclass(frozen=True, slots=True)
class Lock:
    id: int  # 0 for a scheduled window (not stored)
    kind: str
    unit: str | None
    namespace: str | None
    datacenter: str | None
    reason: str
    created_by: str
    created_at: datetime
    until: datetime | None

    def active(self, now: datetime) -> bool:
        return self.until is None or self.until > now

    def covers(self, unit: str, namespace: str, datacenter: str | None) -> bool:
        """Whether this holds `unit` in `namespace` at `datacenter` (None: anywhere)."""
        if self.kind == LOCK and self.unit != unit:
            return False
        if self.namespace is not None and not within(namespace, self.namespace):
            return False
        return self.datacenter is None or datacenter is None or self.datacenter == datacenter

    @property
    def scope(self) -> str:
        """`howdy in prod`, `prod at dc-east`, `howdy in every namespace`."""
        if self.kind == LOCK:
            return f"{self.unit} in {self.namespace or 'every namespace'}"
        where = f" at {self.datacenter}" if self.datacenter else ""
        return f"{self.namespace}{where}"

    def describe(self, now: datetime) -> str:
        """One line naming what, who, why and until when."""
        what = {LOCK: "locked", FREEZE: "frozen"}.get(self.kind, "frozen (scheduled window)")
        until = f"until {stamp(self.until)}" if self.until else "until someone lifts it"
        why = f" because {self.reason}" if self.reason else " (no reason given)"
        return f"{self.scope} is {what} by {self.created_by}{why}, {until}"


def within(namespace: str, parent: str) -> bool:
    return namespace == parent or namespace.startswith(parent.rstrip("/") + "/")


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def holding(
    locks: Iterable[Lock], unit: str, namespace: str, datacenter: str | None, now: datetime
) -> list[Lock]:
    """The active locks and freezes among `locks` that hold `unit` at the target."""
    return [lock for lock in locks if lock.active(now) and lock.covers(unit, namespace, datacenter)]


# -- `until <time>` -------------------------------------------------------------------------------


class UntilError(ValueError):
    """The message says what is wrong, for people."""


_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_DATE_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[t ](\d{1,2}):(\d{2})(?::\d{2})?z?")
UNTIL_FORMS = "a UTC date or time, like 2026-12-01, 2026-12-01T08:00 or 08:00"


@dataclass(frozen=True, slots=True)
class Until:
    """A moment as written in a command: a date (midnight UTC), a date and time (UTC), or a
    time of day (its next occurrence). Resolved against the clock when the command runs."""

    text: str  # as the grammar gives it back
    day: date | None
    minutes: int | None  # minutes after midnight; None with a date: midnight

    def resolve(self, now: datetime) -> datetime:
        now = now.astimezone(UTC)
        minutes = self.minutes or 0
        if self.day is not None:
            midnight = datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)
            return midnight + timedelta(minutes=minutes)
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        moment = today + timedelta(minutes=minutes)
        return moment if moment > now else moment + timedelta(days=1)


def _minutes(hour: str, minute: str, text: str) -> int:
    if int(hour) > 23 or int(minute) > 59:
        raise UntilError(f"'{text}' is not a time of day (hours 0-23, minutes 0-59)")
    return int(hour) * 60 + int(minute)


def _day(year: str, month: str, day: str, text: str) -> date:
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        raise UntilError(f"'{text}' is not a date on the calendar") from None


def parse_until(text: str) -> Until:
    word = text.strip().lower()
    if match := _CLOCK.fullmatch(word):
        return Until(word, None, _minutes(match[1], match[2], text))
    if match := _DATE.fullmatch(word):
        return Until(word, _day(match[1], match[2], match[3], text), None)
    if match := _DATE_TIME.fullmatch(word):
        day = _day(match[1], match[2], match[3], text)
        minutes = _minutes(match[4], match[5], text)
        return Until(f"{day.isoformat()}T{minutes // 60:02d}:{minutes % 60:02d}", day, minutes)
    raise UntilError(f"'{text}' is not a moment I can read; write {UNTIL_FORMS}")


# -- scheduled windows ----------------------------------------------------------------------------


def window_end(days: Iterable[str], start: int, end: int, now: datetime) -> datetime | None:
    """When a weekly window that is open at `now` closes, or None when it is closed.

    It opens on each of `days` (UTC) at `start` minutes after midnight and closes at `end`
    minutes (1440: midnight); an `end` at or before `start` closes the next day. Back-to-back
    openings (Saturday and Sunday, all day) close at the end of the last one."""
    wanted = {DAYS.index(d) for d in days}
    now = now.astimezone(UTC)

    def open_at(moment: datetime) -> datetime | None:
        for back in (0, 1):  # an opening that began yesterday may still run
            day = (moment - timedelta(days=back)).replace(hour=0, minute=0, second=0, microsecond=0)
            if day.weekday() not in wanted:
                continue
            opens = day + timedelta(minutes=start)
            closes = day + timedelta(minutes=end if end > start else end + 1440)
            if opens <= moment < closes:
                return closes
        return None

    closes = open_at(now)
    if closes is None:
        return None
    for _ in range(8):  # follow back-to-back openings, at most a week
        later = open_at(closes)
        if later is None or later <= closes:
            break
        closes = later
    return closes
