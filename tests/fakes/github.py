"""A fake GitHub: the few REST endpoints the bot uses, and webhook deliveries signed as GitHub
signs them, written from GitHub's REST and webhook documentation.

REST (https://docs.github.com/rest): `GET /repos/{owner}/{repo}`, `GET .../deployments/{id}`,
`POST|GET .../deployments/{id}/statuses` and `GET .../releases/assets/{id}` (JSON metadata,
or the file itself with `Accept: application/octet-stream`). As GitHub does: 401
`{"message": "Requires authentication"}` without a token and `{"message": "Bad credentials"}`
with a wrong one, 404 `{"message": "Not Found"}` for what does not exist (or is not visible
to the token), 422 `{"message": "Validation Failed", "errors": [...]}` for an invalid state
or a description over 140 characters, 400 `{"message": "Problems parsing JSON"}`.

Webhooks (https://docs.github.com/webhooks): `deliver` POSTs a JSON payload with
X-GitHub-Event, X-GitHub-Delivery (a GUID) and X-Hub-Signature-256 (`sha256=` + the hex
HMAC-SHA256 of the body with the webhook's secret)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.dockerworld import free_port

DOCS = "https://docs.github.com/rest"
STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")
TIMESTAMP = "2026-01-01T00:00:00Z"  # GitHub's timestamps are ISO 8601 in UTC


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Repository:
    full_name: str
    id: int
    deployments: dict[int, dict[str, Any]] = field(default_factory=dict)
    statuses: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    assets: dict[int, tuple[dict[str, Any], bytes]] = field(default_factory=dict)


class FakeGitHub:
    def __init__(self, token: str = "ghp_" + "x" * 36) -> None:
        self.token = token
        self.repositories: dict[str, Repository] = {}
        self.requests: list[tuple[str, str, str]] = []  # method, path, Authorization header
        self._ids = 1000
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> FakeGitHub:
        app = web.Application()
        app.router.add_get("/repos/{owner}/{repo}", self._repository)
        app.router.add_get("/repos/{owner}/{repo}/deployments/{id}", self._deployment)
        app.router.add_post("/repos/{owner}/{repo}/deployments/{id}/statuses", self._post_status)
        app.router.add_get("/repos/{owner}/{repo}/deployments/{id}/statuses", self._get_statuses)
        app.router.add_get("/repos/{owner}/{repo}/releases/assets/{id}", self._asset)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what tests set up and read ---------------------------------------------------------

    def _next(self) -> int:
        self._ids += 1
        return self._ids

    def repository(self, full_name: str) -> Repository:
        if full_name not in self.repositories:
            self.repositories[full_name] = Repository(full_name, self._next())
        return self.repositories[full_name]

    def _repo_json(self, repo: Repository) -> dict[str, Any]:
        owner, _, name = repo.full_name.partition("/")
        return {
            "id": repo.id,
            "node_id": f"R_{repo.id}",
            "name": name,
            "full_name": repo.full_name,
            "private": False,
            "owner": {"login": owner, "id": 1, "type": "Organization"},
            "html_url": f"https://github.com/{repo.full_name}",
            "url": f"{self.base_url}/repos/{repo.full_name}",
            "deployments_url": f"{self.base_url}/repos/{repo.full_name}/deployments",
            "default_branch": "main",
        }

    def create_deployment(
        self, full_name: str, ref: str, environment: str, payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        repo = self.repository(full_name)
        deployment_id = self._next()
        url = f"{self.base_url}/repos/{full_name}/deployments/{deployment_id}"
        deployment = {
            "url": url,
            "id": deployment_id,
            "node_id": f"DE_{deployment_id}",
            "sha": hashlib.sha1(ref.encode()).hexdigest(),
            "ref": ref,
            "task": "deploy",
            "payload": payload or {},
            "original_environment": environment,
            "environment": environment,
            "description": None,
            "creator": {"login": "octocat", "id": 1, "type": "User"},
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
            "statuses_url": f"{url}/statuses",
            "repository_url": f"{self.base_url}/repos/{full_name}",
            "transient_environment": False,
            "production_environment": environment == "production",
        }
        repo.deployments[deployment_id] = deployment
        repo.statuses[deployment_id] = []
        return deployment

    def create_release(
        self, full_name: str, tag: str, assets: dict[str, bytes] | None = None
    ) -> dict[str, Any]:
        repo = self.repository(full_name)
        release_id = self._next()
        listed = []
        for name, content in (assets or {}).items():
            asset_id = self._next()
            url = f"{self.base_url}/repos/{full_name}/releases/assets/{asset_id}"
            meta = {
                "url": url,
                "browser_download_url": f"https://github.com/{full_name}/releases/download/"
                f"{tag}/{name}",
                "id": asset_id,
                "node_id": f"RA_{asset_id}",
                "name": name,
                "label": None,
                "state": "uploaded",
                "content_type": "application/x-yaml",
                "size": len(content),
                "download_count": 0,
                "created_at": TIMESTAMP,
                "updated_at": TIMESTAMP,
            }
            repo.assets[asset_id] = (meta, content)
            listed.append(meta)
        return {
            "url": f"{self.base_url}/repos/{full_name}/releases/{release_id}",
            "id": release_id,
            "node_id": f"RE_{release_id}",
            "tag_name": tag,
            "target_commitish": "main",
            "name": tag,
            "draft": False,
            "prerelease": False,
            "created_at": TIMESTAMP,
            "published_at": TIMESTAMP,
            "assets": listed,
            "author": {"login": "octocat", "id": 1, "type": "User"},
        }

    def statuses(self, full_name: str, deployment_id: int) -> list[dict[str, Any]]:
        return list(self.repository(full_name).statuses.get(deployment_id, []))

    def release_event(self, full_name: str, release: dict[str, Any]) -> dict[str, Any]:
        return {
            "action": "published",
            "release": release,
            "repository": self._repo_json(self.repository(full_name)),
            "sender": {"login": "octocat", "id": 1, "type": "User"},
        }

    def deployment_event(self, full_name: str, deployment: dict[str, Any]) -> dict[str, Any]:
        return {
            "action": "created",
            "deployment": deployment,
            "repository": self._repo_json(self.repository(full_name)),
            "sender": {"login": "octocat", "id": 1, "type": "User"},
        }

    @staticmethod
    async def deliver(
        url: str,
        event: str,
        payload: dict[str, Any],
        secret: str,
        *,
        delivery: str | None = None,
        body: bytes | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """POST a delivery as GitHub does; returns the status and the JSON answer."""
        raw = body if body is not None else json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/fake",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-GitHub-Hook-ID": "1",
            "X-Hub-Signature-256": signature(secret, raw),
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=raw, headers=headers) as response,
        ):
            answer = await response.json(content_type=None)
            return response.status, answer

    # -- the REST endpoints -----------------------------------------------------------------

    def _error(self, status: int, message: str, **extra: Any) -> web.Response:
        return web.json_response(
            {"message": message, **extra, "documentation_url": DOCS, "status": str(status)},
            status=status,
        )

    def _auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        self.requests.append((request.method, request.path, header))
        scheme, _, token = header.partition(" ")
        if not header:
            return self._error(401, "Requires authentication")
        if scheme.lower() not in ("bearer", "token") or token != self.token:
            return self._error(401, "Bad credentials")
        return None

    def _find(self, request: web.Request) -> Repository | None:
        return self.repositories.get(f"{request.match_info['owner']}/{request.match_info['repo']}")

    def _find_deployment(self, request: web.Request) -> tuple[Repository, int] | None:
        repo = self._find(request)
        raw = request.match_info["id"]
        if repo is None or not raw.isdigit() or int(raw) not in repo.deployments:
            return None
        return repo, int(raw)

    async def _repository(self, request: web.Request) -> web.Response:
        refused = self._auth(request)
        if refused is not None:
            return refused
        repo = self._find(request)
        if repo is None:
            return self._error(404, "Not Found")
        return web.json_response(self._repo_json(repo))

    async def _deployment(self, request: web.Request) -> web.Response:
        refused = self._auth(request)
        if refused is not None:
            return refused
        found = self._find_deployment(request)
        if found is None:
            return self._error(404, "Not Found")
        repo, deployment_id = found
        return web.json_response(repo.deployments[deployment_id])

    async def _get_statuses(self, request: web.Request) -> web.Response:
        refused = self._auth(request)
        if refused is not None:
            return refused
        found = self._find_deployment(request)
        if found is None:
            return self._error(404, "Not Found")
        repo, deployment_id = found
        return web.json_response(list(reversed(repo.statuses[deployment_id])))

    async def _post_status(self, request: web.Request) -> web.Response:
        refused = self._auth(request)
        if refused is not None:
            return refused
        found = self._find_deployment(request)
        if found is None:
            return self._error(404, "Not Found")
        repo, deployment_id = found
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self._error(400, "Problems parsing JSON")
        if not isinstance(body, dict):
            return self._error(400, "Problems parsing JSON")
        errors = []
        if body.get("state") not in STATES:
            errors.append({"resource": "DeploymentStatus", "code": "invalid", "field": "state"})
        description = body.get("description", "")
        if not isinstance(description, str) or len(description) > 140:
            errors.append(
                {
                    "resource": "DeploymentStatus",
                    "code": "custom",
                    "field": "description",
                    "message": "description is too long (maximum is 140 characters)",
                }
            )
        if errors:
            return self._error(422, "Validation Failed", errors=errors)
        deployment = repo.deployments[deployment_id]
        status_id = self._next()
        environment = body.get("environment") or deployment["environment"]
        status = {
            "url": f"{deployment['url']}/statuses/{status_id}",
            "id": status_id,
            "node_id": f"DES_{status_id}",
            "state": body["state"],
            "creator": {"login": "nelson[bot]", "id": 2, "type": "Bot"},
            "description": description,
            "environment": environment,
            "target_url": body.get("log_url") or body.get("target_url") or "",
            "log_url": body.get("log_url") or body.get("target_url") or "",
            "environment_url": body.get("environment_url", ""),
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
            "deployment_url": deployment["url"],
            "repository_url": deployment["repository_url"],
        }
        repo.statuses[deployment_id].append(status)
        return web.json_response(status, status=201)

    async def _asset(self, request: web.Request) -> web.Response:
        refused = self._auth(request)
        if refused is not None:
            return refused
        repo = self._find(request)
        raw = request.match_info["id"]
        if repo is None or not raw.isdigit() or int(raw) not in repo.assets:
            return self._error(404, "Not Found")
        meta, content = repo.assets[int(raw)]
        if request.headers.get("Accept") == "application/octet-stream":
            return web.Response(body=content, content_type="application/octet-stream")
        return web.json_response(meta)
