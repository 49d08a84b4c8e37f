"""The one manifest reader: the configured default namespace, a stack's own revision, and
each revision parsed once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.storage import SqlStore, open_store
from commands.manifests import ManifestMissing, Manifests
from commands.settings import Settings
from domain.expiration import ExpirationPolicy
from domain.manifest import ManifestInvalid
from domain.records import NewStack, UnitRecord
from domain.versions import Version
from tests.fakes.clock import FakeClock

MANIFEST = """\
units:
  - name: svc
    description: a service
    ports:
      - default->8080/http
plans:
  - name: default
    expiration_policy: {policy}
namespaces:
  - name: qa
    units:
      - ref: svc
        plans: [default]
"""
QA = Settings(default_namespace="qa")


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqlStore]:
    opened = await open_store(f"sqlite:///{tmp_path / 'nelson.db'}", clock=clock)
    yield opened
    await opened.close()


async def register(store: SqlStore, policy: str) -> int:
    record = await store.register_manifest(
        "acme/svc",
        MANIFEST.format(policy=policy),
        [UnitRecord("svc", "acme/svc", "service", "", 1)],
        "U1",
    )
    return record.id


async def test_manifests_are_read_under_the_configured_default_namespace(
    store: SqlStore,
) -> None:
    manifest_id = await register(store, "retain-always")
    assert (await Manifests(store, QA).by_id(manifest_id)).unit("svc") is not None
    with pytest.raises(ManifestInvalid, match="default namespace 'dev'"):
        await Manifests(store, Settings()).by_id(manifest_id)


async def test_a_stack_reads_the_revision_it_was_released_from(
    store: SqlStore, clock: FakeClock
) -> None:
    first = await register(store, "retain-always")
    v = Version(1, 0, 0)
    _, [stack] = await store.create_deployment(
        None,
        "svc",
        v,
        "registry:5000/svc:1.0.0",
        first,
        [
            NewStack(
                release_id=0,
                name="svc--1-0-0--00000001",
                guid="000000000001",
                unit="svc",
                version=v,
                datacenter="local",
                namespace="qa",
                plan="default",
                expires_at=clock.now() + timedelta(hours=1),
                created_by="U1",
            )
        ],
        "U1",
    )
    second = await register(store, "retain-latest")
    assert second != first
    manifests = Manifests(store, QA)
    parsed = await manifests.of_stack(stack)
    assert parsed is await manifests.by_id(first)  # parsed once, kept by its id
    plan = parsed.plan("default")
    assert plan is not None and plan.expiration_policy == "retain-always"
    policies = await manifests.policies(first)
    assert policies.expiration[("svc", "default")] is ExpirationPolicy.RETAIN_ALWAYS
    assert (await manifests.policies(second)).expiration[
        ("svc", "default")
    ] is ExpirationPolicy.RETAIN_LATEST
    with pytest.raises(ManifestMissing):
        await manifests.by_id(10_000)
