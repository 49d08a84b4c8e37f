"""Durations as people write them, in manifests and in the configuration.

Two syntaxes are read, so manifests written for Nelson keep working:
- the short one: `90` (seconds), `30s`, `5m`, `2h`, `1d`, `500ms`, and runs like `1m30s`;
- the long one, a number and a unit word, spaces optional: `10 seconds`, `2 minutes`,
  `1 hour`, `1.5 hours`, `5.minutes`, `250 millis`, `3 days`.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

# Unit words and abbreviations of the long syntax, with the number of seconds each stands for.
# Case matters (`10 Seconds` is refused), as it does for the manifests this syntax comes from.
_WORDS: dict[str, float] = {}
for _seconds, _names in (
    (86400.0, ("d", "day", "days")),
    (3600.0, ("h", "hr", "hrs", "hour", "hours")),
    (60.0, ("m", "min", "mins", "minute", "minutes")),
    (1.0, ("s", "sec", "secs", "second", "seconds")),
    (1e-3, ("ms", "milli", "millis", "millisecond", "milliseconds")),
    (1e-6, ("µs", "micro", "micros", "microsecond", "microseconds")),
    (1e-9, ("ns", "nano", "nanos", "nanosecond", "nanoseconds")),
):
    for _name in _names:
        _WORDS[_name] = _seconds

_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_LONG = re.compile(rf"({_NUMBER})\.?([^\d\s.]+)", re.ASCII)
_SHORT_PART = re.compile(r"(\d+)(ms|s|m|h|d)", re.ASCII)
_SHORT_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_EXAMPLES = "write it like 30s, 5m, 2h, 1d, '10 seconds' or '2 minutes'"
# Far beyond any timeout or shift anyone means, and within what timedelta can hold.
_MAX_SECONDS = 10 * 365 * 86400


class DurationError(ValueError):
    """The message says what is wrong, for people."""


def parse_duration(value: object) -> timedelta:
    """A non-negative duration from a number of seconds or text in either syntax."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DurationError(f"a duration is a number of seconds or text; {_EXAMPLES}")
    elif isinstance(value, int | float):
        seconds = float(value)
    else:
        seconds = _from_text(value)
    if math.isnan(seconds) or seconds < 0:
        raise DurationError(f"'{value}' is negative; a duration cannot be")
    if seconds > _MAX_SECONDS:
        raise DurationError(f"'{value}' is longer than ten years")
    return timedelta(seconds=seconds)


def whole_seconds(duration: timedelta) -> int:
    """Whole seconds, rounding a fraction up so that a positive duration never becomes 0."""
    return math.ceil(duration.total_seconds() - 1e-9)


def _from_text(text: str) -> float:
    stripped = text.strip()
    if not stripped:
        raise DurationError(f"an empty text is not a duration; {_EXAMPLES}")
    if re.fullmatch(_NUMBER, stripped, re.ASCII):
        return float(stripped)
    compact = "".join(stripped.split())
    parts = _SHORT_PART.findall(compact)
    if parts and "".join(n + u for n, u in parts) == compact:
        return sum(int(n) * _SHORT_UNITS[u] for n, u in parts)
    long = _LONG.fullmatch(compact)
    if long is not None and long.group(2) in _WORDS:
        return float(long.group(1)) * _WORDS[long.group(2)]
    if long is not None:
        known = "d, h, m, s, ms, or days, hours, minutes, seconds, millis"
        raise DurationError(f"'{text}': '{long.group(2)}' is not a unit of time ({known})")
    raise DurationError(f"'{text}' is not a duration; {_EXAMPLES}")
