"""Handlers driven through the conversation, on the in-memory store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.conversation import Answer, Conversation, Outcome
from bot.slack.blocks import reply_blocks
from bot.terminal import render
from commands.access import Principal
from commands.approval_desk import ApprovalDesk
from commands.context import Services
from commands.ports import SchedulerError, Store
from commands.replies import Code, Table, Text
from commands.settings import Settings
from domain.records import Stack, StackQuery
from domain.runtime import Health, Instance, Rendering, RuntimeReport
from domain.states import StackStatus
from domain.versions import Version
from tests.fakes.clock import FakeClock
from tests.fakes.memory_store import MemoryStore

ACCOUNTS = """
units:
  - name: accounts
    description: keeps the accounts
    ports:
      - default->8080/http
plans:
  - name: small
    cpu: 0.25
    memory: 256
  - name: big
    cpu: 1
    memory: 1024
namespaces:
  - name: dev
    units:
      - ref: accounts
        plans: [small]
  - name: qa
    units:
      - ref: accounts
        plans: [small, big]
"""

HOWDY = """
units:
  - name: howdy-http
    description: says howdy
    ports:
      - default->9000/http
    dependencies:
      - ref: accounts@1.2
plans:
  - name: default
namespaces:
  - name: dev
    units:
      - ref: howdy-http
        plans: [default]
