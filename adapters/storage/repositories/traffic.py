"""`SqlTraffic`: traffic shifts and the heartbeats of the daemons that drive them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from adapters.storage import tables as t
from adapters.storage.repositories.base import SqlRepository
from adapters.storage.repositories.rows import _shift
from commands.repositories import FORGOTTEN_AFTER
from domain.records import (
    Daemon,
    TrafficShift,
)
from domain.traffic import OPEN_SHIFT_STATES, Direction, ShiftPolicy, ShiftState

SHIFT_WORDS = (("state", ShiftState), ("direction", Direction), ("policy", ShiftPolicy))


class SqlTraffic(SqlRepository):
    async def create_shift(
        self,
        from_stack_id: int,
        to_stack_id: int,
        policy: ShiftPolicy,
        duration_seconds: int,
        state: ShiftState,
        at: datetime,
        route: str | None = None,
    ) -> TrafficShift:
        shift, _ = await self.open_shift(
            route, from_stack_id, to_stack_id, policy, duration_seconds, state, at
        )
        return shift

    async def open_shift(
        self,
        route: str | None,
        from_stack_id: int,
        to_stack_id: int,
        policy: ShiftPolicy,
        duration_seconds: int,
        state: ShiftState,
        at: datetime,
        start_new_weight: int = 0,
    ) -> tuple[TrafficShift, list[TrafficShift]]:
        """Record a new shift on `route`; in the same transaction every shift still active
        there becomes `superseded` (returned), so a route never has two at once."""
        for attempt in range(3):
            try:
                async with self._begin() as conn:
                    superseded: list[TrafficShift] = []
                    if route is not None:
                        changed = await conn.execute(
                            update(t.traffic_shifts)
                            .where(
                                t.traffic_shifts.c.route == route,
                                t.traffic_shifts.c.state.in_(OPEN_SHIFT_STATES),
                            )
                            .values(state=ShiftState.SUPERSEDED, updated_at=at)
                            .returning(*t.traffic_shifts.c)
                        )
                        superseded = [_shift(r) for r in changed.all()]
                    row = (
                        await conn.execute(
                            insert(t.traffic_shifts)
                            .values(
                                from_stack_id=from_stack_id,
                                to_stack_id=to_stack_id,
                                policy=policy,
                                duration_seconds=duration_seconds,
                                direction=Direction.FORWARD,
                                state=state,
                                started_at=at if state is ShiftState.RUNNING else None,
                                last_step_at=at if state is ShiftState.RUNNING else None,
                                paused_seconds=0,
                                delayed_seconds=0.0,
                                start_new_weight=start_new_weight,
                                current_new_weight=start_new_weight,
                                updated_at=at,
                                route=route,
                            )
                            .returning(*t.traffic_shifts.c)
                        )
                    ).one()
                return _shift(row), superseded
            except IntegrityError:
                # another process opened a shift on this route at the same moment: supersede it
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def heartbeat(self, holder: str, kind: str, at: datetime) -> None:
        """Say that `holder` (a daemon) is alive at `at`."""
        async with self._begin() as conn:
            changed = await conn.execute(
                update(t.daemons).where(t.daemons.c.holder == holder).values(seen_at=at)
            )
            if changed.rowcount == 0:
                await conn.execute(
                    delete(t.daemons).where(t.daemons.c.seen_at < at - FORGOTTEN_AFTER)
                )
                await conn.execute(
                    insert(t.daemons).values(holder=holder, kind=kind, started_at=at, seen_at=at)
                )

    async def daemons(self, seen_since: datetime) -> list[Daemon]:
        """Daemons whose last heartbeat is not older than `seen_since`, oldest first."""
        async with self._connect() as conn:
            rows = (
                await conn.execute(
                    select(t.daemons)
                    .where(t.daemons.c.seen_at >= seen_since)
                    .order_by(t.daemons.c.started_at)
                )
            ).all()
        return [Daemon(**r._mapping) for r in rows]

    async def forget_daemon(self, holder: str) -> None:
        async with self._begin() as conn:
            await conn.execute(delete(t.daemons).where(t.daemons.c.holder == holder))

    async def shift(self, shift_id: int) -> TrafficShift | None:
        async with self._connect() as conn:
            row = (
                await conn.execute(
                    select(t.traffic_shifts).where(t.traffic_shifts.c.id == shift_id)
                )
            ).first()
        return _shift(row) if row else None

    async def shifts(
        self, states: Sequence[ShiftState] = (), stack_id: int | None = None
    ) -> list[TrafficShift]:
        """Shifts in `states` (all when empty) touching `stack_id` (any when None), oldest first."""
        query = select(t.traffic_shifts).order_by(t.traffic_shifts.c.id)
        if states:
            query = query.where(t.traffic_shifts.c.state.in_(list(states)))
        if stack_id is not None:
            query = query.where(
                or_(
                    t.traffic_shifts.c.to_stack_id == stack_id,
                    t.traffic_shifts.c.from_stack_id == stack_id,
                )
            )
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_shift(r) for r in rows]

    async def update_shift(
        self, shift_id: int, expected_state: ShiftState | None = None, **values: Any
    ) -> TrafficShift | None:
        """Change a shift; with `expected_state`, only if it is still in that state (None
        otherwise: someone else changed it first)."""
        query = update(t.traffic_shifts).where(t.traffic_shifts.c.id == shift_id)
        if expected_state is not None:
            query = query.where(t.traffic_shifts.c.state == expected_state)
        values.setdefault("updated_at", self._now())
        # a word outside the vocabulary is refused before it is written, not when read back
        for name, vocabulary in SHIFT_WORDS:
            if name in values:
                values[name] = vocabulary(values[name])
        async with self._begin() as conn:
            changed = await conn.execute(query.values(**values).returning(*t.traffic_shifts.c))
            row = changed.first()
        return _shift(row) if row else None
