"""CPU time used by a benchmark and by its database server.

The development machine is shared: wall time there says as much about the neighbours as about
the code. CPU seconds used, in this process and in the PostgreSQL server, are what a quiet
machine would spend, so the benches print them next to the wall time."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg


def database_cpu(url: str) -> float:
    """CPU seconds the PostgreSQL server's processes have used so far (0 for SQLite, whose
    work is this process's): with this process's CPU, what the pass costs on a quiet machine."""
    if not url.startswith("postgresql"):
        return 0.0
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT setting FROM pg_settings WHERE name = 'data_directory'"
        ).fetchone()
    assert row is not None
    postmaster = int((Path(row[0]) / "postmaster.pid").read_text().split()[0])
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster or int(proc.name) == postmaster:
            # utime, stime, and those of children already waited for
            total += sum(int(f) for f in fields[11:15]) / ticks
    return total
