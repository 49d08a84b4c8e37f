"""Three `nelson serve --no-slack` replicas on one PostgreSQL sharing one real HAProxy, on the
real dockerd and registries: a traffic shift runs while the replica driving it (the holder of
the route's lease) is killed with SIGKILL, twice. The shift completes; the weights HAProxy
routes by (read from its runtime API every few milliseconds) never move backwards; the route
table and HAProxy agree at the end. Then HAProxy is stopped and its configuration deleted:
the replicas bring up a fresh one from the table; and all replicas are killed and one
restarted alone on a host with no HAProxy: it converges to the table too. The lease's TTL is
short here (3 s) so that takeovers happen within the test."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import docker
import pytest

from adapters.clock import SystemClock
from adapters.router.haproxy import SCALE, stop_haproxy
from adapters.storage import SqlStore, open_store
from commands.ports import Route
from domain.records import Stack, StackQuery
from domain.states import StackStatus
from domain.traffic import ShiftState
from domain.versions import Version
from tests.dockerworld import busybox_image, free_port
from tests.e2e.replica_process import Replica
from tests.e2e.test_replicas import new_token
from tests.pgserver import fresh_database

ROOT = Path(__file__).resolve().parents[2]
ROUTE = Route("dev", "hello", 1)
BACKEND = f"be_{ROUTE.key}"
DURATION = 64  # seconds of the shift (more than a minute, as manifests require)
LEASE_TTL = 3.0

MANIFEST = f"""\
units:
  - name: hello
    description: answers with its version
    ports:
      - default->8080/http
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
    traffic_shift:
      policy: linear
      duration: {DURATION}s
namespaces:
  - name: dev
    units:
      - ref: hello
        plans: [default]
