"""One serving process per SQLite database.

SQLite is the single-replica default: its file cannot coordinate several bots (no row locks to
share work, no notifications between them), so a second `nelson serve` on the same file is
refused. The claim is an exclusive `flock` on a file beside the database, which the kernel drops
when the process ends, however it ends: a bot killed with `kill -9` can be restarted at once.
PostgreSQL needs no claim here."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class SecondReplica(Exception):
    """Another `nelson serve` already runs on this SQLite database."""


def claim_path(database_url: str) -> Path | None:
    """The file whose lock marks the serving process, or None when none is needed."""
    try:
        url = make_url(database_url)
    except (ArgumentError, ValueError):
        return None  # the store reports a bad URL in its own words
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        return None  # private to this process
    return Path(database).expanduser().resolve().with_name(Path(database).name + ".serve-lock")


@contextlib.contextmanager
def single_replica(database_url: str) -> Iterator[None]:
    """Hold the SQLite serving claim for the duration, or raise SecondReplica."""
    path = claim_path(database_url)
    if path is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            database = path.name.removesuffix(".serve-lock")
            raise SecondReplica(
                f"another `nelson serve` ({holder}) already runs on {database}; "
                "SQLite holds one replica. Stop it first, or use PostgreSQL "
                '(database_url = "postgresql://…") to run several replicas'
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the lock
