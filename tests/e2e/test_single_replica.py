"""SQLite is the single-replica default: a second `nelson serve` on the same database file is
refused with a clear message, a killed one can be replaced at once, and `datacenters` names
the processes alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bot.replicas import claim_path

ROOT = Path(__file__).resolve().parents[2]


def _env(database: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NELSON_", "SLACK_"))}
    return {**env, "PYTHONPATH": str(ROOT), "NELSON_DATABASE_URL": f"sqlite:///{database}"}


def _serve(cwd: Path, database: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve", "--no-slack", "--port", "0"],
        cwd=cwd,
        env=_env(database),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_running(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if "running without Slack" in line:
            return
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"nelson serve did not start (exit {process.poll()})")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_second_serve_on_one_sqlite_file_is_refused_and_a_killed_one_replaced(
    tmp_path: Path,
) -> None:
    database = tmp_path / "nelson.db"
    first = _serve(tmp_path, database)
    try:
        _wait_running(first)
        second = _serve(tmp_path, database)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 2, out
        assert "SQLite holds one replica" in out and "PostgreSQL" in out
        assert f"pid {first.pid}" in out and "Traceback" not in out

        listing = subprocess.run(
            [sys.executable, "-m", "bot.cli", "run", "datacenters"],
            cwd=tmp_path,
            env=_env(database),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listing.returncode == 0, listing.stderr
        assert "Processes alive (1):" in listing.stdout, listing.stdout
        assert "nelson serve --no-slack" in listing.stdout
        assert f" {first.pid} " in listing.stdout, listing.stdout  # host, pid, heartbeat

        # another database file is another bot: both run
        elsewhere = _serve(tmp_path, tmp_path / "other.db")
        try:
            _wait_running(elsewhere)
        finally:
            _stop(elsewhere)

        first.kill()  # no clean stop: the kernel drops the claim with the process
        first.wait(timeout=30)
        replacement = _serve(tmp_path, database)
        try:
            _wait_running(replacement)
        finally:
            _stop(replacement)
    finally:
        _stop(first)


def test_only_sqlite_files_are_claimed(tmp_path: Path) -> None:
    assert claim_path("postgresql://nelson@127.0.0.1:5432/nelson") is None
    assert claim_path("sqlite://") is None
    assert claim_path("sqlite:///:memory:") is None
    assert claim_path("not a url") is None
    claimed = claim_path(f"sqlite:///{tmp_path}/n.db")
    assert claimed == tmp_path.resolve() / "n.db.serve-lock"
