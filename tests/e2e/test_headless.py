"""`nelson run`, `nelson cleanup`, `nelson announce` and `nelson serve --no-slack` as separate
processes, as a person runs them from a shell, on the real dockerd, registries and HAProxy:

- three versions deployed with `nelson run` and no daemon, then `nelson serve --no-slack`:
  exactly one shift runs, no request is ever answered by the superseded (then garbage)
  stack, the shift starts near 0% although its schedule had long ended, climbs step by step,
  and the newest ends at 100%;
- two `nelson cleanup` in a row both run, `nelson announce --no-slack` prints the digest, and
  after the notice `nelson cleanup` removes the stack (out of the route first)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from adapters.clock import SystemClock
from adapters.router.haproxy import stop_haproxy
from adapters.storage import SqlStore, open_store
from domain.records import Stack, StackQuery, TrafficShift
from domain.states import StackStatus
from tests.dockerworld import busybox_image, free_port
from tests.e2e.slack_harness import SIGNING_SECRET
from tests.fakes.slack import FakeSlack
from tests.haproxy_config import rendered_routes

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ("1.0.0", "1.1.0", "1.2.0")
DURATION = 61  # seconds of a shift: the least a manifest allows is more than a minute

MANIFEST = """\
units:
  - name: hey
    description: answers with its version
    ports:
      - default->8080/http
plans:
  - name: default
    memory: 64
    expiration_policy: retain-latest
    health_checks:
      - name: alive
        port_reference: default
        protocol: http
        path: /
        timeout: 1s
        interval: 1s
    traffic_shift:
      policy: {policy}
      duration: {duration}s
namespaces:
  - name: dev
    units:
      - ref: hey
        plans: [default]
"""


class Shell:
    """A working directory with its own nelson.toml, and the `nelson` command in it."""

    def __init__(
        self, tmp: Path, docker_address: str, registries: tuple[str, str], policy: str
    ) -> None:
        staging, runtime = registries
        self.tmp = tmp
        repo = tmp / "manifests" / "hey"
        repo.mkdir(parents=True, exist_ok=True)
        (repo / ".nelson.yml").write_text(
            MANIFEST.format(policy=policy, duration=DURATION), encoding="utf-8"
        )
        base = random.randrange(21000, 29900, 100)
        self.haproxy = tmp / "haproxy"
        self.database = f"sqlite:///{tmp / 'nelson.db'}"
        self.port = free_port()
        (tmp / "nelson.toml").write_text(
            f'database_url = "{self.database}"\n'
            f'manifest_dirs = ["{tmp / "manifests"}"]\n'
            'namespaces = ["dev"]\n'
            "[datacenters.local]\n"
            f'staging_registry = "{staging}"\n'
            f'runtime_registry = "{runtime}"\n'
            f'scheduler = {{ kind = "docker", address = "{docker_address}" }}\n'
            f'router = {{ kind = "haproxy", address = "{self.haproxy}", '
            f'ports = "{base}-{base + 99}" }}\n'
            '[access]\nadmins = ["local"]\n'
            "[approvals.dev]\nneeded = false\n"
            '[workflow]\nwarming_timeout = "30s"\nhealth_interval = 0.2\n'
            "[traffic]\nstep_interval = 0.5\n"
            '[lifecycle]\nnew_stack_grace = "0s"\ngarbage_grace = "0s"\nnotice = "2s"\n'
            'interval = "1h"\nannounce_at = "23:59"\n'
            '[slack]\noperations_channel = "C2"\n',
            encoding="utf-8",
        )
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("NELSON_", "SLACK_"))},
            "PYTHONPATH": str(ROOT),
        }
        self.daemon: subprocess.Popen[str] | None = None
        self.log = tmp / "serve.log"

    def nelson(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bot.cli", *args],
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=180,
            env=self.env,
        )

    def serve(self) -> None:
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--no-slack", "--port", str(self.port)],
            cwd=self.tmp,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("a"),
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.daemon.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/healthz", timeout=2
                ) as response:
                    body = json.loads(response.read())
                    assert body == {"ok": True, "mode": "no-slack"}
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise AssertionError("nelson serve --no-slack did not come up:\n" + self.log.read_text())

    def stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            self.daemon.wait(30)
        self.daemon = None

    def route_address(self) -> str:
        [entry] = rendered_routes(self.haproxy).values()
        return f"127.0.0.1:{entry.port}"

    async def store(self) -> SqlStore:
        return await open_store(self.database, clock=SystemClock())


class Sampler:
    """Asks the route every few milliseconds and keeps who answered, in order."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.answers: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(f"http://{self.address}/", timeout=5) as response:
                    self.answers.append(response.read().decode().strip())
            except (urllib.error.URLError, ConnectionError) as exc:
                self.answers.append(f"error: {exc}")
            time.sleep(0.01)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def images(engine_client: docker.DockerClient, registries: tuple[str, str]) -> None:
    for version in VERSIONS:
        busybox_image(engine_client, f"{registries[0]}/hey:{version}", version)


