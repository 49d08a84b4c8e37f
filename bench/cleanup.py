"""One lifecycle cleanup pass over many stacks, and how its time and memory scale.

    .venv/bin/python bench/cleanup.py [--backend sqlite|postgres] [--stacks 100000]
    .venv/bin/python bench/cleanup.py --backend postgres --scaling 10000 100000 1000000

Loads the data in bulk (one stack in ten per unit, half as many dependency edges as stacks,
statuses drawn at random, expiries around now; PostgreSQL through COPY), then times
`Lifecycle.run_once()` through the real SqlStore in a process that did not load anything:
reading the judged stacks and their live dependants batch by batch, judging them by policy,
extending expiries and marking garbage in bulk. Reports wall time and the peak resident
memory of that process before and after the pass. Target: under 2 s at 100k stacks on 2
cores, time growing linearly and memory not growing with the stacks judged."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from sqlalchemy import create_engine

from adapters.storage import live_versions, open_store
from adapters.storage.migrate import upgrade
from adapters.storage.urls import sync_url
from bench.cpu import database_cpu
from commands.events import EventHub
from commands.lifecycle import Lifecycle
from commands.settings import Settings
from domain.states import StackStatus
from tests.fakes.clock import T0, FakeClock

DCS = ("dc-east", "dc-west", "dc-north")
NAMESPACES = ("dev", "qa", "prod")
STATUSES = [s.value for s in StackStatus]
STACK_COLUMNS = (
    "id, guid, name, release_id, unit, major, minor, patch, datacenter, namespace, plan, "
    "status, status_message, created_by, created_at, updated_at, expires_at"
)
CHUNK = 50_000


def _sqlite_moment(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(sep=" ")


def stack_rows(stacks: int, units: int, sqlite: bool) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(7)
    moment = _sqlite_moment if sqlite else (lambda m: m)
    updated = moment(T0)
    for n in range(1, stacks + 1):
        unit = f"unit-{n % units}"
        yield (
            n,
            f"{n:012x}",
            f"{unit}--{n % 3}-{n % 7}-{n}--{n:08d}",
            1,
            unit,
            n % 3,
            n % 7,
            n,
            DCS[n % 3],
            NAMESPACES[(n // 3) % 3],
            "default",
            rng.choice(STATUSES),
            "",
            "bench",
            moment(T0 - timedelta(minutes=stacks - n)),
            updated,
            moment(T0 + timedelta(minutes=rng.randint(-600, 600))),
        )


def edge_rows(stacks: int, edges: int) -> list[tuple[int, int]]:
    rng = random.Random(11)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < edges:
        a, b = rng.randint(1, stacks), rng.randint(1, stacks)
        if a != b:
            pairs.add((a, b))
    return sorted(pairs)


def load(url: str, stacks: int, units: int, edges: int) -> float:
    """Fill an empty database; returns the seconds it took (after the schema exists)."""
    upgrade(url)
    started = time.perf_counter()
    if url.startswith("sqlite"):
        _load_sqlite(url.removeprefix("sqlite:///"), stacks, units, edges)
    else:
        _load_postgres(url, stacks, units, edges)
    engine = create_engine(sync_url(url))  # loaded around the store: count its summary
    with engine.begin() as conn:
        live_versions.rebuild(conn)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")  # as autovacuum would after the rebuild
    engine.dispose()
    return time.perf_counter() - started


def _fixed_rows(moment: Any) -> list[tuple[str, tuple[Any, ...]]]:
    return [
        ("INSERT INTO repositories (id, name, created_at) VALUES ({})", (1, "bench", moment)),
        (
            "INSERT INTO manifests (id, repository_id, revision, text, digest, registered_by, "
            "registered_at) VALUES ({})",
            (1, 1, 1, "", "0" * 64, "b", moment),
        ),
        (
            "INSERT INTO releases (id, unit, major, minor, patch, image, manifest_id, "
            "created_by, created_at) VALUES ({})",
            (1, "unit-0", 0, 0, 0, "i", 1, "b", moment),
        ),
    ]


def _load_sqlite(path: str, stacks: int, units: int, edges: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    for sql, values in _fixed_rows(_sqlite_moment(T0)):
        conn.execute(sql.format(", ".join("?" * len(values))), values)
    rows = stack_rows(stacks, units, sqlite=True)
    marks = ", ".join("?" * 17)
    while chunk := [row for _, row in zip(range(CHUNK), rows, strict=False)]:
        conn.executemany(f"INSERT INTO stacks ({STACK_COLUMNS}) VALUES ({marks})", chunk)
        conn.executemany(
            "INSERT INTO stack_status (stack_id, status, message, actor, at) "
            "VALUES (?, ?, 'step', 'nelson', ?)",
            [(row[0], row[11], row[15]) for row in chunk],
        )
    conn.executemany(
        "INSERT INTO stack_dependencies (stack_id, depends_on_id) VALUES (?, ?)",
        edge_rows(stacks, edges),
    )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


def _load_postgres(url: str, stacks: int, units: int, edges: int) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for sql, values in _fixed_rows(T0):
            cur.execute(sql.format(", ".join(["%s"] * len(values))), values)
        history: list[tuple[Any, ...]] = []
        with cur.copy(f"COPY stacks ({STACK_COLUMNS}) FROM STDIN") as copy:
            for row in stack_rows(stacks, units, sqlite=False):
                copy.write_row(row)
                history.append((row[0], row[11], "step", "nelson", row[15]))
        with cur.copy("COPY stack_status (stack_id, status, message, actor, at) FROM STDIN") as c:
            for entry in history:
                c.write_row(entry)
        del history
        with cur.copy("COPY stack_dependencies (stack_id, depends_on_id) FROM STDIN") as copy:
            for pair in edge_rows(stacks, edges):
                copy.write_row(pair)
        cur.execute("SELECT setval('stacks_id_seq', (SELECT max(id) FROM stacks))")
    # a running database has its visibility map and statistics current (autovacuum)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def peak_kb() -> int:
    """This process's peak resident memory in KiB. Linux carries ru_maxrss over an exec
    from the process that spawned it (here the bench, holding the data it loaded), so the
    peak of this program's own memory is read from VmHWM, which starts afresh at exec."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def one_pass(url: str) -> dict[str, Any]:
    """Time one cleanup pass; run in a process of its own so its peak memory is the pass's."""
    clock = FakeClock()  # the data set is dated around the fake clock's start
    store = await open_store(url, clock=clock, upgrade=False)
    lifecycle = Lifecycle(Settings(), store, EventHub(), clock, {}, {})
    async for _ in store.lifecycle_batches():  # a running bot has its database pages cached
        pass
    rss_before = peak_kb()
    cpu, db_cpu = time.process_time(), database_cpu(url)
    started = time.perf_counter()
    report = await lifecycle.run_once()
    elapsed = time.perf_counter() - started
    # CPU used, here and by the database server: less disturbed by a busy machine
    cpu, db_cpu = time.process_time() - cpu, database_cpu(url) - db_cpu
    rss_after = peak_kb()
    await store.close()
    return {
        "seconds": elapsed,
        "cpu": cpu,
        "db_cpu": db_cpu,
        "rss_mb": rss_after / 1024,
        "pass_mb": (rss_after - rss_before) / 1024,
        "judged": report.judged,
        "extended": report.extended,
        "garbage": len(report.garbage),
    }