"""


class RecordingWorkflow:
    """Accepts stacks and remembers them, for tests of what handlers hand over."""

    def __init__(self, closed: dict[str, str] | None = None) -> None:
        self.submitted: list[int] = []
        self.closed = closed or {}

    async def available_for(self, datacenter: str) -> str | None:
        return self.closed.get(datacenter)

    async def submit(self, stack_ids: Sequence[int]) -> None:
        self.submitted.extend(stack_ids)

    async def runtime(self, stack: Stack) -> RuntimeReport:
        return RuntimeReport(
            (Instance(f"{stack.name}-0", "running", (("default", 31000),)),),
            Health(True, "1 instance(s) healthy (alive)"),
        )

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


SETTINGS = Settings.model_validate(
    {
        "namespaces": ["dev", "qa", "prod"],
        "datacenters": {
            "dc-east": {"staging_registry": "stage:5000", "runtime_registry": "east:5000"},
            "dc-west": {"staging_registry": "stage:5000", "runtime_registry": "west:5000"},
        },
        "access": {
            "admins": ["UADMIN"],
            "rules": [
                {"namespace": "*", "view": ["*"]},
                {"namespace": "dev", "deploy": ["UDEV"]},
                {"namespace": "qa", "deploy": ["UDEV"]},
            ],
        },
    }
)
ADMIN = Principal("UADMIN", "admin")
DEV = Principal("UDEV", "dev")
GUEST = Principal("UGUEST", "guest")


class Harness:
    def __init__(self, store: Store, workflow: RecordingWorkflow, clock: FakeClock) -> None:
        self.store = store
        self.workflow = workflow
        self.clock = clock
        self.conversation = Conversation(Services(SETTINGS, store, workflow, clock))

    async def say(self, text: str, who: Principal = ADMIN, **kw: object) -> Answer:
        return await self.conversation.answer(text, who, **kw)  # type: ignore[arg-type]

    async def ok(self, text: str, who: Principal = ADMIN, **kw: object) -> Answer:
        answer = await self.say(text, who, **kw)
        assert answer.outcome is Outcome.OK, render(answer.reply)
        return answer

    async def fails(self, text: str, who: Principal = ADMIN, **kw: object) -> str:
        answer = await self.say(text, who, **kw)
        assert answer.outcome is Outcome.USER_ERROR, render(answer.reply)
        return render(answer.reply, width=200)


@pytest.fixture
async def h(clock: FakeClock) -> AsyncIterator[Harness]:
    # the in-memory store keeps the SQL store's contract (tests/integration/test_store.py)
    store = MemoryStore(clock)
    yield Harness(store, RecordingWorkflow(), clock)
    await store.close()


async def register(h: Harness, repo: str, text: str) -> None:
    await h.ok(f"manifest {repo}\n```\n{text}\n```")


async def test_help_and_datacenters(h: Harness) -> None:
    out = render((await h.ok("help")).reply)
    assert "deploy" in out and "stacks" in out
    out = render((await h.ok("datacenters")).reply, width=200)
    assert "dc-east" in out and "east:5000" in out and "dc-west" in out


async def test_unknown_command_suggests(h: Harness) -> None:
    out = await h.fails("deploi accounts 1.2.3")
    assert "deploy" in out


async def test_register_manifest_then_units(h: Harness) -> None:
    await register(h, "acme/accounts", ACCOUNTS)
    units = (await h.ok("units")).reply
    table = next(b for b in units.blocks if isinstance(b, Table))
    assert table.rows[0][:3] == ("accounts", "service", "acme/accounts")
    again = await h.ok(f"manifest acme/accounts\n```\n{ACCOUNTS}\n```")
    assert "already has this manifest (revision 1)" in again.reply.title


MANY = (
    "units:\n"
    + "".join(f"  - name: svc-{i:03}\n    ports:\n      - default->80/http\n" for i in range(120))
    + "plans:\n  - name: default\nnamespaces:\n  - name: dev\n    units:\n"
    + "      - ref: svc-051\n        plans: [default]\n"
)


def _table(answer: Answer) -> Table:
    return next(b for b in answer.reply.blocks if isinstance(b, Table))


def _said(answer: Answer) -> str:
    return " ".join(b.text for b in answer.reply.blocks if isinstance(b, Text))


async def test_units_come_a_page_at_a_time_with_the_way_to_the_next(h: Harness) -> None:
    await register(h, "acme/many", MANY)
    first = await h.ok("units")
    assert first.reply.title == "Units 1 to 50 of 120, live stacks in dev"
    assert [row[0] for row in _table(first).rows] == [f"svc-{i:03}" for i in range(50)]
    assert "70 more, sorted by name. Next: `units page 2`" in _said(first)
    # the whole page fits one Slack message: no row cut, no section over Slack's limit
    blocks = reply_blocks(first.reply)
    assert len(blocks) <= 50 and "Showing" not in str(blocks)
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")
    await h.ok("deploy svc-051 1.0.0 to dc-east", DEV)
    second = await h.ok("units in dev page 2")
    assert second.reply.title == "Units 51 to 100 of 120, live stacks in dev"
    rows = {row[0]: row for row in _table(second).rows}
    assert rows["svc-051"][3:] == ("1", "1.0.0") and rows["svc-050"][3:] == ("0", "-")
    assert "Next: `units in dev page 3`" in _said(second)
    last = await h.ok("units page 3")
    assert [row[0] for row in _table(last).rows] == [f"svc-{i:03}" for i in range(100, 120)]
    assert "Next" not in _said(last)
    # keyset: after a name, which need not be a unit; the next page continues after the last
    after = await h.ok("units at dc-west after svc-049x")
    assert after.reply.title == "Units 51 to 100 of 120, live stacks in dc-west/dev"
    assert _table(after).rows[1][3] == "0"  # svc-051's stack is in dc-east
    assert "Next: `units at dc-west after svc-099`" in _said(after)
    beyond = await h.ok("units page 4")
    assert "No units on page 4: there are 120, 3 page(s) of 50" in _said(beyond)
    assert "No units after svc-119" in _said(await h.ok("units after svc-119"))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("units page 0", "'0' is not a page number"),
        ("units page two", "'two' is not a page number"),
        ("units page", "a page number"),
        ("units page 2 after svc-001", "Say which page once"),
        ("units after", "unit name"),
    ],
)
async def test_units_pages_are_asked_for_plainly(h: Harness, text: str, says: str) -> None:
    assert says in await h.fails(text)


async def test_invalid_manifest_registers_nothing_and_lists_errors(h: Harness) -> None:
    bad = ACCOUNTS.replace("memory: 256", "memory: -1").replace(
        "ref: accounts\n        plans: [small]\n", "ref: acount\n        plans: [small]\n", 1
    )
    out = await h.fails(f"manifest acme/accounts\n```\n{bad}\n```")
    assert "nothing was registered" in out
    assert "memory" in out and "acount" in out
    assert await h.store.units() == []


async def test_paths_are_read_only_locally(h: Harness, tmp_path: Path) -> None:
    path = tmp_path / "m.yml"
    path.write_text(ACCOUNTS, encoding="utf-8")
    out = await h.fails(f"lint manifest {path}")
    assert "only read manifests by path in the local console" in out
    answer = await h.ok(f"lint manifest {path}", local=True)
    assert "is valid" in answer.reply.title


async def test_lint_reports_every_error(h: Harness) -> None:
    bad = ACCOUNTS.replace("memory: 256", "memory: -1").replace("cpu: 1\n", "cpu: 0\n")
    answer = await h.say(f"lint\n```\n{bad}\n```")
    assert answer.outcome is Outcome.USER_ERROR
    code = next(b for b in answer.reply.blocks if isinstance(b, Code))
    assert code.text.count("\n") >= 1  # two errors, two lines
    assert "plans[0].memory" in code.text and "plans[1].cpu" in code.text


async def test_lint_accepts_with_warnings_listed(h: Harness) -> None:
    text = "common: &small\n  cpu: 0.5\n" + ACCOUNTS
    answer = await h.ok(f"lint\n```\n{text}\n```")
    assert "is valid" in answer.reply.title
    assert any(isinstance(b, Text) and "1 warning" in b.text for b in answer.reply.blocks)
    code = next(b for b in answer.reply.blocks if isinstance(b, Code))
    assert "unknown top-level key 'common'" in code.text


async def test_lint_reads_nelsons_notifications_and_durations(h: Harness) -> None:
    text = ACCOUNTS + (
        "notifications:\n  slack:\n    channels: [accounts-deploys]\n"
        "  email:\n    recipients: [not-an-address]\n"
    )
    answer = await h.say(f"lint\n```\n{text}\n```")
    assert answer.outcome is Outcome.USER_ERROR
    code = next(b for b in answer.reply.blocks if isinstance(b, Code))
    assert "notifications.email.recipients[0]" in code.text and code.text.count("\n") == 0


async def test_deploy_records_release_and_pending_stacks_per_target_and_plan(h: Harness) -> None:
    await register(h, "acme/accounts", ACCOUNTS)
    answer = await h.ok("deploy accounts v1.2 to dc-east, dc-west in qa", DEV)
    assert len(answer.reply.stack_ids) == 4  # 2 datacenters x 2 plans
    assert h.workflow.submitted == list(answer.reply.stack_ids)
    release = await h.store.release("accounts", Version(1, 2, 0))
    assert release is not None and release.image == "stage:5000/accounts:1.2.0"
    page = await h.store.list_stacks(StackQuery(namespace="qa"))
    assert {(s.datacenter, s.plan, s.status) for s in page.stacks} == {
        ("dc-east", "small", StackStatus.PENDING),
        ("dc-east", "big", StackStatus.PENDING),
        ("dc-west", "small", StackStatus.PENDING),
        ("dc-west", "big", StackStatus.PENDING),
    }
    stack = page.stacks[0]
    assert stack.name.startswith("accounts--1-2-0--")
    inspect = render((await h.ok(f"inspect {stack.name}")).reply, width=200)
    assert "pending" in inspect and "UDEV" in inspect and "stage:5000/accounts:1.2.0" in inspect


async def test_same_release_twice_at_a_target_is_refused_naming_the_stack(h: Harness) -> None:
    await register(h, "acme/accounts", ACCOUNTS)
    first = await h.ok("deploy accounts 1.2.0 to dc-east", DEV)
    out = await h.fails("deploy accounts 1.2.0 to dc-east", DEV)
    stack = await h.store.stack_by_id(first.reply.stack_ids[0])
    assert stack is not None and stack.name in out and "already deployed" in out
    # another datacenter is fine: same release, new stack
    await h.ok("deploy accounts 1.2.0 to dc-west", DEV)
    units = render((await h.ok("units at dc-west")).reply, width=200)
    assert "accounts  service  acme/accounts  1            1.2.0" in units
    out = await h.fails("deploy accounts 1.2.0 to dc-west image other:1", DEV)
    assert "never changes its image" in out


async def test_deploy_refused_where_no_engine_and_nothing_recorded(h: Harness) -> None:
    await register(h, "acme/accounts", ACCOUNTS)
    h.workflow.closed["dc-west"] = "no engine for nomad"
    out = await h.fails("deploy accounts 1.2.0 everywhere", DEV)
    assert "Cannot deploy to datacenter 'dc-west' now: no engine for nomad" in out
    assert (await h.store.list_stacks(StackQuery())).total == 0
    assert h.workflow.submitted == []


async def test_deploy_checks_access_and_audits(h: Harness) -> None:
    await register(h, "acme/accounts", ACCOUNTS)
    out = await h.fails("deploy accounts 1.2.0 to dc-east", GUEST)
    assert "may not deploy in namespace 'dev'" in out and "access.rules" in out
    events = await h.store.audit_events()
    refused = [e for e in events if e.actor == "UGUEST"]
    assert refused and refused[0].allowed is False and refused[0].action == "deploy"


async def test_deploy_unknown_things_get_specific_messages(h: Harness) -> None:
    await register(h, "acme/accounts", ACCOUNTS)
    assert "did you mean accounts?" in await h.fails("deploy acounts 1.0.0")
    assert "no datacenter 'dc-est'" in await h.fails("deploy accounts 1.0.0 to dc-est")
    assert "no namespace 'qq'" in await h.fails("deploy accounts 1.0.0 in qq")
    assert "no plan 'bog'" in await h.fails("deploy accounts 1.0.0 in qa plan bog")
    assert "does not deploy accounts into namespace 'prod'" in await h.fails(
        "deploy accounts 1.0.0 in prod"
    )


async def test_dependencies_must_be_ready_at_the_target(h: Harness) -> None:
    await register(h, "acme/accounts", ACCOUNTS)
    await register(h, "acme/howdy", HOWDY)
    out = await h.fails("deploy howdy-http 0.1.0 to dc-east")
    assert "accounts@1.2 has no ready stack in dc-east/dev" in out
    dep = await h.ok("deploy accounts 1.3.0 to dc-east")
    stack_id = dep.reply.stack_ids[0]
    for status in (StackStatus.DEPLOYING, StackStatus.WARMING, StackStatus.READY):
        await h.store.change_status(stack_id, status, "test", "nelson")
    answer = await h.ok("deploy howdy-http 0.1.0 to dc-east")
    deps = await h.store.dependencies(answer.reply.stack_ids[0])
    assert [d.id for d in deps] == [stack_id]


async def test_commit_needs_an_existing_release(h: Harness) -> None:
    await register(h, "acme/accounts", ACCOUNTS)
    assert "has not been released yet" in await h.fails("commit accounts 2.0.0 to qa")
    await h.ok("deploy accounts 2.0.0 to dc-east")
    answer = await h.ok("commit accounts 2.0.0 to qa")
    assert len(answer.reply.stack_ids) == 4  # every allowed datacenter x qa's two plans


async def test_stacks_filters_and_logs(h: Harness) -> None:
    await register(h, "acme/accounts", ACCOUNTS)
    answer = await h.ok("deploy accounts 1.0.0 to dc-east")
    stack = await h.store.stack_by_id(answer.reply.stack_ids[0])
    assert stack is not None
    listed = render((await h.ok("stacks at dc-east status pending")).reply, width=200)
    assert stack.name in listed
    none = render((await h.ok("stacks status ready")).reply, width=200)
    assert "No stacks" in none
    await h.store.append_log(stack.id, "replicating image", step="replicate")
    logs = render((await h.ok(f"logs {stack.guid}")).reply, width=200)
    assert "replicating image" in logs
    assert "no stack 'nope--1-0-0--aaaaaaaa'" in await h.fails("inspect nope--1-0-0--aaaaaaaa")


async def test_reverse_without_a_shift_and_runtime(h: Harness) -> None:
    await register(h, "acme/accounts", ACCOUNTS)
    answer = await h.ok("deploy accounts 1.0.0 to dc-east")
    stack = await h.store.stack_by_id(answer.reply.stack_ids[0])
    assert stack is not None
    assert "no migration of" in await h.fails(f"reverse {stack.name}")
    deprecating = await h.fails("deprecate accounts 1.0.0")
    assert "no ready stack to deprecate" in deprecating and "still deploying" in deprecating
    runtime = render((await h.ok(f"runtime {stack.name}")).reply, width=200)
    assert "1 of 1 running" in runtime and "default 31000" in runtime
    assert "no approval #7" in await h.fails("approve 7")


async def test_whoami_and_cleanup_policies(h: Harness) -> None:
    me = render((await h.ok("whoami", DEV)).reply, width=200)
    assert "UDEV" in me and "view, deploy" in me
    policies = render((await h.ok("cleanup-policies")).reply, width=200)
    assert "retain-latest-two-major" in policies and "default for services" in policies
    # the same story as docs/lifecycle.md: an announcement, then the notice, then removal
    assert "Each day at 09:00 UTC a digest announces" in policies
    assert "removed only once it was announced" in policies and "4 hours after the" in policies
    assert "Keep button) keeps it 1 day more" in policies


async def test_internal_errors_give_a_reference_not_a_traceback(
    h: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(h.store, "unit_page", broken)
    answer = await h.say("units")
    assert answer.outcome is Outcome.INTERNAL_ERROR
    assert "reference" in answer.reply.title
    assert "disk on fire" not in render(answer.reply)
    assert "disk on fire" in caplog.text


async def test_manifest_directories_are_registered_and_bad_ones_reported(
    h: Harness, tmp_path: Path
) -> None:
    from bot.manifest_dirs import register_directories

    root = tmp_path / "manifests"
    (root / "accounts").mkdir(parents=True)
    (root / "accounts" / ".nelson.yml").write_text(ACCOUNTS, encoding="utf-8")
    (root / "broken").mkdir()
    (root / "broken" / ".nelson.yml").write_text("units: [", encoding="utf-8")
    settings = SETTINGS.model_copy(update={"manifest_dirs": (str(root), str(tmp_path / "nope"))})
    problems = await register_directories(settings, h.store)
    assert [u.name for u in await h.store.units()] == ["accounts"]
    assert any("nope does not exist" in p for p in problems)
    assert any("broken/.nelson.yml: not registered" in p for p in problems)
    await register_directories(settings, h.store)  # a restart registers no new revision
    latest = await h.store.latest_manifest("accounts")
    assert latest is not None and latest.revision == 1


async def test_approve_and_reject_use_the_one_desk_of_the_program(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[object] = []
    original = ApprovalDesk.__init__

    def counting(self: ApprovalDesk, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ApprovalDesk, "__init__", counting)
    for text in ("approve 7", "reject 7 not now", "approve 8"):
        assert "no approval #" in await h.fails(text)
    assert built == []  # each text reached the conversation's desk, built once with it
