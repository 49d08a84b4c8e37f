"""What the bot asks of GitHub's REST API: release assets (a manifest attached to a release)
and deployment statuses. The token goes only in the Authorization header, never in logs."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from commands.settings import GitHubSettings

log = logging.getLogger("nelson.github")

TIMEOUT = aiohttp.ClientTimeout(total=20)
MAX_ASSET = 1024 * 1024  # a manifest is far smaller
STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")


class GitHubError(Exception):
    """GitHub refused or could not be reached; the message says which, without the token."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient  # unreachable or a 5xx: worth trying again later


class GitHubClient:
    def __init__(self, settings: GitHubSettings) -> None:
        self.settings = settings
        self.base = settings.api_url.rstrip("/")

    def _headers(self, accept: str = "application/vnd.github+json") -> dict[str, str]:
        headers = {
            "Accept": accept,
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "nelson-chatops",
        }
        if self.settings.token is not None:
            headers["Authorization"] = f"Bearer {self.settings.token.get_secret_value()}"
        return headers

    async def _refusal(self, response: aiohttp.ClientResponse, what: str) -> GitHubError:
        try:
            body = await response.json(content_type=None)
            message = str(body.get("message", "")) if isinstance(body, dict) else ""
        except (ValueError, aiohttp.ClientError):
            message = ""
        return GitHubError(
            f"GitHub refused to {what}: HTTP {response.status} {message}".strip(),
            transient=response.status >= 500 or response.status == 429,
        )

    async def asset(self, repository: str, asset_id: int) -> str:
        """The text of a release asset (GitHub streams it, or redirects to where it is)."""
        url = f"{self.base}/repos/{repository}/releases/assets/{asset_id}"
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as session,
                session.get(url, headers=self._headers("application/octet-stream")) as response,
            ):
                if response.status != 200:
                    raise await self._refusal(response, f"send asset {asset_id}")
                data = await response.content.read(MAX_ASSET + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GitHubError(
                f"cannot reach GitHub at {self.base} ({type(exc).__name__})", transient=True
            ) from None
        if len(data) > MAX_ASSET:
            raise GitHubError(f"asset {asset_id} is larger than {MAX_ASSET // 1024} KiB")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise GitHubError(f"asset {asset_id} is not UTF-8 text") from None

    async def deployment_status(
        self,
        repository: str,
        deployment_id: int,
        state: str,
        description: str,
        environment: str | None = None,
    ) -> dict[str, Any]:
        url = f"{self.base}/repos/{repository}/deployments/{deployment_id}/statuses"
        body: dict[str, Any] = {"state": state, "description": description[:140]}
        if environment:
            body["environment"] = environment
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as session,
                session.post(url, json=body, headers=self._headers()) as response,
            ):
                if response.status != 201:
                    raise await self._refusal(response, f"record a {state} deployment status")
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GitHubError(
                f"cannot reach GitHub at {self.base} ({type(exc).__name__})", transient=True
            ) from None
        return answer if isinstance(answer, dict) else {}
