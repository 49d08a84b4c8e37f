"""One `nelson serve` replica of the fault tests, as a process of its own: started, watched
through /healthz, killed with SIGKILL and started again."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.dockerworld import free_port


class Replica:
    def __init__(self, n: int, config: Path, env: dict[str, str], *, slack: bool = False) -> None:
        self.n = n
        self.slack = slack  # serving Slack (HTTP or Socket Mode, as configured) or not
        self.config = config
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = config.parent / f"replica-{n}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.killed = False
        self.seen_up = False  # this process answered /healthz with 200 once
        self.crashes: list[str] = []  # processes that were up and ended without being killed
        self.refused_starts = 0  # started while the database was down: exited, restarted

    def start(self) -> None:
        self.seen_up = False
        self.killed = False
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "bot.cli", "--config", str(self.config)),
                "serve",
                *(() if self.slack else ("--no-slack",)),
                *("--host", "127.0.0.1", "--port", str(self.port)),
            ],
            cwd=self.config.parent,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )

    async def up(self, session: aiohttp.ClientSession) -> None:
        assert self.process is not None
        for _ in range(300):
            assert self.process.poll() is None, self.log.read_text()
            if await self.answers(session):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"replica {self.n} did not come up:\n" + self.log.read_text())

    async def answers(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(
                f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(total=5)
            ) as response:
                up = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
        self.seen_up = self.seen_up or up
        return up

    def kill(self) -> int:
        assert self.process is not None
        pid = self.process.pid
        self.killed = True  # the killer starts it again
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        return pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
