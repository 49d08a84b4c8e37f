"""The Router port on Consul KV, in Nelson's Lighthouse format.

Nothing listens here: the routing graph is published for whatever reads Lighthouse (a
client library, an Envoy control plane, an ingress). Keys:

- `lighthouse/discovery/v1/<stack>`: for each stack, where its dependencies are, as Nelson
  writes it: `{"defaultNamespace", "domain", "namespaces": [{"name", "routes": [{"service",
  "port", "targets": [{"stack", "port", "protocol", "weight"}]}]}]}`, weights in percent.
  Targets also carry `addresses` (host:port of each instance), since a Docker datacenter has
  no service catalogue to look them up in;
- `nelson/v1/loadbalancers/<route>`: the route's frontend, in Nelson's load balancer protocol
  (`[{"port_label", "frontend_port", "service_name", "major_version"}]`);
- `nelson/v1/routes/<route>`: this router's own record of a route (its frontend port, per
  stack its addresses and weight in per mille), the source of `weights` and `serving`.

Route records change by check-and-set, so two bot replicas never lose each other's writes.
A stack's discovery key is rewritten whenever a route it depends on changes, and deleted when
it is removed; `sweep` deletes the keys of stacks the bot no longer knows."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from adapters.consul.client import ConsulClient, ConsulError
from commands.ports import Route, RouterError
from commands.repositories import RouteRepository, StackRepository, WeightFence
from domain.records import Stack
from domain.states import LIVE_STATUSES

DISCOVERY = "lighthouse/discovery/v1/"
LOADBALANCERS = "nelson/v1/loadbalancers/"
ROUTES = "nelson/v1/routes/"
ATTEMPTS = 8  # check-and-set retries when another replica wrote the same record meanwhile


class LighthouseRouter:
    def __init__(
        self,
        consul: ConsulClient,
        store: StackRepository,
        *,
        datacenter: str,
        bind: str = "127.0.0.1",
        ports: tuple[int, int] = (20000, 20999),
        domain: str = "service.consul",
        fences: RouteRepository | None = None,
    ) -> None:
        self.consul = consul
        self.fences = fences  # where a shift's fenced step is checked and recorded
        self.store = store
        self.datacenter = datacenter
        self.bind = bind
        self.ports = ports
        self.domain = domain
        self._lock = asyncio.Lock()

    # -- the port ---------------------------------------------------------------------------

    async def check(self) -> str | None:
        status = await self.consul.status()
        return None if status.startswith("leader") else f"Lighthouse: {status}"

    async def address(self, route: Route) -> str:
        record = await self._update(route, lambda r: r)
        return f"{self.bind}:{record['port']}"

    async def set_weights(
        self,
        route: Route,
        backends: dict[str, tuple[list[str], int]],
        fence: WeightFence | None = None,
    ) -> None:
        if fence is not None and self.fences is not None:
            # Consul is not the database: the fence is checked (and the shift's weight
            # recorded) just before the check-and-set, not in the same transaction
            await self.fences.write_route(self.datacenter, route.key, [], fence)

        def change(record: dict[str, Any]) -> dict[str, Any]:
            for stack, (addresses, per_mille) in backends.items():
                before = record["backends"].get(stack, {})
                record["backends"][stack] = {
                    "addresses": list(addresses) or before.get("addresses", []),
                    "weight": int(per_mille),
                }
            return record

        record = await self._update(route, change)
        await self._publish(record, extra=set(backends))

    async def weights(self, route: Route) -> dict[str, int]:
        record = await self._read(route)
        if record is None:
            return {}
        return {name: int(b["weight"]) for name, b in record["backends"].items()}

    async def remove(self, route: Route, stack: str) -> None:
        def change(record: dict[str, Any]) -> dict[str, Any]:
            record["backends"].pop(stack, None)
            return record

        if await self._read(route) is not None:
            record = await self._update(route, change)
            if not record["backends"]:
                await self._drop_if_empty(route)
            await self._publish(record, extra={stack})
        await self._call(self.consul.delete(DISCOVERY + stack))

    async def serving(self) -> set[str]:
        entries = await self._call(self.consul.get_tree(ROUTES))
        names: set[str] = set()
        for entry in entries:
            record = json.loads(entry.value)
            names |= {n for n, b in record["backends"].items() if int(b["weight"]) > 0}
        return names

    async def converge(self, wait: bool = True) -> None:
        """Consul KV holds this router's own records (written by check-and-set): nothing to
        project."""

    async def close(self) -> None:
        await self.consul.close()

    async def stop(self) -> None:
        """Nothing of the router runs here (as HaproxyRouter.stop, for tests that stop both)."""

    # -- beyond the port --------------------------------------------------------------------

    async def keys_for(self, stack: str) -> list[str]:
        """The keys that name the stack: its discovery table and the routes serving it."""
        found = []
        if await self._call(self.consul.get(DISCOVERY + stack)) is not None:
            found.append(DISCOVERY + stack)
        for entry in await self._call(self.consul.get_tree(ROUTES)):
            if stack in json.loads(entry.value)["backends"]:
                found.append(entry.key)
                found.append(LOADBALANCERS + entry.key[len(ROUTES) :])
        return found

    async def discovery(self, stack: str) -> dict[str, Any] | None:
        entry = await self._call(self.consul.get(DISCOVERY + stack))
        return None if entry is None else dict(json.loads(entry.value))

    async def sweep(self, known: set[str]) -> list[str]:
        """Delete the discovery keys and route entries of stacks not in `known`."""
        removed = []
        for key in await self._call(self.consul.keys(DISCOVERY)):
            name = key[len(DISCOVERY) :]
            if name and name not in known:
                await self._call(self.consul.delete(key))
                removed.append(name)
        for entry in await self._call(self.consul.get_tree(ROUTES)):
            record = json.loads(entry.value)
            stale = [n for n in record["backends"] if n not in known]
            if stale:
                route = Route(record["namespace"], record["unit"], int(record["major"]))
                for name in stale:
                    await self.remove(route, name)
                removed.extend(n for n in stale if n not in removed)
        return removed

    # -- records ----------------------------------------------------------------------------

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except ConsulError as exc:
            raise RouterError(str(exc)) from None

    async def _read(self, route: Route) -> dict[str, Any] | None:
        entry = await self._call(self.consul.get(ROUTES + route.key))
        return None if entry is None else dict(json.loads(entry.value))

    async def _update(self, route: Route, change: Any) -> dict[str, Any]:
        """Read, change and write the route's record by check-and-set; a new route gets a
        frontend port and its load balancer key."""
        async with self._lock:
            for _ in range(ATTEMPTS):
                entry = await self._call(self.consul.get(ROUTES + route.key))
                created = entry is None
                if entry is None:
                    record: dict[str, Any] = {
                        "namespace": route.namespace,
                        "unit": route.unit,
                        "major": route.major,
                        "port": await self._free_port(),
                        "backends": {},
                    }
                else:
                    record = json.loads(entry.value)
                record = change(record)
                index = 0 if entry is None else entry.modify_index
                body = json.dumps(record, sort_keys=True).encode()
                if await self._call(self.consul.put(ROUTES + route.key, body, cas=index)):
                    break
            else:
                raise RouterError(f"the route {route.key} kept changing under the bot; try again")
        if created or record["backends"]:
            await self._sync_loadbalancer(route)
        return record

    async def _drop_if_empty(self, route: Route) -> None:
        """Delete a route left without stacks, unless another replica added one meanwhile
        (check-and-set), then make its load balancer key agree."""
        async with self._lock:
            entry = await self._call(self.consul.get(ROUTES + route.key))
            if entry is not None and not json.loads(entry.value)["backends"]:
                await self._call(self.consul.delete(ROUTES + route.key, cas=entry.modify_index))
        await self._sync_loadbalancer(route)

    async def _sync_loadbalancer(self, route: Route) -> None:
        """Make the load balancer key agree with the route record: there with the record's
        port while the record exists, gone otherwise. Consul offers no transaction across
        the two keys here, so another replica may change either in between: read the key,
        then the record, change by check-and-set, and look again until both agree."""
        key = LOADBALANCERS + route.key
        for _ in range(ATTEMPTS):
            balancer = await self._call(self.consul.get(key))
            record = await self._read(route)
            if record is not None:
                body = _loadbalancer(route, int(record["port"]))
                if balancer is not None and balancer.value == body:
                    return
                cas = 0 if balancer is None else balancer.modify_index
                await self._call(self.consul.put(key, body, cas=cas))
            elif balancer is not None:
                await self._call(self.consul.delete(key, cas=balancer.modify_index))
            else:
                return
        raise RouterError(f"the load balancer of {route.key} kept changing under the bot")

    async def _free_port(self) -> int:
        taken = set()
        for entry in await self._call(self.consul.get_tree(ROUTES)):
            taken.add(int(json.loads(entry.value)["port"]))
        for port in range(self.ports[0], self.ports[1] + 1):
            if port not in taken:
                return port
        raise RouterError(f"no free route port left in {self.ports[0]}-{self.ports[1]}")

    # -- discovery tables -------------------------------------------------------------------

    async def _publish(self, record: dict[str, Any], extra: set[str]) -> None:
        """Rewrite the discovery tables of the route's stacks (`extra` too) and of every live
        stack that depends on one of them."""
        names = set(record["backends"]) | extra
        callers: dict[str, Stack] = {}
        for name in sorted(names):
            stack = await self.store.stack(name)
            if stack is None:
                continue
            if stack.status in LIVE_STATUSES and name in record["backends"]:
                callers[stack.name] = stack
            for dependent in await self.store.dependents(stack.id):
                if dependent.status in LIVE_STATUSES and dependent.datacenter == self.datacenter:
                    callers[dependent.name] = dependent
        for caller in callers.values():
            table = await self._table(caller)
            await self._call(self.consul.put(DISCOVERY + caller.name, json.dumps(table).encode()))

    async def _table(self, caller: Stack) -> dict[str, Any]:
        """The caller's discovery table: per namespace, per dependency, its weighted targets."""
        namespaces: dict[str, list[dict[str, Any]]] = {}
        seen: set[str] = set()
        for dependency in await self.store.dependencies(caller.id):
            route = Route(dependency.namespace, dependency.unit, dependency.version.major)
            if route.key in seen:
                continue
            seen.add(route.key)
            record = await self._read(route)
            if record is None:
                continue
            targets = [
                {
                    "stack": name,
                    "port": _port(backend["addresses"]),
                    "protocol": "http",
                    "weight": round(int(backend["weight"]) / 10),
                    "addresses": backend["addresses"],
                }
                for name, backend in sorted(record["backends"].items())
                if int(backend["weight"]) > 0
            ]
            if targets:
                namespaces.setdefault(dependency.namespace, []).append(
                    {"service": dependency.unit, "port": "default", "targets": targets}
                )
        return {
            "defaultNamespace": caller.namespace,
            "domain": self.domain,
            "namespaces": [
                {"name": name, "routes": routes} for name, routes in sorted(namespaces.items())
            ],
        }


def _loadbalancer(route: Route, port: int) -> bytes:
    """The route's frontend in Nelson's load balancer protocol."""
    body = [
        {
            "port_label": "default",
            "frontend_port": port,
            "service_name": route.unit,
            "major_version": route.major,
        }
    ]
    return json.dumps(body).encode()


def _port(addresses: list[str]) -> int:
    for address in addresses:
        _, _, port = address.rpartition(":")
        if port.isdigit():
            return int(port)
    return 0
