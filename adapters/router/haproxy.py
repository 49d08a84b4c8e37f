"""The Router port on HAProxy, for single-host datacenters: a projection of the route table.

One frontend port per (namespace, unit, major version), one backend with a server per stack
instance. The truth is the route table in the database (`RouteRepository`): routes, their
ports, servers and weights. This router writes there first (a shift's step fenced by its
route lease), then brings HAProxy to the table: `haproxy.cfg` is rendered from it, and
servers and weights change live through HAProxy's runtime API on its admin socket (`add
server`, `set server … weight`, `del server`): no reload, no dropped connection. Only a new
frontend needs a reload, done gracefully through the master socket (old connections finish
on the old worker). HAProxy runs in master-worker mode as its own daemon, so it keeps routing
while the bot restarts; the bot starts it when it is not running.

Several replicas may share one HAProxy (its state directory): a projection runs under a file
lock there and reads the table inside it, so a later projection never applies older rows than
an earlier one, and weights seen in HAProxy move only as the table does. A replica that
starts, or an HAProxy that was restarted or changed, is brought to the table by `converge`."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from commands.ports import Route, RouterError
from commands.repositories import RouteEntry, RouteRepository, RouteServer, WeightFence

SCALE = 4  # HAProxy weights go to 256: per mille / 4 keeps three digits of precision
OPEN_ATTEMPTS = 20  # ports tried when other replicas open routes at the same moment


class HaproxyRouter:
    def __init__(
        self,
        state_dir: str | Path,
        table: RouteRepository,
        *,
        datacenter: str,
        bind: str = "127.0.0.1",
        ports: tuple[int, int] = (20000, 20999),
        binary: str = "haproxy",
    ) -> None:
        self.dir = Path(state_dir).resolve()  # HAProxy reads a relative socket path as a host
        self.table = table
        self.datacenter = datacenter
        self.bind = bind
        self.ports = ports
        self.binary = binary
        self.admin = self.dir / "admin.sock"
        self.master = self.dir / "master.sock"
        self._lock = asyncio.Lock()
        self._projected: set[str] = set()  # routes HAProxy served at this process's last look

    # -- the projection ---------------------------------------------------------------------

    def _render(self, entries: Sequence[RouteEntry]) -> str:
        lines = [
            "# written by nelson from the route table; changes here are overwritten",
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
        for entry in sorted(entries, key=lambda e: e.key):
            lines += [
                f"frontend fe_{entry.key}",
                f"    bind {self.bind}:{entry.port}",
                f"    default_backend be_{entry.key}",
                f"backend be_{entry.key}",
                "    balance roundrobin",
            ]
            for server in entry.servers:
                lines.append(f"    server {server.name} {server.address} weight {server.weight}")
        return "\n".join(lines) + "\n"

    def _write_config(self, entries: Sequence[RouteEntry]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "haproxy.cfg.tmp"
        tmp.write_text(self._render(entries), encoding="utf-8")
        os.replace(tmp, self.dir / "haproxy.cfg")

    @contextlib.asynccontextmanager
    async def _exclusive(self, wait: bool = True) -> AsyncIterator[bool]:
        """This process's lock, then the state directory's: one projection at a time among
        every process sharing this HAProxy. Without `wait`, gives False at once when another
        projection runs."""
        if not wait and self._lock.locked():
            yield False
            return
        async with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dir / "projection.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if not wait:
                            yield False
                            return
                        await asyncio.sleep(0.01)
                yield True
            finally:
                os.close(fd)  # lets the file lock go

    async def converge(self, wait: bool = True) -> None:
        """Bring HAProxy to the table. Without `wait` (the periodic pass), nothing is done
        while another projection runs, so the passes of several replicas never queue up in
        front of the projection that follows a write (which waits, and reads the table
        after its write)."""
        async with self._exclusive(wait) as mine:
            if mine:
                await self._project()

    async def _project(self) -> None:
        await self._adopt_legacy()
        # read inside the lock: a projection never applies rows older than the last one
        entries = await self.table.route_entries(self.datacenter)
        alive = await self._alive()
        if not entries and not alive:
            return  # nothing to route yet: HAProxy starts with the first route
        self._write_config(entries)
        if not alive:
            await self._start()
        else:
            backends = await self._backends()
            if any(f"be_{e.key}" not in backends for e in entries):
                await self._reload(entries)  # the new worker reads the servers from the file
            else:
                for entry in entries:
                    await self._converge_backend(entry)
        self._projected = {e.key for e in entries}

    async def _adopt_legacy(self) -> None:
        """Routes that earlier versions kept in `routes.json` go into the table once, with
        their ports (callers keep their addresses) and servers; the file is then renamed."""
        legacy = self.dir / "routes.json"
        if not legacy.exists():
            return
        try:
            routes = json.loads(legacy.read_text(encoding="utf-8")).get("routes", {})
            for key, route in routes.items():
                entry = await self.table.create_route(self.datacenter, key, int(route["port"]))
                if entry is None or entry.servers:
                    continue  # the port serves another route now, or the table knows better
                servers = [
                    RouteServer(
                        name, s["stack"], s["address"], int(s["weight"]), int(s["per_mille"])
                    )
                    for name, s in route["servers"].items()
                ]
                if servers:
                    await self.table.write_route(self.datacenter, key, servers)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RouterError(f"{legacy} cannot be read ({exc}); move it away") from None
        os.replace(legacy, self.dir / "routes.json.imported")

    async def _converge_backend(self, entry: RouteEntry) -> None:
        backend = f"be_{entry.key}"
        running = await self._servers(backend)
        wanted = {s.name: s for s in entry.servers}
        for name, server in wanted.items():
            current = running.get(name)
            if current is None or not _same_address(current[0], server.address):
                if current is not None:
                    await self._delete(backend, name)
                await self._command(
                    f"add server {backend}/{name} {server.address} weight {server.weight}"
                )
                await self._command(f"enable server {backend}/{name}")
            elif current[1] != server.weight:
                await self._command(f"set server {backend}/{name} weight {server.weight}")
        for name in running.keys() - wanted.keys():
            await self._delete(backend, name)

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

    async def _reload(self, entries: Sequence[RouteEntry]) -> None:
        before = await self._worker_pid()
        for attempt in range(100):
            try:
                await self._command("reload", self.master)
                break
            except RouterError:
                # the master re-executes itself on a reload: after the one just before,
                # its socket may not be back yet
                if attempt == 99:
                    raise
                await asyncio.sleep(0.05)

        async def new_worker() -> bool:
            # the admin socket answers from the new worker: changes made now stick
            pid = await self._worker_pid()
            return pid is not None and pid != before

        await self._wait_for(new_worker)
        await self._wait_for(lambda: self._listening(entries))

    async def _start(self) -> None:
        why = await self.check()
        if why:
            raise RouterError(why)
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

    async def _backends(self) -> set[str]:
        listed = await self._command("show backend")
        return {line.strip() for line in listed.splitlines() if not line.startswith("#")}

    async def _servers(self, backend: str) -> dict[str, tuple[str, int]]:
        """The backend's servers as HAProxy runs them: name -> (host:port, weight)."""
        text = await self._command(f"show servers state {backend}")
        columns: list[str] = []
        found: dict[str, tuple[str, int]] = {}
        for line in text.splitlines():
            if line.startswith("# "):
                columns = line[2:].split()
                continue
            fields = line.split()
            if not columns or len(fields) < len(columns):
                continue
            row = dict(zip(columns, fields, strict=False))
            found[row["srv_name"]] = (
                f"{row['srv_addr']}:{row['srv_port']}",
                int(row["srv_uweight"]),
            )
        return found

    async def _listening(self, entries: Sequence[RouteEntry]) -> bool:
        for entry in entries:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.bind, entry.port), 0.5
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

    def _free_port(self, taken: set[int]) -> int:
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

    async def _open(self, key: str) -> RouteEntry:
        """The route's row, made with the lowest free port: the table's unique port per
        datacenter settles two replicas opening routes at once."""
        skipped: set[int] = set()
        for _ in range(OPEN_ATTEMPTS):
            entries = await self.table.route_entries(self.datacenter)
            taken = {e.port for e in entries} | skipped
            port = self._free_port(taken)
            entry = await self.table.create_route(self.datacenter, key, port)
            if entry is not None:
                return entry
            skipped.add(port)  # another route took it meanwhile
        raise RouterError(f"could not open route {key}: every port tried was taken meanwhile")

    # -- the port ---------------------------------------------------------------------------

    async def address(self, route: Route) -> str:
        entry = await self.table.route_entry(self.datacenter, route.key)
        if entry is None and (self.dir / "routes.json").exists():
            await self.converge()  # adopts the routes of earlier versions first
            entry = await self.table.route_entry(self.datacenter, route.key)
        if entry is None:
            entry = await self._open(route.key)
        if route.key not in self._projected or not await self._alive():
            await self.converge()
        return f"{self.bind}:{entry.port}"

    async def set_weights(
        self,
        route: Route,
        backends: dict[str, tuple[list[str], int]],
        fence: WeightFence | None = None,
    ) -> None:
        await self.address(route)
        servers: list[RouteServer] = []
        for stack, (addresses, per_mille) in backends.items():
            if not addresses:
                continue  # nothing of it runs: its servers (if any) stay as they are
            weight = max(0, min(256, round(per_mille / SCALE / len(addresses))))
            servers += [
                RouteServer(f"{stack}-{n}", stack, address, weight, per_mille)
                for n, address in enumerate(addresses)
            ]
        await self.table.write_route(self.datacenter, route.key, servers, fence)
        await self.converge()

    async def weights(self, route: Route) -> dict[str, int]:
        entry = await self.table.route_entry(self.datacenter, route.key)
        return entry.weights() if entry is not None else {}

    async def serving(self) -> set[str]:
        return {
            server.stack
            for entry in await self.table.route_entries(self.datacenter)
            for server in entry.servers
            if server.per_mille > 0
        }

    async def remove(self, route: Route, stack: str) -> None:
        if await self.table.route_entry(self.datacenter, route.key) is None:
            return
        await self.table.remove_route_stack(self.datacenter, route.key, stack)
        await self.converge()

    async def _delete(self, backend: str, name: str) -> None:
        with contextlib.suppress(RouterError):
            await self._command(f"set server {backend}/{name} state maint")
            await self._command(f"shutdown sessions server {backend}/{name}")
            await self._command(f"del server {backend}/{name}")

    async def close(self) -> None:
        """HAProxy keeps running: routing must not stop because the bot restarts."""

    async def stop(self) -> None:
        """Stop HAProxy itself (tests, uninstall)."""
        await stop_haproxy(self.dir)


async def stop_haproxy(state_dir: Path) -> None:
    """Stop the HAProxy whose state directory this is, and wait until it let go of its ports."""
    pid_file = Path(state_dir) / "haproxy.pid"
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 15)
    except (ProcessLookupError, ValueError, IndexError):
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)


def _same_address(running: str, wanted: str) -> bool:
    """HAProxy shows a server's address resolved: a host name matches on its port."""
    if running == wanted:
        return True
    host, _, port = wanted.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return running.rpartition(":")[2] == port
    return False
