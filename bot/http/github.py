"""GitHub webhooks at /github/events (docs/api.md).

The signature (X-Hub-Signature-256: HMAC-SHA256 of the raw body with the webhook's secret) is
checked before anything is parsed. `ping` is answered; a published `release` registers the
repository's manifest at that tag (an attached `.nelson.yml`/`nelson.yml`, or the path
`github.manifests` gives) and announces each of its units at the tag's version; a
`deployment` deploys to the environment's namespace through the same commands and handlers as
chat, and reports back through GitHub's deployment statuses. Each delivery is handled once
(X-GitHub-Delivery, claimed in the database)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.bootstrap import Application
from bot.http.api import Api, Refused, bad_request
from bot.http.github_client import GitHubClient, GitHubError
from bot.http.problems import problem
from commands import model
from commands.access import Principal
from domain.github import GitHubDeployment
from domain.records import AuditEvent
from domain.states import StackStatus
from domain.versions import InvalidVersion, Version

log = logging.getLogger("nelson.github")

MANIFEST_ASSETS = (".nelson.yml", "nelson.yml", ".nelson.yaml", "nelson.yaml")
FOLLOW_INTERVAL = 2.0  # seconds between looks at a deployment's stacks
FOLLOW_LIMIT = 6 * 3600  # seconds; a deploy still unfinished then is reported as an error
_UNFINISHED = (StackStatus.PENDING, StackStatus.DEPLOYING, StackStatus.WARMING)


def signature_ok(secret: str, body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("utf-8", "replace"))


def version_of(tag: str) -> Version:
    return Version.parse(tag[1:] if tag[:1] in ("v", "V") else tag)


def _field(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


class GitHubWebhooks:
    def __init__(
        self, application: Application, api: Api, client: GitHubClient | None = None
    ) -> None:
        self.application = application
        self.api = api
        self.settings = application.settings.github
        self.client = client or GitHubClient(self.settings)
        self._follows: set[asyncio.Task[None]] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/github/events", self.events)

    async def close(self) -> None:
        for task in list(self._follows):
            task.cancel()
        await asyncio.gather(*self._follows, return_exceptions=True)

    def principal(self, repository: str) -> Principal:
        """A repository's webhooks may deploy in `github.namespaces`, and nothing else."""
        return Principal(
            user_id=f"github:{repository}"[:200],
            name=f"github:{repository}"[:200],
            token_namespaces=self.settings.namespaces,
            token_right="deploy",
        )

    # -- the endpoint -----------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        secret = self.settings.webhook_secret
        if secret is None or not secret.get_secret_value():
            return problem("disabled", 404, "GitHub webhooks are not configured here")
        raw = await request.read()
        header = request.headers.get("X-Hub-Signature-256", "")
        if not header or not signature_ok(secret.get_secret_value(), raw, header):
            log.warning("refused a GitHub delivery from %s: bad signature", request.remote)
            return problem(
                "unauthorized",
                401,
                "X-Hub-Signature-256 is missing or does not match the webhook's secret",
            )
        event = request.headers.get("X-GitHub-Event", "")
        delivery = request.headers.get("X-GitHub-Delivery", "")
        try:
            try:
                payload = json.loads(raw)
            except (ValueError, RecursionError):
                raise bad_request(
                    "the delivery is not JSON (set the content type to JSON)"
                ) from None
            if not isinstance(payload, dict):
                raise bad_request("the delivery is not a JSON object")
            if event == "ping":
                return web.json_response({"ok": True, "zen": payload.get("zen")})
            if event not in ("release", "deployment"):
                return web.json_response({"ignored": f"event '{event[:40]}'"}, status=202)
            if event == "release" and payload.get("action") != "published":
                return web.json_response(
                    {"ignored": f"release action '{str(payload.get('action'))[:40]}'"}, status=202
                )
            if not delivery or not await self.application.store.claim_delivery(
                f"github:{delivery}", self.application.clock.now()
            ):
                if delivery:
                    return web.json_response({"duplicate": delivery})
                raise bad_request("X-GitHub-Delivery is missing")
            try:
                handled = (
                    await self.release(payload)
                    if event == "release"
                    else await self.deployment(payload)
                )
            except Refused as refused:
                handled = refused.response
            await self._audit(payload, event, delivery, handled.status)
            return handled
        except Refused as refused:
            return refused.response
        except Exception as exc:
            return self.api.internal_error(exc, None)

    async def _audit(self, payload: dict[str, Any], event: str, delivery: str, status: int) -> None:
        """Each delivery handled, under the repository it came from."""
        repository = _field(payload, "repository", "full_name")
        who = self.principal(repository if isinstance(repository, str) else "unknown")
        try:
            await self.application.store.audit(
                AuditEvent(
                    actor=who.user_id,
                    action=f"github {event}",
                    target=f"delivery:{delivery}"[:200],
                    allowed=status < 400,
                    detail=f"HTTP {status}",
                    at=self.application.clock.now(),
                )
            )
        except Exception as exc:  # the answer stands
            log.warning("could not audit a GitHub delivery: %s", exc)

    # -- release: register the manifest, announce the units ---------------------------------

    async def release(self, payload: dict[str, Any]) -> web.StreamResponse:
        repository = _field(payload, "repository", "full_name")
        tag = _field(payload, "release", "tag_name")
        if not isinstance(repository, str) or not isinstance(tag, str):
            raise bad_request("the release event lacks repository.full_name or release.tag_name")
        try:
            version = version_of(tag)
        except InvalidVersion as exc:
            raise Refused(
                problem("unprocessable", 422, f"tag '{tag[:80]}' is not a version: {exc}")
            ) from None
        principal = self.principal(repository)
        text = await self._manifest_text(repository, payload)
        registered = None
        if text is not None:
            reply = await self.api.run(model.RegisterManifest(repository, text=text), principal)
            registered = reply.title
        units = [u.name for u in await self.application.store.units() if u.repository == repository]
        if not units:
            raise Refused(
                problem(
                    "unprocessable",
                    422,
                    f"no manifest of {repository} is registered, none is attached to release "
                    f"{tag[:80]} (.nelson.yml) and github.manifests names none",
                )
            )
        announced = []
        for unit in units:
            image = await self._image(unit, version)
            reply = await self.api.run(model.Announce(unit, version, image), principal)
            announced.append({"unit": unit, "version": str(version), "message": reply.title})
        return web.json_response({"manifest": registered, "announced": announced}, status=201)

    async def _manifest_text(self, repository: str, payload: dict[str, Any]) -> str | None:
        assets = _field(payload, "release", "assets")
        for asset in assets if isinstance(assets, list) else []:
            if isinstance(asset, dict) and asset.get("name") in MANIFEST_ASSETS:
                asset_id = asset.get("id")
                if not isinstance(asset_id, int):
                    raise bad_request("a release asset has no numeric id")
                try:
                    return await self.client.asset(repository, asset_id)
                except GitHubError as exc:
                    raise Refused(
                        problem("conflict", 409, f"cannot read the attached manifest: {exc}")
                    ) from None
        path = self.settings.manifests.get(repository)
        if path:
            try:
                return await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise Refused(
                    problem(
                        "conflict",
                        409,
                        f"github.manifests names {path} for {repository}, which cannot be "
                        f"read ({type(exc).__name__})",
                    )
                ) from None
        return None

    async def _image(self, unit: str, version: Version) -> str:
        """The image the configured template names, pinned to its digest when the staging
        registry already has it (otherwise the first deploy resolves it)."""
        settings = self.application.settings
        if not settings.datacenters:
            raise Refused(problem("conflict", 409, "no datacenter is configured"))
        staging = settings.datacenters[sorted(settings.datacenters)[0]].staging_registry
        image = settings.workflow.image_template.format(
            staging_registry=staging.rstrip("/"), unit=unit, version=version
        )
        registry = self.application.registry
        if registry is not None and "@" not in image:
            with contextlib.suppress(Exception):
                digest = await asyncio.wait_for(registry.resolve(image), 15)
                return f"{image}@{digest}"
        return image

    # -- deployment: deploy, then report through deployment statuses ------------------------

    async def deployment(self, payload: dict[str, Any]) -> web.StreamResponse:
        repository = _field(payload, "repository", "full_name")
        deployment_id = _field(payload, "deployment", "id")
        ref = _field(payload, "deployment", "ref")
        environment = _field(payload, "deployment", "environment")
        if not (
            isinstance(repository, str)
            and isinstance(deployment_id, int)
            and isinstance(ref, str)
            and isinstance(environment, str)
        ):
            raise bad_request(
                "the deployment event lacks repository.full_name, deployment.id, "
                "deployment.ref or deployment.environment"
            )
        namespace = self.settings.namespace_for(environment)
        try:
            titles, stack_ids = await self._deploy(repository, ref, namespace, payload)
        except Refused as refused:
            detail = json.loads(refused.response.text or "{}").get("detail", "refused")
            await self._status(repository, deployment_id, "failure", detail, environment)
            raise
        record = GitHubDeployment(
            repository, deployment_id, environment, stack_ids, self.application.clock.now()
        )
        # remembered before GitHub hears of it: a restart still reports the outcome
        await self.application.store.record_github_deployment(record)
        await self._status(
            repository,
            deployment_id,
            "in_progress",
            f"deploying {len(stack_ids)} stack(s) to {namespace}",
            environment,
        )
        self._start_following(record)
        return web.json_response({"messages": titles, "stacks": list(stack_ids)}, status=202)

    async def _deploy(
        self, repository: str, ref: str, namespace: str, payload: dict[str, Any]
    ) -> tuple[list[str], tuple[int, ...]]:
        try:
            version = version_of(ref)
        except InvalidVersion as exc:
            raise Refused(
                problem("unprocessable", 422, f"ref '{ref[:80]}' is not a version tag: {exc}")
            ) from None
        wanted = _field(payload, "deployment", "payload", "unit")
        units = [u.name for u in await self.application.store.units() if u.repository == repository]
        if isinstance(wanted, str):
            units = [u for u in units if u == wanted] or [wanted]
        if not units:
            raise Refused(
                problem(
                    "not-found",
                    404,
                    f"no manifest of {repository} is registered (publish a release first)",
                )
            )
        principal = self.principal(repository)
        titles: list[str] = []
        stack_ids: list[int] = []
        for unit in units:
            reply = await self.api.run(model.Deploy(unit, version, namespace=namespace), principal)
            titles.append(reply.title)
            stack_ids.extend(reply.stack_ids)
        return titles, tuple(stack_ids)

    def _start_following(self, record: GitHubDeployment) -> None:
        task = asyncio.create_task(
            self._follow(record), name=f"github-deployment-{record.deployment_id}"
        )
        self._follows.add(task)
        task.add_done_callback(self._follows.discard)

    async def resume(self) -> int:
        """Follow again the deployments an earlier run had not reported yet."""
        try:
            records = await self.application.store.unreported_github_deployments()
        except Exception as exc:  # the database is down: the next start tries again
            log.warning("cannot resume following GitHub deployments: %s", exc)
            return 0
        for record in records:
            self._start_following(record)
        return len(records)

    async def _follow(self, record: GitHubDeployment) -> None:
        deployment_id, stack_ids = record.deployment_id, record.stack_ids
        store = self.application.store
        waited = 0.0
        while waited < FOLLOW_LIMIT:
            try:
                stacks = await store.stacks_by_ids(stack_ids)
            except Exception as exc:  # a database outage: look again later
                log.warning("following GitHub deployment %s: %s", deployment_id, exc)
                stacks = []
            if stacks and all(s.status not in _UNFINISHED for s in stacks):
                # once ready, a stack may since have been deprecated or collected: only a
                # failed one is a failure
                failed = [s for s in stacks if s.status is StackStatus.FAILED]
                if failed:
                    why = "; ".join(f"{s.name}: {s.status_message}" for s in failed)
                    await self._final(record, "failure", why)
                else:
                    names = ", ".join(s.name for s in stacks)
                    await self._final(record, "success", f"ready: {names}")
                return
            await asyncio.sleep(FOLLOW_INTERVAL)
            waited += FOLLOW_INTERVAL
        await self._final(record, "error", "still deploying after 6 hours")

    async def _final(self, record: GitHubDeployment, state: str, description: str) -> None:
        """Tell GitHub the outcome, retrying while it cannot be reached; then remember that it
        was told (a refusal is final too: retrying would not change GitHub's mind)."""
        delay = 2.0
        for _attempt in range(6):
            told = await self._status(
                record.repository, record.deployment_id, state, description, record.environment
            )
            if told is not False:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60)
        else:
            return  # unreachable all along: the next start tries again
        try:
            await self.application.store.github_deployment_reported(
                record.repository, record.deployment_id, state
            )
        except Exception as exc:  # the next start tells GitHub again, which is harmless
            log.warning("could not remember reporting GitHub deployment: %s", exc)

    async def _status(
        self, repository: str, deployment_id: int, state: str, description: str, environment: str
    ) -> bool | None:
        """True when GitHub took it, None when it refused, False when it could not be
        reached (worth another try)."""
        try:
            await self.client.deployment_status(
                repository, deployment_id, state, description, environment
            )
        except GitHubError as exc:
            log.warning(
                "could not report %s for GitHub deployment %s of %s: %s",
                state,
                deployment_id,
                repository,
                exc,
            )
            return False if exc.transient else None
        return True
