"""Stack names: `unit--MAJOR-MINOR-PATCH--hash8`, e.g. `howdy-http--1-2-3--k3x9q0ab`."""

from __future__ import annotations

import random
import re
import secrets
import string
from dataclasses import dataclass

from domain.versions import Version

_ALPHABET = string.ascii_lowercase + string.digits
_PATTERN = re.compile(
    r"^(?P<unit>[a-z](?:[a-z0-9]|-(?!-))*[a-z0-9]|[a-z])--"
    r"(?P<major>\d+)-(?P<minor>\d+)-(?P<patch>\d+)--(?P<hash>[a-z0-9]{8})$"
)


class InvalidStackName(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class StackName:
    unit: str
    version: Version
    hash: str

    def __str__(self) -> str:
        return stack_name(self.unit, self.version, self.hash)


def new_hash(rng: random.Random | None = None) -> str:
    if rng is not None:
        return "".join(rng.choice(_ALPHABET) for _ in range(8))
    return "".join(secrets.choice(_ALPHABET) for _ in range(8))


def stack_name(unit: str, version: Version, hash8: str) -> str:
    return f"{unit}--{version.dashed}--{hash8}"


def parse_stack_name(text: str) -> StackName:
    match = _PATTERN.match(text)
    if match is None:
        raise InvalidStackName(
            f"'{text}' is not a stack name; stack names look like howdy-http--1-2-3--k3x9q0ab"
        )
    version = Version(int(match["major"]), int(match["minor"]), int(match["patch"]))
    return StackName(match["unit"], version, match["hash"])


def is_stack_name(text: str) -> bool:
    return _PATTERN.match(text) is not None
