"""A running bot (HTTP or Socket Mode) in front of the fake Slack workspace, for e2e tests.

`Scripted` is the tests' deployment engine: it walks submitted stacks through the workflow
states in the store and publishes each step, as the real engine does, so progress threads can
be watched without a datacenter."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bot.bootstrap import Application, build
from bot.slack.serve import serve
from commands.events import EventHub, StackProgress
from commands.ports import Clock, SchedulerError, Store
from commands.settings import Settings
from domain.records import Stack
from domain.runtime import Rendering, RuntimeReport
from domain.states import StackStatus
from domain.versions import Version
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_requests import sign

SIGNING_SECRET = "0123456789abcdef0123456789abcdef"

MANIFEST = """\
units:
  - name: howdy
    description: says howdy
    ports:
      - default->8080/http
plans:
  - name: default
    health_checks:
      - name: alive
        port_reference: default
        protocol: http
        path: /
namespaces:
  - name: dev
    units:
      - ref: howdy
        plans: [default]
  - name: prod
    units:
      - ref: howdy
        plans: [default]
notifications:
  slack:
    - channel: C3
"""


class Scripted:
    """Moves stacks pending -> deploying (each step) -> warming -> ready, or to failed when
    the stack's datacenter is listed in `fail_in`."""

    def __init__(self, fail_in: Sequence[str] = ()) -> None:
        self.fail_in = set(fail_in)
        self.store: Store | None = None
        self.events: EventHub | None = None
        self.clock: Clock | None = None
        self.gate = asyncio.Event()
        self.gate.set()
        self.tasks: list[asyncio.Task[None]] = []
        # a status and its line go together, as the product's workflow writes them in one
        # transaction: otherwise the other stack's last line could finish the operation
        # (OperationTracker reads the statuses) before this stack's line is written
        self.said = asyncio.Lock()

    def bind(self, application: Application) -> None:
        self.store, self.events = application.store, application.events
        self.clock = application.clock

    async def available_for(self, datacenter: str) -> str | None:
        return None

    async def runtime(self, stack: Stack) -> RuntimeReport:
        return RuntimeReport(())

    async def render(
        self,
        unit: str,
        version: Version,
        datacenter: str,
        namespace: str,
        plan: str,
        manifest_id: int,
        image: str,
    ) -> Rendering:
        raise SchedulerError("this test workflow renders nothing")

    async def submit(self, stack_ids: Sequence[int]) -> None:
        for stack_id in stack_ids:
            self.tasks.append(asyncio.create_task(self._run(stack_id)))

    async def _say(
        self,
        stack_id: int,
        message: str,
        failed: bool = False,
        status: StackStatus | None = None,
    ) -> None:
        assert self.events is not None and self.clock is not None
        await self.events.publish(
            StackProgress(stack_id, message, self.clock.now(), failed, status)
        )

    async def _run(self, stack_id: int) -> None:
        store = self.store
        assert store is not None
        await self.gate.wait()
        stack = await store.change_status(stack_id, StackStatus.DEPLOYING, "started", "nelson")
        for step in ("resolve", "replicate", "launch"):
            await store.set_workflow_step(stack_id, step)
            if step == "replicate" and stack.datacenter in self.fail_in:
                async with self.said:
                    await store.change_status(
                        stack_id, StackStatus.FAILED, "image not found in staging", "nelson"
                    )
                    await self._say(
                        stack_id,
                        "replicate failed: image not found in staging",
                        True,
                        StackStatus.FAILED,
                    )
                return
            await self._say(stack_id, f"{step} done")
        async with self.said:
            await store.change_status(stack_id, StackStatus.WARMING, "launched", "nelson")
            await self._say(stack_id, "warming up", status=StackStatus.WARMING)
        async with self.said:
            await store.change_status(stack_id, StackStatus.READY, "healthy", "nelson")
            await self._say(stack_id, "ready", status=StackStatus.READY)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_for(
    fake: FakeSlack, tmp: Path, *, socket_mode: bool = False, **overrides: Any
) -> Settings:
    repo = tmp / "manifests" / "howdy"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / ".nelson.yml").write_text(MANIFEST, encoding="utf-8")
    data: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp / 'nelson.db'}",
        "namespaces": ["dev", "prod"],
        "manifest_dirs": [str(tmp / "manifests")],
        "datacenters": {
            name: {
                "staging_registry": "127.0.0.1:5000",
                "runtime_registry": f"127.0.0.1:500{i + 1}",
            }
            for i, name in enumerate(("dc-east", "dc-west"))
        },
        "access": {
            "admins": [],
            "rules": [
                {
                    "namespace": "*",
                    "view": ["*"],
                    "deploy": ["U1", "U2"],
                    "approve": ["U1", "U2", "U3"],
                }
            ],
        },
        "approvals": {"prod": {"required": 1, "deadline": "1h"}},
        "slack": {
            "bot_token": fake.bot_token,
            "signing_secret": SIGNING_SECRET,
            "api_url": fake.base_url,
            "post_interval": 0.01,
            "update_interval": 0.01,
            "approvals_sweep": 0.2,
            **({"app_token": fake.app_token} if socket_mode else {}),
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Settings.model_validate(data)


@dataclass
class RunningBot:
    application: Application
    url: str
    stop: asyncio.Event
    task: asyncio.Task[int]
    workflow: Scripted | None
    clock: FakeClock

    async def post(
        self,
        body: bytes,
        content_type: str,
        *,
        secret: str = SIGNING_SECRET,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        all_headers = {**sign(secret, body, timestamp), "Content-Type": content_type}
        all_headers.update(headers or {})
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/slack/events", data=body, headers=all_headers) as response,
        ):
            return response.status, await response.text()

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 20)
        if self.workflow is not None:
            await asyncio.wait_for(asyncio.gather(*self.workflow.tasks), 20)
        await asyncio.wait_for(self.application.close(), 20)


async def start_bot(
    settings: Settings,
    workflow: Scripted | None = None,
    *,
    real: bool = False,
    clock: FakeClock | None = None,
) -> RunningBot:
    """`real`: the product's own deploy engine on the configured datacenters. The bot's clock
    ticks from the fake clock's start (not today), unless the test hands its own."""
    if not real:
        workflow = workflow or Scripted()
    clock = clock or FakeClock(ticking=True)
    application = await build(settings, workflow=workflow, clock=clock)
    if workflow is not None:
        workflow.bind(application)
    port = free_port()
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        serve(application, host="127.0.0.1", port=port, ready=ready, stop=stop)
    )
    done, _ = await asyncio.wait(
        [task, asyncio.create_task(ready.wait())], timeout=20, return_when=asyncio.FIRST_COMPLETED
    )
    if task in done:
        task.result()  # raises the startup error
    assert ready.is_set(), "the bot did not start within 20 s"
    return RunningBot(application, f"http://127.0.0.1:{port}", stop, task, workflow, clock)
