"""Rows to domain records, shared by the repositories."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Row

from adapters.storage import tables as t
from domain.approvals import ApprovalKind, ApprovalStatus
from domain.records import (
    Approval,
    BlueprintRecord,
    ManifestRecord,
    Operation,
    Release,
    Stack,
    TrafficShift,
)
from domain.states import StackStatus
from domain.traffic import Direction, ShiftPolicy, ShiftState
from domain.versions import Version


@functools.lru_cache(maxsize=65536)
def _version_of(major: int, minor: int, patch: int) -> Version:
    return Version(major, minor, patch)  # immutable, so one object per version is shared


def _version(row: Row[Any]) -> Version:
    return _version_of(row.major, row.minor, row.patch)


def _stack(row: Row[Any]) -> Stack:
    return Stack(
        id=row.id,
        guid=row.guid,
        name=row.name,
        release_id=row.release_id,
        unit=row.unit,
        version=_version(row),
        datacenter=row.datacenter,
        namespace=row.namespace,
        plan=row.plan,
        status=StackStatus(row.status),
        status_message=row.status_message,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
        workflow_step=row.workflow_step,
        announced_at=row.announced_at,
    )


def _release(row: Row[Any]) -> Release:
    return Release(
        id=row.id,
        unit=row.unit,
        version=_version(row),
        image=row.image,
        digest=row.digest,
        manifest_id=row.manifest_id,
        created_by=row.created_by,
        created_at=row.created_at,
    )


_MANIFEST_COLUMNS = (
    t.manifests.c.id,
    t.repositories.c.name.label("repository"),
    t.manifests.c.revision,
    t.manifests.c.text,
    t.manifests.c.digest,
    t.manifests.c.registered_by,
    t.manifests.c.registered_at,
)
_MANIFEST_FROM = t.manifests.join(
    t.repositories, t.manifests.c.repository_id == t.repositories.c.id
)


def _manifest(row: Row[*tuple[Any, ...]]) -> ManifestRecord:
    return ManifestRecord(
        id=row.id,
        repository=row.repository,
        revision=row.revision,
        text=row.text,
        digest=row.digest,
        registered_by=row.registered_by,
        registered_at=row.registered_at,
    )


def _blueprint(row: Row[Any]) -> BlueprintRecord:
    return BlueprintRecord(
        id=row.id,
        name=row.name,
        kind=row.kind,
        revision=row.revision,
        text=row.text,
        digest=row.digest,
        registered_by=row.registered_by,
        registered_at=row.registered_at,
    )


def _approval(row: Row[Any], approvers: tuple[str, ...], details: str | None) -> Approval:
    return Approval(
        id=row.id,
        kind=ApprovalKind(row.kind),
        stack_id=row.stack_id,
        namespace=row.namespace,
        datacenter=row.datacenter,
        summary=row.summary,
        requested_by=row.requested_by,
        status=ApprovalStatus(row.status),
        required=row.required,
        approvers=approvers,
        created_at=row.created_at,
        deadline=row.deadline,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        details=tuple(details.splitlines()) if details else (),
        reason=row.reason or "",
        acted_at=row.acted_at,
    )


def _shift(row: Row[Any]) -> TrafficShift:
    """A stored shift, its words read back as the domain's enums (an unknown one fails)."""
    values = dict(row._mapping)
    values.update(
        policy=ShiftPolicy(row.policy),
        direction=Direction(row.direction),
        state=ShiftState(row.state),
    )
    return TrafficShift(**values)


def _operation(row: Row[Any], stack_ids: Sequence[int]) -> Operation:
    return Operation(
        id=row.id,
        kind=row.kind,
        title=row.title,
        requested_by=row.requested_by,
        channel=row.channel,
        stack_ids=tuple(stack_ids),
        created_at=row.created_at,
        finished_at=row.finished_at,
        outcome=row.outcome,
    )
