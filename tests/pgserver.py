"""A throwaway PostgreSQL server on loopback for tests and benchmarks.

Uses NELSON_TEST_POSTGRES_URL when set; otherwise starts one from the Debian `postgresql`
package (initdb refuses root, so as root it runs as the `postgres` user)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg


class PostgresUnavailable(RuntimeError):
    pass


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise PostgresUnavailable(
            "PostgreSQL is not installed: `apt-get install postgresql` (scripts/test does it), "
            "or set NELSON_TEST_POSTGRES_URL to a server the tests may create databases on"
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class PostgresServer:
    """A server of our own, which a test may stop and start again (a database outage)."""

    url: str
    bin_dir: Path
    data: Path
    options: str
    log: Path

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args]),
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self) -> None:
        self._pg_ctl("-w", "-t", "60", "-l", str(self.log), "-o", self.options, "start")
        _wait(self.url)

    def stop(self) -> None:
        # "fast": clients are cut off at once, as in an outage, but what was committed is on
        # disk (the test servers run with synchronous_commit=off, which an immediate stop
        # would turn into lost tables)
        self._pg_ctl("-m", "fast", "stop")


@contextlib.contextmanager
def own_postgres_server() -> Iterator[PostgresServer]:
    """A fresh server from the Debian `postgresql` package, whatever NELSON_TEST_POSTGRES_URL
    says (a test that stops the server must not stop a shared one)."""
    bin_dir = _binaries()
    root = Path(tempfile.mkdtemp(prefix="nelson-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    port = _free_port()
    server = PostgresServer(
        url=f"postgresql://{user}@127.0.0.1:{port}/postgres",
        bin_dir=bin_dir,
        data=data,
        options=f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
        log=root / "server.log",
    )
    try:
        subprocess.run(
            _as_postgres(
                [str(bin_dir / "initdb"), "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        server.start()
        yield server
    except subprocess.CalledProcessError as exc:
        log = server.log.read_text() if server.log.exists() else ""
        raise PostgresUnavailable(f"could not start PostgreSQL: {exc.stderr}\n{log}") from None
    finally:
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yield an admin URL (postgresql://user@127.0.0.1:port/postgres)."""
    existing = os.environ.get("NELSON_TEST_POSTGRES_URL")
    if existing:
        yield existing
        return
    with own_postgres_server() as server:
        yield server.url


def _wait(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def fresh_database(admin_url: str) -> str:
    """Create an empty database and return its URL."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name
