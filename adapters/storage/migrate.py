"""Applying the Alembic migrations programmatically (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from adapters.storage.urls import safe, sync_url
from commands.ports import StoreError

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # '%' must be doubled for configparser; the URL may hold an escaped password.
    config.set_main_option(
        "sqlalchemy.url", sync_url(url).render_as_string(hide_password=False).replace("%", "%%")
    )
    return config


def upgrade(url: str, revision: str = "head") -> None:
    try:
        command.upgrade(_config(url), revision)
    except OperationalError as exc:
        raise StoreError(f"cannot migrate the database at {safe(url)}: {_reason(exc)}") from None


def current_revision(url: str) -> str | None:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except OperationalError as exc:
        raise StoreError(f"cannot open the database at {safe(url)}: {_reason(exc)}") from None
    finally:
        engine.dispose()


def _reason(exc: OperationalError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig else "unknown error"
