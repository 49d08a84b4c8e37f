"""`SqlWorkflowClaims`: per-stack claims on the deploy workflow, with fencing tokens.

Every change is one conditional statement, so PostgreSQL's row locks order them: a takeover
(`UPDATE … WHERE expires_at <= now`) and a renewal or a fenced write of the old holder
(`UPDATE … WHERE holder = … AND token = …`) on the same row cannot both succeed, and a fenced
write made inside a unit of work holds the row until that unit commits. A released claim keeps
its row (expired at once), so the next token still grows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from adapters.storage import tables as t
from adapters.storage.repositories.base import SqlRepository
from commands.ports import ClaimLost
from commands.repositories import WorkflowClaim
from domain.states import StackStatus

_c = t.workflow_claims.c


class SqlWorkflowClaims(SqlRepository):
    async def claim_workflow(
        self, stack_id: int, holder: str, ttl: timedelta
    ) -> WorkflowClaim | None:
        now = self._now()
        until = now + ttl
        async with self._begin() as conn:
            kept = await conn.execute(
                update(t.workflow_claims)
                .where(_c.stack_id == stack_id, _c.holder == holder, _c.expires_at > now)
                .values(expires_at=until)
                .returning(_c.token)
            )
            token = kept.scalar()
            if token is not None:
                return WorkflowClaim(stack_id, holder, token, until)
            taken = await conn.execute(
                update(t.workflow_claims)
                .where(_c.stack_id == stack_id, _c.expires_at <= now)
                .values(holder=holder, token=_c.token + 1, expires_at=until)
                .returning(_c.token)
            )
            token = taken.scalar()
            if token is not None:
                return WorkflowClaim(stack_id, holder, token, until)
            if (
                await conn.execute(select(_c.stack_id).where(_c.stack_id == stack_id))
            ).first() is not None:
                return None  # another holder's, unexpired
        try:
            async with self._begin() as conn:
                await conn.execute(
                    insert(t.workflow_claims).values(
                        stack_id=stack_id, holder=holder, token=1, expires_at=until
                    )
                )
        except IntegrityError:
            return None  # another replica inserted it first (or the stack is gone)
        return WorkflowClaim(stack_id, holder, 1, until)

    async def renew_workflow_claims(
        self, holder: str, tokens: Mapping[int, int], ttl: timedelta
    ) -> set[int]:
        if not tokens:
            return set()
        now = self._now()
        until = now + ttl
        held = or_(*(and_(_c.stack_id == sid, _c.token == token) for sid, token in tokens.items()))
        async with self._begin() as conn:
            rows = await conn.execute(
                update(t.workflow_claims)
                .where(_c.holder == holder, _c.expires_at > now, held)
                .values(expires_at=until)
                .returning(_c.stack_id)
            )
            return {row.stack_id for row in rows}

    async def check_workflow_claim(self, stack_id: int, holder: str, token: int) -> None:
        # An UPDATE rather than a SELECT: it takes the row lock (PostgreSQL) or the write lock
        # (SQLite) at once, so no takeover lands between this check and the writes it fences.
        async with self._begin() as conn:
            held = await conn.execute(
                update(t.workflow_claims)
                .where(
                    _c.stack_id == stack_id,
                    _c.holder == holder,
                    _c.token == token,
                    _c.expires_at > self._now(),
                )
                .values(holder=holder)
            )
            if held.rowcount != 1:
                raise ClaimLost(
                    f"the claim on stack {stack_id} (token {token}) is no longer held by {holder}"
                )

    async def release_workflow_claim(self, stack_id: int, holder: str, token: int) -> None:
        async with self._begin() as conn:
            await conn.execute(
                update(t.workflow_claims)
                .where(_c.stack_id == stack_id, _c.holder == holder, _c.token == token)
                .values(expires_at=self._now())
            )

    async def unclaimed_workflows(
        self,
        statuses: Sequence[StackStatus],
        datacenters: Sequence[str],
        limit: int = 1000,
        *,
        steps: Sequence[str] = (),
    ) -> list[int]:
        if not (statuses or steps) or not datacenters:
            return []
        query = (
            select(t.stacks.c.id)
            .select_from(t.stacks.outerjoin(t.workflow_claims, _c.stack_id == t.stacks.c.id))
            .where(
                or_(
                    t.stacks.c.status.in_([s.value for s in statuses]),
                    t.stacks.c.workflow_step.in_(list(steps)),
                ),
                t.stacks.c.datacenter.in_(list(datacenters)),
                or_(_c.stack_id.is_(None), _c.expires_at <= self._now()),
            )
            .order_by(t.stacks.c.id)
            .limit(limit)
        )
        async with self._connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def workflow_claims(self, unexpired_at: datetime | None = None) -> list[WorkflowClaim]:
        query = select(t.workflow_claims).order_by(_c.stack_id)
        if unexpired_at is not None:
            query = query.where(_c.expires_at > unexpired_at)
        async with self._connect() as conn:
            rows = await conn.execute(query)
            return [WorkflowClaim(r.stack_id, r.holder, r.token, r.expires_at) for r in rows]