"""


def write_config(
    tmp: Path, database_url: str, docker_address: str, registries: tuple[str, str], ports: str
) -> Path:
    staging, runtime = registries
    (tmp / "manifests" / "hello").mkdir(parents=True)
    (tmp / "manifests" / "hello" / ".nelson.yml").write_text(MANIFEST, encoding="utf-8")
    config = tmp / "nelson.toml"
    config.write_text(
        f'database_url = "{database_url}"\n'
        f'manifest_dirs = ["{tmp / "manifests"}"]\n'
        "[datacenters.local]\n"
        f'staging_registry = "{staging}"\n'
        f'runtime_registry = "{runtime}"\n'
        f'scheduler = {{ kind = "docker", address = "{docker_address}" }}\n'
        f'router = {{ kind = "haproxy", address = "{tmp / "haproxy"}", ports = "{ports}" }}\n'
        '[console]\nuser = "U1"\n'
        '[access]\nadmins = ["U1"]\n'
        "[approvals.dev]\nneeded = false\n"
        '[workflow]\nwarming_timeout = "120s"\nhealth_interval = 0.3\nclaim_ttl = "3s"\n'
        f'[traffic]\nstep_interval = 0.5\nlease_ttl = "{LEASE_TTL}s"\n'
        '[lifecycle]\ninterval = "1h"\n',
        encoding="utf-8",
    )
    return config


def free_range(size: int = 20) -> str:
    """A run of ports nothing listens on now (a route's frontend gets the first)."""
    for _ in range(100):
        base = free_port()
        if base + size > 65000:
            continue
        probes = []
        try:
            for port in range(base, base + size):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return f"{base}-{base + size - 1}"
    raise AssertionError("no free run of ports")


def runtime_weights(admin: Path) -> dict[str, int]:
    """Per server of the route's backend, the weight HAProxy routes by now (its runtime)."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(5)
        conn.connect(str(admin))
        conn.sendall(f"show servers state {BACKEND}\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    columns: list[str] = []
    found: dict[str, int] = {}
    for line in answer.decode().splitlines():
        if line.startswith("# "):
            columns = line[2:].split()
        elif columns and len(line.split()) >= len(columns):
            row = dict(zip(columns, line.split(), strict=False))
            found[row["srv_name"]] = int(row["srv_uweight"])
    return found


def stack_weight(runtime: dict[str, int], stack: str) -> int:
    return sum(w for name, w in runtime.items() if name.rpartition("-")[0] == stack)


class Sampler:
    """Reads HAProxy's runtime weights every few milliseconds, keeping the new stack's."""

    def __init__(self, admin: Path, new: str) -> None:
        self.admin = admin
        self.new = new
        self.seen: list[int] = []
        self.failures = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            try:
                runtime = await asyncio.to_thread(runtime_weights, self.admin)
            except OSError:
                self.failures += 1  # HAProxy reloading: the old worker's socket went away
            else:
                if any(name.rpartition("-")[0] == self.new for name in runtime):
                    self.seen.append(stack_weight(runtime, self.new))
            await asyncio.sleep(0.02)


async def stack_of(store: SqlStore, version: str) -> Stack | None:
    for stack in (await store.list_stacks(StackQuery(unit="hello", limit=10))).stacks:
        if stack.version == Version.parse(version):
            return stack
    return None


async def deploy_ready(
    session: aiohttp.ClientSession,
    replicas: list[Replica],
    store: SqlStore,
    token: str,
    version: str,
) -> Stack:
    body = {"unit": "hello", "version": version, "namespace": "dev"}
    headers = {"Authorization": f"Bearer {token}"}
    async with session.post(
        f"{replicas[0].url}/v1/deployments", json=body, headers=headers
    ) as response:
        assert response.status == 202, await response.text()
    for _ in range(600):
        stack = await stack_of(store, version)
        if stack is not None and stack.status is StackStatus.READY:
            entry = await store.route_entry("local", ROUTE.key)
            if entry is not None and stack.name in entry.weights():
                return stack
        assert stack is None or stack.status is not StackStatus.FAILED, stack.status_message
        await asyncio.sleep(0.2)
    raise AssertionError(f"hello {version} did not become ready and routed")


def holder_pid(holder: str) -> int:
    return int(holder.split(":")[1])


async def table_and_runtime_agree(store: SqlStore, admin: Path) -> None:
    entry = await store.route_entry("local", ROUTE.key)
    assert entry is not None
    wanted = {s.name: s.weight for s in entry.servers}
    for _ in range(100):
        try:
            if runtime_weights(admin) == wanted:
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"HAProxy runs {runtime_weights(admin)}, the table says {wanted}")


def nelson_run(replica: Replica, command: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "--config", str(replica.config), "run", command],
        cwd=replica.config.parent,
        env=replica.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def answers(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/", timeout=5) as response:
        return response.read().decode().strip()


@pytest.fixture
async def world(
    tmp_path: Path,
    postgres_admin_url: str,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> AsyncIterator[tuple[Path, str, list[Replica], SqlStore]]:
    for version in ("1.0.0", "1.0.1"):
        busybox_image(engine_client, f"{registries[0]}/hello:{version}", version)
    database_url = fresh_database(postgres_admin_url)
    config = write_config(tmp_path, database_url, docker_address, registries, free_range())
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NELSON_", "SLACK_"))},
        "PYTHONPATH": str(ROOT),
    }
    token = new_token(config, env)
    replicas = [Replica(n, config, env) for n in range(3)]
    store = await open_store(database_url, clock=SystemClock(), upgrade=False)
    try:
        yield tmp_path, token, replicas, store
    finally:
        for replica in replicas:
            replica.stop()
        await store.close()
        await stop_haproxy(tmp_path / "haproxy")
        for container in engine_client.containers.list(
            all=True, filters={"label": "nelson.unit=hello"}
        ):
            container.remove(force=True)


async def test_a_shift_survives_its_driver_killed_and_weights_never_go_back(
    world: tuple[Path, str, list[Replica], SqlStore],
) -> None:
    tmp, token, replicas, store = world
    admin = tmp / "haproxy" / "admin.sock"
    async with aiohttp.ClientSession() as session:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            await replica.up(session)
        old = await deploy_ready(session, replicas, store, token, "1.0.0")
        entry = await store.route_entry("local", ROUTE.key)
        assert entry is not None
        address = f"127.0.0.1:{entry.port}"
        await table_and_runtime_agree(store, admin)  # the table is written first, then HAProxy
        assert answers(address) == "1.0.0"

        sampler: Sampler | None = None
        sampling: asyncio.Task[None] | None = None
        new = await deploy_ready(session, replicas, store, token, "1.0.1")
        sampler = Sampler(admin, new.name)
        sampling = asyncio.create_task(sampler.run())
        kills: list[float] = []
        takeovers: list[float] = []
        try:
            for _ in range(5):  # a listing made while the lease lapsed names nobody
                listing = await asyncio.to_thread(nelson_run, replicas[0], "traffic hello")
                listing = " ".join(listing.split())  # the table wraps long cells
                holders = {x.holder for x in await store.route_leases()}
                if any(f"driven by {holder}" in listing for holder in holders):
                    break
            else:
                raise AssertionError(f"the listing names no replica driving the shift: {listing}")
            for _ in range(2):  # kill whoever drives the route, twice, mid-shift
                await asyncio.sleep(8)
                leases = [lease for lease in await store.route_leases() if "hello" in lease.route]
                assert leases, "nobody drives the shift"
                [lease] = leases
                victim = next(
                    r
                    for r in replicas
                    if r.process is not None and r.process.pid == holder_pid(lease.holder)
                )
                victim.kill()
                killed_at = time.monotonic()
                kills.append(killed_at)
                while time.monotonic() - killed_at < 30:
                    [now] = [x for x in await store.route_leases() if x.route == lease.route]
                    if now.token > lease.token:
                        takeovers.append(time.monotonic() - killed_at)
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("nobody took the route over")
                victim.start()
                await victim.up(session)
            for _ in range(600):
                [shift] = [s for s in await store.shifts() if s.to_stack_id == new.id]
                if shift.state is not ShiftState.RUNNING:
                    break
                await asyncio.sleep(0.2)
            assert shift.state is ShiftState.DONE, shift
            await table_and_runtime_agree(store, admin)
        finally:
            sampler.stop.set()
            await sampling
        print(
            f"takeovers after a kill (s, lease TTL {LEASE_TTL}): "
            + ", ".join(f"{t:.1f}" for t in takeovers)
            + f"; {len(sampler.seen)} samples of HAProxy's runtime"
        )
        assert len(takeovers) == 2
        assert sampler.seen == sorted(sampler.seen), sampler.seen  # never backwards
        assert sampler.seen[-1] == round(1000 / SCALE)
        assert len(set(sampler.seen)) >= 4, sampler.seen  # the shift moved in steps
        entry = await store.route_entry("local", ROUTE.key)
        assert entry is not None and entry.weights() == {old.name: 0, new.name: 1000}
        assert {answers(address) for _ in range(10)} == {"1.0.1"}

        # a fresh HAProxy (stopped, its configuration gone) comes back from the table; a
        # replica may bring it back between the two, before the file goes: the same test
        pid_file = tmp / "haproxy" / "haproxy.pid"
        first = pid_file.read_text()
        await stop_haproxy(tmp / "haproxy")
        (tmp / "haproxy" / "haproxy.cfg").unlink(missing_ok=True)
        await table_and_runtime_agree(store, admin)
        assert pid_file.read_text() != first
        assert {answers(address) for _ in range(10)} == {"1.0.1"}

        # every replica gone, HAProxy too; one replica restarted alone converges to the table
        for replica in replicas:
            replica.kill()
        await stop_haproxy(tmp / "haproxy")
        (tmp / "haproxy" / "haproxy.cfg").unlink(missing_ok=True)
        assert not (tmp / "haproxy" / "haproxy.cfg").exists()
        replicas[2].start()
        await replicas[2].up(session)
        await table_and_runtime_agree(store, admin)
        assert {answers(address) for _ in range(10)} == {"1.0.1"}
