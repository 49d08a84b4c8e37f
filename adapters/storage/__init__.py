"""Storage adapter: the Store port on SQLAlchemy 2 with Alembic migrations."""

from adapters.storage.store import SqlStore, open_store

__all__ = ["SqlStore", "open_store"]
