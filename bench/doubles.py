"""Registry, scheduler and router doubles for the load benches: they implement the ports in
commands.ports, keep everything in memory and wait a fixed latency per call, so that the
product's engine, store and Slack code are what the benches measure. Benches only: nothing in
the product imports this."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from commands.ports import Route, WeightFence
from commands.repositories import RouteRepository
from domain.runtime import Health, Instance, LaunchSpec, Rendering


class SlowRegistry:
    """Registry port: every call waits `latency` seconds."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.calls: Counter[str] = Counter()

    async def resolve(self, image: str) -> str:
        self.calls["resolve"] += 1
        await asyncio.sleep(self.latency)
        return "sha256:" + format(abs(hash(image)), "x").rjust(64, "0")[:64]

    async def replicate(self, image: str, digest: str, to_registry: str) -> str:
        self.calls["replicate"] += 1
        await asyncio.sleep(self.latency)
        repository = image.split("/", 1)[-1].split(":", 1)[0]
        return f"{to_registry}/{repository}@{digest}"

    async def close(self) -> None:
        pass


class SlowScheduler:
    """Scheduler port: every call waits `latency` seconds; a stack's instances report healthy
    `healthy_after` seconds after its launch returned."""

    def __init__(self, datacenter: str, latency: float, healthy_after: float) -> None:
        self.datacenter = datacenter
        self.latency, self.healthy_after = latency, healthy_after
        self.calls: Counter[str] = Counter()
        self._launched: dict[str, tuple[float, list[Instance]]] = {}

    async def _wait(self, call: str) -> None:
        self.calls[call] += 1
        await asyncio.sleep(self.latency)

    async def check(self) -> str | None:
        await self._wait("check")
        return None

    async def launch(self, spec: LaunchSpec) -> list[Instance]:
        await self._wait("launch")
        if spec.stack not in self._launched:
            instances = [
                Instance(f"{spec.stack}-{i}", "running", (("default", 20000 + i),))
                for i in range(spec.instances)
            ]
            self._launched[spec.stack] = (time.monotonic(), instances)
        return self._launched[spec.stack][1]

    async def instances(self, stack: str) -> list[Instance]:
        await self._wait("instances")
        return self._launched.get(stack, (0.0, []))[1]

    async def health(self, spec: LaunchSpec) -> Health:
        await self._wait("health")
        launched = self._launched.get(spec.stack)
        if launched is None:
            return Health(False, "no instances")
        if time.monotonic() - launched[0] < self.healthy_after:
            return Health(False, "alive: connection refused")
        return Health(True, "alive: 200")

    async def delete(self, stack: str) -> int:
        await self._wait("delete")
        return len(self._launched.pop(stack, (0.0, []))[1])

    async def render(self, spec: LaunchSpec) -> Rendering:
        raise NotImplementedError("the benches do not render")

    async def close(self) -> None:
        pass


class MemoryRouter:
    """Router port: weights per route in memory; every call waits `latency` seconds."""

    def __init__(
        self,
        latency: float,
        fences: RouteRepository | None = None,
        datacenter: str = "dc-east",
    ) -> None:
        self.latency = latency
        self.calls: Counter[str] = Counter()
        self._routes: dict[str, dict[str, int]] = {}
        self._ports: dict[str, int] = {}
        # where a shift's fenced step is checked and its weight recorded, as Lighthouse does
        self.fences, self.datacenter = fences, datacenter

    async def _wait(self, call: str) -> None:
        self.calls[call] += 1
        await asyncio.sleep(self.latency)

    async def check(self) -> str | None:
        await self._wait("check")
        return None

    async def address(self, route: Route) -> str:
        await self._wait("address")
        port = self._ports.setdefault(route.key, 30000 + len(self._ports))
        return f"127.0.0.1:{port}"

    async def set_weights(
        self,
        route: Route,
        backends: dict[str, tuple[list[str], int]],
        fence: WeightFence | None = None,
    ) -> None:
        if fence is not None and self.fences is not None:
            await self.fences.write_route(self.datacenter, route.key, [], fence)
        await self._wait("set_weights")
        weights = self._routes.setdefault(route.key, {})
        for stack, (_servers, weight) in backends.items():
            weights[stack] = weight

    async def weights(self, route: Route) -> dict[str, int]:
        await self._wait("weights")
        return dict(self._routes.get(route.key, {}))

    async def remove(self, route: Route, stack: str) -> None:
        await self._wait("remove")
        self._routes.get(route.key, {}).pop(stack, None)

    async def converge(self, wait: bool = True) -> None:
        await self._wait("converge")

    async def serving(self) -> set[str]:
        await self._wait("serving")
        return {s for weights in self._routes.values() for s, w in weights.items() if w > 0}

    async def close(self) -> None:
        pass