@pytest.fixture
def shell(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    docker_address: str,
    registries: tuple[str, str],
    images: None,
    engine_client: docker.DockerClient,
) -> Iterator[Shell]:
    policy = getattr(request, "param", "linear")
    running = Shell(tmp_path, docker_address, registries, policy)
    yield running
    running.stop_daemon()
    asyncio.run(stop_haproxy(running.haproxy))
    for container in engine_client.containers.list(all=True, filters={"label": "nelson.unit=hey"}):
        container.remove(force=True)


async def stacks(shell: Shell) -> dict[str, Stack]:
    store = await shell.store()
    try:
        page = await store.list_stacks(StackQuery(unit="hey", limit=20))
    finally:
        await store.close()
    return {str(s.version): s for s in page.stacks}


async def shifts(shell: Shell) -> list[TrafficShift]:
    store = await shell.store()
    try:
        return await store.shifts()
    finally:
        await store.close()


async def log_of(shell: Shell, stack: Stack) -> list[str]:
    store = await shell.store()
    try:
        return [line.message for line in await store.logs(stack.id)]
    finally:
        await store.close()


def deploy(shell: Shell, version: str) -> str:
    result = shell.nelson("run", f"deploy hey {version} to local")
    assert result.returncode == 0, result
    assert "local/dev: ready" in result.stdout, result.stdout
    return result.stdout


async def test_three_versions_without_a_daemon_then_serve_no_slack(shell: Shell) -> None:
    first = deploy(shell, "1.0.0")
    assert "it gets all traffic" in first
    second = deploy(shell, "1.1.0")
    # the process exits and says so: nothing moves the shift until a daemon runs
    assert "no `nelson serve` or `nelson console` is running" in second, second
    third = deploy(shell, "1.2.0")
    assert "supersedes the shift to" in third, third
    by_version = await stacks(shell)
    # exactly one open shift; the one to 1.1.0 was superseded, and says so in its thread
    states = [(s.state, s.to_stack_id) for s in await shifts(shell)]
    assert states == [
        ("superseded", by_version["1.1.0"].id),
        ("running", by_version["1.2.0"].id),
    ], states
    assert any(
        line.startswith("traffic: superseded by")
        for line in await log_of(shell, by_version["1.1.0"])
    )
    # the cleanup collects the superseded 1.1.0 (not 1.0.0, which serves everything)
    cleanup = shell.nelson("cleanup")
    assert cleanup.returncode == 0, cleanup
    assert f"garbage: {by_version['1.1.0'].name}" in cleanup.stdout, cleanup.stdout
    assert (await stacks(shell))["1.1.0"].status is StackStatus.GARBAGE

    # half the 1.2.0 shift's schedule passes with nobody driving: it still starts near 0%
    # once a daemon runs (had the time counted, it would start at 50% or more)
    await asyncio.sleep(DURATION / 2)
    weights: list[int] = []
    with Sampler(shell.route_address()) as sampler:
        shell.serve()
        deadline = time.monotonic() + 2 * DURATION
        while time.monotonic() < deadline:
            [*_, shift] = await shifts(shell)
            if not weights or weights[-1] != shift.current_new_weight:
                weights.append(shift.current_new_weight)
            if shift.state == "done":
                break
            await asyncio.sleep(0.1)
        time.sleep(0.5)
    assert shift.state == "done", (shift, weights)
    # never a garbage or superseded stack, never an error; the newest ends with everything
    answers = sampler.answers
    assert set(answers) <= {"1.0.0", "1.2.0"}, sorted(set(answers))
    assert "1.1.0" not in answers
    assert answers[-20:] == ["1.2.0"] * 20
    assert answers.count("1.0.0") > 20  # the old one kept serving while the new one climbed
    # began near 0% and climbed in steps (0.5 s each over the shift), not one jump
    climbing = [w for w in weights if 0 < w < 1000]
    assert weights[0] <= 200, weights
    assert len(climbing) >= 5, weights
    assert climbing == sorted(climbing)
    lines = await log_of(shell, by_version["1.2.0"])
    assert any("this shift was delayed by" in line for line in lines), lines
    assert (await stacks(shell))["1.1.0"].status is StackStatus.GARBAGE
    shell.stop_daemon()
    assert "nelson is running without Slack" in shell.log.read_text()  # logged at INFO


