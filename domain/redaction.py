"""Addresses and settings fit to show: credentials in them replaced by `***`."""

from __future__ import annotations

import re
from typing import Any

# userinfo before a host (`scheme://user:pw@host`, `user:pw@host:5000`) and query parameters
# whose names say they carry a credential
_USERINFO = re.compile(r"(?P<head>(?:[A-Za-z][A-Za-z0-9+.-]*://)?)(?P<info>[^\s/@?#]+)@(?=[^\s@]+)")
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:[A-Za-z0-9_.-]*(?:token|secret|password|passwd|pwd|key|sig|signature|"
    r"auth|credential)[A-Za-z0-9_.-]*)=)(?P<value>[^&;#\s]*)",
    re.IGNORECASE,
)


def redact(address: str) -> str:
    """An address fit to show: a password in its userinfo, a bare token standing as the
    userinfo, and query parameters named like credentials become `***`; the rest stays, so
    the address can still be recognised."""

    def userinfo(match: re.Match[str]) -> str:
        user, colon, _ = match["info"].partition(":")
        return f"{match['head']}{user}:***@" if colon else f"{match['head']}***@"

    return _SECRET_PARAM.sub(lambda m: f"{m['name']}***", _USERINFO.sub(userinfo, address, count=1))


def redacted(value: Any) -> Any:
    """`value` (settings as plain data) with every string passed through `redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(item) for item in value]
    return value
