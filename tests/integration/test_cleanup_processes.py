"""Two bot processes on one PostgreSQL run the cleanup at the same moment: exactly one of them
does the pass, every decision is made once, every reap happens once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.clock import SystemClock
from adapters.storage import open_store
from domain.states import StackStatus
from tests.fakes.clock import FakeClock
from tests.integration.test_lifecycle import make, register
from tests.pgserver import fresh_database

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.postgres


def start_cleanup(config: Path, cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NELSON_", "SLACK_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "--config", str(config), "cleanup"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
    )


async def test_two_processes_clean_up_once(
    postgres_admin_url: str, docker_address: str, tmp_path: Path
) -> None:
    url = fresh_database(postgres_admin_url)
    # `nelson cleanup` runs in processes of its own, on the system clock: so does this setup
    clock = FakeClock(SystemClock().now())
    store = await open_store(url, clock=clock)
    try:
        await register(store, "svc")
        old = clock.now() - timedelta(hours=5)
        stacks = [await make(store, clock, "svc", f"1.0.{n}", n, old) for n in range(1, 41)]
        # ten older ones are garbage already, announced days ago: due for reaping
        due = stacks[:10]
        long_ago = clock.now() - timedelta(days=3)
        await store.mark_garbage({s.id: "expired" for s in due}, long_ago)
        await store.mark_announced([s.id for s in due], long_ago)
    finally:
        await store.close()
    config = tmp_path / "nelson.toml"
    config.write_text(
        f'database_url = "{url}"\n'
        'namespaces = ["dev"]\n'
        "[datacenters.local]\n"
        'staging_registry = "127.0.0.1:5000"\n'
        'runtime_registry = "127.0.0.1:5001"\n'
        f'scheduler = {{ kind = "docker", address = "{docker_address}" }}\n'
        "[lifecycle]\n"
        'new_stack_grace = "0s"\n',  # the stacks were made just now, with older timestamps
        encoding="utf-8",
    )
    first, second = start_cleanup(config, tmp_path), start_cleanup(config, tmp_path)
    outputs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    ran = [out for out, _ in outputs if "Judged" in out]
    refused = [out for out, _ in outputs if out.startswith("Another process")]
    # never two passes at once: one is refused, or the second ran after the first ended
    assert len(ran) + len(refused) == 2 and ran, outputs
    counts = [re.search(r"garbage (\d+), reaped (\d+), failed to reap (\d+)", o) for o in ran]
    assert all(counts), outputs
    totals = [sum(int(m.group(i)) for m in counts if m) for i in (1, 2, 3)]
    # retain-latest keeps 1.0.40; the 29 others of the 30 ready ones become garbage
    assert totals == [29, 10, 0], outputs

    store = await open_store(url, clock=SystemClock())
    try:
        for stack in stacks:
            history = await store.status_history(stack.id)
            garbage_rows = [h for h in history if h.status is StackStatus.GARBAGE]
            terminated = [h for h in history if h.status is StackStatus.TERMINATED]
            if stack in due:
                assert len(garbage_rows) == 1 and len(terminated) == 1, stack.name
                reaped = [e for e in await store.audit_events(stack.name) if e.action == "reaped"]
                assert len(reaped) == 1
            elif stack is stacks[-1]:
                assert garbage_rows == []
            else:
                assert len(garbage_rows) == 1 and terminated == [], stack.name
                marked = [e for e in await store.audit_events(stack.name) if e.action == "garbage"]
                assert len(marked) == 1
    finally:
        await store.close()
