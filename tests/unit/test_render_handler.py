"""`render`, `blueprint` and `blueprints` through the conversation, on a real SQLite store,
with a workflow that records what it was asked to render."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.storage import open_store
from bot.conversation import Outcome
from bot.terminal import render
from commands.ports import SchedulerError
from commands.replies import Code
from domain.runtime import Rendering
from domain.versions import Version
from tests.fakes.clock import FakeClock
from tests.unit.test_handlers import ACCOUNTS, DEV, GUEST, Harness, RecordingWorkflow, register


class RenderingWorkflow(RecordingWorkflow):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[Any, ...]] = []
        self.answer: Rendering | SchedulerError = Rendering("Nomad job", {"ID": "x"}, "src")

    async def render(self, *args: Any) -> Rendering:
        self.asked.append(args)
        if isinstance(self.answer, SchedulerError):
            raise self.answer
        return self.answer


@pytest.fixture
async def h(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Harness]:
    store = await open_store(f"sqlite:///{tmp_path / 'nelson.db'}", clock=clock)
    yield Harness(store, RenderingWorkflow(), clock)
    await store.close()


def workflow(h: Harness) -> RenderingWorkflow:
    assert isinstance(h.workflow, RenderingWorkflow)
    return h.workflow


async def test_render_checks_its_words_then_shows_the_spec(h: Harness) -> None:
    await register(h, "acme/accounts", ACCOUNTS)
    assert "no unit 'acount'" in await h.fails("render acount 1.2.3 at dc-east")
    assert "datacenter" in await h.fails("render accounts 1.2.3 at dc-north")
    assert "no plan 'huge'" in await h.fails("render accounts 1.2.3 at dc-east in qa plan huge")
    assert "does not deploy accounts into namespace 'prod'" in await h.fails(
        "render accounts 1.2.3 at dc-east in prod"
    )
    assert workflow(h).asked == []
    answer = await h.ok("render accounts 1.2.3 at dc-east in qa", GUEST)  # viewers may
    [(unit, version, dc, ns, plan, manifest_id, image)] = workflow(h).asked
    assert (unit, version, dc, ns, plan) == ("accounts", Version(1, 2, 3), "dc-east", "qa", "small")
    assert image == "stage:5000/accounts:1.2.3" and manifest_id > 0
    assert answer.reply.title == "Dry run: accounts 1.2.3 at dc-east (qa, plan small)"
    assert Code('{\n  "ID": "x"\n}') in answer.reply.blocks
    assert await h.store.releases("accounts") == []  # nothing recorded


async def test_render_shows_refusals_changes_and_scheduler_errors(h: Harness) -> None:
    await register(h, "acme/accounts", ACCOUNTS)
    changes = tuple(f"+ Field{i}: {i}" for i in range(45))
    workflow(h).answer = Rendering("Nomad job", {"ID": "x"}, "blueprint web@2", (), changes, ("n",))
    out = render((await h.ok("render accounts 1.2.3 at dc-east")).reply, width=200)
    assert "+ Field39: 39" in out and "Field40" not in out and "… and 5 more" in out
    assert "from blueprint web@2" in out and "• n" in out
    workflow(h).answer = Rendering("Nomad job", {"ID": "x"}, "src", ("Missing task driver",))
    refused = await h.say("render accounts 1.2.3 at dc-east")
    assert refused.outcome is Outcome.USER_ERROR and "— refused" in refused.reply.title
    assert "Missing task driver" in render(refused.reply)
    workflow(h).answer = SchedulerError("blueprint web@2 line 3: 'x' is undefined")
    out = await h.fails("render accounts 1.2.3 at dc-east")
    assert "Cannot render accounts 1.2.3 for dc-east: blueprint web@2 line 3" in out


async def test_blueprints_are_registered_by_deployers_and_listed(h: Harness) -> None:
    text = "ID: {{ stack }}\nTaskGroups: []\n"
    assert "may not" in await h.fails(f"blueprint web\n```\n{text}```", GUEST)
    assert "line 1" in await h.fails("blueprint web\n```\nID: {{ stack\n```", DEV)
    first = await h.ok(f"blueprint web\n```\n{text}```", DEV)
    assert first.reply.title == "Registered revision 1 of blueprint web"
    second = await h.ok(f"blueprint web\n```\n{text}Meta: {{}}\n```", DEV)
    assert second.reply.title == "Registered revision 2 of blueprint web"
    out = render((await h.ok("blueprints", GUEST)).reply, width=200)
    assert "web" in out and "(default)" in out and "UDEV" in out
    assert (await h.store.blueprint("web", 1)).text.startswith("ID:")  # type: ignore[union-attr]
    assert await h.store.blueprint("web", 3) is None
    assert "There is no blueprint to read" in await h.fails("blueprint web", DEV)


class NomadLikeWorkflow(RenderingWorkflow):
    async def runtime(self, stack: Any) -> Any:
        from domain.runtime import Health, Instance, RuntimeReport

        alloc = Instance(
            f"{stack.name}.accounts[0]", "running", (("default", 25123),), "", "10.0.0.5"
        )
        return RuntimeReport((alloc,), Health(True, "1 allocation(s) healthy (alive)"))


async def test_runtime_shows_the_node_address_of_instances_elsewhere(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'nelson.db'}", clock=clock)
    try:
        h = Harness(store, NomadLikeWorkflow(), clock)
        await register(h, "acme/accounts", ACCOUNTS)
        deployed = await h.ok("deploy accounts 1.2.3 to dc-east")
        [stack] = await store.stacks_by_ids(deployed.reply.stack_ids)
        out = render((await h.ok(f"runtime {stack.name}")).reply, width=200)
        assert "default 10.0.0.5:25123" in out
    finally:
        await store.close()
