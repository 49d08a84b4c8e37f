"""The project's Dockerfile, built and run on the test dockerd as a team would run the bot.

Nothing can be pulled here: the base is made from Debian packages (tests/imagebuild.py) and
Python packages come from a wheel directory in the build context, through the same stages
`docker build .` runs against PyPI. The container then runs on the host network next to
the fake Slack, with the engine's socket mounted: it starts as a non-root user, /healthz
answers and Docker reports it healthy, a signed `/nelson help` is answered, `deploy` from
inside the container reaches `ready` on the test datacenter, and `docker stop` in the middle
of a deploy exits 0, the restarted container finishing that deploy."""

from __future__ import annotations

import asyncio
import os
import random
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import docker
import pytest

from tests.dockerworld import busybox_image, free_port
from tests.e2e.slack_harness import SIGNING_SECRET
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_requests import encode_form, sign, slash_command
from tests.imagebuild import ImageUnavailable, base_image, build_image, wheelhouse

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

UID = 10001  # the image's user
# A cold cache adds debootstrap and the wheel downloads (minutes) to the first test's setup.
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def image(
    docker_address: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    client = docker.DockerClient(base_url=docker_address, version="1.41", timeout=600)
    started = time.monotonic()
    try:
        base = base_image(client)
        wheels = wheelhouse()
        prepared = time.monotonic() - started
        image_id, seconds = build_image(
            client, base, wheels, "nelson-chatops:test", tmp_path_factory.mktemp("image")
        )
    except ImageUnavailable as exc:
        pytest.fail(str(exc))  # never skip silently: this test must run
    size = client.images.get(image_id).attrs["Size"]
    figures = (
        f"image nelson-chatops:test: {size / 1e6:.0f} MB; base and wheels ready in "
        f"{prepared:.0f} s, docker build {seconds:.0f} s"
    )
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # shown whether or not output is captured
        print(f"\n{figures}")
    yield image_id
    client.close()


@pytest.fixture
def client(docker_address: str) -> Iterator[docker.DockerClient]:
    engine = docker.DockerClient(base_url=docker_address, version="1.41", timeout=120)
    yield engine
    for container in engine.containers.list(all=True, filters={"label": "nelson.unit=hello"}):
        container.remove(force=True)
    engine.close()


def test_the_image_holds_the_wheel_not_the_sources(image: str, client: docker.DockerClient) -> None:
    config = client.images.get(image).attrs["Config"]
    assert config["User"] == "nelson"
    assert config["WorkingDir"] == "/data"
    assert "3000/tcp" in config["ExposedPorts"]
    assert config["Entrypoint"] == ["nelson"]
    assert config["Cmd"] == ["serve", "--port", "3000"]
    assert "healthz" in " ".join(config["Healthcheck"]["Test"])
    assert config["Labels"]["org.opencontainers.image.title"] == "nelson-chatops"
    assert config["Labels"]["org.opencontainers.image.version"] == "0.1.0"
    script = (
        "set -e; id -u; test ! -e /src; test ! -e /wheels; "
        "! command -v gcc; ! command -v pip; "
        "python3 -c 'import bot, tests' 2>/dev/null && exit 9; "
        "dot -V 2>&1; haproxy -v | head -1; nelson --help | head -1"
    )
    output = client.containers.run(
        image, ["-c", script], entrypoint="/bin/sh", remove=True, network_mode="host"
    ).decode()
    lines = output.splitlines()
    assert lines[0] == str(UID), output
    assert "graphviz" in output and "HAProxy" in output, output
    assert "usage: nelson" in output, output


def write_config(tmp: Path, fake: FakeSlack, registries: tuple[str, str]) -> Path:
    staging, runtime = registries
    config = tmp / "config"
    (config / "manifests" / "hello").mkdir(parents=True)
    (config / "manifests" / "hello" / ".nelson.yml").write_text(MANIFEST, encoding="utf-8")
    base = random.randrange(21000, 29900, 100)
    (config / "nelson.toml").write_text(
        'manifest_dirs = ["/config/manifests"]\n'
        "[datacenters.local]\n"
        f'staging_registry = "{staging}"\n'
        f'runtime_registry = "{runtime}"\n'
        'scheduler = { kind = "docker", address = "unix:///var/run/docker.sock" }\n'
        f'router = {{ kind = "haproxy", ports = "{base}-{base + 99}" }}\n'
        '[access]\nadmins = ["U1"]\n'
        '[workflow]\nwarming_timeout = "60s"\nhealth_interval = 0.2\n'
        "[slack]\npost_interval = 0.05\nupdate_interval = 0.05\n",
        encoding="utf-8",
    )
    return config


async def slash(url: str, fake: FakeSlack, text: str) -> str:
    response_url = fake.new_response_url()
    body = encode_form(slash_command(text, user_id="U1", response_url=response_url))
    headers = {**sign(SIGNING_SECRET, body), "Content-Type": "application/x-www-form-urlencoded"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/slack/events", data=body, headers=headers) as response,
    ):
        assert response.status == 200
    return response_url.rsplit("/", 1)[1]


async def healthy(url: str, container: docker.models.containers.Container) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            container.reload()
            assert container.status in ("created", "running"), container.logs().decode()
            try:
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200 and (await response.json())["ok"]:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the bot did not answer /healthz:\n" + container.logs().decode())


def thread_text(fake: FakeSlack, index: int) -> str:
    messages = fake.messages("C1")
    if len(messages) <= index:
        return ""
    parent = messages[index]
    return "\n".join([parent.text, *(m.text for m in fake.thread("C1", parent.ts))])


def serves(client: docker.DockerClient, version: str) -> str:
    [container] = client.containers.list(
        filters={"label": ["nelson.unit=hello", f"nelson.version={version}"]}
    )
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    with urllib.request.urlopen(f"http://127.0.0.1:{env['PORT']}/", timeout=5) as response:
        return response.read().decode()


async def test_the_container_serves_slack_and_deploys(
    image: str,
    client: docker.DockerClient,
    docker_address: str,
    registries: tuple[str, str],
    fake: FakeSlack,
    tmp_path: Path,
) -> None:
    busybox_image(client, f"{registries[0]}/hello:1.0.0", "hello 1.0.0")
    busybox_image(client, f"{registries[0]}/hello:1.0.1", "hello 1.0.1", start_delay=4)
    config = write_config(tmp_path, fake, registries)
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, UID, UID)
    socket = docker_address.removeprefix("unix://")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    container = client.containers.run(
        image,
        ["serve", "--port", str(port)],
        detach=True,
        network_mode="host",
        environment={
            "NELSON_CONFIG": "/config/nelson.toml",
            "NELSON_HEALTH_PORT": str(port),
            "SLACK_BOT_TOKEN": fake.bot_token,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.base_url,
        },
        volumes={
            str(config): {"bind": "/config", "mode": "ro"},
            str(data): {"bind": "/data", "mode": "rw"},
            socket: {"bind": "/var/run/docker.sock", "mode": "rw"},
        },
        group_add=[str(os.stat(socket).st_gid)],
        healthcheck={"interval": 500_000_000, "start_period": 60_000_000_000},
        labels={"nelson.test": "container"},
    )
    try:
        await healthy(url, container)
        assert container.exec_run(["id", "-u"]).output.decode().strip() == str(UID)
        for _ in range(100):  # Docker's own health check, from the image's HEALTHCHECK
            container.reload()
            if container.attrs["State"]["Health"]["Status"] == "healthy":
                break
            await asyncio.sleep(0.2)
        assert container.attrs["State"]["Health"]["Status"] == "healthy"

        rid = await slash(url, fake, "help")
        await fake.wait_for(lambda: fake.responses.get(rid), timeout=20)
        assert "deploy" in FakeSlack.all_text(fake.responses[rid][0])

        await slash(url, fake, "deploy hello 1.0.0 to local")
        await fake.wait_for(lambda: "is done" in thread_text(fake, 0), timeout=90)
        for words in ("replicated to", "launched 1 instance", "healthy", "ready"):
            assert words in thread_text(fake, 0), thread_text(fake, 0)
        assert serves(client, "1.0.0") == "hello 1.0.0"
        assert (data / "nelson.db").exists()  # the SQLite default, in the volume

        # docker stop while 1.0.1 warms: the bot exits 0, the restarted one finishes it
        await slash(url, fake, "deploy hello 1.0.1 to local")
        await fake.wait_for(lambda: "warming" in thread_text(fake, 1), timeout=60)
        await asyncio.to_thread(container.stop, timeout=40)
        assert container.wait(timeout=10)["StatusCode"] == 0, container.logs().decode()
        assert "continue at the next start" in container.logs().decode()
        await fake.wait_for(lambda: "paused in step" in thread_text(fake, 1), timeout=10)
        container.start()
        await healthy(url, container)
        await fake.wait_for(lambda: "is done" in thread_text(fake, 1), timeout=90)
        assert "continuing after a restart" in thread_text(fake, 1), thread_text(fake, 1)
        assert serves(client, "1.0.1") == "hello 1.0.1"
    finally:
        container.remove(force=True)
