"""The Scheduler port on a Nomad cluster, with python-nomad.

One Nomad job per stack (job ID = stack name, see nomad_job.py). Health is Nomad's own: the
job's latest deployment and its allocations' deployment health (Nomad runs the plan's checks);
where the datacenter has Consul, the job's services are registered there and a stack Nomad
calls healthy is healthy only when Consul's `/v1/health/service/<stack>` has every instance
passing;
instances are the job's allocations, with the node address and dynamic ports Nomad gave them.
`delete` deregisters the job with purge. python-nomad is synchronous: every call runs in a
worker thread with a timeout. Errors become SchedulerErrors that say what Nomad answered;
only 5xx answers, timeouts and connection faults are transient (worth retrying)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import nomad
import requests
from nomad.api import exceptions as nomad_errors

from adapters.consul.client import ConsulClient, ConsulError
from adapters.scheduler.nomad_job import job_for, manifest_label
from commands.ports import SchedulerError
from commands.settings import SchedulerSettings
from domain.blueprints import BlueprintError
from domain.runtime import Health, Instance, LaunchSpec, Rendering

T = TypeVar("T")
_STATES = {"running": "running", "pending": "pending", "complete": "complete"}


class JobMissing(Exception):
    """Nomad answered 404 for the job or allocation."""


class NomadScheduler:
    def __init__(
        self,
        settings: SchedulerSettings,
        datacenter: str,
        *,
        timeout: float = 30.0,
        consul: ConsulClient | None = None,
    ) -> None:
        self.settings = settings
        self.consul = consul  # the datacenter's Consul: services go there, health from there
        self.datacenter = datacenter
        self.address = settings.address.rstrip("/")
        self.timeout = timeout
        self._client: nomad.Nomad | None = None

    def _nomad(self) -> nomad.Nomad:
        if self._client is None:
            tls = self.settings.tls
            verify: bool | str = True
            cert: tuple[str, ...] = ()
            if tls is not None:
                verify = False if tls.skip_verify else (tls.ca_cert or True)
                if tls.client_cert and tls.client_key:
                    cert = (tls.client_cert, tls.client_key)
            token = self.settings.token
            self._client = nomad.Nomad(
                address=self.address,
                token=token.get_secret_value() if token is not None else None,
                namespace=self.settings.namespace,
                region=self.settings.region,
                timeout=int(self.timeout),
                verify=verify,
                cert=cert,
            )
        return self._client

    @property
    def _token_setting(self) -> str:
        return f"NELSON_DATACENTERS__{self.datacenter.upper().replace('-', '_')}__SCHEDULER__TOKEN"

    async def _run(self, what: str, call: Callable[[], T], limit: float | None = None) -> T:
        limit = limit or self.timeout + 5
        try:
            return await asyncio.wait_for(asyncio.to_thread(call), limit)
        except TimeoutError:
            raise SchedulerError(
                f"Nomad at {self.address} did not answer in {limit:.0f} s ({what})",
                transient=True,
            ) from None
        except nomad_errors.URLNotFoundNomadException:
            raise JobMissing(what) from None
        except nomad_errors.URLNotAuthorizedNomadException as exc:
            answer = _answer(exc) or "Permission denied"
            raise SchedulerError(
                f"Nomad at {self.address} refused to {what}: {answer}. The ACL token in "
                f"{self._token_setting} is missing, unknown, or lacks the capability "
                "(submit-job, read-job, list-jobs in the job's namespace)"
            ) from None
        except nomad_errors.BadRequestNomadException as exc:
            raise SchedulerError(
                f"Nomad at {self.address} rejected the request to {what}: {_answer(exc)}"
            ) from None
        except nomad_errors.BaseNomadException as exc:
            response = exc.nomad_resp
            if isinstance(response, requests.Response):
                transient = response.status_code >= 500 or response.status_code == 429
                raise SchedulerError(
                    f"Nomad at {self.address} answered {response.status_code} to {what}: "
                    f"{_answer(exc)}",
                    transient=transient,
                ) from None
            raise SchedulerError(
                f"cannot reach Nomad at {self.address} ({what}): {_connection_problem(response)}",
                transient=True,
            ) from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # every endpoint object holds its own requests.Session
            for value in vars(client).values():
                session = getattr(value, "session", None)
                if isinstance(session, requests.Session):
                    session.close()

    # -- the port ---------------------------------------------------------------------------

    async def check(self) -> str | None:
        """Reachable, with a leader, and the token may list jobs in the namespace."""
        client = self._nomad()
        try:
            # `datacenters` and every deploy ask: a dead agent must not hold them long
            await self._run("find the cluster leader", client.status.leader.get_leader, 5)
            await self._run("list jobs", lambda: client.jobs.get_jobs(prefix="nelson-check"), 5)
        except SchedulerError as exc:
            return f"{exc}; point datacenters.{self.datacenter}.scheduler.address at a Nomad agent"
        except JobMissing:
            return f"{self.address} does not look like a Nomad agent (404 on /v1/jobs)"
        return None

    def job(self, spec: LaunchSpec) -> dict[str, Any]:
        """The job this adapter submits for `spec`, from its blueprint (SchedulerError naming
        the blueprint line when it renders no job)."""
        name = spec.blueprint_name or "the default Nomad blueprint"
        try:
            return job_for(
                spec,
                self.datacenter,
                self.settings.region,
                spec.blueprint,
                name,
                consul=self.consul is not None,
            )
        except BlueprintError as exc:
            raise SchedulerError(str(exc)) from None

    async def render(self, spec: LaunchSpec) -> Rendering:
        job = self.job(spec)
        source = spec.blueprint_name or "the default Nomad blueprint"
        unreachable = await self.check()
        if unreachable is not None:
            return Rendering("Nomad job", job, source, notes=(f"not validated: {unreachable}",))
        problems = tuple(await self.validate(job))
        if problems:
            return Rendering("Nomad job", job, source, problems)
        plan = await self.plan(job)
        return Rendering("Nomad job", job, source, (), tuple(_diff_lines(plan.get("Diff"))))

    async def validate(self, job: dict[str, Any]) -> list[str]:
        """Nomad's objections to `job` (/v1/validate/job); empty when it would take it."""
        client = self._nomad()
        response = await self._run(
            f"validate job {job.get('ID')}",
            lambda: client.validate.validate_job({"Job": job}).json(),
        )
        return [str(e) for e in response.get("ValidationErrors") or []]

    async def plan(self, job: dict[str, Any]) -> dict[str, Any]:
        """What Nomad would change to run `job` (/v1/job/<id>/plan with the diff)."""
        client = self._nomad()
        result: dict[str, Any] = await self._run(
            f"plan job {job.get('ID')}",
            lambda: client.job.plan_job(job["ID"], {"Job": job}, diff=True),
        )
        return result

    async def launch(self, spec: LaunchSpec) -> list[Instance]:
        job = self.job(spec)
        problems = await self.validate(job)
        if problems:
            source = spec.blueprint_name or "the default Nomad blueprint"
            raise SchedulerError(
                f"Nomad refuses the job {source} renders for {spec.stack}: {'; '.join(problems)}"
            )
        client = self._nomad()
        await self._run(
            f"register job {spec.stack}",
            lambda: client.job.register_job(spec.stack, {"Job": job}),
        )
        return await self.instances(spec.stack)

    async def _allocations(self, stack: str) -> list[dict[str, Any]]:
        client = self._nomad()
        try:
            found: list[dict[str, Any]] = await self._run(
                f"list the allocations of {stack}", lambda: client.job.get_allocations(stack)
            )
        except JobMissing:
            return []
        return found

    async def instances(self, stack: str) -> list[Instance]:
        allocations = [a for a in await self._allocations(stack) if a["DesiredStatus"] == "run"]
        instances = []
        client = self._nomad()
        for alloc in sorted(allocations, key=lambda a: a.get("Name", "")):
            ports: dict[str, int] = {}
            host = "127.0.0.1"
            if alloc["ClientStatus"] == "running":
                alloc_id: str = alloc["ID"]
                try:
                    full: dict[str, Any] = await self._run(
                        f"read allocation {alloc_id[:8]}",
                        functools.partial(client.allocation.get_allocation, alloc_id),
                    )
                except JobMissing:
                    continue  # garbage-collected between the two calls
                shared = (full.get("AllocatedResources") or {}).get("Shared") or {}
                for port in shared.get("Ports") or []:
                    ports[manifest_label(port["Label"])] = int(port["Value"])
                    host = port.get("HostIP") or host
            state = _STATES.get(alloc["ClientStatus"], "failed")
            instances.append(
                Instance(
                    alloc.get("Name") or alloc["ID"],
                    state,
                    tuple(sorted(ports.items())),
                    _detail(alloc),
                    host,
                )
            )
        return instances

    async def health(self, spec: LaunchSpec) -> Health:
        verdict = await self._nomad_health(spec)
        if self.consul is None or not verdict.healthy or spec.schedule or not spec.ports:
            return verdict
        return await self._consul_health(spec, verdict)

    async def _consul_health(self, spec: LaunchSpec, nomad: Health) -> Health:
        """Nomad's verdict, confirmed by Consul: every instance of the stack's service there
        and its checks passing."""
        assert self.consul is not None
        try:
            found = await self.consul.health(spec.stack[:63])
        except ConsulError as exc:
            return Health(False, f"{self.consul.shown} cannot say: {exc}")
        wanted = spec.instances * len(spec.ports)
        if not found:
            return Health(False, f"{self.consul.shown} has no instance of service {spec.stack}")
        failing = [s for s in found if s.status != "passing"]
        if failing:
            first = failing[0]
            why = f": {first.output.strip()}" if first.output.strip() else ""
            return Health(
                False,
                f"{self.consul.shown}: {len(failing)} of {len(found)} instance(s) "
                f"{first.status} ({first.address}:{first.port}{why})",
            )
        if len(found) < wanted:
            return Health(
                False, f"{self.consul.shown}: {len(found)} of {wanted} instance(s) registered"
            )
        return Health(True, f"{nomad.detail}; {self.consul.shown}: {len(found)} passing")

    async def _nomad_health(self, spec: LaunchSpec) -> Health:
        client = self._nomad()
        try:
            job = await self._run(f"read job {spec.stack}", lambda: client.job.get_job(spec.stack))
        except JobMissing:
            return Health(False, f"Nomad has no job {spec.stack}")
        if job.get("Stop"):
            return Health(False, f"the Nomad job {spec.stack} is stopped")
        if job.get("Periodic"):
            return Health(True, f"periodic job registered ({job['Periodic'].get('Spec')})")
        allocations = [
            a
            for a in await self._allocations(spec.stack)
            if a["DesiredStatus"] == "run" and a.get("JobVersion") == job.get("Version")
        ]
        desired = sum(g.get("Count", 1) for g in job.get("TaskGroups") or [])
        failed = [a for a in allocations if a["ClientStatus"] in ("failed", "lost")]
        if job.get("Type") == "service":
            try:
                deployment = await self._run(
                    f"read the deployment of {spec.stack}",
                    lambda: client.job.get_deployment(spec.stack),
                )
            except JobMissing:
                deployment = None
            if deployment and deployment.get("JobVersion") == job.get("Version"):
                verdict = _deployment_verdict(deployment, failed)
                if verdict is not None:
                    return verdict
        unhealthy = [
            a for a in allocations if (a.get("DeploymentStatus") or {}).get("Healthy") is False
        ]
        if failed or unhealthy:
            alloc = (failed or unhealthy)[0]
            return Health(False, f"allocation {alloc.get('Name')} is unhealthy: {_detail(alloc)}")
        running = [a for a in allocations if a["ClientStatus"] in ("running", "complete")]
        if len(running) < desired:
            return Health(False, f"{len(running)} of {desired} allocations running")
        checks = ", ".join(p.name for p in spec.health) or "running"
        return Health(True, f"{len(running)} allocation(s) healthy ({checks})")

    async def delete(self, stack: str) -> int:
        count = len(await self.instances(stack))
        client = self._nomad()
        try:
            await self._run(
                f"deregister job {stack}", lambda: client.job.deregister_job(stack, purge=True)
            )
        except JobMissing:
            return 0
        return count


