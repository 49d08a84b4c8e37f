"""Stack names: `unit--MAJOR-MINOR-PATCH--hash8`, e.g. `howdy-http--1-2-3--k3x9q0ab`.

The double hyphen is the separator, which is why unit names may hold single hyphens but never
two in a row: with that rule a name splits back into its parts without ambiguity.
"""

from __future__ import annotations

import random
import re
import secrets
import string
from dataclasses import dataclass

from domain.versions import Version

HASH_LENGTH = 8
_MAX_DIGITS = 9  # Version parts stay below 10**9, so nine digits always fit
_ALPHABET = string.ascii_lowercase + string.digits
_EXAMPLE = "howdy-http--1-2-3--k3x9q0ab"
# re.ASCII: \d and friends must not accept other scripts' digits, or a name would not
# survive a round trip through Version.
_UNIT = re.compile(r"[a-z](?:[a-z0-9]|-(?!-))*(?<!-)", re.ASCII)
_VERSION = re.compile(r"(0|[1-9][0-9]*)-(0|[1-9][0-9]*)-(0|[1-9][0-9]*)", re.ASCII)
_HASH = re.compile(rf"[a-z0-9]{{{HASH_LENGTH}}}", re.ASCII)


class InvalidStackName(ValueError):
    """The message says what is wrong, for people."""


@dataclass(frozen=True, slots=True)
class StackName:
    unit: str
    version: Version
    hash: str

    def __post_init__(self) -> None:
        problem = _unit_problem(self.unit) or _hash_problem(self.hash)
        if problem:
            raise InvalidStackName(f"{problem}; stack names look like {_EXAMPLE}")

    def __str__(self) -> str:
        return f"{self.unit}--{self.version.dashed}--{self.hash}"


def new_hash(rng: random.Random | None = None) -> str:
    """A fresh 8-character suffix. Unpredictable by default; pass a seeded `rng` for
    repeatable tests. 36**8 (about 2.8e12) values make collisions between two stacks of the
    same release practically impossible."""
    if rng is not None:
        return "".join(rng.choice(_ALPHABET) for _ in range(HASH_LENGTH))
    return "".join(secrets.choice(_ALPHABET) for _ in range(HASH_LENGTH))


def stack_name(unit: str, version: Version, hash8: str) -> str:
    """The name of a stack; raises InvalidStackName for a unit or hash that could not be
    parsed back."""
    return str(StackName(unit, version, hash8))


def parse_stack_name(text: str) -> StackName:
    """Split a stack name into unit, version and hash, or say precisely what is wrong."""
    parts = text.split("--")
    if len(parts) != 3:
        if len(parts) > 3 and _HASH.fullmatch(parts[-1]) and _VERSION.fullmatch(parts[-2]):
            why = f"the unit '{'--'.join(parts[:-2])}' contains '--', which unit names cannot"
        else:
            why = "expected a unit, a version and a hash separated by '--'"
        raise _invalid(text, why)
    unit, version_text, hash8 = parts
    problem = _unit_problem(unit) or _hash_problem(hash8)
    if problem:
        raise _invalid(text, problem)
    match = _VERSION.fullmatch(version_text)
    if match is None:
        raise _invalid(text, f"'{version_text}' is not a version written MAJOR-MINOR-PATCH")
    if any(len(part) > _MAX_DIGITS for part in match.groups()):
        # checked before int(), which refuses thousands of digits with its own error
        raise _invalid(text, f"the version '{version_text}' has a part that is too large")
    return StackName(unit, Version(*(int(part) for part in match.groups())), hash8)


def is_stack_name(text: str) -> bool:
    try:
        parse_stack_name(text)
    except InvalidStackName:
        return False
    return True


def _unit_problem(unit: str) -> str | None:
    if _UNIT.fullmatch(unit):
        return None
    if not unit:
        return "the unit name is missing"
    return (
        f"the unit '{unit}' must start with a lowercase letter and hold only lowercase "
        "letters, digits and single hyphens, not ending in a hyphen"
    )


def _hash_problem(hash8: str) -> str | None:
    if _HASH.fullmatch(hash8):
        return None
    return f"the hash '{hash8}' must be {HASH_LENGTH} lowercase letters or digits"


def _invalid(text: str, why: str) -> InvalidStackName:
    return InvalidStackName(
        f"'{text}' is not a stack name: {why}; stack names look like {_EXAMPLE}"
    )
