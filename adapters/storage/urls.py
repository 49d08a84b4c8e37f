"""Database URLs as users write them, mapped to the drivers the bot uses."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from commands.ports import StoreError

_ASYNC = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
_SYNC = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 -- a port that is not a number fails here, not later
    except (ArgumentError, ValueError):
        raise StoreError(
            "the database URL is not valid (is the port a number?); use sqlite:///path.db or "
            "postgresql://user@host:5432/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in _ASYNC:
        raise StoreError(
            f"database '{backend}' is not supported; use sqlite:///path.db or "
            "postgresql://user@host:5432/dbname"
        )
    return parsed


def async_url(url: str) -> URL:
    parsed = _parse(url)
    return parsed.set(drivername=_ASYNC[parsed.get_backend_name()])


def sync_url(url: str) -> URL:
    parsed = _parse(url)
    return parsed.set(drivername=_SYNC[parsed.get_backend_name()])


def safe(url: str | URL) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except (ArgumentError, ValueError):
        return "(unparseable database URL)"
    return parsed.render_as_string(hide_password=True)
