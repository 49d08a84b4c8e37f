"""Three `nelson serve --no-slack` replicas on one PostgreSQL of their own, on the real dockerd
and registries. Twenty deploys are submitted through the HTTP API while a killer sends SIGKILL
to a random replica every few seconds and starts it again, and PostgreSQL is stopped and
started in the middle of them (down longer than the claims' TTL, so every claim expires
during the outage). Every deploy reaches `ready`, each stack has exactly one container, no
stack's status history goes backwards (no workflow ran twice, none was lost), no replica that
was up dies of the outage or hangs, and the replicas' logs hold no traceback and no password.
The claims' TTL is short here (3 s) so that takeovers happen within the test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import docker
import pytest

from adapters.clock import SystemClock
from adapters.storage import SqlStore, open_store
from domain.records import Stack, StackQuery
from domain.states import StackStatus
from tests.dockerworld import busybox_image
from tests.e2e.replica_manifest import echo_manifest
from tests.e2e.replica_process import Replica
from tests.pgserver import PostgresServer, PostgresUnavailable, fresh_database, own_postgres_server

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
DEPLOYS = int(os.environ.get("NELSON_TEST_DEPLOYS", "20"))
UNITS = [f"echo{n}" for n in range(1, DEPLOYS + 1)]
REPLICAS = 3
CLAIM_TTL = float(os.environ.get("NELSON_TEST_CLAIM_TTL", "3"))  # 15 to measure the default
KILL_EVERY = (2.0, 4.0)  # seconds between kills, drawn at random (of a replica that is up,
# while another one is up too)
OUTAGE = CLAIM_TTL + 2  # seconds PostgreSQL stays down: every claim expires meanwhile
PASSWORD = "pw-never-logged-7f3a"  # in the database URL; the server trusts loopback anyway
TOKEN = re.compile(r"nelson_[A-Za-z0-9_-]{43}")
ORDER = [
    StackStatus.PENDING,
    StackStatus.DEPLOYING,
    StackStatus.WARMING,
    StackStatus.READY,
]

MANIFEST = echo_manifest(UNITS)


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, which it stops and starts again."""
    try:
        with own_postgres_server() as running:
            yield running
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))  # never skip silently


def with_password(url: str) -> str:
    user, rest = url.removeprefix("postgresql://").split("@", 1)
    return f"postgresql://{user}:{PASSWORD}@{rest}"


def write_config(
    tmp: Path, database_url: str, docker_address: str, registries: tuple[str, str]
) -> Path:
    staging, runtime = registries
    (tmp / "manifests" / "echo").mkdir(parents=True)
    (tmp / "manifests" / "echo" / ".nelson.yml").write_text(MANIFEST, encoding="utf-8")
    config = tmp / "nelson.toml"
    config.write_text(
        f'database_url = "{database_url}"\n'
        f'manifest_dirs = ["{tmp / "manifests"}"]\n'
        "[datacenters.local]\n"
        f'staging_registry = "{staging}"\n'
        f'runtime_registry = "{runtime}"\n'
        f'scheduler = {{ kind = "docker", address = "{docker_address}" }}\n'
        '[console]\nuser = "U1"\n'
        '[access]\nadmins = ["U1"]\n'
        '[workflow]\nwarming_timeout = "180s"\nhealth_interval = 0.3\n'
        f'claim_ttl = "{CLAIM_TTL}s"\n',
        encoding="utf-8",
    )
    return config


