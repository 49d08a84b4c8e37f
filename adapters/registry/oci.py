"""The Registry port over the OCI distribution API (v2), on aiohttp.

Written here rather than taken from a library: the maintained Python registry clients either
buffer whole blobs in memory or are synchronous, and promotion speed is a target. This client
streams each blob from the source straight into the destination (no disk, no full buffering),
copies layers in parallel, skips blobs the destination already has (HEAD), mounts across
repositories when source and destination are the same registry, copies image indexes with
all their platform manifests, and authenticates with basic auth or bearer tokens obtained
from the registry's WWW-Authenticate challenge."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from commands.ports import ImageNotFound, RegistryError
from domain.images import BadImageReference, ImageRef, parse_image

log = logging.getLogger("nelson.registry")

INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
ACCEPT = ", ".join(sorted(INDEX_TYPES | MANIFEST_TYPES))
CHUNK = 1024 * 1024
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str


class OciRegistry:
    def __init__(
        self,
        credentials: Mapping[str, Credentials] | None = None,
        *,
        parallel: int = 4,
        timeout: float = 60.0,
    ) -> None:
        self.credentials = dict(credentials or {})
        self.parallel = parallel
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[tuple[str, str], str] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.timeout),
                connector=aiohttp.TCPConnector(limit=32),
                auto_decompress=False,
            )
        return self._session

    # -- the port ---------------------------------------------------------------------------

    async def resolve(self, image: str) -> str:
        ref = _parse(image)
        response, body = await self._manifest(ref, ref.reference, method="HEAD")
        digest = response.get("docker-content-digest")
        if digest:
            return digest
        _, body = await self._manifest(ref, ref.reference)
        return "sha256:" + hashlib.sha256(body).hexdigest()

    async def replicate(self, image: str, digest: str, to_registry: str) -> str:
        source = _parse(image)
        target = ImageRef(_base(to_registry), source.repository, source.tag, digest)
        semaphore = asyncio.Semaphore(self.parallel)
        await self._copy_manifest(source, target, digest, semaphore)
        if source.tag:  # the runtime registry gets the tag too, for people reading it
            headers, body = await self._manifest(source, digest)
            await self._put_manifest(target, source.tag, body, headers["content-type"])
        return str(target)

    # -- manifests --------------------------------------------------------------------------

    async def _manifest(
        self, ref: ImageRef, reference: str, method: str = "GET"
    ) -> tuple[dict[str, str], bytes]:
        url = f"{_url(ref.registry)}/v2/{ref.repository}/manifests/{reference}"
        status, headers, body = await self._call(
            method, url, ref, "pull", headers={"Accept": ACCEPT}
        )
        if status == 404:
            raise ImageNotFound(
                f"image {ref.repository}:{reference} is not in registry {_host(ref.registry)}"
                if not reference.startswith("sha256:")
                else f"image {ref.repository}@{reference} is not in registry {_host(ref.registry)}"
            )
        _check(status, body, f"{method} manifest {ref.repository}/{reference}", ref)
        return headers, body

    async def _exists(self, ref: ImageRef, kind: str, digest: str) -> bool:
        url = f"{_url(ref.registry)}/v2/{ref.repository}/{kind}/{digest}"
        status, _, body = await self._call("HEAD", url, ref, "pull", headers={"Accept": ACCEPT})
        if status in (200, 307):
            return True
        if status == 404:
            return False
        _check(status, body, f"HEAD {kind} {digest}", ref)
        return False

    async def _copy_manifest(
        self, source: ImageRef, target: ImageRef, digest: str, semaphore: asyncio.Semaphore
    ) -> None:
        if await self._exists(target, "manifests", digest):
            return  # already promoted: nothing to move
        headers, body = await self._manifest(source, digest)
        media_type = headers.get("content-type", "").split(";")[0].strip()
        document = json.loads(body)
        media_type = document.get("mediaType") or media_type
        if media_type in INDEX_TYPES:
            await asyncio.gather(
                *(
                    self._copy_manifest(source, target, child["digest"], semaphore)
                    for child in document.get("manifests", [])
                )
            )
        else:
            blobs = [document["config"], *document.get("layers", [])]
            await asyncio.gather(
                *(
                    self._copy_blob(source, target, b["digest"], b.get("size"), semaphore)
                    for b in blobs
                )
            )
        await self._put_manifest(target, digest, body, media_type)

    async def _put_manifest(
        self, target: ImageRef, reference: str, body: bytes, media_type: str
    ) -> None:
        url = f"{_url(target.registry)}/v2/{target.repository}/manifests/{reference}"
        status, _, text = await self._call(
            "PUT", url, target, "pull,push", data=body, headers={"Content-Type": media_type}
        )
        # Two deploys copying the same image at once: a blob the other copy is still writing
        # is unknown for a moment. The workflow's next try finds it (or copies it again).
        pending = status == 400 and b"MANIFEST_BLOB_UNKNOWN" in text
        _check(
            status, text, f"PUT manifest {target.repository}/{reference}", target, transient=pending
        )

    # -- blobs ------------------------------------------------------------------------------

    async def _copy_blob(
        self,
        source: ImageRef,
        target: ImageRef,
        digest: str,
        size: int | None,
        semaphore: asyncio.Semaphore,
    ) -> None:
        async with semaphore:
            if await self._exists(target, "blobs", digest):
                return
            uploads = f"{_url(target.registry)}/v2/{target.repository}/blobs/uploads/"
            same_registry = _url(source.registry) == _url(target.registry)
            params = {"mount": digest, "from": source.repository} if same_registry else None
            status, headers, text = await self._call(
                "POST", uploads, target, "pull,push", params=params
            )
            if status == 201:
                return  # mounted from the source repository: no bytes moved
            _check(status, text, "start upload", target)
            location = _absolute(target.registry, headers.get("location", ""))
            await self._stream(source, target, digest, size, location)

    async def _stream(
        self, source: ImageRef, target: ImageRef, digest: str, size: int | None, location: str
    ) -> None:
        url = f"{_url(source.registry)}/v2/{source.repository}/blobs/{digest}"
        session = self._http()
        auth = await self._auth_header(source, "pull")
        async with session.get(url, headers=auth, allow_redirects=True) as response:
            if response.status == 404:
                raise ImageNotFound(f"blob {digest} is missing from {_host(source.registry)}")
            if response.status != 200:
                raise RegistryError(
                    f"{_host(source.registry)} answered {response.status} for blob {digest}",
                    transient=response.status >= 500 or response.status == 429,
                )

            async def body() -> AsyncIterator[bytes]:
                async for chunk in response.content.iter_chunked(CHUNK):
                    yield chunk

            headers = {"Content-Type": "application/octet-stream"}
            headers.update(await self._auth_header(target, "pull,push"))
            if size is not None:
                headers["Content-Length"] = str(size)
            separator = "&" if "?" in location else "?"
            async with session.put(
                f"{location}{separator}digest={digest}", data=body(), headers=headers
            ) as put:
                text = await put.read()
                if put.status != 201:
                    _check(put.status, text, f"upload {digest}", target)

    # -- HTTP with authentication and retries -----------------------------------------------

    async def _auth_header(self, ref: ImageRef, actions: str) -> dict[str, str]:
        token = self._tokens.get((_url(ref.registry), _scope(ref, actions)))
        if token:
            return {"Authorization": token}
        creds = self.credentials.get(_host(ref.registry))
        if creds:
            return {"Authorization": _basic(creds)}
        return {}

    async def _call(
        self,
        method: str,
        url: str,
        ref: ImageRef,
        actions: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        # No retries here: a transient fault (unreachable, 5xx, 429) is reported at once and
        # the deploy workflow's step decides whether to try again. The loop only answers a
        # 401 challenge (a fresh token), once.
        for _ in range(2):
            all_headers = {**(headers or {}), **await self._auth_header(ref, actions)}
            try:
                async with self._http().request(
                    method,
                    url,
                    headers=all_headers,
                    params=params,
                    data=data,
                    allow_redirects=method in ("GET", "HEAD"),
                ) as response:
                    body = await response.read()
                    found = {k.lower(): v for k, v in response.headers.items()}
                    if response.status == 401 and await self._authenticate(ref, actions, found):
                        continue
                    return response.status, found, body
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise RegistryError(
                    f"registry {_host(ref.registry)} is unreachable "
                    f"({exc.__class__.__name__}: {exc})",
                    transient=True,
                ) from None
        raise RegistryError(f"registry {_host(ref.registry)} kept refusing {method} {url}")

    async def _authenticate(self, ref: ImageRef, actions: str, headers: dict[str, str]) -> bool:
        """Answer a 401 challenge once per scope; False when there is nothing more to try."""
        key = (_url(ref.registry), _scope(ref, actions))
        if key in self._tokens:
            del self._tokens[key]  # the token expired: fetch a new one, once
        challenge = headers.get("www-authenticate", "")
        creds = self.credentials.get(_host(ref.registry))
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if creds is None:
                raise RegistryError(
                    f"registry {_host(ref.registry)} wants a user name and password; configure "
                    "them for it (registry_credentials)"
                )
            return False if key in self._tokens else self._remember(key, creds)
        if scheme != "bearer":
            raise RegistryError(f"registry {_host(ref.registry)} refused access (401)")
        fields = dict(_CHALLENGE.findall(challenge))
        realm = fields.get("realm")
        if not realm:
            raise RegistryError(
                f"registry {_host(ref.registry)} sent a bearer challenge without realm"
            )
        query = {"scope": _scope(ref, actions)}
        if fields.get("service"):
            query["service"] = fields["service"]
        headers = {"Authorization": _basic(creds)} if creds else {}
        async with self._http().get(realm, params=query, headers=headers) as response:
            if response.status != 200:
                raise RegistryError(
                    f"the token service of {_host(ref.registry)} refused us ({response.status}); "
                    "check the registry credentials"
                )
            payload: dict[str, Any] = await response.json(content_type=None)
        token = payload.get("token") or payload.get("access_token")
        if not token:
            raise RegistryError(f"the token service of {_host(ref.registry)} sent no token")
        self._tokens[key] = f"Bearer {token}"
        return True

    def _remember(self, key: tuple[str, str], creds: Credentials) -> bool:
        self._tokens[key] = _basic(creds)
        return True


def _basic(creds: Credentials) -> str:
    return str(aiohttp.encode_basic_auth(creds.username, creds.password))


def _parse(image: str) -> ImageRef:
    try:
        ref = parse_image(image)
    except BadImageReference as exc:
        raise RegistryError(str(exc)) from None
    return ImageRef(_base(ref.registry), ref.repository, ref.tag, ref.digest)


def _base(registry: str) -> str:
    registry = registry.rstrip("/")
    if "://" in registry:
        return registry
    host = registry.split(":")[0]
    local = host in ("localhost", "::1") or host.startswith("127.")
    return ("http://" if local else "https://") + registry


def _url(registry: str) -> str:
    return _base(registry)


def _host(registry: str) -> str:
    return registry.split("://", 1)[-1]


def _scope(ref: ImageRef, actions: str) -> str:
    return f"repository:{ref.repository}:{actions}"


def _absolute(registry: str, location: str) -> str:
    if location.startswith(("http://", "https://")):
        return location
    return _url(registry) + location


def _check(status: int, body: bytes, what: str, ref: ImageRef, *, transient: bool = False) -> None:
    if 200 <= status < 300:
        return
    detail = ""
    try:
        errors = json.loads(body).get("errors") or []
        detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError):
        detail = body[:200].decode(errors="replace")
    reason = f"{status}: {detail}" if detail else str(status)
    raise RegistryError(
        f"registry {_host(ref.registry)} refused {what} ({reason})",
        transient=transient or status >= 500 or status == 429,
    )
