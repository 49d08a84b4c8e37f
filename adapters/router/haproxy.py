"""The Router port on HAProxy, for single-host datacenters.

One frontend port per (namespace, unit, major version), one backend with a server per stack
instance. Weights and servers change live through HAProxy's runtime API on its admin socket
(`add server`, `set server … weight`, `del server`): no reload, no dropped connection. Only a
new frontend needs a reload, done gracefully through the master socket (old connections finish
on the old worker). HAProxy runs in master-worker mode as its own daemon, so it keeps routing
while the bot restarts; the bot starts it when it is not running.

State (routes, their ports, servers and weights) is kept in `routes.json` next to the
generated `haproxy.cfg`, so a reload or a restart of HAProxy comes back as it was."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from commands.ports import Route, RouterError

SCALE = 4  # HAProxy weights go to 256: per mille / 4 keeps three digits of precision


class HaproxyRouter:
    def __init__(
        self,
        state_dir: str | Path,
        *,
        bind: str = "127.0.0.1",
        ports: tuple[int, int] = (20000, 20999),
        binary: str = "haproxy",
    ) -> None:
        self.dir = Path(state_dir).resolve()  # HAProxy reads a relative socket path as a host
        self.bind = bind
        self.ports = ports
        self.binary = binary
        self.admin = self.dir / "admin.sock"
        self.master = self.dir / "master.sock"
        self._lock = asyncio.Lock()

    # -- state ------------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        path = self.dir / "routes.json"
        if not path.exists():
            return {"routes": {}}
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return loaded

    def _save(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "routes.json.tmp"
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.dir / "routes.json")
        (self.dir / "haproxy.cfg").write_text(self._render(state), encoding="utf-8")

    def _render(self, state: dict[str, Any]) -> str:
        lines = [
            "# written by nelson; changes here are overwritten",
            "global",
            f"    stats socket {self.admin} mode 600 level admin expose-fd listeners",
            f"    pidfile {self.dir / 'haproxy.pid'}",
            "defaults",
            "    mode http",
            "    timeout connect 5s",
            "    timeout client 60s",
            "    timeout server 60s",
            "    option redispatch",
            "    retries 2",
        ]
        for key, route in sorted(state["routes"].items()):
            lines += [
                f"frontend fe_{key}",
                f"    bind {self.bind}:{route['port']}",
                f"    default_backend be_{key}",
                f"backend be_{key}",
                "    balance roundrobin",
            ]
            for name, server in sorted(route["servers"].items()):
                lines.append(f"    server {name} {server['address']} weight {server['weight']}")
        return "\n".join(lines) + "\n"

    # -- HAProxy ----------------------------------------------------------------------------

    async def check(self) -> str | None:
        if shutil.which(self.binary) is None:
            return "HAProxy is not installed: `apt-get install haproxy`"
        return None

    async def _command(self, command: str, sock: Path | None = None) -> str:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(sock or self.admin)), 5
            )
        except (OSError, TimeoutError) as exc:
            raise RouterError(
                f"HAProxy's socket {sock or self.admin} does not answer: {exc}"
            ) from None
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
        except (OSError, TimeoutError) as exc:
            raise RouterError(f"HAProxy's socket {sock or self.admin} failed: {exc}") from None
        finally:
            writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        text = answer.decode(errors="replace").strip()
        if any(text.startswith(p) for p in ("Unknown", "No such", "Invalid", "Require")):
            raise RouterError(f"HAProxy refused `{command}`: {text}")
        return text

    async def _worker_pid(self) -> str | None:
        try:
            info = await self._command("show info")
        except RouterError:
            return None
        for line in info.splitlines():
            if line.startswith("Pid:"):
                return line.split(":", 1)[1].strip()
        return None

    async def _alive(self) -> bool:
        try:
            await self._command("show version")
        except RouterError:
            return False
        return True

    async def _start_or_reload(self, state: dict[str, Any], *, reload: bool) -> None:
        if await self._alive():
            if reload:
                before = await self._worker_pid()
                await self._command("reload", self.master)

                async def new_worker() -> bool:
                    # the admin socket answers from the new worker: changes made now stick
                    pid = await self._worker_pid()
                    return pid is not None and pid != before

                await self._wait_for(new_worker)
                await self._wait_for(lambda: self._listening(state))
            return
        why = await self.check()
        if why:
            raise RouterError(why)
        self._save(state)
        for stale in (self.admin, self.master):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        process = await asyncio.create_subprocess_exec(
            self.binary,
            "-W",
            "-S",
            f"{self.master},mode,600",
            "-D",
            "-f",
            str(self.dir / "haproxy.cfg"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await process.communicate()
        if process.returncode != 0:
            raise RouterError(f"HAProxy did not start: {err.decode(errors='replace').strip()}")
        await self._wait_for(self._alive)

    async def _listening(self, state: dict[str, Any]) -> bool:
        for route in state["routes"].values():
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.bind, int(route["port"])), 0.5
                )
            except (OSError, TimeoutError):
                return False
            writer.close()
        return True

    async def _wait_for(self, check: Any) -> None:
        for _ in range(100):
            if await check():
                return
            await asyncio.sleep(0.05)
        raise RouterError("HAProxy did not come up in 5 s")

    def _free_port(self, state: dict[str, Any]) -> int:
        taken = {int(r["port"]) for r in state["routes"].values()}
        for port in range(self.ports[0], self.ports[1] + 1):
            if port in taken:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind((self.bind, port))
                except OSError:
                    continue
            return port
        raise RouterError(f"no free port left in {self.ports[0]}-{self.ports[1]}")

    # -- the port ---------------------------------------------------------------------------

    async def address(self, route: Route) -> str:
        async with self._lock:
            state = self._load()
            entry = state["routes"].get(route.key)
            if entry is None:
                entry = state["routes"][route.key] = {"port": self._free_port(state), "servers": {}}
                self._save(state)
                await self._start_or_reload(state, reload=True)
            else:
                await self._start_or_reload(state, reload=False)
            return f"{self.bind}:{entry['port']}"

    async def set_weights(self, route: Route, backends: dict[str, tuple[list[str], int]]) -> None:
        await self.address(route)
        async with self._lock:
            state = self._load()
            servers = state["routes"][route.key]["servers"]
            backend = f"be_{route.key}"
            for stack, (addresses, per_mille) in backends.items():
                if not addresses:
                    continue
                weight = max(0, min(256, round(per_mille / SCALE / len(addresses))))
                for n, address in enumerate(addresses):
                    name = f"{stack}-{n}"
                    current = servers.get(name)
                    if current is None or current["address"] != address:
                        if current is not None:
                            await self._delete(backend, name)
                        await self._command(
                            f"add server {backend}/{name} {address} weight {weight}"
                        )
                        await self._command(f"enable server {backend}/{name}")
                    elif current["weight"] != weight:
                        await self._command(f"set server {backend}/{name} weight {weight}")
                    servers[name] = {
                        "address": address,
                        "weight": weight,
                        "stack": stack,
                        "per_mille": per_mille,
                    }
            self._save(state)

    async def weights(self, route: Route) -> dict[str, int]:
        state = self._load()
        entry = state["routes"].get(route.key)
        if entry is None:
            return {}
        found: dict[str, int] = {}
        for server in entry["servers"].values():
            found[server["stack"]] = int(server["per_mille"])
        return found

    async def serving(self) -> set[str]:
        state = self._load()
        return {
            server["stack"]
            for route in state["routes"].values()
            for server in route["servers"].values()
            if int(server["per_mille"]) > 0
        }

    async def remove(self, route: Route, stack: str) -> None:
        async with self._lock:
            state = self._load()
            entry = state["routes"].get(route.key)
            if entry is None:
                return
            for name, server in list(entry["servers"].items()):
                if server["stack"] == stack:
                    await self._delete(f"be_{route.key}", name)
                    del entry["servers"][name]
            self._save(state)

    async def _delete(self, backend: str, name: str) -> None:
        with contextlib.suppress(RouterError):
            await self._command(f"set server {backend}/{name} state maint")
            await self._command(f"shutdown sessions server {backend}/{name}")
            await self._command(f"del server {backend}/{name}")

    async def close(self) -> None:
        """HAProxy keeps running: routing must not stop because the bot restarts."""

    async def stop(self) -> None:
        """Stop HAProxy itself (tests, uninstall)."""
        pid_file = self.dir / "haproxy.pid"
        if not pid_file.exists():
            return
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, 15)
        except (ProcessLookupError, ValueError, IndexError):
            return
        for _ in range(100):  # until it has let go of its ports
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            await asyncio.sleep(0.05)