def nelson_run(config: Path, env: dict[str, str], command: str) -> str:
    done = subprocess.run(
        [*(sys.executable, "-m", "bot.cli", "--config", str(config)), "run", command],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.stdout + done.stderr


def new_token(config: Path, env: dict[str, str]) -> str:
    said = nelson_run(config, env, "token create ci for dev can deploy")
    found = TOKEN.search(said)
    assert found, said
    return found.group(0)


async def deploy(
    session: aiohttp.ClientSession, replicas: list[Replica], first: int, token: str, unit: str
) -> None:
    """Submit through one replica; one the killer just took down refuses the connection, one
    that cannot reach the database answers 503, and CI would try the next. A replica killed
    after storing the deploy and before answering leaves the client unsure: trying again is
    then answered that it is already deployed, which is the first try's success."""
    body = {"unit": unit, "version": "1.0.0", "namespace": "dev"}
    headers = {"Authorization": f"Bearer {token}"}
    cut = False  # a request may have reached a replica that died before answering
    for attempt in range(300):
        replica = replicas[(first + attempt) % len(replicas)]
        try:
            async with session.post(
                f"{replica.url}/v1/deployments", json=body, headers=headers
            ) as response:
                if response.status == 503:
                    await asyncio.sleep(0.2)
                    continue
                said = await response.text()
                if cut and response.status == 422 and "is already deployed there" in said:
                    return
                assert response.status == 202, said
                return
        except aiohttp.ClientConnectorError:  # refused: nothing was sent
            await asyncio.sleep(0.2)
        except aiohttp.ClientConnectionError:  # cut while asking
            cut = True
            await asyncio.sleep(0.2)
    raise AssertionError(f"no replica took the deploy of {unit}")


async def all_stacks(store: SqlStore) -> list[Stack]:
    return list((await store.list_stacks(StackQuery(limit=100))).stacks)


async def supervise(
    replicas: list[Replica], session: aiohttp.ClientSession, stop: asyncio.Event
) -> None:
    """What systemd's `Restart=always` does: a replica whose process ended is started again.
    One that was up and ended without being killed crashed: the test fails on it."""
    while not stop.is_set():
        for replica in replicas:
            assert replica.process is not None
            code = replica.process.poll()
            if replica.killed:
                continue
            if code is None:
                if not replica.seen_up:
                    await replica.answers(session)
                continue
            if replica.seen_up:
                replica.crashes.append(f"exit code {code}")
            else:
                replica.refused_starts += 1  # started while the database was down
            replica.start()
        await asyncio.sleep(0.3)


async def killer(
    replicas: list[Replica],
    store: SqlStore,
    session: aiohttp.ClientSession,
    rng: random.Random,
    takeovers: list[float],
    stop: asyncio.Event,
) -> int:
    kills = 0
    watchers: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(*KILL_EVERY))
        if stop.is_set():
            break
        alive = [r for r in replicas if await r.answers(session)]
        if len(alive) < 2:
            continue  # one replica at least keeps serving: the others are still starting
        victim = rng.choice(alive)
        pid = victim.kill()
        killed_at = time.monotonic()
        kills += 1
        try:
            held = {
                c.stack_id: c.token
                for c in await store.workflow_claims(unexpired_at=SystemClock().now())
                if c.holder.split(":")[1] == str(pid)
            }
        except Exception:  # the database is down right now: no figure for this kill
            held = {}
        victim.start()  # not waited for: the next kill may find it still starting
        if held:
            watchers.add(asyncio.create_task(watch_takeover(store, held, killed_at, takeovers)))
    await asyncio.gather(*watchers)
    return kills


async def watch_takeover(
    store: SqlStore, held: dict[int, int], since: float, takeovers: list[float]
) -> None:
    """Seconds from `since` (a kill, the database back) until another claim (a new token)
    holds each stack held then, or the stack is finished."""
    waiting = dict(held)
    while waiting and time.monotonic() - since < 120:
        with contextlib.suppress(Exception):  # the database may be down for a moment
            for claim in await store.workflow_claims():
                if claim.stack_id in waiting and claim.token > waiting[claim.stack_id]:
                    takeovers.append(time.monotonic() - since)
                    del waiting[claim.stack_id]
            for stack in await store.stacks_by_ids(list(waiting)):
                if stack.status not in ORDER[:3]:  # finished by a takeover between two polls
                    waiting.pop(stack.id, None)
        await asyncio.sleep(0.1)
    assert not waiting, f"claims never taken over: {waiting}"


async def restart_database(server: PostgresServer, store: SqlStore, retaken: list[float]) -> None:
    """Stop PostgreSQL for longer than the claims' TTL, start it again, and measure how long
    the claims held before the outage take to be taken again."""
    held = {c.stack_id: c.token for c in await store.workflow_claims(SystemClock().now())}
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(OUTAGE)
    await asyncio.to_thread(server.start)
    await watch_takeover(store, held, time.monotonic(), retaken)


def assert_forward(history: list[StackStatus], name: str) -> None:
    ranks = [ORDER.index(status) for status in history]
    assert ranks == sorted(set(ranks)), f"{name}: {[s.value for s in history]}"
    assert ranks[-1] == ORDER.index(StackStatus.READY), name