async def test_buttons_as_text_then_cleanup_twice_announce_and_removal(
    shell: Shell, engine_client: docker.DockerClient
) -> None:
    deploy(shell, "1.0.0")
    deploy(shell, "1.1.0")
    new = (await stacks(shell))["1.1.0"]
    # every button has its text: pause, look, resume
    paused = shell.nelson("run", f"pause {new.name}")
    assert paused.returncode == 0 and f"Paused the shift to {new.name}" in paused.stdout, paused
    again = shell.nelson("run", f"pause {new.name}")
    assert again.returncode == 1 and "is paused, not running" in again.stderr, again
    listing = shell.nelson("run", "traffic hey")
    assert listing.returncode == 0, listing
    assert "local/dev/hey/1" in listing.stdout and "paused at " in listing.stdout, listing
    assert "nothing moves until one starts" in listing.stdout
    resumed = shell.nelson("run", f"resume {new.name}")
    assert resumed.returncode == 0 and "Resumed" in resumed.stdout, resumed
    assert "no `nelson serve` or `nelson console` is running" in resumed.stdout
    shell.serve()  # drives the shift to its end
    deadline = time.monotonic() + 2 * DURATION
    while (await shifts(shell))[-1].state != "done":
        assert time.monotonic() < deadline, shell.log.read_text()
        await asyncio.sleep(0.2)
    shell.stop_daemon()
    old = (await stacks(shell))["1.0.0"]
    listed = shell.nelson("run", "stacks")
    assert listed.returncode == 0, listed
    [row] = [line for line in listed.stdout.splitlines() if line.startswith(new.name)]
    assert "serving 100%" in row, listed.stdout
    inspected = shell.nelson("run", f"inspect {new.name}")
    traffic_field = [line.split() for line in inspected.stdout.splitlines()]
    assert ["traffic", "serving", "100%"] in traffic_field, inspected.stdout
    assert "shift #1 (to this stack): done at 100%" in inspected.stdout
    assert "1.0.0 0% / 1.1.0 100%" in inspected.stdout  # the traffic history
    first_log = shell.nelson("run", f"logs {old.name}")
    assert f"it gets all traffic at {shell.route_address()}" in " ".join(
        first_log.stdout.split()
    ), first_log.stdout

    first = shell.nelson("cleanup")
    assert first.returncode == 0, first
    assert f"garbage: {old.name}" in first.stdout
    assert "wait for the cleanup digest" in first.stdout and "nelson announce" in first.stdout
    second = shell.nelson("cleanup")  # the lease of the first pass was released
    assert second.returncode == 0, second
    assert second.stdout.startswith("Judged"), second.stdout
    assert "reaped 0" in second.stdout  # not announced yet: nothing goes

    refused = shell.nelson("announce")  # no Slack tokens here: says what to do instead
    assert refused.returncode == 2 and "nelson announce --no-slack" in refused.stderr, refused
    announce = shell.nelson("announce", "--no-slack")
    assert announce.returncode == 0, announce
    assert "[cleanup] 1 stacks will be removed:" in announce.stdout, announce.stdout
    assert old.name in announce.stdout
    # and posted in Slack: the operations channel gets the digest with its buttons
    async with FakeSlack() as fake:
        shell.env.update(
            SLACK_BOT_TOKEN=fake.bot_token,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=fake.base_url,
        )
        posted = await asyncio.to_thread(shell.nelson, "announce")
        assert posted.returncode == 0, posted
        assert "Posted the digest of 1 removal(s) in #C2." in posted.stdout, posted.stdout
        [digest] = [m for m in fake.messages("C2") if "will be removed" in fake.all_text(m)]
        assert old.name in fake.all_text(digest) and "Keep 24h more" in fake.all_text(digest)
        for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_API_URL"):
            del shell.env[name]

    await asyncio.sleep(2.2)  # lifecycle.notice
    last = shell.nelson("cleanup")
    assert last.returncode == 0, last
    assert "reaped 1" in last.stdout, last.stdout
    assert f"[cleanup] removed {old.name}" in last.stdout
    assert (await stacks(shell))["1.0.0"].status is StackStatus.TERMINATED
    assert not engine_client.containers.list(
        all=True, filters={"label": f"nelson.stack={old.name}"}
    )
    servers = {name for entry in rendered_routes(shell.haproxy).values() for name in entry.stacks()}
    assert old.name not in servers
    with urllib.request.urlopen(f"http://{shell.route_address()}/", timeout=5) as response:
        assert response.read().decode().strip() == "1.1.0"
