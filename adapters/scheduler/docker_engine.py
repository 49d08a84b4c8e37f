"""The Scheduler port on one Docker engine (a single-host datacenter), with docker-py.

A stack runs as `instances` containers named `<stack>-<n>`, labelled with stack, unit,
version, namespace, datacenter and plan. Containers use the host's network: for each port the
manifest declares, the adapter allocates a free host port and tells the process through
`NELSON_PORT_<LABEL>` (and `PORT` for the first port), so health checks, dependants and the
router reach it on 127.0.0.1. docker-py is synchronous; every call runs in a worker thread
with a timeout."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from typing import Any

import aiohttp
import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from commands.ports import SchedulerError
from domain.redaction import redact
from domain.runtime import Health, Instance, LaunchSpec, Rendering

LABEL = "nelson.stack"
API_VERSION = "1.41"


DEFAULT_PORTS = (30000, 32767)  # below Linux's ephemeral range, so no client socket takes one
_allocating = threading.Lock()  # one allocation at a time in this process, across adapters


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _state(container: Any) -> tuple[str, str]:
    state = container.attrs.get("State", {})
    status = state.get("Status", "")
    if status == "running":
        return "running", ""
    if status in ("created", "restarting"):
        return "pending", status
    code = state.get("ExitCode")
    error = state.get("Error") or ""
    return "failed", f"{status} (exit code {code}){': ' + error if error else ''}"


class DockerEngine:
    def __init__(
        self,
        address: str,
        datacenter: str,
        *,
        timeout: float = 60.0,
        ports: tuple[int, int] = DEFAULT_PORTS,
    ) -> None:
        self.address = address
        self.shown = redact(address)  # for messages: without credentials
        self.datacenter = datacenter
        self.timeout = timeout
        self.ports = ports
        self._client: docker.DockerClient | None = None
        self._http: aiohttp.ClientSession | None = None

    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(
                base_url=self.address, version=API_VERSION, timeout=int(self.timeout)
            )
        return self._client

    async def _run(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args, **kwargs), self.timeout)
        except TimeoutError:
            raise SchedulerError(
                f"the Docker engine at {self.shown} did not answer in {self.timeout:.0f} s "
                f"({what})",
                transient=True,
            ) from None
        except ImageNotFound as exc:
            raise SchedulerError(f"{what}: {exc.explanation or exc}") from None
        except APIError as exc:
            transient = exc.status_code is None or exc.status_code >= 500
            raise SchedulerError(f"{what}: {exc.explanation or exc}", transient=transient) from None
        except (DockerException, OSError) as exc:
            raise SchedulerError(
                f"cannot reach the Docker engine at {self.shown} ({what}): {redact(str(exc))}",
                transient=True,
            ) from None

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- the port ---------------------------------------------------------------------------

    async def check(self) -> str | None:
        try:
            await asyncio.wait_for(asyncio.to_thread(self._docker().ping), 5)
        except Exception:
            return (
                f"the Docker engine at {self.shown} is not reachable: start Docker "
                "(`dockerd`), or set datacenters."
                f"{self.datacenter}.scheduler.address to where it listens"
            )
        return None

    async def launch(self, spec: LaunchSpec) -> list[Instance]:
        return list(await self._run(f"launch {spec.stack}", self._launch, spec))

    def _containers(self, stack: str) -> list[Any]:
        found = self._docker().containers.list(all=True, filters={"label": f"{LABEL}={stack}"})
        return sorted(found, key=lambda c: c.name)

    def _launch(self, spec: LaunchSpec) -> list[Instance]:
        client = self._docker()
        try:
            client.images.get(spec.image)
        except ImageNotFound:
            repository, _, digest = spec.image.partition("@")
            client.images.pull(repository, tag=digest or None)
        existing = {c.name: c for c in self._containers(spec.stack)}
        instances = []
        for n in range(spec.instances):
            name = f"{spec.stack}-{n}"
            container = existing.get(name)
            if container is None:
                container = self._create(spec, name, n)
            if container.status != "running":
                container.start()
                container.reload()
            instances.append(self._instance(container))
        return instances

    def _free_ports(self, count: int) -> list[int]:
        """Host ports from the configured range that no container on this engine claims and
        nothing listens on, picked at random so concurrent bots rarely reach for the same."""
        claimed: set[int] = set()
        for container in self._docker().containers.list(all=True, filters={"label": LABEL}):
            claimed.update(json.loads(container.labels.get("nelson.ports") or "{}").values())
        low, high = self.ports
        candidates = [p for p in range(low, high + 1) if p not in claimed]
        random.shuffle(candidates)
        found = [p for p in candidates[: count * 20] if _bindable(p)][:count]
        if len(found) < count:
            raise SchedulerError(
                f"no free host port left in {low}-{high} on the Docker engine at {self.shown}"
            )
        return found

    def _create(self, spec: LaunchSpec, name: str, n: int) -> Any:
        with _allocating:  # until the container exists and its label claims the ports
            return self._create_claiming(spec, name, n)

    def _create_claiming(self, spec: LaunchSpec, name: str, n: int) -> Any:
        free = self._free_ports(len(spec.ports))
        ports = {p.label: port for p, port in zip(spec.ports, free, strict=True)}
        return self._docker().containers.create(**_create_options(spec, name, n, ports))

    async def render(self, spec: LaunchSpec) -> Rendering:
        if spec.blueprint is not None:
            raise SchedulerError(
                f"{spec.blueprint_name or 'a blueprint'} is for Nomad; Docker engine "
                "datacenters run the built-in container options"
            )
        options = _create_options(spec, f"{spec.stack}-0", 0, {p.label: 0 for p in spec.ports})
        notes = [f"one container like this per instance ({spec.instances}), named {spec.stack}-<n>"]
        if spec.ports:
            notes.append("host ports (0 here) are picked from the free ones at launch")
        return Rendering(
            "Docker container", options, "the Docker engine's options", (), (), tuple(notes)
        )

    def _instance(self, container: Any) -> Instance:
        state, detail = _state(container)
        ports = json.loads(container.labels.get("nelson.ports") or "{}")
        return Instance(container.name, state, tuple(sorted(ports.items())), detail)

    async def instances(self, stack: str) -> list[Instance]:
        containers = await self._run(f"list {stack}", self._containers, stack)
        return [self._instance(c) for c in containers]

    async def delete(self, stack: str) -> int:
        return int(await self._run(f"delete {stack}", self._delete, stack))

    def _delete(self, stack: str) -> int:
        removed = 0
        for container in self._containers(stack):
            try:
                container.remove(force=True, v=True)
                removed += 1
            except NotFound:
                pass
        return removed

    async def health(self, spec: LaunchSpec) -> Health:
        instances = await self.instances(spec.stack)
        if len(instances) < spec.instances:
            return Health(False, f"{len(instances)} of {spec.instances} instances exist")
        for instance in instances:
            if instance.state != "running":
                return Health(False, f"{instance.name} is {instance.state} {instance.detail}")
            for probe in spec.health:
                port = instance.port(probe.port_label)
                if port is None:
                    return Health(False, f"check '{probe.name}': no port '{probe.port_label}'")
                ok, why = await self._probe(probe.protocol, port, probe.path, probe.timeout_seconds)
                if not ok:
                    return Health(False, f"{instance.name}: check '{probe.name}' {why}")
        checks = ", ".join(p.name for p in spec.health) or "running"
        return Health(True, f"{len(instances)} instance(s) healthy ({checks})")

    async def _probe(
        self, protocol: str, port: int, path: str | None, timeout: int
    ) -> tuple[bool, str]:
        started = time.monotonic()
        if protocol == "tcp":
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), timeout
                )
                writer.close()
                return True, "connected"
            except (OSError, TimeoutError) as exc:
                return False, f"cannot connect to port {port}: {exc.__class__.__name__}"
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        scheme = "https" if protocol == "https" else "http"
        url = f"{scheme}://127.0.0.1:{port}{path or '/'}"
        try:
            async with self._http.get(
                url, timeout=aiohttp.ClientTimeout(total=timeout), ssl=False
            ) as response:
                if response.status < 400:
                    return True, f"{response.status} in {time.monotonic() - started:.2f}s"
                return False, f"GET {path or '/'} answered {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return False, f"GET {path or '/'} failed: {exc.__class__.__name__}"


def _create_options(spec: LaunchSpec, name: str, n: int, ports: dict[str, int]) -> dict[str, Any]:
    """The arguments of docker-py's containers.create for instance `n` of the stack."""
    env = dict(spec.environment)
    env.update(
        {
            "NELSON_STACKNAME": spec.stack,
            "NELSON_DATACENTER": spec.datacenter,
            "NELSON_NAMESPACE": spec.namespace,
            "NELSON_PLAN": spec.plan,
            "NELSON_INSTANCE": str(n),
        }
    )
    for label, port in ports.items():
        env[f"NELSON_PORT_{label.upper().replace('-', '_')}"] = str(port)
    if spec.ports:
        env["PORT"] = str(ports[spec.ports[0].label])
    labels = {
        LABEL: spec.stack,
        "nelson.unit": spec.unit,
        "nelson.version": spec.version,
        "nelson.namespace": spec.namespace,
        "nelson.datacenter": spec.datacenter,
        "nelson.plan": spec.plan,
        "nelson.instance": str(n),
        "nelson.ports": json.dumps(ports),
    }
    return {
        "image": spec.image,
        "name": name,
        "labels": labels,
        "environment": env,
        "network_mode": "host",
        "nano_cpus": int(spec.cpu * 1e9) if spec.cpu else None,
        "mem_limit": f"{spec.memory_mb}m" if spec.memory_mb else None,
        "restart_policy": {"Name": "on-failure", "MaximumRetryCount": 5},
        "detach": True,
    }
