"""From a signed slash command to a running container, through `nelson serve` as a separate
process: deploy 1.0.0 to the local Docker datacenter, then kill -9 the bot in the middle of
deploying 1.0.1 and watch the restarted bot finish it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import docker

from adapters.clock import SystemClock
from adapters.storage import SqlStore, open_store
from domain.records import Stack, StackQuery
from domain.states import StackStatus
from tests.dockerworld import busybox_image, free_port
from tests.e2e.slack_harness import SIGNING_SECRET
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_requests import encode_form, sign, slash_command

ROOT = Path(__file__).resolve().parents[2]

MANIFEST = """\
units:
  - name: hello
    description: says hello
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
        timeout: 2s
        interval: 1s
namespaces:
  - name: dev
    units:
      - ref: hello
        plans: [default]
"""


class Bot:
    def __init__(
        self, tmp: Path, fake: FakeSlack, docker_address: str, registries: tuple[str, str]
    ):
        staging, runtime = registries
        (tmp / "manifests" / "hello").mkdir(parents=True, exist_ok=True)
        (tmp / "manifests" / "hello" / ".nelson.yml").write_text(MANIFEST, encoding="utf-8")
        self.config = tmp / "nelson.toml"
        self.config.write_text(
            f'database_url = "sqlite:///{tmp / "nelson.db"}"\n'
            f'manifest_dirs = ["{tmp / "manifests"}"]\n'
            "[datacenters.local]\n"
            f'staging_registry = "{staging}"\n'
            f'runtime_registry = "{runtime}"\n'
            f'scheduler = {{ kind = "docker", address = "{docker_address}" }}\n'
            '[access]\nadmins = ["U1"]\n'
            '[workflow]\nwarming_timeout = "60s"\nhealth_interval = 0.2\n'
            "[slack]\npost_interval = 0.05\nupdate_interval = 0.05\n",
            encoding="utf-8",
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("NELSON_", "SLACK_"))},
            "SLACK_BOT_TOKEN": fake.bot_token,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.base_url,
            "PYTHONPATH": str(ROOT),
        }
        self.log = tmp / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bot.cli",
                "--config",
                str(self.config),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=self.config.parent,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                assert self.process.poll() is None, self.log.read_text()
                try:
                    async with session.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("nelson serve did not come up:\n" + self.log.read_text())

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()

    async def slash(self, fake: FakeSlack, text: str) -> None:
        body = encode_form(slash_command(text, response_url=fake.new_response_url()))
        headers = {
            **sign(SIGNING_SECRET, body),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/slack/events", data=body, headers=headers) as response,
        ):
            assert response.status == 200


async def stack_of(store: SqlStore, version: str) -> Stack | None:
    page = await store.list_stacks(StackQuery(unit="hello", limit=10))
    return next((s for s in page.stacks if str(s.version) == version), None)


async def wait_status(store: SqlStore, version: str, status: StackStatus, timeout: float) -> Stack:
    for _ in range(int(timeout / 0.1)):
        stack = await stack_of(store, version)
        if stack is not None and stack.status is status:
            return stack
        if stack is not None and stack.status is StackStatus.FAILED:
            raise AssertionError(f"{stack.name} failed: {stack.status_message}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"hello {version} did not become {status} within {timeout}s")


def serves(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return response.read().decode()


async def test_deploy_from_slack_survives_kill_9(
    tmp_path: Path,
    fake: FakeSlack,
    docker_address: str,
    registries: tuple[str, str],
    engine_client: docker.DockerClient,
) -> None:
    busybox_image(engine_client, f"{registries[0]}/hello:1.0.0", "hello 1.0.0")
    busybox_image(engine_client, f"{registries[0]}/hello:1.0.1", "hello 1.0.1", start_delay=4)
    bot = Bot(tmp_path, fake, docker_address, registries)
    await bot.start()
    store = await open_store(
        f"sqlite:///{tmp_path / 'nelson.db'}", clock=SystemClock(), upgrade=False
    )
    try:
        await bot.slash(fake, "deploy hello 1.0.0 to local")
        first = await wait_status(store, "1.0.0", StackStatus.READY, 60)
        await fake.wait_for(
            lambda: fake.messages("C1") and "done" in fake.messages("C1")[0].text, timeout=20
        )
        parent = fake.messages("C1")[0]
        await fake.wait_for(
            lambda: "is done" in "\n".join(m.text for m in fake.thread("C1", parent.ts))
        )
        thread = "\n".join(m.text for m in fake.thread("C1", parent.ts))
        for words in ("resolved", "replicated to", "launched 1 instance", "healthy", "ready"):
            assert words in thread, thread
        [container] = engine_client.containers.list(filters={"label": f"nelson.stack={first.name}"})
        env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
        assert serves(int(env["PORT"])) == "hello 1.0.0"

        await bot.slash(fake, "deploy hello 1.0.1 to local")
        await wait_status(store, "1.0.1", StackStatus.WARMING, 60)
        bot.kill()  # mid-deploy: the container is starting, health not yet passed
        await bot.start()
        second = await wait_status(store, "1.0.1", StackStatus.READY, 60)
        containers = engine_client.containers.list(
            all=True, filters={"label": f"nelson.stack={second.name}"}
        )
        assert len(containers) == 1  # the restart did not launch a duplicate
        env = dict(e.split("=", 1) for e in containers[0].attrs["Config"]["Env"])
        assert serves(int(env["PORT"])) == "hello 1.0.1"
        lines = [line.message for line in await store.logs(second.id)]
        assert any("continuing after a restart" in line for line in lines)
        await fake.wait_for(
            lambda: len(fake.messages("C1")) == 2 and "done" in fake.messages("C1")[1].text,
            timeout=20,
        )
    finally:
        bot.stop()
        await store.close()
        for container in engine_client.containers.list(
            all=True, filters={"label": "nelson.unit=hello"}
        ):
            container.remove(force=True)
