"""The one reader of registered manifests.

Every part that needs a manifest (the handlers, the deploy workflow, traffic control, the
lifecycle, the loader of manifest directories) asks here, so that each reads it the same way:
under the configured default namespace, and for a stack, by the revision the stack was
deployed with (running stacks keep the manifest they were deployed with). A revision never
changes once registered, so each is parsed once and kept by its id.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from typing import TypeVar

from commands.ports import Store
from commands.settings import Settings
from domain import expiration
from domain.expiration import ExpirationPolicy
from domain.manifest import Manifest, ManifestInvalid, parse_manifest
from domain.records import ManifestRecord, Stack
from domain.versions import Version

_V = TypeVar("_V")
CACHED = 256  # parsed revisions kept; a revision is a few kilobytes parsed
# One parser process for the whole program, started at the first check: starting a process
# costs more than parsing.
_pool: ProcessPoolExecutor | None = None


class ManifestMissing(Exception):
    """The revision a stack or release points at is not in the store."""


class ParserUnavailable(Exception):
    """The parser process died (killed, out of memory); the next call starts a fresh one."""


@dataclass(frozen=True, slots=True)
class Policies:
    """What the lifecycle reads from one revision: the expiration policy per (unit, plan)
    and the notification channels per unit."""

    expiration: dict[tuple[str, str], ExpirationPolicy]
    channels: dict[str, list[str]]


NO_POLICIES = Policies({}, {})  # an invalid revision: its stacks are judged by the defaults


class Manifests:
    def __init__(self, store: Store, settings: Settings, cached: int = CACHED) -> None:
        self.store = store
        self.settings = settings
        self._cached = cached
        self._parsed: OrderedDict[int, Manifest] = OrderedDict()
        self._policies: OrderedDict[int, Policies] = OrderedDict()

    @property
    def default_namespace(self) -> str:
        return self.settings.default_namespace

    def parse(self, text: str) -> Manifest:
        """Parse text under the configured namespaces (raises ManifestInvalid)."""
        return parse_manifest(text, default_namespace=self.default_namespace)

    async def check(self, text: str) -> Manifest:
        """Parse text from outside in a separate process: a hostile document (an alias bomb)
        costs that process, not the bot's event loop."""
        global _pool
        loop = asyncio.get_running_loop()
        job = functools.partial(parse_manifest, text, default_namespace=self.default_namespace)
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"))
        try:
            return await loop.run_in_executor(_pool, job)
        except BrokenProcessPool:
            _pool = None
            raise ParserUnavailable() from None

    def of_record(self, record: ManifestRecord) -> Manifest:
        """The parsed revision (raises ManifestInvalid when the configuration changed since
        it was registered and it no longer holds)."""
        found = self._parsed.get(record.id)
        if found is not None:
            self._parsed.move_to_end(record.id)
            return found
        manifest = self.parse(record.text)
        self._keep(self._parsed, record.id, manifest)
        return manifest

    async def by_id(self, manifest_id: int) -> Manifest:
        found = self._parsed.get(manifest_id)
        if found is not None:
            self._parsed.move_to_end(manifest_id)
            return found
        record = await self.store.manifest_by_id(manifest_id)
        if record is None:
            raise ManifestMissing(f"manifest {manifest_id} is missing")
        return self.of_record(record)

    async def revision_of(self, unit: str, version: Version) -> int | None:
        """The manifest id a release was made from, if the release exists."""
        release = await self.store.release(unit, version)
        return release.manifest_id if release is not None else None

    async def of_stack(self, stack: Stack) -> Manifest:
        """The revision the stack was deployed with (not the latest one)."""
        manifest_id = await self.revision_of(stack.unit, stack.version)
        if manifest_id is None:
            raise ManifestMissing(f"the manifest {stack.name} was released from is missing")
        try:
            return await self.by_id(manifest_id)
        except ManifestMissing:
            raise ManifestMissing(
                f"the manifest {stack.name} was released from is missing"
            ) from None

    async def policies(self, manifest_id: int) -> Policies:
        """Expiration policies and channels of one revision, read once."""
        found = self._policies.get(manifest_id)
        if found is not None:
            return found
        try:
            policies = _policies(await self.by_id(manifest_id))
        except (ManifestInvalid, ManifestMissing):
            policies = NO_POLICIES
        self._keep(self._policies, manifest_id, policies)
        return policies

    def _keep(self, cache: OrderedDict[int, _V], key: int, value: _V) -> None:
        cache[key] = value
        while len(cache) > self._cached:
            cache.popitem(last=False)


def _policies(manifest: Manifest) -> Policies:
    found = Policies({}, {})
    kinds = {u.name: "job" if u.workflow == "job" else "service" for u in manifest.units}
    for unit in manifest.units:
        found.channels[unit.name] = list(manifest.notifications.slack_channels)
        for plan in manifest.plans:
            if plan.expiration_policy is not None:
                policy = plan.expiration_policy
            else:
                kind = "job" if plan.schedule is not None else kinds[unit.name]
                policy = expiration.default_policy(kind)
            found.expiration[(unit.name, plan.name)] = policy
    return found
