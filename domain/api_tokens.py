"""API tokens for CI: what one token may do, and how it is kept (only its SHA-256 digest).

A token is 256 random bits, so a plain SHA-256 of it cannot be reversed or guessed; the token
itself is shown once to the admin who created it and never stored."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

PREFIX = "nelson_"  # recognisable in a leaked-secret scan
TOKEN_BYTES = 32
RIGHTS = ("view", "deploy")  # a deploy token may also view
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_SHAPE = re.compile(PREFIX + r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True, slots=True)
class ApiToken:
    name: str
    digest: str  # hex SHA-256 of the token
    namespaces: tuple[str, ...]
    right: str  # "view" or "deploy"
    created_by: str
    created_at: datetime

    @property
    def actor(self) -> str:
        """How audit entries and records name what the token did."""
        return f"token:{self.name}"


def new_token(random_bytes: Callable[[int], bytes]) -> str:
    raw = base64.urlsafe_b64encode(random_bytes(TOKEN_BYTES)).decode("ascii").rstrip("=")
    return PREFIX + raw


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def well_formed(token: str) -> bool:
    """A cheap check before any lookup: a malformed bearer string is refused as such."""
    return bool(_SHAPE.fullmatch(token))
