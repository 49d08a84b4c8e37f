"""What the HAProxy router last rendered into `haproxy.cfg` (from the route table), read back
by tests: per route key, its port and its servers (name -> address, weight)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RenderedRoute:
    port: int = 0
    servers: dict[str, tuple[str, int]] = field(default_factory=dict)

    def stacks(self) -> set[str]:
        return {name.rpartition("-")[0] for name in self.servers}

    def addresses(self, stack: str) -> set[str]:
        return {a for name, (a, _) in self.servers.items() if name.rpartition("-")[0] == stack}


def rendered_routes(state_dir: Path) -> dict[str, RenderedRoute]:
    routes: dict[str, RenderedRoute] = {}
    current: RenderedRoute | None = None
    for line in (state_dir / "haproxy.cfg").read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words[:1] == ["frontend"]:
            current = routes.setdefault(words[1].removeprefix("fe_"), RenderedRoute())
        elif words[:1] == ["backend"]:
            current = routes.setdefault(words[1].removeprefix("be_"), RenderedRoute())
        elif words[:1] == ["bind"] and current is not None:
            current.port = int(words[1].rpartition(":")[2])
        elif words[:1] == ["server"] and current is not None:
            current.servers[words[1]] = (words[2], int(words[4]))
    return routes