def measure(backend: str, stacks: int, repeats: int) -> list[dict[str, Any]]:
    """Load `stacks` afresh for each repeat (a pass changes what the next one finds)."""
    results = []
    with ExitStack() as stack:
        admin = None
        if backend == "postgres":
            from tests.pgserver import fresh_database, postgres_server

            admin = stack.enter_context(postgres_server())
        for _ in range(repeats):
            if admin is not None:
                url = fresh_database(admin)
            else:
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="nelson-bench-"))
                url = f"sqlite:///{folder}/bench.db"
            loaded = load(url, stacks, max(1, stacks // 10), stacks // 2)
            out = subprocess.run(
                [sys.executable, __file__, "--pass-only", url],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results.append({"loaded": loaded, **json.loads(out)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--stacks", type=int, default=100_000)
    parser.add_argument("--scaling", type=int, nargs="*", help="several sizes, one line each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pass-only", help=argparse.SUPPRESS)  # the child: time one pass
    args = parser.parse_args()
    if args.pass_only:
        print(json.dumps(asyncio.run(one_pass(args.pass_only))))
        return
    for stacks in args.scaling or [args.stacks]:
        runs = measure(args.backend, stacks, args.repeats)
        seconds = statistics.median(r["seconds"] for r in runs)
        rss = statistics.median(r["rss_mb"] for r in runs)
        first = runs[0]
        each = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        print(
            f"{args.backend}: {stacks} stacks, {max(1, stacks // 10)} units, {stacks // 2} "
            f"edges (loaded in {statistics.median(r['loaded'] for r in runs):.1f} s)\n"
            f"  cleanup pass median {seconds:.2f} s of {len(runs)} "
            f"({each}); CPU {statistics.median(r['cpu'] for r in runs):.2f} s here + "
            f"{statistics.median(r['db_cpu'] for r in runs):.2f} s in the database server, "
            f"peak RSS {rss:.0f} MB "
            f"(+{statistics.median(r['pass_mb'] for r in runs):.0f} MB during the pass); "
            f"judged {first['judged']}, extended {first['extended']}, "
            f"garbage {first['garbage']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