async def test_replicas_share_deploys_through_kills_and_a_database_restart(
    tmp_path: Path,
    server: PostgresServer,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> None:
    seed = int(os.environ.get("NELSON_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    for unit in UNITS:  # slow to start: kills land in the middle of warming
        busybox_image(engine_client, f"{registries[0]}/{unit}:1.0.0", unit, start_delay=5)
    database_url = fresh_database(server.url)
    config = write_config(tmp_path, with_password(database_url), docker_address, registries)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NELSON_", "SLACK_"))},
        "PYTHONPATH": str(ROOT),
    }
    token = new_token(config, env)
    replicas = [Replica(n, config, env) for n in range(REPLICAS)]
    store = await open_store(database_url, clock=SystemClock(), upgrade=False)
    takeovers: list[float] = []
    retaken: list[float] = []
    stop = asyncio.Event()
    began = time.monotonic()
    try:
        async with aiohttp.ClientSession() as session:
            for replica in replicas:
                replica.start()
            for replica in replicas:
                await replica.up(session)
            listing = nelson_run(config, env, "datacenters")
            assert f"Processes alive ({REPLICAS}):" in listing, listing
            kills = asyncio.create_task(killer(replicas, store, session, rng, takeovers, stop))
            supervisor = asyncio.create_task(supervise(replicas, session, stop))
            outage: asyncio.Task[None] | None = None
            for n, unit in enumerate(UNITS):
                await deploy(session, replicas, n, token, unit)
                if n == len(UNITS) // 2:  # half submitted, the first ones warming
                    outage = asyncio.create_task(restart_database(server, store, retaken))
                await asyncio.sleep(rng.uniform(0.3, 1.5))
            assert outage is not None
            await outage
            started = time.monotonic()
            while time.monotonic() - started < 240:
                stacks = await all_stacks(store)
                failed = [s for s in stacks if s.status is StackStatus.FAILED]
                assert not failed, [(s.name, s.status_message) for s in failed]
                if len(stacks) == len(UNITS) and all(s.status is StackStatus.READY for s in stacks):
                    break
                await asyncio.sleep(0.5)
            stop.set()
            killed = await kills
            await supervisor
            for replica in replicas:  # none hangs: each answers once started again
                await replica.up(session)
            listing = nelson_run(config, env, "datacenters")
        figures = ", ".join(f"{t:.1f}" for t in sorted(takeovers)) or "none held a claim"
        again = ", ".join(f"{t:.1f}" for t in sorted(retaken)) or "none held a claim"
        refused = sum(r.refused_starts for r in replicas)
        print(
            f"seed {seed}: {DEPLOYS} deploys, {killed} kills, {time.monotonic() - began:.0f} s; "
            f"takeover after a kill (s, TTL {CLAIM_TTL}): {figures}; "
            f"claims taken again after PostgreSQL came back (s): {again}; "
            f"starts refused while it was down: {refused}"
        )
        stacks = await all_stacks(store)
        assert sorted(s.unit for s in stacks) == sorted(UNITS), "a deploy was lost"
        for stack in stacks:
            assert stack.status is StackStatus.READY, (
                f"{stack.name} is {stack.status.value} (seed {seed}): "
                + "; ".join(line.message for line in await store.logs(stack.id))
            )
            history = [change.status for change in await store.status_history(stack.id)]
            assert_forward(history, stack.name)
            containers = engine_client.containers.list(
                all=True, filters={"label": f"nelson.stack={stack.name}"}
            )
            assert len(containers) == 1, (stack.name, [c.name for c in containers])
        assert killed >= 3, f"only {killed} kills: the test proves little (seed {seed})"
        assert not [r.crashes for r in replicas if r.crashes], "a replica that was up died"
        for replica in replicas:  # a replica killed lately may be listed too, until silent
            assert replica.process is not None
            assert f" {replica.process.pid} " in listing, listing
        logs = "\n".join(r.log.read_text(errors="replace") for r in replicas)
        assert "the database is unreachable" in logs  # said, once per process that saw it
        assert "Traceback" not in logs, logs[logs.index("Traceback") - 2000 :][:6000]
        assert PASSWORD not in logs
    finally:
        stop.set()
        for replica in replicas:
            replica.stop()
        await store.close()
