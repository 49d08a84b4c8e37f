"""`SqlRoutes`: the route table (routes, their ports and servers) and the leases on shifts.

Routers are projections of these rows. A port is unique per datacenter (a constraint), so
two replicas opening routes at once cannot get the same one. A weight write is one
transaction that first checks its fence with conditional UPDATEs (the lease's holder and
token unexpired; the shift still running its way, its weight not past the new one): the
row locks they take order it against a takeover or a pause, as for workflow claims."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.storage import tables as t
from adapters.storage.repositories.base import SqlRepository
from commands.ports import LeaseLost
from commands.repositories import RouteEntry, RouteLease, RouteServer, WeightFence
from domain.traffic import Direction, ShiftState

_r = t.routes.c
_s = t.route_servers.c
_l = t.route_leases.c
_sh = t.traffic_shifts.c


class SqlRoutes(SqlRepository):
    async def route_entry(self, datacenter: str, key: str) -> RouteEntry | None:
        found = await self._entries(datacenter, key)
        return found[0] if found else None

    async def route_entries(self, datacenter: str) -> list[RouteEntry]:
        return await self._entries(datacenter, None)

    async def _entries(self, datacenter: str, key: str | None) -> list[RouteEntry]:
        query = select(t.routes).where(_r.datacenter == datacenter).order_by(_r.key)
        if key is not None:
            query = query.where(_r.key == key)
        async with self._connect() as conn:
            routes = (await conn.execute(query)).all()
            if not routes:
                return []
            servers = (
                await conn.execute(
                    select(t.route_servers)
                    .where(_s.route_id.in_([r.id for r in routes]))
                    .order_by(_s.name)
                )
            ).all()
        by_route: dict[int, list[RouteServer]] = {}
        for s in servers:
            by_route.setdefault(s.route_id, []).append(
                RouteServer(s.name, s.stack, s.address, s.weight, s.per_mille)
            )
        return [
            RouteEntry(r.datacenter, r.key, r.port, tuple(by_route.get(r.id, ()))) for r in routes
        ]

    async def create_route(self, datacenter: str, key: str, port: int) -> RouteEntry | None:
        existing = await self.route_entry(datacenter, key)
        if existing is not None:
            return existing
        try:
            async with self._begin() as conn:
                await conn.execute(
                    insert(t.routes).values(
                        datacenter=datacenter, key=key, port=port, created_at=self._now()
                    )
                )
        except IntegrityError:
            # another replica made this route meanwhile (then it is returned), or took the port
            return await self.route_entry(datacenter, key)
        return RouteEntry(datacenter, key, port, ())

    async def write_route(
        self,
        datacenter: str,
        key: str,
        servers: Sequence[RouteServer],
        fence: WeightFence | None = None,
    ) -> None:
        async with self._begin() as conn:
            if fence is not None:
                await self._check_fence(conn, fence)
            if not servers:
                return
            route_id = (
                await conn.execute(select(_r.id).where(_r.datacenter == datacenter, _r.key == key))
            ).scalar()
            if route_id is None:
                raise LeaseLost(f"there is no route {key} in {datacenter}")
            stacks = sorted({s.stack for s in servers})
            await conn.execute(
                delete(t.route_servers).where(_s.route_id == route_id, _s.stack.in_(stacks))
            )
            await conn.execute(
                insert(t.route_servers),
                [
                    {
                        "route_id": route_id,
                        "name": s.name,
                        "stack": s.stack,
                        "address": s.address,
                        "weight": s.weight,
                        "per_mille": s.per_mille,
                    }
                    for s in servers
                ],
            )

    async def _check_fence(self, conn: AsyncConnection, fence: WeightFence) -> None:
        lease = fence.lease
        held = await conn.execute(
            update(t.route_leases)
            .where(
                _l.route == lease.route,
                _l.holder == lease.holder,
                _l.token == lease.token,
                _l.expires_at > self._now(),
            )
            .values(holder=lease.holder)
        )
        if held.rowcount != 1:
            raise LeaseLost(
                f"the lease on route {lease.route} (token {lease.token}) is no longer held "
                f"by {lease.holder}"
            )
        if fence.shift_id is None or fence.new_weight is None:
            return
        direction = Direction(fence.direction or Direction.FORWARD)
        not_past = (
            _sh.current_new_weight <= fence.new_weight
            if direction is Direction.FORWARD
            else _sh.current_new_weight >= fence.new_weight
        )
        moved = await conn.execute(
            update(t.traffic_shifts)
            .where(
                _sh.id == fence.shift_id,
                _sh.state == ShiftState.RUNNING,
                _sh.direction == direction,
                not_past,
            )
            .values(current_new_weight=fence.new_weight, updated_at=self._now())
        )
        if moved.rowcount != 1:
            raise LeaseLost(
                f"shift #{fence.shift_id} is no longer running {direction} below "
                f"{fence.new_weight / 10:g}%"
            )

    async def remove_route_stack(self, datacenter: str, key: str, stack: str) -> None:
        async with self._begin() as conn:
            route_id = select(_r.id).where(_r.datacenter == datacenter, _r.key == key)
            await conn.execute(
                delete(t.route_servers).where(
                    _s.route_id.in_(route_id.scalar_subquery()), _s.stack == stack
                )
            )

    async def take_route_lease(self, route: str, holder: str, ttl: timedelta) -> RouteLease | None:
        now = self._now()
        until = now + ttl
        async with self._begin() as conn:
            kept = await conn.execute(
                update(t.route_leases)
                .where(_l.route == route, _l.holder == holder, _l.expires_at > now)
                .values(expires_at=until)
                .returning(_l.token)
            )
            token = kept.scalar()
            if token is not None:
                return RouteLease(route, holder, token, until)
            taken = await conn.execute(
                update(t.route_leases)
                .where(_l.route == route, _l.expires_at <= now)
                .values(holder=holder, token=_l.token + 1, expires_at=until)
                .returning(_l.token)
            )
            token = taken.scalar()
            if token is not None:
                return RouteLease(route, holder, token, until)
            if (await conn.execute(select(_l.route).where(_l.route == route))).first():
                return None  # another holder's, unexpired
        try:
            async with self._begin() as conn:
                await conn.execute(
                    insert(t.route_leases).values(
                        route=route, holder=holder, token=1, expires_at=until
                    )
                )
        except IntegrityError:
            return None  # another replica took it first
        return RouteLease(route, holder, 1, until)

    async def release_route_lease(self, route: str, holder: str, token: int) -> None:
        async with self._begin() as conn:
            await conn.execute(
                update(t.route_leases)
                .where(_l.route == route, _l.holder == holder, _l.token == token)
                .values(expires_at=self._now())
            )

    async def route_leases(self) -> list[RouteLease]:
        async with self._connect() as conn:
            rows = await conn.execute(select(t.route_leases).order_by(_l.route))
            return [RouteLease(r.route, r.holder, r.token, r.expires_at) for r in rows]
