"""Three `nelson serve --no-slack` replicas on one PostgreSQL, on the real dockerd and
registries, while a killer sends SIGKILL to a random replica every few seconds and starts it
again: every deploy submitted through the HTTP API reaches `ready`, each stack has exactly one
container, and no stack's status history goes backwards (no workflow ran twice, none was
lost). The claims' TTL is short here (3 s) so that takeovers happen within the test."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import docker

from adapters.clock import SystemClock
from adapters.storage import SqlStore, open_store
from domain.records import Stack, StackQuery
from domain.states import StackStatus
from tests.dockerworld import busybox_image, free_port
from tests.pgserver import fresh_database

ROOT = Path(__file__).resolve().parents[2]
UNITS = [f"echo{n}" for n in range(1, 7)]
REPLICAS = 3
CLAIM_TTL = float(os.environ.get("NELSON_TEST_CLAIM_TTL", "3"))  # 15 to measure the default
KILL_EVERY = (2.0, 4.0)  # seconds between kills, drawn at random (of a replica that is up,
# while another one is up too)
TOKEN = re.compile(r"nelson_[A-Za-z0-9_-]{43}")
ORDER = [
    StackStatus.PENDING,
    StackStatus.DEPLOYING,
    StackStatus.WARMING,
    StackStatus.READY,
]

UNIT = """\
  - name: {name}
    description: answers
    ports:
      - default->8080/http
"""
MANIFEST = (
    "units:\n"
    + "".join(UNIT.format(name=name) for name in UNITS)
    + """\
plans:
  - name: default
    memory: 64
    health_checks:
      - name: alive
        port_reference: default
        protocol: http
        path: /
        timeout: 1s
        interval: 1s
namespaces:
  - name: dev
    units:
"""
    + "".join(f"      - ref: {name}\n        plans: [default]\n" for name in UNITS)
)


class Replica:
    def __init__(self, n: int, config: Path, env: dict[str, str]) -> None:
        self.n = n
        self.config = config
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = config.parent / f"replica-{n}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "bot.cli", "--config", str(self.config)),
                *("serve", "--no-slack", "--host", "127.0.0.1", "--port", str(self.port)),
            ],
            cwd=self.config.parent,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )

    async def up(self, session: aiohttp.ClientSession) -> None:
        assert self.process is not None
        for _ in range(300):
            assert self.process.poll() is None, self.log.read_text()
            try:
                async with session.get(f"{self.url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"replica {self.n} did not come up:\n" + self.log.read_text())

    async def answers(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(f"{self.url}/healthz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    def kill(self) -> int:
        assert self.process is not None
        pid = self.process.pid
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        return pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def write_config(tmp: Path, database_url: str, docker_address: str, registries: tuple[str, str]):
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
        '[workflow]\nwarming_timeout = "120s"\nhealth_interval = 0.3\n'
        f'claim_ttl = "{CLAIM_TTL}s"\n',
        encoding="utf-8",
    )
    return config


def new_token(config: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bot.cli", "--config", str(config)),
            *("run", "token create ci for dev can deploy"),
        ],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = TOKEN.search(done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    return found.group(0)


async def deploy(
    session: aiohttp.ClientSession, replicas: list[Replica], first: int, token: str, unit: str
) -> None:
    """Submit through one replica; one the killer just took down refuses the connection, and
    CI would try the next."""
    body = {"unit": unit, "version": "1.0.0", "namespace": "dev"}
    headers = {"Authorization": f"Bearer {token}"}
    for attempt in range(150):
        replica = replicas[(first + attempt) % len(replicas)]
        try:
            async with session.post(
                f"{replica.url}/v1/deployments", json=body, headers=headers
            ) as response:
                assert response.status == 202, await response.text()
                return
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.2)
    raise AssertionError(f"no replica took the deploy of {unit}")


async def all_stacks(store: SqlStore) -> list[Stack]:
    return list((await store.list_stacks(StackQuery(limit=100))).stacks)


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
        held = {
            c.stack_id: c.token
            for c in await store.workflow_claims()
            if c.holder.split(":")[1] == str(pid) and c.expires_at > SystemClock().now()
        }
        victim.start()  # not waited for: the next kill may find it still starting
        if held:
            watchers.add(asyncio.create_task(watch_takeover(store, held, killed_at, takeovers)))
    await asyncio.gather(*watchers)
    return kills


async def watch_takeover(
    store: SqlStore, held: dict[int, int], killed_at: float, takeovers: list[float]
) -> None:
    """Seconds from the kill until another process holds each claim the dead one held."""
    waiting = dict(held)
    while waiting and time.monotonic() - killed_at < 120:
        for claim in await store.workflow_claims():
            if claim.stack_id in waiting and claim.token > waiting[claim.stack_id]:
                takeovers.append(time.monotonic() - killed_at)
                del waiting[claim.stack_id]
        for stack in await store.stacks_by_ids(list(waiting)):
            if stack.status not in ORDER[:3]:  # finished by a takeover between two polls
                waiting.pop(stack.id, None)
        await asyncio.sleep(0.1)


def assert_forward(history: list[StackStatus], name: str) -> None:
    ranks = [ORDER.index(status) for status in history]
    assert ranks == sorted(set(ranks)), f"{name}: {[s.value for s in history]}"
    assert ranks[-1] == ORDER.index(StackStatus.READY), name


async def test_replicas_share_deploys_while_one_is_killed_every_few_seconds(
    tmp_path: Path,
    postgres_admin_url: str,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> None:
    seed = int(os.environ.get("NELSON_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    for unit in UNITS:  # slow to start: kills land in the middle of warming
        busybox_image(engine_client, f"{registries[0]}/{unit}:1.0.0", unit, start_delay=6)
    database_url = fresh_database(postgres_admin_url)
    config = write_config(tmp_path, database_url, docker_address, registries)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NELSON_", "SLACK_"))},
        "PYTHONPATH": str(ROOT),
    }
    token = new_token(config, env)
    replicas = [Replica(n, config, env) for n in range(REPLICAS)]
    store = await open_store(database_url, clock=SystemClock(), upgrade=False)
    takeovers: list[float] = []
    stop = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as session:
            for replica in replicas:
                replica.start()
            for replica in replicas:
                await replica.up(session)
            kills = asyncio.create_task(killer(replicas, store, session, rng, takeovers, stop))
            for n, unit in enumerate(UNITS):
                await deploy(session, replicas, n, token, unit)
                await asyncio.sleep(rng.uniform(0.5, 3))
            started = time.monotonic()
            while time.monotonic() - started < 150:
                stacks = await all_stacks(store)
                failed = [s for s in stacks if s.status is StackStatus.FAILED]
                assert not failed, [(s.name, s.status_message) for s in failed]
                if len(stacks) == len(UNITS) and all(s.status is StackStatus.READY for s in stacks):
                    break
                await asyncio.sleep(0.5)
            stop.set()
            killed = await kills
        figures = ", ".join(f"{t:.1f}" for t in sorted(takeovers)) or "none held a claim"
        print(f"seed {seed}: {killed} kills; takeover after a kill (s, TTL {CLAIM_TTL}): {figures}")
        stacks = await all_stacks(store)
        assert sorted(s.unit for s in stacks) == UNITS, "a deploy was lost"
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
    finally:
        stop.set()
        for replica in replicas:
            replica.stop()
        await store.close()
