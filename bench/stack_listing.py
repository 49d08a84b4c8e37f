"""How fast `stacks`, `units` and cleanup queries stay with 100k stacks, 10k units and 1M
status-history rows.

    .venv/bin/python bench/stack_listing.py --backend sqlite
    .venv/bin/python bench/stack_listing.py --backend postgres   # starts a throwaway server

Loads the data in bulk, then times the queries through the real SqlStore (and `units` as a
whole command: parsed, answered and rendered as Slack blocks) and prints p50/p99 wall time
and the CPU per call (here and in the database server; see bench/cpu.py).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from sqlalchemy import create_engine, insert, select

from adapters.storage import live_versions, open_store
from adapters.storage import tables as t
from adapters.storage.migrate import upgrade
from adapters.storage.urls import sync_url
from bench.cpu import database_cpu
from bot.conversation import Conversation, Outcome
from bot.slack.blocks import reply_blocks
from commands.access import Principal
from commands.context import Services
from commands.settings import Settings
from domain.records import StackQuery
from domain.states import StackStatus
from tests.fakes.clock import T0, FakeClock

DCS = ("dc-east", "dc-west", "dc-north")
NAMESPACES = ("dev", "qa", "prod")
STATUSES = [s.value for s in StackStatus]


def rows(
    stacks: int, units: int, history: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(7)
    now = T0
    stack_rows = []
    for n in range(1, stacks + 1):
        unit = f"unit-{n % units}"
        major, minor, patch = n % 3, n % 7, n
        stack_rows.append(
            {
                "id": n,
                "guid": f"{n:012x}",
                "name": f"{unit}--{major}-{minor}-{patch}--{n:08d}",
                "release_id": 1,
                "unit": unit,
                "major": major,
                "minor": minor,
                "patch": patch,
                "datacenter": DCS[n % 3],
                "namespace": NAMESPACES[(n // 3) % 3],
                "plan": "default",
                "status": rng.choice(STATUSES),
                "status_message": "",
                "workflow_step": None,
                "created_by": "bench",
                "created_at": now - timedelta(minutes=stacks - n),
                "updated_at": now,
                "expires_at": now + timedelta(minutes=rng.randint(-600, 600)),
            }
        )
    per_stack = history // stacks
    history_rows = [
        {
            "stack_id": n,
            "status": STATUSES[k % len(STATUSES)],
            "message": "step",
            "actor": "nelson",
            "at": now - timedelta(seconds=k),
        }
        for n in range(1, stacks + 1)
        for k in range(per_stack)
    ]
    return stack_rows, history_rows


def load(url: str, stacks: int, units: int, history: int) -> float:
    upgrade(url)
    stack_rows, history_rows = rows(stacks, units, history)
    started = time.perf_counter()
    engine = create_engine(sync_url(url))
    now = T0
    with engine.begin() as conn:
        conn.execute(insert(t.repositories).values(id=1, name="bench", created_at=now))
        conn.execute(
            insert(t.manifests).values(
                id=1,
                repository_id=1,
                revision=1,
                text="",
                digest="0" * 64,
                registered_by="b",
                registered_at=now,
            )
        )
        conn.execute(
            insert(t.releases).values(
                id=1,
                unit="unit-0",
                major=0,
                minor=0,
                patch=0,
                image="i",
                manifest_id=1,
                created_by="b",
                created_at=now,
            )
        )
        conn.execute(
            insert(t.units),
            [
                {
                    "name": f"unit-{n}",
                    "repository_id": 1,
                    "kind": "service",
                    "description": "",
                    "manifest_revision": 1,
                }
                for n in range(units)
            ],
        )
    if engine.dialect.name == "postgresql":
        _copy(url, stack_rows, history_rows)
    else:
        with engine.begin() as conn:
            conn.execute(insert(t.stacks), stack_rows)
            conn.execute(insert(t.stack_status), history_rows)
    with engine.begin() as conn:  # loaded around the store: count its summary as it would
        live_versions.rebuild(conn)
    if engine.dialect.name == "postgresql":  # as autovacuum keeps a running database
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return time.perf_counter() - started


def _copy(url: str, stack_rows: list[dict[str, Any]], history_rows: list[dict[str, Any]]) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        columns = list(stack_rows[0])
        with cur.copy(f"COPY stacks ({', '.join(columns)}) FROM STDIN") as copy:
            for row in stack_rows:
                copy.write_row([row[c] for c in columns])
        hcols = list(history_rows[0])
        with cur.copy(f"COPY stack_status ({', '.join(hcols)}) FROM STDIN") as copy:
            for row in history_rows:
                copy.write_row([row[c] for c in hcols])
        cur.execute("SELECT setval('stacks_id_seq', (SELECT max(id) FROM stacks))")


async def every_unit(store: Any) -> None:
    """What `units in prod` read before it came in pages: every unit, and the live stacks of
    each."""
    await store.units()
    await store.live_units("prod")


def units_command(store: Any, clock: FakeClock, text: str) -> Callable[[], Awaitable[Any]]:
    """`text` as a user sends it: parsed, checked, answered from the store, and the reply
    turned into the Slack blocks that would be posted."""
    settings = Settings.model_validate({"namespaces": list(NAMESPACES)})
    conversation = Conversation(Services(settings, store, cast(Any, None), clock))
    who = Principal("UBENCH", "bench")

    async def run() -> Any:
        answer = await conversation.answer(text, who)
        assert answer.outcome is Outcome.OK, answer.reply.title
        return reply_blocks(answer.reply)

    return run


async def measure(url: str, repeats: int) -> list[tuple[str, float, float, float]]:
    clock = FakeClock()
    store = await open_store(url, clock=clock, upgrade=False)
    now = clock.now()
    engine = store._engine  # the cleanup query is timed on the store's own connection pool

    async def cleanup_candidates() -> Any:
        async with engine.connect() as conn:
            query = (
                select(t.stacks.c.id)
                .where(t.stacks.c.status.in_(["ready", "deprecated"]), t.stacks.c.expires_at < now)
                .limit(1000)
            )
            return (await conn.execute(query)).all()

    queries: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        (
            "stacks in prod at dc-east (newest 50 + count)",
            lambda: store.list_stacks(StackQuery(namespace="prod", datacenter="dc-east")),
        ),
        (
            "stacks in qa status ready,warming",
            lambda: store.list_stacks(
                StackQuery(namespace="qa", statuses=(StackStatus.READY, StackStatus.WARMING))
            ),
        ),
        (
            "stacks in dev, page 10 of 100",
            lambda: store.list_stacks(StackQuery(namespace="dev", limit=100, offset=1000)),
        ),
        (
            "stacks of one unit in prod at dc-west",
            lambda: store.list_stacks(
                StackQuery(unit="unit-42", namespace="prod", datacenter="dc-west")
            ),
        ),
        (
            "units in prod: first page (50 + count)",
            lambda: store.unit_page("prod", None, limit=50),
        ),
        (
            "units in prod: page 100 of 200 (offset)",
            lambda: store.unit_page("prod", None, limit=50, offset=4950),
        ),
        (
            "units in prod after unit-5 (keyset, mid-list)",
            lambda: store.unit_page("prod", "dc-east", limit=50, after="unit-5"),
        ),
        ("command `units in prod`", units_command(store, clock, "units in prod")),
        ("command `units in prod page 100`", units_command(store, clock, "units in prod page 100")),
        (
            "command `units in prod after unit-5`",
            units_command(store, clock, "units in prod after unit-5"),
        ),
        ("units in prod: live stacks and versions per unit", lambda: store.live_units("prod")),
        ("units in prod: every unit (before pages)", lambda: every_unit(store)),
        (
            "units in prod, counting the stacks (anchor)",  # what `units` did before 0009
            lambda: store.live_units("prod", newest=live_versions.KEPT + 1),
        ),
        ("inspect: stack by name", lambda: store.stack("unit-7--1-0-50000--00050000")),
        ("inspect: status history of a stack", lambda: store.status_history(50_000)),
        ("cleanup: expired ready/deprecated (1000)", cleanup_candidates),
    ]
    results = []
    for label, run in queries:
        await run()  # warm caches
        timings = []
        cpu, db_cpu = time.process_time(), database_cpu(url)
        for _ in range(repeats):
            started = time.perf_counter()
            await run()
            timings.append((time.perf_counter() - started) * 1000)
        # CPU per call, here and in the database server: what a quiet machine would spend
        cpu = (time.process_time() - cpu + database_cpu(url) - db_cpu) * 1000 / repeats
        timings.sort()
        p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))]
        results.append((label, statistics.median(timings), p99, cpu))
    await store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--stacks", type=int, default=100_000)
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--status-rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1, help="measure rounds over one load")
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.backend == "sqlite":
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            url = f"sqlite:///{folder}/bench.db"
        else:
            from tests.pgserver import fresh_database, postgres_server

            url = fresh_database(stack.enter_context(postgres_server()))
        seconds = load(url, args.stacks, args.units, args.status_rows)
        out = io.StringIO()
        print(
            f"backend {args.backend}: {args.stacks} stacks, {args.status_rows} status rows, "
            f"loaded in {seconds:.1f}s",
            file=out,
        )
        for round_ in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f" round {round_} of {args.rounds}", file=out)
            for label, p50, p99, cpu in asyncio.run(measure(url, args.repeats)):
                print(
                    f"  {label:50s} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   CPU {cpu:7.2f} ms",
                    file=out,
                )
        print(out.getvalue(), end="")


if __name__ == "__main__":
    main()
