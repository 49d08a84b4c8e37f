"""Semantic versions as Nelson uses them: MAJOR.MINOR.PATCH, ordered, with a forgiving parser."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

# ASCII only: without it \d also matches other scripts' digits, which int() accepts, so text
# like "1\u0662" would parse as 12 and not round-trip through str().
_VERSION = re.compile(
    r"^[vV]?(?P<major>0|[1-9]\d*)(?:\.(?P<minor>0|[1-9]\d*))?(?:\.(?P<patch>0|[1-9]\d*))?$",
    re.ASCII,
)
_MAX_PART = 10**9


class InvalidVersion(ValueError):
    """Raised when text is not a semantic version; the message is meant for people."""


@total_ordering
@dataclass(frozen=True, slots=True)
class Version:
    major: int
    minor: int
    patch: int

    def __post_init__(self) -> None:
        for part in (self.major, self.minor, self.patch):
            if part < 0 or part >= _MAX_PART:
                raise InvalidVersion(f"version part {part} is out of range")

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse `1.2.3`, `v1.2.3`, `1.2` (= 1.2.0) or `1` (= 1.0.0)."""
        match = _VERSION.match(text.strip())
        if match is None:
            raise InvalidVersion(
                f"'{text}' is not a semantic version (expected MAJOR.MINOR.PATCH, like 1.2.3)"
            )
        digits = [match.group(g) or "0" for g in ("major", "minor", "patch")]
        # compare lengths before int(): Python refuses to convert thousands of digits, and a
        # part with more digits than the limit is too large anyway
        if any(len(d) > len(str(_MAX_PART - 1)) for d in digits):
            raise InvalidVersion(f"'{text}' has a version part that is too large")
        return cls(*(int(d) for d in digits))

    @property
    def feature(self) -> tuple[int, int]:
        """The (major, minor) pair: the 'feature version' retain-latest-two-feature speaks of."""
        return (self.major, self.minor)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return (self.major, self.minor, self.patch) < (other.major, other.minor, other.patch)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def dashed(self) -> str:
        """`1-2-3`, the form used inside stack names."""
        return f"{self.major}-{self.minor}-{self.patch}"
