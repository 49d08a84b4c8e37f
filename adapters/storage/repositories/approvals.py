"""`SqlApprovals`: approvals with their votes, and the audit trail."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.storage import tables as t
from adapters.storage.repositories.base import SqlRepository
from adapters.storage.repositories.rows import (
    _approval,
)
from domain.approvals import ApprovalKind, ApprovalStatus, Decision
from domain.records import (
    Approval,
    AuditEvent,
    NewApproval,
)


class SqlApprovals(SqlRepository):
    async def _approvals(self, conn: AsyncConnection, where: Any) -> list[Approval]:
        rows = (
            await conn.execute(select(t.approvals).where(where).order_by(t.approvals.c.id))
        ).all()
        if not rows:
            return []
        votes = (
            await conn.execute(
                select(t.approval_votes.c.approval_id, t.approval_votes.c.user_id)
                .where(
                    t.approval_votes.c.approval_id.in_([r.id for r in rows]),
                    t.approval_votes.c.decision == Decision.APPROVE,
                )
                .order_by(t.approval_votes.c.id)
            )
        ).all()
        by_approval: dict[int, list[str]] = {}
        for vote in votes:
            by_approval.setdefault(vote.approval_id, []).append(vote.user_id)
        details = {
            d.approval_id: d.text
            for d in await conn.execute(
                select(t.approval_details).where(
                    t.approval_details.c.approval_id.in_([r.id for r in rows])
                )
            )
        }
        return [_approval(r, tuple(by_approval.get(r.id, ())), details.get(r.id)) for r in rows]

    async def approvals(
        self, status: ApprovalStatus | None = ApprovalStatus.PENDING
    ) -> list[Approval]:
        where = t.approvals.c.status == status if status is not None else and_(True)
        async with self._connect() as conn:
            return await self._approvals(conn, where)

    async def approval(self, approval_id: int) -> Approval | None:
        async with self._connect() as conn:
            found = await self._approvals(conn, t.approvals.c.id == approval_id)
        return found[0] if found else None

    async def approvals_of_stacks(
        self, kind: ApprovalKind, stack_ids: Sequence[int]
    ) -> list[Approval]:
        if not stack_ids:
            return []
        async with self._connect() as conn:
            return await self._approvals(
                conn,
                and_(
                    t.approvals.c.stack_id.in_(list(stack_ids)),
                    t.approvals.c.kind == kind,
                ),
            )

    async def create_approval(self, new: NewApproval, at: datetime | None = None) -> Approval:
        async with self._begin() as conn:
            approval_id = (
                await conn.execute(
                    insert(t.approvals)
                    .values(
                        kind=new.kind,
                        stack_id=new.stack_id,
                        namespace=new.namespace,
                        datacenter=new.datacenter,
                        summary=new.summary,
                        requested_by=new.requested_by,
                        status=ApprovalStatus.PENDING,
                        required=new.required,
                        created_at=at or self._now(),
                        deadline=new.deadline,
                    )
                    .returning(t.approvals.c.id)
                )
            ).scalar_one()
            if new.details:
                await conn.execute(
                    insert(t.approval_details).values(
                        approval_id=approval_id, text="\n".join(new.details)
                    )
                )
            return (await self._approvals(conn, t.approvals.c.id == approval_id))[0]

    async def vote(self, approval_id: int, user_id: str, decision: Decision, at: datetime) -> bool:
        """Record one person's vote; False when they had already voted (a double click)."""
        try:
            async with self._begin() as conn:
                await conn.execute(
                    insert(t.approval_votes).values(
                        approval_id=approval_id, user_id=user_id, decision=decision, at=at
                    )
                )
        except IntegrityError:
            return False
        return True

    async def decide_approval(
        self,
        approval_id: int,
        status: ApprovalStatus,
        decided_by: str,
        at: datetime,
        reason: str = "",
    ) -> Approval | None:
        """Close a pending approval; None when it was no longer pending (someone else won)."""
        async with self._begin() as conn:
            changed = await conn.execute(
                update(t.approvals)
                .where(
                    t.approvals.c.id == approval_id, t.approvals.c.status == ApprovalStatus.PENDING
                )
                .values(status=status, decided_by=decided_by, decided_at=at, reason=reason or None)
            )
            if changed.rowcount != 1:
                return None
            return (await self._approvals(conn, t.approvals.c.id == approval_id))[0]

    async def approved_not_acted_on(self, kind: ApprovalKind) -> list[Approval]:
        async with self._connect() as conn:
            return await self._approvals(
                conn,
                and_(
                    t.approvals.c.kind == kind,
                    t.approvals.c.status == ApprovalStatus.APPROVED,
                    t.approvals.c.acted_at.is_(None),
                ),
            )

    async def mark_acted_on(self, approval_id: int, at: datetime) -> bool:
        async with self._begin() as conn:
            changed = await conn.execute(
                update(t.approvals)
                .where(t.approvals.c.id == approval_id, t.approvals.c.acted_at.is_(None))
                .values(acted_at=at)
            )
            return bool(changed.rowcount == 1)

    async def overdue_approvals(self, now: datetime) -> list[Approval]:
        async with self._connect() as conn:
            return await self._approvals(
                conn,
                and_(t.approvals.c.status == ApprovalStatus.PENDING, t.approvals.c.deadline <= now),
            )

    async def audit(self, event: AuditEvent) -> None:
        async with self._begin() as conn:
            await conn.execute(
                insert(t.audit_events).values(
                    at=event.at or self._now(),
                    actor=event.actor,
                    action=event.action,
                    target=event.target,
                    allowed=event.allowed,
                    detail=event.detail,
                )
            )

    async def audit_many(self, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
        async with self._begin() as conn:
            await conn.execute(
                insert(t.audit_events),
                [
                    {
                        "at": e.at or self._now(),
                        "actor": e.actor,
                        "action": e.action,
                        "target": e.target,
                        "allowed": e.allowed,
                        "detail": e.detail,
                    }
                    for e in events
                ],
            )

    async def audit_events(self, target: str | None = None, limit: int = 100) -> list[AuditEvent]:
        query = select(t.audit_events).order_by(t.audit_events.c.id.desc()).limit(limit)
        if target is not None:
            query = query.where(t.audit_events.c.target == target)
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            AuditEvent(r.actor, r.action, r.target, r.allowed, r.detail, r.at, r.id) for r in rows
        ]
