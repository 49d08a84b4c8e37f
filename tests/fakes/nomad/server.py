"""A fake Nomad agent: the v1 HTTP API the scheduler adapter uses, on loopback.

Written from Nomad's HTTP API documentation; every request body is checked against the
published OpenAPI document (`schema.py`) and Nomad's own job rules (`rules.py`), so what a
real agent refuses, this one refuses with the same status. Responses are checked against the
document too (`schema_problems` collects any mismatch; tests assert it stays empty).

Tasks with the `docker` driver run as real containers on a Docker engine (the tests' dockerd)
with the host's network, on dynamic ports from `ports`, so health checks and traffic reach
them as they would on a Nomad client. Without a Docker engine, tasks are simulated: running at
once, checks passing unless the job is marked unhealthy.

Vault: a task's `Vault` block is checked as Nomad checks it (`rules.vault_errors`), and a job
asking for Vault policies is refused unless the fake has the servers' Vault integration
(`vault=True`). Consul: given a FakeConsul (`consul=`), services with `Provider = "consul"` of
running allocations are registered there with their checks' state, as a Nomad client does.

Failure modes: ACL tokens (403 "Permission denied" / "ACL token not found"), 400 for invalid
jobs, 404, injected 5xx (`fail_requests`), connection refused (`refuse_connections`),
allocations that fail (`fail_allocations`), a lost node (`lose_node`), unhealthy deployments
(`make_unhealthy`, or checks that really fail on the containers).

The server runs its own event loop in a thread, so synchronous clients (python-nomad) and
asyncio tests can both use it."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.consul import FakeConsul, ServiceInstance
from tests.fakes.nomad import rules, schema

SECOND = 1_000_000_000
READ = frozenset({"list-jobs", "read-job"})
WRITE = READ | {"submit-job"}
Policy = str | dict[str, frozenset[str]]  # "management", or namespace -> capabilities
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NomadHTTPError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@dataclass
class Check:
    name: str
    kind: str  # http | tcp
    port_label: str
    path: str
    timeout: float


@dataclass
class Alloc:
    id: str
    index: int
    job: dict[str, Any]
    group: str
    deployment_id: str | None
    created: int  # nanoseconds
    ports: dict[str, int] = field(default_factory=dict)
    client_status: str = "pending"  # pending | running | complete | failed | lost
    desired_status: str = "run"  # run | stop | evict
    healthy: bool | None = None
    task_events: list[dict[str, Any]] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    started: float | None = None  # monotonic, when every task runs
    passing_since: float | None = None
    modify_index: int = 0
    fail_reason: str | None = None

    @property
    def name(self) -> str:
        return f"{self.job['ID']}.{self.group}[{self.index}]"


@dataclass
class Deployment:
    id: str
    job: dict[str, Any]
    status: str = "running"
    description: str = "Deployment is running"
    create_index: int = 0
    modify_index: int = 0


class FakeNomad:
    def __init__(
        self,
        docker_address: str | None = None,
        *,
        acl: dict[str, Policy] | None = None,
        region: str = "global",
        datacenter: str = "dc1",
        namespaces: tuple[str, ...] = ("default",),
        # below Linux's ephemeral range (32768+), where client sockets could take a port
        # between its choice and the task's bind, and apart from the ranges HAProxy routes
        # (20000-29999) and the Docker adapter (30000-32767) use in tests
        ports: tuple[int, int] = (12000, 19999),
        min_healthy_cap: float = 0.5,
        node_ip: str = "127.0.0.1",
        tick: float = 0.1,
        vault: bool = False,
        consul: FakeConsul | None = None,
    ) -> None:
        self.docker_address = docker_address
        self.acl = acl  # None: ACLs disabled, every request allowed
        self.region = region
        self.datacenter = datacenter
        self.namespaces = set(namespaces)
        self.port_range = ports
        # Nomad waits min_healthy_time for real; the fake shortens it so tests stay quick
        self.min_healthy_cap = min_healthy_cap
        self.node_ip = node_ip
        self.node_id = str(uuid.uuid4())
        self.tick = tick
        # the servers' Vault integration (`vault { enabled = true, allow_unauthenticated =
        # true }`): without it Nomad refuses jobs whose tasks ask for Vault policies
        self.vault = vault
        # the local Consul agent: services with `Provider = "consul"` of running allocations
        # are registered there, with their checks' state, as Nomad's client does
        self.consul = consul
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.allocs: dict[str, Alloc] = {}
        self.deployments: dict[str, Deployment] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, token
        self.schema_problems: list[str] = []
        self.unhealthy: set[str] = set()  # job IDs whose checks fail (simulated driver)
        self._failing_allocs: dict[str, str] = {}  # job ID -> reason the next allocs fail
        self._failures: list[tuple[int, str]] = []  # injected responses, served in order
        self._fail_always: tuple[int, str] | None = None
        self._index = 10
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._docker: Any = None
        self.port = 0

    # -- running ----------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeNomad:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        schema.document()  # load the document before the first request, not during it
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="fake-nomad", daemon=True
        )
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the fake Nomad did not start")

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.run_until_complete(self._open())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self._shutdown())
        loop.close()

    async def _open(self) -> None:
        if self.docker_address:
            import docker

            self._docker = docker.DockerClient(
                base_url=self.docker_address, version="1.41", timeout=60
            )
        self._app = app = web.Application(
            middlewares=[self._middleware], client_max_size=16 * 2**20
        )
        app.add_routes(
            [
                web.get("/v1/status/leader", self._leader),
                web.get("/v1/jobs", self._list_jobs),
                web.post("/v1/jobs", self._register),
                web.post("/v1/job/{job}", self._register),
                web.get("/v1/job/{job}", self._get_job),
                web.delete("/v1/job/{job}", self._deregister),
                web.get("/v1/job/{job}/allocations", self._job_allocations),
                web.get("/v1/job/{job}/deployment", self._job_deployment),
                web.post("/v1/job/{job}/plan", self._plan),
                web.get("/v1/allocation/{alloc}", self._get_alloc),
                web.post("/v1/validate/job", self._validate),
            ]
        )
        await self._listen()
        self._http = aiohttp.ClientSession()
        self._ticker = asyncio.create_task(self._tick_forever())

    async def _listen(self) -> None:
        if self._runner is None:
            assert self._app is not None
            self._runner = web.AppRunner(self._app, handle_signals=False)
            await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        server = self._site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined,union-attr]

    async def _shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()
        for alloc in list(self.allocs.values()):
            await asyncio.to_thread(self._remove_containers, alloc)
        if self._docker is not None:
            self._docker.close()

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(60)
        self._loop = None

    def _in_loop(self, coroutine: Awaitable[Any]) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(60)  # type: ignore[arg-type]

    # -- failure modes ----------------------------------------------------------------------

    def refuse_connections(self) -> None:
        """Close the listening socket: clients get connection refused, as from a dead agent."""

        async def close() -> None:
            # cleanup() also drops kept-alive connections, as a dead agent's would be
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = self._site = None

        self._in_loop(close())

    def accept_connections(self) -> None:
        self._in_loop(self._listen())

    def fail_requests(self, status: int = 500, text: str = "", count: int | None = 1) -> None:
        """Answer the next `count` requests (None: every one until `clear_failures`) with
        `status` and `text`, as a leaderless or overloaded cluster does."""
        text = text or "rpc error: No cluster leader"
        with self._lock:
            if count is None:
                self._fail_always = (status, text)
            else:
                self._failures.extend([(status, text)] * count)

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()
            self._fail_always = None

    def fail_allocations(self, job_id: str, reason: str = "Failed to pull image") -> None:
        """Allocations placed for `job_id` from now on fail to start their tasks."""
        with self._lock:
            self._failing_allocs[job_id] = reason

    def make_unhealthy(self, job_id: str, unhealthy: bool = True) -> None:
        """Health checks of `job_id`'s allocations fail (simulated driver only)."""
        with self._lock:
            (self.unhealthy.add if unhealthy else self.unhealthy.discard)(job_id)

    def lose_node(self) -> None:
        """The node stops heartbeating: its allocations are lost, their tasks gone, and the
        scheduler places replacements (the fake has one node, which comes back at once)."""

        async def lose() -> None:
            with self._lock:
                lost = [
                    a
                    for a in self.allocs.values()
                    if a.client_status in ("pending", "running") and a.desired_status == "run"
                ]
                for alloc in lost:
                    alloc.client_status, alloc.desired_status = "lost", "stop"
                    alloc.modify_index = self._next_index()
            for alloc in lost:
                await asyncio.to_thread(self._remove_containers, alloc)
            with self._lock:
                for alloc in lost:
                    job = self.jobs.get((alloc.job.get("Namespace", "default"), alloc.job["ID"]))
                    if job is not None and not job.get("Stop"):
                        self._place(job, alloc.group, alloc.index, alloc.deployment_id)

        self._in_loop(lose())

    def running_allocations(self, job_id: str) -> list[Alloc]:
        with self._lock:
            return [
                a
                for a in self.allocs.values()
                if a.job["ID"] == job_id and a.client_status == "running"
            ]

    # -- HTTP plumbing ------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = request.headers.get("X-Nomad-Token")
        with self._lock:
            self.requests.append((request.method, request.path, token))
            injected = self._failures.pop(0) if self._failures else self._fail_always
        if injected is not None:
            return web.Response(status=injected[0], text=injected[1])
        region = request.query.get("region")
        if region and region != self.region:
            return web.Response(status=500, text="No path to region")
        try:
            return await handler(request)
        except NomadHTTPError as exc:
            return web.Response(status=exc.status, text=exc.text)

    def _authorize(self, request: web.Request, capability: str) -> str:
        """The request's namespace, after checking its token may do `capability` there."""
        namespace = request.query.get("namespace") or "default"
        if self.acl is None:
            return namespace
        token = request.headers.get("X-Nomad-Token") or ""
        if not token:
            raise NomadHTTPError(403, "Permission denied")
        policy = self.acl.get(token)
        if policy is None:
            raise NomadHTTPError(403, "ACL token not found")
        if policy == "management":
            return namespace
        assert isinstance(policy, dict)
        allowed = policy.get(namespace, policy.get("*", frozenset()))
        if capability not in allowed:
            raise NomadHTTPError(403, "Permission denied")
        return namespace

    def _reply(self, method: str, template: str, body: Any) -> web.Response:
        problems = schema.response_problems(method, template, body)
        if problems:
            with self._lock:
                self.schema_problems.extend(f"{method} {template}: {p}" for p in problems)
        headers = {
            "X-Nomad-Index": str(self._index),
            "X-Nomad-KnownLeader": "true",
            "X-Nomad-LastContact": "0",
        }
        return web.json_response(body, headers=headers)

    async def _body(self, request: web.Request, template: str) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise NomadHTTPError(400, f"Failed to decode request body: {exc}") from None
        if not isinstance(body, dict):
            raise NomadHTTPError(
                400, "Failed to decode request body: json: cannot unmarshal into Go value"
            )
        name = schema.request_schema(request.method, template)
        problems = schema.problems(name, body) if name else []
        if problems:
            # Go's decoder stops at the first field of the wrong type
            raise NomadHTTPError(400, f"Failed to decode request body: {problems[0]}")
        return schema.without_nulls(body)  # type: ignore[no-any-return]

    def _next_index(self) -> int:
        self._index += 1
        return self._index

    def _namespace_exists(self, namespace: str) -> None:
        if namespace not in self.namespaces:
            raise NomadHTTPError(400, f'namespace "{namespace}" does not exist')

    # -- endpoints ----------------------------------------------------------------------------

    async def _leader(self, request: web.Request) -> web.Response:
        return self._reply("GET", "/status/leader", f"{self.node_ip}:4647")

    async def _list_jobs(self, request: web.Request) -> web.Response:
        namespace = self._authorize(request, "list-jobs")
        prefix = request.query.get("prefix", "")
        with self._lock:
            stubs = [
                self._job_stub(job)
                for (ns, job_id), job in sorted(self.jobs.items())
                if ns == namespace and job_id.startswith(prefix)
            ]
        return self._reply("GET", "/jobs", stubs)

    def _job_stub(self, job: dict[str, Any]) -> dict[str, Any]:
        keys = ("ID", "Name", "Namespace", "Type", "Priority", "Status", "Stop", "Datacenters")
        stub = {k: job[k] for k in keys if k in job}
        stub.update(
            {
                "CreateIndex": job["CreateIndex"],
                "ModifyIndex": job["ModifyIndex"],
                "JobModifyIndex": job["JobModifyIndex"],
                "SubmitTime": job["SubmitTime"],
                "Periodic": bool(job.get("Periodic")),
            }
        )
        return stub

    def _checked_job(self, body: dict[str, Any], namespace: str) -> dict[str, Any]:
        job = body.get("Job")
        if not isinstance(job, dict):
            raise NomadHTTPError(400, "Job must be specified")
        job = copy.deepcopy(job)
        job.setdefault("Name", job.get("ID"))
        job.setdefault("Type", "service")
        job.setdefault("Priority", 50)
        job.setdefault("Stop", False)
        job["Namespace"] = job.get("Namespace") or namespace
        job["Region"] = job.get("Region") or self.region
        errors = rules.job_errors(job)
        if errors:
            raise NomadHTTPError(400, rules.multierror(errors))
        if rules.vault_policies(job) and not self.vault:
            raise NomadHTTPError(500, "Vault not enabled and Vault policies requested")
        return job

    async def _register(self, request: web.Request) -> web.Response:
        template = "/job/{jobName}" if "job" in request.match_info else "/jobs"
        namespace = self._authorize(request, "submit-job")
        body = await self._body(request, template)
        job = self._checked_job(body, body.get("Namespace") or namespace)
        self._namespace_exists(job["Namespace"])
        if "job" in request.match_info and request.match_info["job"] != job["ID"]:
            raise NomadHTTPError(400, "Job ID does not match name")
        with self._lock:
            response = self._store_job(job)
        return self._reply("POST", template, response)

    def _store_job(self, job: dict[str, Any]) -> dict[str, Any]:
        key = (job["Namespace"], job["ID"])
        previous = self.jobs.get(key)
        index = self._next_index()
        unchanged = previous is not None and _spec(previous) == _spec(job)
        job.update(
            {
                "CreateIndex": previous["CreateIndex"] if previous else index,
                "ModifyIndex": index,
                "JobModifyIndex": previous["JobModifyIndex"] if unchanged and previous else index,
                "Version": (previous["Version"] + (0 if unchanged else 1)) if previous else 0,
                "SubmitTime": time.time_ns(),
                "Status": "running",
                "Stable": False,
                "Stop": bool(job.get("Stop")),
            }
        )
        self.jobs[key] = job
        if not unchanged:
            self._schedule(job)
        return {
            "EvalID": str(uuid.uuid4()),
            "EvalCreateIndex": index,
            "JobModifyIndex": job["JobModifyIndex"],
            "Warnings": "",
            "LastIndex": index,
            "KnownLeader": True,
        }

    def _schedule(self, job: dict[str, Any]) -> None:
        """Replace the job's allocations by ones of this version (the fake places a new
        version all at once, where Nomad rolls by max_parallel)."""
        for alloc in self.allocs.values():
            if alloc.job["ID"] == job["ID"] and alloc.desired_status == "run":
                alloc.desired_status = "stop"
                alloc.modify_index = self._next_index()
        if job.get("Stop") or job.get("Periodic") is not None:
            return  # a periodic job only launches children at its times
        deployment_id = None
        if job.get("Type", "service") == "service" and _update(job) is not None:
            deployment = Deployment(
                str(uuid.uuid4()), job, create_index=self._index, modify_index=self._index
            )
            for other in self.deployments.values():
                if other.job["ID"] == job["ID"] and other.status == "running":
                    other.status = "cancelled"
                    other.description = "Cancelled due to newer version of job"
            self.deployments[deployment.id] = deployment
            deployment_id = deployment.id
        for group in job.get("TaskGroups") or []:
            for index in range(group.get("Count", 1)):
                self._place(job, group["Name"], index, deployment_id)

    def _place(self, job: dict[str, Any], group: str, index: int, deployment: str | None) -> Alloc:
        alloc = Alloc(
            str(uuid.uuid4()),
            index,
            job,
            group,
            deployment,
            time.time_ns(),
            modify_index=self._next_index(),
        )
        wanted = [
            port["Label"]
            for g in job["TaskGroups"]
            if g["Name"] == group
            for network in g.get("Networks") or []
            for port in network.get("DynamicPorts") or []
        ]
        static = {
            port["Label"]: port["Value"]
            for g in job["TaskGroups"]
            if g["Name"] == group
            for network in g.get("Networks") or []
            for port in network.get("ReservedPorts") or []
        }
        alloc.ports = {**dict(zip(wanted, self._free_ports(len(wanted)), strict=True)), **static}
        reason = self._failing_allocs.get(job["ID"])
        if reason:
            alloc.fail_reason = reason
        self.allocs[alloc.id] = alloc
        return alloc

    def _free_ports(self, count: int) -> list[int]:
        taken = {
            port
            for a in self.allocs.values()
            if a.client_status in ("pending", "running")
            for port in a.ports.values()
        }
        low, high = self.port_range
        candidates = [p for p in range(low, high + 1) if p not in taken]
        random.shuffle(candidates)
        found = [p for p in candidates[: count * 20] if _bindable(p)][:count]
        if len(found) < count:
            raise NomadHTTPError(500, "dynamic port selection failed")
        return found

    async def _get_job(self, request: web.Request) -> web.Response:
        namespace = self._authorize(request, "read-job")
        with self._lock:
            job = self.jobs.get((namespace, request.match_info["job"]))
            if job is None:
                raise NomadHTTPError(404, "job not found")
            return self._reply("GET", "/job/{jobName}", job)

    async def _deregister(self, request: web.Request) -> web.Response:
        namespace = self._authorize(request, "submit-job")
        purge = _bool(request.query.get("purge"))
        with self._lock:
            job = self.jobs.get((namespace, request.match_info["job"]))
            if job is None:
                raise NomadHTTPError(404, "job not found")
            stopping = [
                a
                for a in self.allocs.values()
                if a.job["ID"] == job["ID"] and a.desired_status == "run"
            ]
            for alloc in stopping:
                alloc.desired_status = "stop"
                alloc.modify_index = self._next_index()
            for deployment in self.deployments.values():
                if deployment.job["ID"] == job["ID"] and deployment.status == "running":
                    deployment.status = "cancelled"
                    deployment.description = "Cancelled because job is stopped"
            index = self._next_index()
            if purge:
                del self.jobs[(namespace, job["ID"])]
            else:
                job["Stop"], job["Status"] = True, "dead"
        for alloc in stopping:
            await asyncio.to_thread(self._remove_containers, alloc)
            with self._lock:
                alloc.client_status = "complete"
                if purge:
                    self.allocs.pop(alloc.id, None)
        if purge:
            with self._lock:
                for alloc_id in [a.id for a in self.allocs.values() if a.job["ID"] == job["ID"]]:
                    del self.allocs[alloc_id]
                for dep_id in [d.id for d in self.deployments.values() if d.job["ID"] == job["ID"]]:
                    del self.deployments[dep_id]
        return self._reply(
            "DELETE",
            "/job/{jobName}",
            {"EvalID": str(uuid.uuid4()), "EvalCreateIndex": index, "JobModifyIndex": index},
        )

    async def _job_allocations(self, request: web.Request) -> web.Response:
        namespace = self._authorize(request, "read-job")
        job_id = request.match_info["job"]
        with self._lock:
            stubs = [
                self._alloc_stub(a)
                for a in sorted(self.allocs.values(), key=lambda a: a.created)
                if a.job["ID"] == job_id and a.job["Namespace"] == namespace
            ]
        return self._reply("GET", "/job/{jobName}/allocations", stubs)

    async def _job_deployment(self, request: web.Request) -> web.Response:
        namespace = self._authorize(request, "read-job")
        job_id = request.match_info["job"]
        with self._lock:
            found = [
                d
                for d in self.deployments.values()
                if d.job["ID"] == job_id and d.job["Namespace"] == namespace
            ]
            latest = max(found, key=lambda d: d.create_index) if found else None
            body = None if latest is None else self._deployment_body(latest)
        if body is None:  # Nomad answers null when the job has no deployment
            return web.json_response(None, headers={"X-Nomad-Index": str(self._index)})
        return self._reply("GET", "/job/{jobName}/deployment", body)

    async def _get_alloc(self, request: web.Request) -> web.Response:
        self._authorize(request, "read-job")
        with self._lock:
            alloc = self.allocs.get(request.match_info["alloc"])
            if alloc is None:
                raise NomadHTTPError(404, "alloc not found")
            return self._reply("GET", "/allocation/{allocID}", self._alloc_body(alloc))

    async def _validate(self, request: web.Request) -> web.Response:
        namespace = self._authorize(request, "read-job")
        body = await self._body(request, "/validate/job")
        try:
            self._checked_job(body, namespace)
            errors: list[str] = []
        except NomadHTTPError as exc:
            errors = rules.job_errors(body.get("Job") or {}) or [exc.text]
        response = {
            "DriverConfigValidated": True,
            "ValidationErrors": errors,
            "Error": rules.multierror(errors) if errors else "",
            "Warnings": "",
        }
        return self._reply("POST", "/validate/job", response)

    async def _plan(self, request: web.Request) -> web.Response:
        namespace = self._authorize(request, "submit-job")
        body = await self._body(request, "/job/{jobName}/plan")
        job = self._checked_job(body, namespace)
        with self._lock:
            previous = self.jobs.get((job["Namespace"], job["ID"]))
            diff = _diff(previous, job) if body.get("Diff") else None
            index = previous["JobModifyIndex"] if previous else 0
            groups = {g["Name"]: {"Place": g.get("Count", 1)} for g in job.get("TaskGroups") or []}
        response = {
            "Annotations": {"DesiredTGUpdates": groups},
            "Diff": diff,
            "JobModifyIndex": index,
            "Warnings": "",
            "Index": index,
        }
        return self._reply("POST", "/job/{jobName}/plan", response)

    # -- bodies -------------------------------------------------------------------------------

    def _task_states(self, alloc: Alloc) -> dict[str, Any]:
        state = {"pending": "pending", "running": "running"}.get(alloc.client_status, "dead")
        return {
            task["Name"]: {
                "State": state,
                "Failed": alloc.client_status == "failed",
                "Restarts": 0,
                "Events": alloc.task_events,
            }
            for task in self._group(alloc)["Tasks"]
        }

    def _group(self, alloc: Alloc) -> dict[str, Any]:
        return next(g for g in alloc.job["TaskGroups"] if g["Name"] == alloc.group)

    def _alloc_stub(self, alloc: Alloc) -> dict[str, Any]:
        stub: dict[str, Any] = {
            "ID": alloc.id,
            "EvalID": str(uuid.uuid5(uuid.NAMESPACE_OID, alloc.id)),
            "Name": alloc.name,
            "Namespace": alloc.job["Namespace"],
            "NodeID": self.node_id,
            "NodeName": "fake-nomad-node",
            "JobID": alloc.job["ID"],
            "JobType": alloc.job.get("Type", "service"),
            "JobVersion": alloc.job["Version"],
            "TaskGroup": alloc.group,
            "DesiredStatus": alloc.desired_status,
            "ClientStatus": alloc.client_status,
            "ClientDescription": alloc.fail_reason or "",
            "TaskStates": self._task_states(alloc),
            "CreateIndex": alloc.modify_index,
            "ModifyIndex": alloc.modify_index,
            "CreateTime": alloc.created,
            "ModifyTime": alloc.created,
        }
        if alloc.deployment_id:
            stub["DeploymentStatus"] = {"Healthy": alloc.healthy, "Canary": False}
            if alloc.healthy is None:
                del stub["DeploymentStatus"]["Healthy"]
        return stub

    def _alloc_body(self, alloc: Alloc) -> dict[str, Any]:
        body = self._alloc_stub(alloc)
        del body["JobType"], body["JobVersion"]
        ports = [
            {"Label": label, "Value": port, "To": 0, "HostIP": self.node_ip}
            for label, port in sorted(alloc.ports.items())
        ]
        body["Job"] = alloc.job
        body["DeploymentID"] = alloc.deployment_id or ""
        body["AllocatedResources"] = {
            "Shared": {
                "Ports": ports,
                "Networks": [
                    {
                        "IP": self.node_ip,
                        "Mode": "host",
                        "DynamicPorts": [{"Label": p["Label"], "Value": p["Value"]} for p in ports],
                    }
                ],
            },
            "Tasks": {},
        }
        return body

    def _deployment_body(self, deployment: Deployment) -> dict[str, Any]:
        groups = {}
        for group in deployment.job.get("TaskGroups") or []:
            allocs = [
                a
                for a in self.allocs.values()
                if a.deployment_id == deployment.id and a.group == group["Name"]
            ]
            update = _update(deployment.job, group) or {}
            groups[group["Name"]] = {
                "DesiredTotal": group.get("Count", 1),
                "PlacedAllocs": len(allocs),
                "HealthyAllocs": sum(1 for a in allocs if a.healthy is True),
                "UnhealthyAllocs": sum(1 for a in allocs if a.healthy is False),
                "DesiredCanaries": 0,
                "AutoRevert": bool(update.get("AutoRevert")),
                "Promoted": False,
                "ProgressDeadline": update.get("ProgressDeadline", 600 * SECOND),
            }
        return {
            "ID": deployment.id,
            "Namespace": deployment.job["Namespace"],
            "JobID": deployment.job["ID"],
            "JobVersion": deployment.job["Version"],
            "JobModifyIndex": deployment.job["JobModifyIndex"],
            "JobCreateIndex": deployment.job["CreateIndex"],
            "Status": deployment.status,
            "StatusDescription": deployment.description,
            "TaskGroups": groups,
            "CreateIndex": deployment.create_index,
            "ModifyIndex": deployment.modify_index,
        }

    # -- the client: tasks, checks, deployments -------------------------------------------------

    async def _tick_forever(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving; the test sees the problem in the state
                with self._lock:
                    self.schema_problems.append(f"client loop: {exc!r}")
            await asyncio.sleep(self.tick)

    async def _tick(self) -> None:
        with self._lock:
            allocs = list(self.allocs.values())
        for alloc in allocs:
            if alloc.desired_status != "run":
                if alloc.containers:
                    await asyncio.to_thread(self._remove_containers, alloc)
                with self._lock:
                    if alloc.client_status in ("pending", "running"):
                        alloc.client_status = "complete"  # stopped by the client
                        alloc.modify_index = self._next_index()
                continue
            if alloc.client_status == "pending":
                await self._start(alloc)
            elif alloc.client_status == "running":
                await self._watch(alloc)
                await self._judge(alloc)
        if self.consul is not None:
            await self._sync_consul(self.consul)
        with self._lock:
            for deployment in self.deployments.values():
                self._progress(deployment)

    def _event(self, alloc: Alloc, kind: str, message: str) -> None:
        alloc.task_events.append(
            {"Type": kind, "Time": time.time_ns(), "DisplayMessage": message, "Message": message}
        )

    async def _start(self, alloc: Alloc) -> None:
        if alloc.fail_reason:
            with self._lock:
                self._event(alloc, "Driver Failure", alloc.fail_reason)
                alloc.client_status, alloc.healthy = (
                    "failed",
                    False if alloc.deployment_id else None,
                )
                alloc.modify_index = self._next_index()
            return
        tasks = self._group(alloc)["Tasks"]
        docker_tasks = [t for t in tasks if t.get("Driver") == "docker"]
        if self._docker is not None and docker_tasks:
            try:
                for task in docker_tasks:
                    alloc.containers.append(await asyncio.to_thread(self._run_task, alloc, task))
            except Exception as exc:
                message = getattr(exc, "explanation", None) or str(exc)
                with self._lock:
                    self._event(alloc, "Driver Failure", f"failed to create container: {message}")
                    alloc.client_status = "failed"
                    alloc.healthy = False if alloc.deployment_id else None
                    alloc.modify_index = self._next_index()
                await asyncio.to_thread(self._remove_containers, alloc)
                return
        with self._lock:
            self._event(alloc, "Started", "Task started by client")
            alloc.client_status = "running"
            alloc.started = time.monotonic()
            alloc.modify_index = self._next_index()

    def _environment(self, alloc: Alloc, task: dict[str, Any]) -> dict[str, str]:
        nomad = {
            "NOMAD_ALLOC_ID": alloc.id,
            "NOMAD_ALLOC_NAME": alloc.name,
            "NOMAD_ALLOC_INDEX": str(alloc.index),
            "NOMAD_JOB_ID": alloc.job["ID"],
            "NOMAD_JOB_NAME": alloc.job["Name"],
            "NOMAD_GROUP_NAME": alloc.group,
            "NOMAD_TASK_NAME": task["Name"],
            "NOMAD_DC": self.datacenter,
            "NOMAD_REGION": self.region,
            "NOMAD_NAMESPACE": alloc.job["Namespace"],
            "NOMAD_CPU_LIMIT": str((task.get("Resources") or {}).get("CPU", 100)),
            "NOMAD_MEMORY_LIMIT": str((task.get("Resources") or {}).get("MemoryMB", 300)),
        }
        for label, port in alloc.ports.items():
            nomad[f"NOMAD_PORT_{label}"] = str(port)
            nomad[f"NOMAD_HOST_PORT_{label}"] = str(port)
            nomad[f"NOMAD_IP_{label}"] = self.node_ip
            nomad[f"NOMAD_ADDR_{label}"] = f"{self.node_ip}:{port}"
        for key, value in (alloc.job.get("Meta") or {}).items():
            nomad[f"NOMAD_META_{key}"] = str(value)
        env = dict(nomad)
        for key, value in (task.get("Env") or {}).items():
            env[key] = _interpolate(str(value), nomad)
        return env

    def _run_task(self, alloc: Alloc, task: dict[str, Any]) -> str:
        from docker.errors import ImageNotFound

        config = task.get("Config") or {}
        image = config["image"]
        try:
            self._docker.images.get(image)
        except ImageNotFound:
            repository, _, digest = image.partition("@")
            if not digest:
                repository, _, tag = image.rpartition(":")
                if "/" in tag:  # a registry port, not a tag
                    repository, tag = image, "latest"
                digest = tag
            self._docker.images.pull(repository, tag=digest)
        resources = task.get("Resources") or {}
        container = self._docker.containers.create(
            image,
            command=([config["command"]] if config.get("command") else [])
            + list(config.get("args") or [])
            or None,
            name=f"nomad-{alloc.id[:8]}-{task['Name']}",
            labels={"fake-nomad.alloc": alloc.id, "fake-nomad.job": alloc.job["ID"]},
            environment=self._environment(alloc, task),
            network_mode="host",
            mem_limit=f"{resources['MemoryMB']}m" if resources.get("MemoryMB") else None,
            detach=True,
        )
        container.start()
        return str(container.id)

    def _remove_containers(self, alloc: Alloc) -> None:
        if self._docker is None:
            alloc.containers.clear()
            return
        from docker.errors import APIError

        for container_id in list(alloc.containers):
            try:
                self._docker.api.remove_container(container_id, force=True)
            except APIError as exc:
                if exc.status_code not in (404, 409):  # gone, or being removed already
                    raise
        alloc.containers.clear()

    async def _watch(self, alloc: Alloc) -> None:
        """A task whose container exited ends its allocation (complete on exit 0)."""
        if self._docker is None or not alloc.containers:
            return

        def states() -> list[tuple[str, int]]:
            found = []
            for container_id in alloc.containers:
                attrs = self._docker.api.inspect_container(container_id)["State"]
                found.append((attrs["Status"], attrs.get("ExitCode", 0)))
            return found

        try:
            found = await asyncio.to_thread(states)
        except Exception:
            found = [("removed", 137)]
        exited = [(s, code) for s, code in found if s not in ("running", "created")]
        if not exited:
            return
        code = max(code for _, code in exited)
        with self._lock:
            self._event(alloc, "Terminated", f"Exit Code: {code}")
            alloc.client_status = "complete" if code == 0 else "failed"
            if alloc.deployment_id and alloc.healthy is None:
                alloc.healthy = False
            alloc.modify_index = self._next_index()
        await asyncio.to_thread(self._remove_containers, alloc)

    async def _sync_consul(self, consul: FakeConsul) -> None:
        """Register the consul services of running allocations (ID as Nomad forms it:
        `_nomad-task-<alloc>-<group>-<service>-<port label>`) and deregister the others."""
        with self._lock:
            running = [
                a
                for a in self.allocs.values()
                if a.desired_status == "run" and a.client_status == "running"
            ]
        registered = []
        for alloc in running:
            group = self._group(alloc)
            services = [
                s
                for s in [*(group.get("Services") or [])]
                + [s for t in group["Tasks"] for s in t.get("Services") or []]
                if s.get("Provider") == "consul"
            ]
            if not services:
                continue
            passing = await self._passing(alloc)
            for service in services:
                label = service.get("PortLabel") or ""
                registered.append(
                    ServiceInstance(
                        id=f"_nomad-task-{alloc.id}-{alloc.group}-{service['Name']}-{label}",
                        name=service["Name"],
                        address=self.node_ip,
                        port=alloc.ports.get(label, 0),
                        status="passing" if passing else "critical",
                        output="" if passing else "health check failed",
                        tags=list(service.get("Tags") or []),
                    )
                )
        others = [s for s in consul.services if not s.id.startswith("_nomad-task-")]
        consul.services = others + registered  # one assignment: the agent's loop reads it

    def _checks(self, alloc: Alloc) -> list[Check]:
        group = self._group(alloc)
        services = list(group.get("Services") or [])
        for task in group["Tasks"]:
            services.extend(task.get("Services") or [])
        found = []
        for service in services:
            for check in service.get("Checks") or []:
                found.append(
                    Check(
                        check.get("Name") or service["Name"],
                        check["Type"],
                        check.get("PortLabel") or service.get("PortLabel") or "",
                        check.get("Path") or "/",
                        (check.get("Timeout") or 2 * SECOND) / SECOND,
                    )
                )
        return found

    async def _passing(self, alloc: Alloc) -> bool:
        if self._docker is None:
            return alloc.job["ID"] not in self.unhealthy
        for check in self._checks(alloc):
            port = alloc.ports.get(check.port_label)
            if port is None:
                return False
            try:
                if check.kind == "tcp":
                    _, writer = await asyncio.wait_for(
                        asyncio.open_connection(self.node_ip, port), check.timeout
                    )
                    writer.close()
                elif check.kind == "http":
                    assert self._http is not None
                    url = f"http://{self.node_ip}:{port}{check.path}"
                    timeout = aiohttp.ClientTimeout(total=check.timeout)
                    async with self._http.get(url, timeout=timeout) as response:
                        if response.status >= 400:
                            return False
            except (OSError, TimeoutError, aiohttp.ClientError):
                return False
        return True

    async def _judge(self, alloc: Alloc) -> None:
        """Set a deployment's allocation health: checks passing for min_healthy_time, or
        unhealthy once healthy_deadline has passed."""
        if alloc.deployment_id is None or alloc.healthy is not None:
            return
        update = _update(alloc.job, self._group(alloc)) or {}
        mode = update.get("HealthCheck") or "checks"
        if mode == "manual":
            return
        passing = True if mode == "task_states" else await self._passing(alloc)
        now = time.monotonic()
        min_healthy = min((update.get("MinHealthyTime") or 0) / SECOND, self.min_healthy_cap)
        deadline = (update.get("HealthyDeadline") or 300 * SECOND) / SECOND
        with self._lock:
            if passing:
                alloc.passing_since = alloc.passing_since or now
                if now - alloc.passing_since >= min_healthy:
                    alloc.healthy = True
                    alloc.modify_index = self._next_index()
            else:
                alloc.passing_since = None
            if alloc.healthy is None and alloc.started and now - alloc.started > deadline:
                alloc.healthy = False
                self._event(
                    alloc,
                    "Alloc Unhealthy",
                    "Task not running for min_healthy_time by healthy_deadline",
                )
                alloc.modify_index = self._next_index()

    def _progress(self, deployment: Deployment) -> None:
        if deployment.status != "running":
            return
        allocs = [a for a in self.allocs.values() if a.deployment_id == deployment.id]
        desired = sum(g.get("Count", 1) for g in deployment.job.get("TaskGroups") or [])
        healthy = sum(1 for a in allocs if a.healthy is True and a.desired_status == "run")
        if any(a.healthy is False for a in allocs):
            deployment.status = "failed"
            deployment.description = "Failed due to unhealthy allocations"
        elif healthy >= desired:
            deployment.status = "successful"
            deployment.description = "Deployment completed successfully"
        else:
            return
        deployment.modify_index = self._next_index()


def _bool(value: str | None) -> bool:
    """Go's strconv.ParseBool, which Nomad uses for query flags."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _interpolate(value: str, variables: dict[str, str]) -> str:
    """Nomad's `${NOMAD_...}` runtime interpolation in task environment values."""
    for key, replacement in variables.items():
        value = value.replace("${" + key + "}", replacement)
    return value


def _update(job: dict[str, Any], group: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The group's update strategy, or the job's (the group's overrides the job's fields)."""
    job_update = job.get("Update")
    group_update = (group or {}).get("Update")
    if job_update is None and group_update is None:
        if group is None and any(g.get("Update") for g in job.get("TaskGroups") or []):
            return {}
        return None
    return {**(job_update or {}), **(group_update or {})}


_VOLATILE = (
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
    "Version",
    "SubmitTime",
    "Status",
    "Stable",
    "StatusDescription",
)


def _spec(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k not in _VOLATILE}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list):
        out = {}
        for index, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}[{index}]"))
        return out
    return {prefix: value}


def _diff(previous: dict[str, Any] | None, job: dict[str, Any]) -> dict[str, Any]:
    """A JobDiff with field-level changes (Nomad nests objects and groups; the fake lists
    every changed field flat at the job level)."""
    old = _flatten(_spec(previous)) if previous else {}
    new = _flatten(_spec(job))
    fields = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        kind = "Added" if name not in old else "Deleted" if name not in new else "Edited"
        fields.append(
            {
                "Type": kind,
                "Name": name,
                "Old": "" if before is None else str(before),
                "New": "" if after is None else str(after),
                "Annotations": None,
            }
        )
    kind = "Added" if previous is None else "Edited" if fields else "None"
    return {"Type": kind, "ID": job["ID"], "Fields": fields, "Objects": None, "TaskGroups": None}
