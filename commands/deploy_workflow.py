"""The deploy workflow: pending stacks driven to ready (or failed) on their datacenter.

Steps, in order: resolve the image to a digest in the staging registry, replicate it to the
datacenter's runtime registry, the secrets step (Vault, where configured), launch on the
scheduler, warm until the health checks pass, then ready and the traffic handover. Each step
writes timestamped lines to the stack's log and status history and publishes `StackProgress`.

Durable: the step a stack is in is stored (`workflow_step`) before it runs, and every step
is idempotent (a digest already known, blobs already present, containers already there), so
after a crash `resume()` continues each unfinished stack from its last step. Every external
call has a timeout; transient faults are retried with backoff; a step that keeps failing
ends the stack `failed` with the reason, and its containers are removed.

Several replicas on one database: a process drives a stack only while it holds the stack's
claim (`WorkflowClaimRepository`), renewed every third of `workflow.claim_ttl`. Each write of
a run is fenced by the claim's token, so a process that lost it (expired, taken over) writes
nothing more and stops that run. `take_over()`, run at start and periodically, drives the
unfinished stacks whose claim is missing or expired: a dead replica's work resumes elsewhere.

The database going away mid-run (a PostgreSQL restart) is not the stack's fault:
the run stops where it is, without failing the stack or removing anything; once the database
answers, the next takeover claims it again (this process at once while its claim is unexpired,
any replica once it has expired) and continues it from its stored step."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from commands.events import EventHub, StackProgress, StackReady
from commands.manifests import ManifestMissing, Manifests
from commands.operations import finish_operations
from commands.ports import (
    ClaimLost,
    Clock,
    Registry,
    RegistryError,
    Scheduler,
    SchedulerError,
    SecretsError,
    Store,
)
from commands.settings import Settings
from commands.stack_secrets import StackSecrets
from domain.blueprints import BlueprintError, parse_ref
from domain.images import BadImageReference, ImageRef, parse_image
from domain.manifest import ManifestInvalid
from domain.records import Stack, StackQuery
from domain.redaction import redact
from domain.runtime import Health, HealthProbe, LaunchSpec, PortSpec, Rendering, RuntimeReport
from domain.stack_names import stack_name
from domain.states import StackStatus
from domain.versions import Version

log = logging.getLogger("nelson.workflow")

RENDER_HASH = "00000000"  # in the stack name `render` shows; deploys pick a random one
UNFINISHED = (StackStatus.PENDING, StackStatus.DEPLOYING, StackStatus.WARMING)
# The step of a ready stack until StackReady's listeners (traffic control routing it, opening
# its shift, asking for its approval) are done: a replica dying in between leaves it to the
# takeover, which hands over again (each listener does only what is not done yet).
HANDOVER = "route"


class StepFailed(Exception):
    """The stack cannot be deployed; the message is the reason people will read."""


class Stopping(Exception):
    """The process is stopping: the workflow ends between steps, left for `resume()`."""


class _Transient(Exception):
    """One try of a step failed in a way the next try may not."""


class DeployWorkflow:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        events: EventHub,
        clock: Clock,
        registry: Registry,
        schedulers: Mapping[str, Scheduler],
        *,
        manifests: Manifests | None = None,
        secrets: StackSecrets | None = None,
        holder: str | None = None,
        unreachable: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.clock = clock
        self.registry = registry
        self.schedulers = dict(schedulers)
        self.manifests = manifests or Manifests(store, settings)
        self._slots = asyncio.Semaphore(settings.workflow.max_concurrent)
        self._targets: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._draining = False
        self.secrets = secrets  # where datacenters have Vault (commands.stack_secrets)
        # who this process is in the workflow claims: unique per process, so a restarted
        # replica waits for its predecessor's claims to expire like any other replica
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets_hex()}"
        self._claims: dict[int, int] = {}  # stack id -> fencing token of the claims held
        self._keeper: asyncio.Task[None] | None = None
        # tells "the database is unreachable" from a fault (the adapters' errors are theirs)
        self.unreachable = unreachable or _never
        self._renewals_failing = False
        # runs the database cut off: claimed again at the next takeover, without waiting for
        # their claim to expire when it is still this process's
        self._interrupted: set[int] = set()

    # -- the port ---------------------------------------------------------------------------

    async def available_for(self, datacenter: str) -> str | None:
        dc = self.settings.datacenters.get(datacenter)
        if dc is None:
            return f"datacenter '{datacenter}' is not configured"
        scheduler = self.schedulers.get(datacenter)
        if scheduler is None:
            return f"this version has no deployment engine for '{dc.scheduler.kind}' schedulers"
        return await scheduler.check()

    async def submit(self, stack_ids: Sequence[int]) -> None:
        for stack_id in stack_ids:
            self._start(stack_id)

    async def runtime(self, stack: Stack) -> RuntimeReport:
        scheduler = self.schedulers.get(stack.datacenter)
        if scheduler is None:
            raise SchedulerError(await self.available_for(stack.datacenter) or "no scheduler")
        instances = tuple(await scheduler.instances(stack.name))
        if not instances:
            return RuntimeReport(instances)
        try:
            spec = await self._spec(stack, "", await self._manifest_parts(stack), resolve=False)
        except StepFailed as exc:
            return RuntimeReport(instances, Health(False, str(exc)))
        return RuntimeReport(instances, await scheduler.health(spec))

    async def render(
        self,
        unit: str,
        version: Version,
        datacenter: str,
        namespace: str,
        plan: str,
        manifest_id: int,
        image: str,
    ) -> Rendering:
        scheduler = self.schedulers.get(datacenter)
        if scheduler is None:
            raise SchedulerError(await self.available_for(datacenter) or "no scheduler")
        try:
            manifest = await self.manifests.by_id(manifest_id)
        except (ManifestMissing, ManifestInvalid) as exc:
            raise SchedulerError(str(exc)) from None
        found_unit = manifest.unit(unit)
        found_plan = next((p for p in manifest.plans if p.name == plan), None)
        if found_unit is None or found_plan is None:
            raise SchedulerError(f"unit {unit} or plan {plan} is not in its manifest")
        notes = []
        release = await self.store.release(unit, version)
        digest = release.digest if release is not None else None
        if digest is None:
            try:
                digest = await asyncio.wait_for(self.registry.resolve(image), 15)
            except (RegistryError, TimeoutError) as exc:
                why = str(exc) or "the registry did not answer in 15 s"
                notes.append(f"the image is not resolved ({why}); shown by its staging name")
        runtime_image = image
        if digest is not None:
            try:
                source = parse_image(image)
                runtime_registry = self.settings.datacenters[datacenter].runtime_registry
                runtime_image = str(ImageRef(runtime_registry, source.repository, None, digest))
            except BadImageReference as exc:
                notes.append(str(exc))
        stack = Stack(
            id=0,
            name=stack_name(unit, version, RENDER_HASH),
            guid="",
            release_id=0,
            unit=unit,
            version=version,
            datacenter=datacenter,
            namespace=namespace,
            plan=plan,
            status=StackStatus.PENDING,
            status_message="",
            workflow_step=None,
            created_by="",
            created_at=self.clock.now(),
            updated_at=self.clock.now(),
            expires_at=None,
        )
        try:
            spec = await self._spec(stack, runtime_image, (found_unit, found_plan), resolve=False)
        except StepFailed as exc:
            raise SchedulerError(str(exc)) from None
        rendering = await scheduler.render(spec)
        notes.append(f"the stack name ends in a hash chosen at deploy ({RENDER_HASH} here)")
        return dataclasses.replace(rendering, notes=(*rendering.notes, *notes))

    # -- running ----------------------------------------------------------------------------

    async def resume(self) -> int:
        """Continue every unfinished stack nobody drives (no claim, or an expired one): what
        an earlier run of this process or a dead replica left. Returns how many."""
        return await self.take_over()

    async def take_over(self) -> int:
        """Start driving the unfinished stacks whose claim is missing or expired (each run
        claims its stack first, so of several replicas doing this one wins each)."""
        if self._draining:
            return 0
        found = await self.store.unclaimed_workflows(
            UNFINISHED, sorted(self.schedulers), steps=(HANDOVER,)
        )
        found = sorted(set(found) | self._interrupted)
        started = [stack_id for stack_id in found if stack_id not in self._tasks]
        self._interrupted -= set(started)  # one still ending is tried again next time
        for stack_id in started:
            self._start(stack_id)
        return len(started)

    @property
    def claim_ttl(self) -> float:
        return self.settings.workflow.claim_ttl.total_seconds()

    async def renew_claims(self) -> None:
        """Extend the claims this process holds; stop the runs whose claim was taken over."""
        if not self._claims:
            return
        held = dict(self._claims)
        renewed = await self.store.renew_workflow_claims(
            self.holder, held, self.settings.workflow.claim_ttl
        )
        for stack_id in set(held) - renewed:
            if self._claims.get(stack_id) == held[stack_id]:
                del self._claims[stack_id]
                log.warning("stack %s: claim expired or taken over; stopping its run", stack_id)
                task = self._tasks.get(stack_id)
                if task is not None:
                    task.cancel()

    async def _keep_claims(self) -> None:
        while True:
            await asyncio.sleep(self.claim_ttl / 3)
            try:
                await self.renew_claims()
            except Exception as exc:  # unrenewed claims expire; fenced writes then stop runs
                if not self._renewals_failing:  # one line per outage, not one per try
                    log.warning(
                        "renewing workflow claims failed (%s); claims not renewed within "
                        "%gs are lost and taken over",
                        type(exc).__name__,
                        self.claim_ttl,
                    )
                self._renewals_failing = True
            else:
                if self._renewals_failing:
                    log.warning("renewing workflow claims works again")
                self._renewals_failing = False

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until every workflow this process runs has ended (tests, `nelson run`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._tasks:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
            done, _ = await asyncio.wait(list(self._tasks.values()), timeout=remaining)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("workflows still running")
            del done

    async def drain(self, grace: float) -> int:
        """Stop gracefully: start no new step; each workflow finishes the step it is in and
        stops there. What is still running after `grace` seconds is cancelled (every step is
        idempotent). Returns how many workflows were left for the next start to resume."""
        self._draining = True
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        await self.close()
        page = await self.store.list_stacks(StackQuery(statuses=UNFINISHED, limit=10_000))
        return sum(1 for stack in page.stacks if stack.datacenter in self.schedulers)

    async def close(self) -> None:
        """Stop driving (a restart, or another replica at once, continues where this left
        off: the claims still held are given up)."""
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
            self._keeper = None
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        for stack_id, token in list(self._claims.items()):
            with contextlib.suppress(Exception):  # unreleased, it expires after the TTL
                await self.store.release_workflow_claim(stack_id, self.holder, token)
        self._claims.clear()

    def _start(self, stack_id: int) -> None:
        if stack_id in self._tasks:
            return
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep_claims(), name="workflow-claims")
        task = asyncio.create_task(self._drive(stack_id), name=f"deploy-{stack_id}")
        self._tasks[stack_id] = task

        def forget(_task: asyncio.Task[None]) -> None:
            self._tasks.pop(stack_id, None)

        task.add_done_callback(forget)

    async def _drive(self, stack_id: int) -> None:
        if self._draining:
            return
        try:
            claim = await self.store.claim_workflow(
                stack_id, self.holder, self.settings.workflow.claim_ttl
            )
        except Exception as exc:  # the database is away: the takeover job tries again
            log.warning("stack %s: could not claim its workflow (%s)", stack_id, type(exc).__name__)
            return
        if claim is None:
            return  # another replica drives it
        self._claims[stack_id] = claim.token
        try:
            await self._drive_claimed(stack_id)
        except ClaimLost as exc:
            self._claims.pop(stack_id, None)
            log.warning("stack %s: %s; stopping its run here", stack_id, exc)
            return
        except Exception as exc:
            if self.unreachable(exc):
                # the claim stays until it expires (releasing it needs the database too);
                # this process claims it again once the database answers, unless another
                # one took it over by then
                self._claims.pop(stack_id, None)
                self._interrupted.add(stack_id)
                log.warning(
                    "stack %s: the database became unreachable (%s); the run stops here and "
                    "continues once the database answers",
                    stack_id,
                    type(exc).__name__,
                )
                return
            log.exception("driving stack %s failed; another run takes it over", stack_id)
        token = self._claims.pop(stack_id, None)
        if token is not None:
            with contextlib.suppress(Exception):  # unreleased, it expires after the TTL
                await self.store.release_workflow_claim(stack_id, self.holder, token)

    @contextlib.asynccontextmanager
    async def _fenced(self, stack_id: int) -> AsyncIterator[Store]:
        """The store for one run's writes: they land only while this process still holds the
        stack's claim with its token (else ClaimLost, and none of them lands)."""
        token = self._claims.get(stack_id)
        if token is None:
            raise ClaimLost(f"this process holds no claim on stack {stack_id}")
        async with self.store.unit_of_work() as uow:
            await uow.check_workflow_claim(stack_id, self.holder, token)
            yield uow

    async def _drive_claimed(self, stack_id: int) -> None:
        stack = await self.store.stack_by_id(stack_id)
        if stack is not None and stack.workflow_step == HANDOVER and not self._draining:
            await self._hand_over_again(stack)
            return
        if stack is None or stack.status not in UNFINISHED or self._draining:
            return
        if self._slots.locked():
            await self._say(stack, "waiting: every deploy slot is busy", "queue")
        async with self._slots:
            key = (stack.unit, stack.datacenter, stack.namespace)
            lock = self._targets.setdefault(key, asyncio.Lock())
            async with lock:  # two deploys of one unit to one target never race
                try:
                    if self._draining:
                        return
                    await self._run(stack)
                except (asyncio.CancelledError, ClaimLost):
                    raise
                except Stopping:
                    stack = await self.store.stack_by_id(stack_id) or stack
                    await self._say(
                        stack,
                        f"paused in step '{stack.workflow_step}': the bot is stopping; "
                        "it continues from there when the bot starts again",
                        stack.workflow_step or "queue",
                    )
                except StepFailed as exc:
                    await self._fail(stack_id, str(exc))
                except Exception as exc:
                    if self.unreachable(exc):
                        raise  # not the stack's fault: it is taken over later
                    reference = secrets.token_hex(4)
                    log.exception("internal error %s deploying stack %s", reference, stack_id)
                    await self._fail(stack_id, f"internal error (reference {reference})")

    # -- the steps --------------------------------------------------------------------------

    async def _run(self, stack: Stack) -> None:
        started = time.monotonic()
        fresh = stack.status is StackStatus.PENDING
        resumed_at = stack.workflow_step
        if fresh:
            async with self._fenced(stack.id) as store:  # started, and in its first step
                await store.set_workflow_step(stack.id, "resolve")
                stack = await store.change_status(
                    stack.id, StackStatus.DEPLOYING, "deploy started", "nelson"
                )
        spec_parts = await self._manifest_parts(stack)
        release = await self.store.release(stack.unit, stack.version)
        if release is None:
            raise StepFailed(f"the release of {stack.name} is missing")
        dc = self.settings.datacenters[stack.datacenter]
        scheduler = self.schedulers[stack.datacenter]
        if resumed_at:
            await self._say(stack, f"continuing after a restart at step '{resumed_at}'", "resume")
        if not fresh:
            await self._step(stack, "resolve")
        digest = release.digest
        if digest is None:
            digest = await self._call(
                stack, "resolve", lambda: self.registry.resolve(release.image)
            )
            await self.store.set_release_digest(release.id, digest)
        await self._say(
            stack, f"resolved {release.image} to {digest[:19]}…", "resolve", then="replicate"
        )
        t0 = time.monotonic()
        runtime_image = await self._call(
            stack,
            "replicate",
            lambda: self.registry.replicate(release.image, digest, dc.runtime_registry),
        )
        await self._say(
            stack,
            f"replicated to {redact(dc.runtime_registry)} in {time.monotonic() - t0:.1f}s",
            "replicate",
            then="secrets",
        )
        granted: tuple[str | None, tuple[tuple[str, str], ...]] = (None, ())
        if dc.vault is None or self.secrets is None:
            await self._say(
                stack,
                f"no Vault in {stack.datacenter}: secrets step skipped",
                "secrets",
                then="launch",
            )
        else:
            granted = await self._grant_secrets(stack, spec_parts[0], scheduler)
            await self._step(stack, "launch")
        spec = await self._spec(stack, runtime_image, spec_parts, secrets=granted)
        instances = await self._call(stack, "launch", lambda: scheduler.launch(spec))
        names = ", ".join(i.name for i in instances)
        await self._say(
            stack, f"launched {len(instances)} instance(s): {names}", "launch", then="warm"
        )
        if stack.status is StackStatus.DEPLOYING:
            async with self._fenced(stack.id) as store:
                stack = await store.change_status(
                    stack.id, StackStatus.WARMING, "waiting for health checks", "nelson"
                )
            await self._say(
                stack, "warming: waiting for health checks", "warm", StackStatus.WARMING
            )
        await self._warm(stack, scheduler, spec)

        await self._finish(
            stack.id,
            StackStatus.READY,
            "healthy",
            f"ready ({time.monotonic() - started:.1f}s)",
            "ready",
        )

    async def _grant_secrets(
        self, stack: Stack, unit: Any, scheduler: Scheduler
    ) -> tuple[str | None, tuple[tuple[str, str], ...]]:
        """The stack's Vault policy, and on the Docker engine its token (schedulers with a
        Vault integration of their own take the policy name from the LaunchSpec)."""
        secrets_ = self.secrets
        assert secrets_ is not None
        token = self.settings.datacenters[stack.datacenter].scheduler.kind == "docker"
        resources = [r if isinstance(r, str) else r.name for r in unit.resources]
        grant = await self._call(
            stack, "secrets", lambda: secrets_.grant(stack, resources, token=token)
        )
        if grant.replaced:  # instances started before a restart hold a revoked token
            removed = await self._call(stack, "secrets", lambda: scheduler.delete(stack.name))
            if removed:
                await self._say(
                    stack,
                    f"replacing {removed} instance(s) started with a revoked token",
                    "secrets",
                )
        reads = ", ".join(resources) or "nothing (the unit declares no resources)"
        given = "; a token limited to it goes to the containers" if token else ""
        await self._say(
            stack,
            f"Vault policy {grant.policy} written: read on the credentials of {reads}{given}",
            "secrets",
        )
        return grant.policy, grant.environment

    async def _warm(self, stack: Stack, scheduler: Scheduler, spec: LaunchSpec) -> None:
        timeout = self.settings.workflow.warming_timeout.total_seconds()
        since = await self._warming_since(stack)
        elapsed = (self.clock.now() - since).total_seconds() if since else 0.0
        deadline = time.monotonic() + max(timeout - elapsed, 0)
        interval = self.settings.workflow.health_interval.total_seconds()
        detail = "not probed yet"
        while True:
            try:
                health = await asyncio.wait_for(
                    scheduler.health(spec), timeout=max(interval, 5) * 3
                )
                if health.healthy:
                    await self._say(stack, f"healthy: {health.detail}", "warm")
                    return
                detail = health.detail
            except (SchedulerError, TimeoutError) as exc:
                detail = str(exc) or "health probe timed out"
            if time.monotonic() >= deadline:
                raise StepFailed(f"not healthy within {_duration(timeout)}: {detail}")
            if self._draining:  # warming is waiting: the next start waits on, same deadline
                raise Stopping
            await asyncio.sleep(interval)

    async def _warming_since(self, stack: Stack) -> datetime | None:
        for change in reversed(await self.store.status_history(stack.id)):
            if change.status is StackStatus.WARMING:
                return change.at
        return None

    # -- helpers ----------------------------------------------------------------------------

    async def _manifest_parts(self, stack: Stack) -> tuple[Any, Any]:
        try:
            manifest = await self.manifests.of_stack(stack)
        except ManifestMissing as exc:
            raise StepFailed(str(exc)) from None
        except ManifestInvalid as exc:  # the configuration changed since it was registered
            raise StepFailed(
                f"the manifest {stack.name} was released from no longer holds: "
                + "; ".join(str(e) for e in exc.errors[:3])
            ) from None
        unit = manifest.unit(stack.unit)
        plan = manifest.plan(stack.plan)
        if unit is None or plan is None:
            raise StepFailed(f"unit {stack.unit} or plan {stack.plan} is not in its manifest")
        return unit, plan

    async def _spec(
        self,
        stack: Stack,
        image: str,
        parts: tuple[Any, Any],
        *,
        resolve: bool = True,
        secrets: tuple[str | None, tuple[tuple[str, str], ...]] = (None, ()),
    ) -> LaunchSpec:
        unit, plan = parts
        environment = list(plan.environment)
        scheduler = self.schedulers[stack.datacenter]
        dependencies = await self.store.dependencies(stack.id) if resolve else []
        for dependency in dependencies:
            instances = await self._call(
                stack, "launch", lambda d=dependency: scheduler.instances(d.name)
            )
            running = [i for i in instances if i.state == "running" and i.ports]
            if running:
                port = running[0].ports[0][1]
                name = dependency.unit.upper().replace("-", "_")
                address = f"{running[0].host}:{port}"
                environment.append((f"NELSON_DEPENDENCY_{name}", address))
        environment.extend(secrets[1])
        blueprint, blueprint_name = await self._blueprint(plan, stack.datacenter)
        return LaunchSpec(
            stack=stack.name,
            unit=stack.unit,
            version=str(stack.version),
            namespace=stack.namespace,
            datacenter=stack.datacenter,
            plan=stack.plan,
            image=image,
            instances=plan.instances,
            cpu=plan.cpu,
            memory_mb=plan.memory,
            environment=tuple(environment),
            ports=tuple(PortSpec(p.label, p.number, p.protocol) for p in unit.ports),
            health=tuple(
                HealthProbe(
                    h.name,
                    h.port_reference,
                    h.protocol,
                    h.path,
                    h.timeout_seconds,
                    h.interval_seconds,
                )
                for h in plan.health_checks
            ),
            schedule=plan.schedule.cron if plan.schedule and plan.schedule.cron else None,
            blueprint=blueprint,
            blueprint_name=blueprint_name,
            vault_policy=secrets[0],
        )

    async def _blueprint(self, plan: Any, datacenter: str) -> tuple[str | None, str]:
        """The text and name of the plan's blueprint; (None, "") for the kind's default."""
        wanted = getattr(plan, "blueprint", None)
        if not wanted:
            return None, ""
        try:
            ref = parse_ref(wanted)
        except BlueprintError as exc:
            raise StepFailed(f"plan {plan.name}: {exc}") from None
        record = await self.store.blueprint(ref.name, ref.revision)
        if record is None:
            raise StepFailed(f"blueprint {ref} is not registered (`blueprints` lists them)")
        kind = self.settings.datacenters[datacenter].scheduler.kind
        if record.kind != kind:
            raise StepFailed(
                f"blueprint {record.name}@{record.revision} is for {record.kind} datacenters; "
                f"{datacenter} runs {kind}"
            )
        return record.text, f"blueprint {record.name}@{record.revision}"

    async def _step(self, stack: Stack, step: str) -> None:
        if self._draining:
            raise Stopping
        async with self._fenced(stack.id) as store:
            await store.set_workflow_step(stack.id, step)

    async def _call(self, stack: Stack, step: str, call: Any) -> Any:
        """Run one external call with a timeout, retrying transient faults with backoff.

        The workflow's steps are the one place that retries: adapters report a transient
        fault at once, so `workflow.attempts` is the number of tries that reach the outside."""
        attempts = self.settings.workflow.attempts
        timeout = self.settings.workflow.step_timeout.total_seconds()

        async def once() -> Any:
            try:
                return await asyncio.wait_for(call(), timeout)
            except TimeoutError:
                raise _Transient(f"{step} took longer than {_duration(timeout)}") from None
            except (RegistryError, SchedulerError, SecretsError) as exc:
                if exc.transient:
                    raise _Transient(str(exc)) from None
                raise StepFailed(f"{step} failed: {exc}") from None

        async def before_sleep(state: RetryCallState) -> None:
            if self._draining:  # no retry now: the next start runs this step again
                raise Stopping
            problem = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0
            await self._say(
                stack,
                f"{step}: {problem}; try {state.attempt_number} of {attempts} failed, "
                f"trying again in {wait:.0f}s",
                step,
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=1, min=1, max=30),
            retry=retry_if_exception_type(_Transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return await retrying(once)
        except _Transient as exc:
            raise StepFailed(f"{step} failed: {exc}") from None

    async def _fail(self, stack_id: int, reason: str) -> None:
        stack = await self.store.stack_by_id(stack_id)
        if stack is None or stack.status not in UNFINISHED:
            return
        async with self._fenced(stack_id):
            pass  # a process that lost the claim removes nothing another one now drives
        scheduler = self.schedulers.get(stack.datacenter)
        cleanup = ""
        if scheduler is not None:
            try:
                removed = await asyncio.wait_for(scheduler.delete(stack.name), 60)
                cleanup = f"; removed {removed} container(s)" if removed else ""
            except Exception as exc:  # the reaper will try again later
                cleanup = f"; its containers could not be removed yet ({exc})"
        if self.secrets is not None:
            try:
                if await asyncio.wait_for(self.secrets.release(stack), 60):
                    cleanup += "; its Vault policy and token were removed"
            except Exception as exc:  # the secrets sweep deletes them later
                cleanup += f"; its Vault policy could not be removed yet ({exc})"
        await self._finish(
            stack_id, StackStatus.FAILED, reason, f"failed: {reason}{cleanup}", "failed"
        )

    async def _finish(
        self, stack_id: int, status: StackStatus, reason: str, message: str, step: str
    ) -> None:
        """The stack's last status, its line, and the operations it finishes, with their
        events in the outbox, in one fenced transaction: a replica that dies here leaves
        either all of it (told by whichever replica dispatches it) or none (the stack is still
        unfinished, and taken over)."""
        at = self.clock.now()
        failed = status is StackStatus.FAILED
        progress = StackProgress(stack_id, message, at, failed, status)
        ready = status is StackStatus.READY
        async with self._fenced(stack_id) as store:
            await store.set_workflow_step(stack_id, HANDOVER if ready else None)
            stack = await store.change_status(stack_id, status, reason, "nelson")
            await store.append_log(stack_id, message, step=step, at=at)
            await self.events.record(progress, store)
            finished = await finish_operations(store, self.events, self.clock, stack_id)
        if ready:
            await self._hand_over(stack)  # routed before the line is heard here
        await self.events.publish(progress, recorded=True)
        for event in finished:
            await self.events.publish(event, recorded=True)

    async def _hand_over(self, stack: Stack) -> None:
        """StackReady to its listeners (traffic control routes the stack), then the handover
        step cleared: until then a replica that dies leaves it to the takeover."""
        await self.events.publish(StackReady(stack))
        async with self._fenced(stack.id) as store:
            await store.set_workflow_step(stack.id, None)

    async def _hand_over_again(self, stack: Stack) -> None:
        """A ready stack whose handover a dead replica (or an earlier run) did not finish."""
        if stack.status is not StackStatus.READY:  # deprecated or removed since: moot now
            async with self._fenced(stack.id) as store:
                await store.set_workflow_step(stack.id, None)
            return
        await self._say(stack, f"continuing after a restart at step '{HANDOVER}'", "resume")
        await self._hand_over(stack)

    async def _say(
        self,
        stack: Stack,
        message: str,
        step: str,
        status: StackStatus | None = None,
        failed: bool = False,
        *,
        then: str | None = None,
    ) -> None:
        """A line for the stack's log and its listeners; with `then`, the step it moves to
        next, stored in the same transaction (unless the bot is stopping: Stopping, after
        the line)."""
        at = self.clock.now()
        advance = then is not None and not self._draining
        event = StackProgress(stack.id, message, at, failed, status)
        async with self._fenced(stack.id) as store:
            await store.append_log(stack.id, message, step=step, at=at)
            if advance:
                await store.set_workflow_step(stack.id, then)
            await self.events.record(event, store)
        await self.events.publish(event, recorded=True)
        if then is not None and not advance:
            raise Stopping


def _never(_exc: BaseException) -> bool:
    return False


def secrets_hex() -> str:
    return secrets.token_hex(3)


def _duration(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
