"""One lifecycle cleanup pass over 100k stacks of 10k units with 50k dependency edges.

    .venv/bin/python bench/cleanup.py [--backend sqlite|postgres] [--stacks 100000]

Loads the data in bulk (stack statuses drawn at random, expiries around now), then times
`Lifecycle.run_once()` through the real SqlStore: reading every judged stack and the live
dependants, judging them by policy, extending expiries and marking garbage in bulk. Reports
wall time and the peak memory of the pass. Target: under 2 s on 2 cores."""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, insert

from adapters.storage import open_store
from adapters.storage import tables as t
from adapters.storage.urls import sync_url
from bench.stack_listing import load
from commands.events import EventHub
from commands.lifecycle import Lifecycle
from commands.settings import Settings
from tests.fakes.clock import FakeClock


def add_edges(url: str, stacks: int, edges: int) -> None:
    rng = random.Random(11)
    pairs = set()
    while len(pairs) < edges:
        a, b = rng.randint(1, stacks), rng.randint(1, stacks)
        if a != b:
            pairs.add((a, b))
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.execute(
            insert(t.stack_dependencies), [{"stack_id": a, "depends_on_id": b} for a, b in pairs]
        )
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--stacks", type=int, default=100_000)
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--edges", type=int, default=50_000)
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.backend == "postgres":
            from tests.pgserver import fresh_database, postgres_server

            url = fresh_database(stack.enter_context(postgres_server()))
        else:
            url = f"sqlite:///{tempfile.mkdtemp(prefix='nelson-bench-')}/bench.db"
        loaded = load(url, args.stacks, args.units, args.stacks)
        add_edges(url, args.stacks, args.edges)
        clock = FakeClock()  # the data set is dated around the fake clock's start
        store = await open_store(url, clock=clock, upgrade=False)
        lifecycle = Lifecycle(Settings(), store, EventHub(), clock, {}, {})
        warm = time.perf_counter()
        await store.lifecycle_view()  # a running bot has its database pages cached
        warm = time.perf_counter() - warm
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        report = await lifecycle.run_once()
        elapsed = time.perf_counter() - started
        # the process's peak resident memory, and how much the pass added to it
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        await store.close()
    print(
        f"{args.backend}: {args.stacks} stacks, {args.units} units, {args.edges} edges "
        f"(loaded in {loaded:.1f} s; first read after loading {warm:.2f} s)"
    )
    print(
        f"  cleanup pass {elapsed:.2f} s, peak RSS {rss_after / 1024:.0f} MB "
        f"(+{(rss_after - rss_before) / 1024:.0f} MB during the pass): judged "
        f"{report.judged}, extended {report.extended}, garbage {len(report.garbage)}, "
        f"reaped {len(report.reaped)}"
    )


if __name__ == "__main__":
    asyncio.run(main())