def _deployment_verdict(deployment: dict[str, Any], failed: list[dict[str, Any]]) -> Health | None:
    status = deployment.get("Status")
    groups = (deployment.get("TaskGroups") or {}).values()
    healthy = sum(g.get("HealthyAllocs", 0) for g in groups)
    desired = sum(g.get("DesiredTotal", 0) for g in groups)
    if status == "failed":
        why = deployment.get("StatusDescription") or "failed"
        if failed:
            why += f"; {failed[0].get('Name')}: {_detail(failed[0])}"
        return Health(False, f"Nomad deployment failed: {why}")
    if status in ("running", "paused", "pending", "blocked", "unblocking"):
        return Health(
            False, f"Nomad deployment {status}: {healthy} of {desired} allocations healthy"
        )
    return None  # successful or cancelled: judge by the allocations


def _diff_lines(diff: dict[str, Any] | None, prefix: str = "") -> list[str]:
    """A plan's diff as lines like `+ TaskGroups[0].Count: 3` (Nomad nests objects and task
    groups; every changed field is listed with its path)."""
    if not diff:
        return []
    if diff.get("Type") == "None":
        return ["no changes: the job is already registered like this"]
    signs = {"Added": "+", "Deleted": "-", "Edited": "~"}
    lines = []
    for field in diff.get("Fields") or []:
        name = f"{prefix}{field.get('Name')}"
        sign = signs.get(field.get("Type", ""), "~")
        old, new = field.get("Old", ""), field.get("New", "")
        lines.append(
            f"{sign} {name}: {old} → {new}" if sign == "~" else f"{sign} {name}: {new or old}"
        )
    for key in ("Objects", "TaskGroups", "Tasks"):
        for child in diff.get(key) or []:
            lines.extend(_diff_lines(child, f"{prefix}{child.get('Name', key)}."))
    if not lines and diff.get("Type") == "Added":
        lines.append(f"+ job {diff.get('ID')}: new")
    return lines


def _detail(alloc: dict[str, Any]) -> str:
    """The last thing a failed or pending allocation's tasks reported."""
    if alloc.get("ClientStatus") == "running":
        healthy = (alloc.get("DeploymentStatus") or {}).get("Healthy")
        return "" if healthy is not False else "health checks failing"
    events = [
        event
        for state in (alloc.get("TaskStates") or {}).values()
        for event in state.get("Events") or []
    ]
    last = max(events, key=lambda e: e.get("Time", 0), default=None)
    message = (last or {}).get("DisplayMessage") or alloc.get("ClientDescription") or ""
    status = alloc.get("ClientStatus", "")
    return f"{status}: {message}" if message else status


def _answer(exc: nomad_errors.BaseNomadException) -> str:
    response = exc.nomad_resp
    text = response.text if isinstance(response, requests.Response) else str(response)
    return " ".join(text.split())[:500] or "(no message)"


def _connection_problem(error: object) -> str:
    text = str(error)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    if "SSL" in text or "certificate" in text:
        return "TLS handshake failed (check scheduler.tls)"
    return text.split("(Caused by", 1)[-1].strip(" ()")[:200] or "connection failed"
